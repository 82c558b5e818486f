//! Operations endpoints: `GET /metrics` (Prometheus text), `GET /healthz` (the process
//! answers), `GET /readyz` (storage answers, no storage call has failed since the last one
//! that succeeded, and the hub is not shutting down).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use super::{AppState, text};

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let engine = &state.engine;
    match engine.gauges().await {
        Ok(gauges) => {
            let mut text = engine.metrics().render(&gauges);
            engine.relay_counts().render_metrics(&mut text);
            HttpResponse::Ok()
                .content_type("text/plain; version=0.0.4; charset=utf-8")
                .body(text)
        }
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("storage: {e}")),
    }
}

pub async fn healthz() -> HttpResponse {
    text(StatusCode::OK, "ok")
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.engine.is_stopping() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    // A probe of the store first: it clears its own earlier failure, or records one.
    let health = state.engine.health();
    match state.store.log.bounds().await {
        Ok(_) => health.succeeded("readiness probe"),
        Err(e) => health.failed("readiness probe", &e),
    }
    match health.status() {
        None => text(StatusCode::OK, "ready"),
        Some(f) => {
            let since = crate::clock::format_utc(f.since_ms);
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "storage failing since {since}: {} ({}): {}",
                    f.what, f.class, f.error
                ),
            )
        }
    }
}
