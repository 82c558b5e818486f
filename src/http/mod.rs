//! HTTP ingest (actix-web). Handlers validate, persist, hand off and answer; they never make
//! outbound calls.

mod fat_ping;
mod hub_endpoint;
mod ops;

use std::sync::Arc;

use actix_web::{HttpResponse, http::StatusCode, web};

use crate::clock::Clock;
use crate::config::Config;
use crate::engine::Intake;
use crate::storage::Storage;

pub struct AppState {
    pub cfg: Arc<Config>,
    pub store: Storage,
    pub intake: Intake,
    pub clock: Clock,
    pub hub_url: String,
    /// Read-only here: metrics and readiness.
    pub engine: Arc<crate::engine::Engine>,
}

pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let limit = state.cfg.max_body;
        cfg.app_data(state)
            .app_data(web::PayloadConfig::new(limit))
            .service(
                web::resource("/")
                    .route(web::post().to(hub_endpoint::post))
                    .route(web::get().to(hub_endpoint::get)),
            )
            .route("/metrics", web::get().to(ops::metrics))
            .route("/healthz", web::get().to(ops::healthz))
            .route("/readyz", web::get().to(ops::readyz));
    }
}

/// Errors are answered as plain text with a reason (W3C WebSub 5.1.2).
pub fn text(status: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(format!("{message}\n"))
}
