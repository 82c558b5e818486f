//! `/chain?topic=…`: this hub's callback at upstream hubs (hub chaining, `relay.chain`).
//! `GET` answers their verifications of intent; `POST` takes what they push for the topic.

// Early answers are returned as `Err(HttpResponse)`, the usual actix-web shape.
#![allow(clippy::result_large_err)]

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::hub_endpoint::unavailable;
use super::{AppState, text};
use crate::engine::chain::Pushed;

fn params(req: &HttpRequest) -> Result<Vec<(String, String)>, HttpResponse> {
    crate::form::parse(req.query_string().as_bytes()).map_err(|e| text(StatusCode::BAD_REQUEST, e))
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

pub async fn verify(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let pairs = match params(&req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (Some(topic), Some(mode), Some(challenge)) = (
        param(&pairs, "topic"),
        param(&pairs, "hub.mode"),
        param(&pairs, "hub.challenge"),
    ) else {
        return text(
            StatusCode::BAD_REQUEST,
            "a verification names topic, hub.mode and hub.challenge",
        );
    };
    if param(&pairs, "hub.topic").is_some_and(|t| t != topic) {
        return text(
            StatusCode::NOT_FOUND,
            "hub.topic is not this callback's topic",
        );
    }
    let lease = param(&pairs, "hub.lease_seconds").and_then(|l| l.parse().ok());
    match state.ingest.chain_verification(topic, mode, lease).await {
        Ok(true) => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(challenge.to_owned()),
        Ok(false) => text(
            StatusCode::NOT_FOUND,
            format!("this hub does not want to {mode} to {topic}"),
        ),
        Err(e) => unavailable(e),
    }
}

pub async fn push(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let pairs = match params(&req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(topic) = param(&pairs, "topic") else {
        return text(StatusCode::BAD_REQUEST, "the callback names its topic");
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_else(|| "application/octet-stream".into());
    let signature = header("x-hub-signature");
    match state
        .ingest
        .chain_push(topic, &content_type, signature.as_deref(), body)
        .await
    {
        Ok(Pushed::Taken(_)) => text(StatusCode::OK, "taken"),
        // W3C WebSub: acknowledged, and ignored.
        Ok(Pushed::BadSignature) => text(StatusCode::ACCEPTED, "ignored: bad signature"),
        Ok(Pushed::Unknown) => text(
            StatusCode::GONE,
            format!("this hub holds no subscription of {topic}"),
        ),
        Err(e) => unavailable(e),
    }
}
