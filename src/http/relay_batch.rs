//! `POST /relay/batch`: this hub as the relay of a destination server, taking the batches of
//! the hubs it registered at (`[[relay.register]]`), each signed with the secret it gave that
//! hub; and `GET /relay/batch`, those hubs' verifications of its registrations.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hyper::header::HeaderValue;
use serde::Deserialize;

use super::hub_endpoint::unavailable;
use super::{AppState, text};
use crate::engine::forward::TakenBatch;
use crate::engine::relay_batch::MEDIA_TYPE;
use crate::urls::HttpUrl;

/// Most deliveries one batch may list.
const MAX_DELIVERIES: usize = 100_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    hub: String,
    event: String,
    topic: String,
    content_type: String,
    link: String,
    content: String,
    deliveries: Vec<Delivery>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delivery {
    callback: String,
    signature: Option<String>,
}

pub async fn post(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let refused = |status: StatusCode, why: String| {
        state.engine.metrics().batch_refused();
        tracing::warn!(status = status.as_u16(), reason = %why, "relay batch refused");
        text(status, why)
    };
    let regs = state.engine.registrations();
    if regs.is_empty() {
        return refused(
            StatusCode::NOT_FOUND,
            "this hub is nobody's relay: it has no [[relay.register]] entries".into(),
        );
    }
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(MEDIA_TYPE))
    {
        return refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a relay batch is {MEDIA_TYPE}, not {content_type:?}"),
        );
    }
    let signature = req
        .headers()
        .get("x-hub-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !signature.starts_with("sha256=") {
        return refused(
            StatusCode::UNAUTHORIZED,
            "a relay batch needs X-Hub-Signature: sha256=HMAC(secret, body)".into(),
        );
    }
    // Only now, with every check the headers allow made, is the body read (to its bound).
    let limit = state.cfg.relay.max_batch_bytes;
    let body = match payload.to_bytes_limited(limit).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return refused(StatusCode::BAD_REQUEST, format!("reading the batch: {e}")),
        Err(_) => {
            return refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a batch is at most relay.max_batch_bytes ({limit} bytes)"),
            );
        }
    };
    let Some(signer) = regs.signer(&body, signature) else {
        return refused(
            StatusCode::FORBIDDEN,
            "the signature matches the secret of no [[relay.register]] entry".into(),
        );
    };
    let batch: Batch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                format!("the batch is not a {MEDIA_TYPE} document: {e}"),
            );
        }
    };
    if batch.hub.trim_end_matches('/') != signer.hub.trim_end_matches('/') {
        return refused(
            StatusCode::FORBIDDEN,
            format!(
                "the batch names hub {:?} but is signed with the secret given to {:?}",
                batch.hub, signer.hub
            ),
        );
    }
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&body).into();
    let taken = match validate(batch, &signer.destination(), digest) {
        Ok(t) => t,
        Err((status, why)) => return refused(status, why),
    };
    match state.ingest.forward(taken).await {
        Ok(gone) => HttpResponse::Ok().json(serde_json::json!({ "gone": gone })),
        Err(e) => unavailable(e),
    }
}

/// Checks every field a delivery will carry, and that every callback is on `destination`
/// (the server this hub is the relay of).
fn validate(
    batch: Batch,
    destination: &str,
    digest: [u8; 32],
) -> Result<TakenBatch, (StatusCode, String)> {
    let bad = |why: String| (StatusCode::BAD_REQUEST, why);
    if HeaderValue::from_str(&batch.content_type).is_err() || batch.content_type.is_empty() {
        return Err(bad(format!(
            "content_type {:?} is not a header value",
            batch.content_type
        )));
    }
    if HeaderValue::from_str(&batch.link).is_err() {
        return Err(bad(format!("link {:?} is not a header value", batch.link)));
    }
    let body = B64
        .decode(batch.content.as_bytes())
        .map_err(|e| bad(format!("content is not standard base64: {e}")))?;
    if batch.deliveries.len() > MAX_DELIVERIES {
        return Err(bad(format!(
            "{} deliveries; a batch lists at most {MAX_DELIVERIES}",
            batch.deliveries.len()
        )));
    }
    let mut deliveries = Vec::with_capacity(batch.deliveries.len());
    for (i, d) in batch.deliveries.into_iter().enumerate() {
        let url = HttpUrl::parse(&d.callback)
            .map_err(|e| bad(format!("deliveries[{i}].callback {:?}: {e}", d.callback)))?;
        if url.destination() != destination {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "deliveries[{i}].callback {:?} is not on {destination}, the server this hub \
                     is the relay of",
                    d.callback
                ),
            ));
        }
        if let Some(sig) = &d.signature {
            let well_formed = sig
                .split_once('=')
                .is_some_and(|(m, h)| !m.is_empty() && hex::decode(h).is_ok());
            if !well_formed || HeaderValue::from_str(sig).is_err() {
                return Err(bad(format!(
                    "deliveries[{i}].signature {sig:?} is not METHOD=HEX"
                )));
            }
        }
        deliveries.push((url.as_str().to_owned(), d.signature));
    }
    tracing::debug!(topic = %batch.topic, event = %batch.event, "relay batch valid");
    Ok(TakenBatch {
        hub: batch.hub,
        event: batch.event,
        topic: batch.topic,
        content_type: batch.content_type,
        link: batch.link,
        body: body.into(),
        deliveries,
        digest,
    })
}

/// A hub verifying this hub's registration (`hub.mode=relay&hub.challenge=C`): the challenge
/// is echoed only while one of this hub's own requests awaits it.
pub async fn verify(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let pairs = match crate::form::parse(req.query_string().as_bytes()) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(mode), Some(challenge)) = (get("hub.mode"), get("hub.challenge")) else {
        return text(
            StatusCode::BAD_REQUEST,
            "a verification names hub.mode and hub.challenge",
        );
    };
    let lease = get("hub.lease_seconds").and_then(|l| l.parse().ok());
    let token = get(crate::config::relay::RELAY_TOKEN_PARAM).unwrap_or_default();
    let now = state.clock.now_ms();
    if state
        .engine
        .registrations()
        .verification(mode, token, lease, now)
    {
        HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(challenge.to_owned())
    } else {
        text(
            StatusCode::NOT_FOUND,
            format!("this hub has no {mode:?} request awaiting verification"),
        )
    }
}
