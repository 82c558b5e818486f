//! Operations endpoints: `GET /metrics` (Prometheus text), `GET /healthz` (the process
//! answers), `GET /readyz` (storage answers and the hub is not shutting down).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use super::{AppState, text};

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let engine = &state.engine;
    match engine.gauges().await {
        Ok(gauges) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(engine.metrics.render(&gauges)),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("storage: {e}")),
    }
}

pub async fn healthz() -> HttpResponse {
    text(StatusCode::OK, "ok")
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.engine.shutdown.is_cancelled() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match state.store.delivery.next_retry_due().await {
        Ok(_) => text(StatusCode::OK, "ready"),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("storage: {e}")),
    }
}
