//! HTTP ingest (actix-web). Handlers validate, persist, hand off and answer; they never make
//! outbound calls.

mod admin_api;
pub mod admin_auth;
mod admin_hosted;
pub mod body_deadline;
mod chain;
pub mod conn_limit;
mod fat_ping;
mod hosted;
mod hub_endpoint;
mod mail_links;
mod ops;
mod profile;
mod relay_batch;
mod relay_stream;
pub mod request_id;
mod retrieve;
mod status_cluster;
mod status_multicast;
mod status_names;
mod status_page;
mod status_relay;
mod webfinger;

use std::sync::Arc;

use actix_web::{HttpResponse, http::StatusCode, web};

use crate::clock::Clock;
use crate::config::Config;
use crate::storage::Storage;

pub struct AppState {
    pub cfg: Arc<Config>,
    pub store: Storage,
    /// Where handlers hand what they accept.
    pub ingest: crate::ingest::Ingest,
    pub clock: Clock,
    pub hub_url: String,
    /// Read-only here: metrics and readiness.
    pub engine: Arc<crate::engine::Engine>,
    /// The status page's and admin API's views and actions.
    pub admin: Arc<crate::admin::Admin>,
    /// Who may use them.
    pub admin_gate: admin_auth::Gate,
    /// Subscription requests per client address (`limits.subscriptions_per_client`).
    pub subscribe_rate: crate::rate_limit::Limiter<std::net::IpAddr>,
    /// Light pings per client address (`limits.pings_per_client`).
    pub ping_rate: crate::rate_limit::Limiter<std::net::IpAddr>,
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
            .service(
                web::resource("/t/{name}")
                    .route(web::get().to(hosted::feed))
                    .route(web::post().to(hosted::post)),
            )
            .service(
                web::resource("/t/{name}/{key}")
                    .route(web::get().to(hosted::entry))
                    .route(web::put().to(hosted::edit))
                    .route(web::delete().to(hosted::delete)),
            )
            .route("/@{name}", web::get().to(profile::profile))
            .service(
                web::resource("/mail/confirm")
                    .route(web::get().to(mail_links::confirm_page))
                    .route(web::post().to(mail_links::confirm)),
            )
            .service(
                web::resource("/mail/unsubscribe")
                    .route(web::get().to(mail_links::unsubscribe_page))
                    .route(web::post().to(mail_links::unsubscribe)),
            )
            .route(
                "/.well-known/webfinger",
                web::get().to(webfinger::webfinger),
            )
            .route("/metrics", web::get().to(ops::metrics))
            .route("/healthz", web::get().to(ops::healthz))
            .route("/readyz", web::get().to(ops::readyz))
            .service(
                web::resource("/relay/batch")
                    .route(web::post().to(relay_batch::post))
                    .route(web::get().to(relay_batch::verify)),
            )
            .service(
                web::resource("/chain")
                    .route(web::post().to(chain::push))
                    .route(web::get().to(chain::verify)),
            )
            .route("/relay/stream", web::get().to(relay_stream::stream))
            .route("/relay/events", web::get().to(relay_stream::events))
            .route("/admin/page.js", web::get().to(status_page::script))
            .route("/admin/topic", web::get().to(status_page::topic))
            .route("/admin/callback", web::get().to(status_page::callback))
            .route("/admin/login", web::post().to(status_page::login))
            .route("/admin/resolve", web::post().to(status_names::resolve))
            .route(
                "/admin/dead-letters/replay-all",
                web::post().to(status_page::replay_all),
            )
            .route(
                "/admin/dead-letters/{id}/replay",
                web::post().to(status_page::replay),
            )
            .service(
                web::scope("/admin/api")
                    .route("/status", web::get().to(admin_api::status))
                    .route("/destinations", web::get().to(admin_api::destinations))
                    .route("/topic", web::get().to(admin_api::topic))
                    .route("/callback", web::get().to(admin_api::callback))
                    .route("/subscriptions", web::get().to(admin_api::subscriptions))
                    .route("/events", web::get().to(admin_api::events))
                    .route("/relay", web::get().to(admin_api::relay))
                    .route("/cluster", web::get().to(status_cluster::api))
                    .service(
                        web::resource("/hosted-topics")
                            .route(web::get().to(admin_hosted::list))
                            .route(web::post().to(admin_hosted::create)),
                    )
                    .route("/resolve", web::post().to(admin_hosted::resolve))
                    .route("/dead-letters", web::get().to(admin_api::dead_letters))
                    .route(
                        "/dead-letters/replay-all",
                        web::post().to(admin_api::replay_all),
                    )
                    .route(
                        "/dead-letters/{id}/replay",
                        web::post().to(admin_api::replay),
                    ),
            );
    }
}

/// Errors are answered as plain text with a reason (W3C WebSub 5.1.2).
pub fn text(status: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(format!("{message}\n"))
}
