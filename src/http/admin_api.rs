//! The admin JSON API under `/admin/api/`: the status page's information and actions for
//! scripts. Every answer is JSON; errors are `{"error": "..."}` with a 4xx or 5xx status.

// Early answers are returned as `Err(HttpResponse)`, the usual actix-web shape; the size of a
// response on that path does not matter.
#![allow(clippy::result_large_err)]

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::admin_auth::Denied;
use crate::urls::HttpUrl;

/// Most items one listing returns.
const MAX_LIMIT: usize = 1_000;

pub fn json_error(status: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message.to_string() }))
}

fn denied(d: Denied) -> HttpResponse {
    json_error(d.status(), d.reason())
}

pub(super) fn read(req: &HttpRequest, state: &AppState) -> Result<(), HttpResponse> {
    state.admin_gate.check(req).map_err(denied)
}

pub(super) fn act(req: &HttpRequest, state: &AppState) -> Result<(), HttpResponse> {
    state.admin_gate.check_action(req).map_err(denied)
}

fn storage_error(e: impl std::fmt::Display) -> HttpResponse {
    json_error(StatusCode::SERVICE_UNAVAILABLE, format!("storage: {e}"))
}

/// `200` with the value as JSON, or `503` naming the storage failure.
fn answer<T: serde::Serialize>(r: Result<T, crate::storage::StorageError>) -> HttpResponse {
    match r {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => storage_error(e),
    }
}

/// A URL parameter, normalised as the hub stores it.
pub fn url_param(name: &str, value: Option<&str>) -> Result<String, HttpResponse> {
    lookup_url(name, value).map_err(|m| json_error(StatusCode::BAD_REQUEST, m))
}

/// A URL parameter of a lookup, normalised as the hub stores it; the error is the reason.
pub fn lookup_url(name: &str, value: Option<&str>) -> Result<String, String> {
    let v = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{name} is required"))?;
    HttpUrl::parse(v)
        .map(|u| u.as_str().to_owned())
        .map_err(|e| format!("{name}: {e}"))
}

fn limit(requested: Option<usize>, default: usize) -> Result<usize, HttpResponse> {
    match requested {
        None => Ok(default),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(json_error(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

pub async fn status(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(r) = read(&req, &state) {
        return r;
    }
    answer(state.admin.overview().await)
}

#[derive(Deserialize)]
pub struct LimitQuery {
    limit: Option<usize>,
}

pub async fn destinations(
    req: HttpRequest,
    q: web::Query<LimitQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = read(&req, &state) {
        return r;
    }
    match limit(q.limit, 100) {
        Ok(n) => HttpResponse::Ok().json(state.admin.destinations(n)),
        Err(r) => r,
    }
}

/// `?topic=URL` or `?callback=URL`: a lookup, for the API and the status page.
#[derive(Deserialize)]
pub struct LookupQuery {
    pub topic: Option<String>,
    pub callback: Option<String>,
}

pub async fn topic(
    req: HttpRequest,
    q: web::Query<LookupQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = read(&req, &state) {
        return r;
    }
    let topic = match url_param("topic", q.topic.as_deref()) {
        Ok(t) => t,
        Err(r) => return r,
    };
    answer(state.admin.topic(&topic).await)
}

pub async fn callback(
    req: HttpRequest,
    q: web::Query<LookupQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = read(&req, &state) {
        return r;
    }
    let callback = match url_param("callback", q.callback.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    answer(state.admin.callback(&callback).await)
}

#[derive(Deserialize)]
pub struct SubscriptionsQuery {
    topic: Option<String>,
    after_topic: Option<String>,
    after_callback: Option<String>,
    limit: Option<usize>,
}

/// Subscriptions in (topic, destination, callback) order; page with the last item's topic and
/// callback as `after_topic` and `after_callback`.
pub async fn subscriptions(
    req: HttpRequest,
    q: web::Query<SubscriptionsQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = read(&req, &state) {
        return r;
    }
    let parsed = (|| {
        let topic = q
            .topic
            .as_deref()
            .map(|t| url_param("topic", Some(t)))
            .transpose()?;
        let after = match (&q.after_topic, &q.after_callback) {
            (Some(t), Some(c)) => Some((
                url_param("after_topic", Some(t))?,
                url_param("after_callback", Some(c))?,
            )),
            (None, None) => None,
            _ => {
                return Err(json_error(
                    StatusCode::BAD_REQUEST,
                    "after_topic and after_callback go together",
                ));
            }
        };
        Ok((topic, after, limit(q.limit, 100)?))
    })();
    let (topic, after, n) = match parsed {
        Ok(p) => p,
        Err(r) => return r,
    };
    let after = after.as_ref().map(|(t, c)| (t.as_str(), c.as_str()));
    answer(state.admin.subscriptions(topic.as_deref(), after, n).await)
}

pub async fn dead_letters(
    req: HttpRequest,
    q: web::Query<LimitQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = read(&req, &state) {
        return r;
    }
    let n = match limit(q.limit, 100) {
        Ok(n) => n,
        Err(r) => return r,
    };
    answer(state.admin.dead_letters(n).await)
}

pub async fn replay(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = act(&req, &state) {
        return r;
    }
    let Ok(id) = id.parse::<u64>() else {
        return json_error(StatusCode::BAD_REQUEST, "dead letter id must be a number");
    };
    match state.admin.replay(id).await {
        Ok(Some(retry)) => HttpResponse::Ok().json(serde_json::json!({
            "replayed": id,
            "event": retry.event,
            "topic": retry.topic,
            "callback": retry.callback,
        })),
        Ok(None) => json_error(StatusCode::NOT_FOUND, format!("no dead letter {id}")),
        Err(e) => storage_error(e),
    }
}

pub async fn replay_all(
    req: HttpRequest,
    q: web::Query<LimitQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = act(&req, &state) {
        return r;
    }
    let n = match limit(q.limit, MAX_LIMIT) {
        Ok(n) => n,
        Err(r) => return r,
    };
    match state.admin.replay_all(n).await {
        Ok(replayed) => HttpResponse::Ok().json(serde_json::json!({ "replayed": replayed })),
        Err(e) => storage_error(e),
    }
}

/// `?after=SEQ&limit=N`, read as text so that a bad number gets a reason.
#[derive(Deserialize)]
pub struct EventsQuery {
    after: Option<String>,
    limit: Option<String>,
}

fn number<T: std::str::FromStr>(name: &str, v: Option<&str>) -> Result<Option<T>, HttpResponse> {
    v.map(|v| {
        v.trim().parse().map_err(|_| {
            json_error(
                StatusCode::BAD_REQUEST,
                format!("{name} must be a whole number, not {v:?}"),
            )
        })
    })
    .transpose()
}

/// The event log in sequence order: events after `after` (0: from the start), at most
/// `limit` (100 unless given, at most 1,000), with the log's trail, lead and retention.
pub async fn events(
    req: HttpRequest,
    q: web::Query<EventsQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = read(&req, &state) {
        return r;
    }
    let parsed = number::<u64>("after", q.after.as_deref()).and_then(|after| {
        let n = number::<usize>("limit", q.limit.as_deref())?;
        Ok((after.unwrap_or(0), limit(n, 100)?))
    });
    match parsed {
        Ok((after, n)) => answer(state.admin.events(after, n).await),
        Err(r) => r,
    }
}

/// The peers reading this hub's stream (with what each was sent) and the upstreams it follows
/// (state, cursor, lag, errors).
pub async fn relay(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(r) = read(&req, &state) {
        return r;
    }
    HttpResponse::Ok().json(state.engine.relay_view().await)
}
