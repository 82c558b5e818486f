//! `GET /relay/stream` and `GET /relay/events`: the hub's stream for the peer hubs listed in
//! `[[peers]]`, each authenticated by its bearer token and reading only its topic prefixes.

// Early answers are returned as `Err(HttpResponse)`, the usual actix-web shape.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::{AppState, text};
use crate::engine::peer_stream::{Reader, Refusal};
use crate::relay::wire::MEDIA_TYPE;
use crate::signature::constant_time_eq;
use crate::topic_prefix::TopicPrefix;

/// The peer whose token the request carries.
fn peer(
    req: &HttpRequest,
    state: &AppState,
) -> Result<Arc<crate::config::relay::PeerConfig>, HttpResponse> {
    let unauthorized = |why: &str| {
        HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Bearer realm=\"hubcast relay\""))
            .content_type("text/plain; charset=utf-8")
            .body(format!("{why}\n"))
    };
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return Err(unauthorized(
            "the relay stream needs `Authorization: Bearer TOKEN` with a token from [[peers]]",
        ));
    };
    state
        .cfg
        .relay
        .peers
        .iter()
        .find(|p| constant_time_eq(p.token.as_bytes(), token.as_bytes()))
        .map(|p| Arc::new(p.clone()))
        .ok_or_else(|| unauthorized("unknown token: no [[peers]] entry holds it"))
}

/// The query's parameters.
struct Query {
    numbers: Vec<(String, u64)>,
    topics: Vec<TopicPrefix>,
}

fn query(req: &HttpRequest, numbers: &[&str]) -> Result<Query, HttpResponse> {
    let pairs = crate::form::parse(req.query_string().as_bytes())
        .map_err(|e| text(StatusCode::BAD_REQUEST, e))?;
    let mut q = Query {
        numbers: Vec::new(),
        topics: Vec::new(),
    };
    for (name, value) in pairs {
        if name == "topic" {
            let prefix = TopicPrefix::parse(&value).map_err(|e| {
                text(
                    StatusCode::BAD_REQUEST,
                    format!("topic={value:?} is not an http(s) URL prefix: {e}"),
                )
            })?;
            q.topics.push(prefix);
        } else if numbers.contains(&name.as_str()) {
            let n = value.parse::<u64>().map_err(|_| {
                text(
                    StatusCode::BAD_REQUEST,
                    format!("{name}={value:?} is not an event number"),
                )
            })?;
            q.numbers.push((name, n));
        } else {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown parameter {name:?}; expected {} or topic",
                    numbers.join(", ")
                ),
            ));
        }
    }
    if q.topics.len() > 100 {
        return Err(text(StatusCode::BAD_REQUEST, "at most 100 topic prefixes"));
    }
    Ok(q)
}

impl Query {
    fn number(&self, name: &str) -> Option<u64> {
        self.numbers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

fn refused(r: Refusal) -> HttpResponse {
    match r {
        Refusal::BelowTrail { trail, .. } => HttpResponse::Gone()
            .content_type("application/json")
            .body(serde_json::json!({ "trail": trail, "error": r.to_string() }).to_string()),
        Refusal::BeyondLead { lead, .. } => HttpResponse::Conflict()
            .content_type("application/json")
            .body(serde_json::json!({ "lead": lead, "error": r.to_string() }).to_string()),
        Refusal::Storage(e) => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .content_type("text/plain; charset=utf-8")
            .body(format!("storage unavailable: {e}\n")),
        Refusal::Stopping => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .content_type("text/plain; charset=utf-8")
            .body("the hub is stopping\n"),
    }
}

/// `GET /relay/stream?after=SEQ[&topic=PREFIX]…`: every event after `after` (default: the
/// lead, so only what comes next) the peer may read, then each new one as it becomes durable,
/// with heartbeats; it does not end while the hub runs.
pub async fn stream(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let peer = match peer(&req, &state) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let q = match query(&req, &["after"]) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let reader = Reader {
        peer,
        asked: q.topics.clone(),
    };
    match state
        .engine
        .peer_streams()
        .open(reader, q.number("after"))
        .await
    {
        Ok(rx) => {
            let body = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|chunk| (Ok::<_, actix_web::Error>(chunk), rx))
            });
            HttpResponse::Ok()
                .content_type(MEDIA_TYPE)
                .insert_header(("Cache-Control", "no-store"))
                .insert_header(("X-Accel-Buffering", "no"))
                .insert_header((
                    crate::relay::wire::HUB_HEADER,
                    state.engine.store().log.hub_id(),
                ))
                .streaming(body)
        }
        Err(r) => refused(r),
    }
}

/// `GET /relay/events?from=A&to=B[&topic=PREFIX]…`: the events `A..=B` the peer may read, in
/// the stream's line format, without heartbeats. `X-Hubcast-Through` says how far the answer
/// got (a long range is answered in parts: ask again from there).
pub async fn events(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let peer = match peer(&req, &state) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let q = match query(&req, &["from", "to"]) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (Some(from), Some(to)) = (q.number("from"), q.number("to")) else {
        return text(
            StatusCode::BAD_REQUEST,
            "`from` and `to` are required: the first and last event numbers wanted",
        );
    };
    if from == 0 || from > to {
        return text(
            StatusCode::BAD_REQUEST,
            format!("from={from} to={to}: event numbers start at 1 and from must not exceed to"),
        );
    }
    let reader = Reader {
        peer,
        asked: q.topics,
    };
    match state.engine.peer_streams().range(&reader, from, to).await {
        Ok(range) => {
            let cache = if range.settled {
                "private, max-age=86400, immutable"
            } else {
                "no-store"
            };
            HttpResponse::Ok()
                .content_type(MEDIA_TYPE)
                .insert_header(("Cache-Control", cache))
                .insert_header(("X-Hubcast-Through", range.through.to_string()))
                .insert_header((
                    crate::relay::wire::HUB_HEADER,
                    state.engine.store().log.hub_id(),
                ))
                .body(range.body)
        }
        Err(r) => refused(r),
    }
}
