//! The admin API's hosted topics and names: `POST /admin/api/hosted-topics` (create one:
//! `{"name", "token", "title"?}`), `GET /admin/api/hosted-topics` (list them), and
//! `POST /admin/api/resolve` (`{"name": "user@domain", "callback"?, "secret"?}`: what a name
//! stands for, through WebFinger; with a callback, that callback is subscribed to it).

// Early answers are returned as `Err(HttpResponse)`, the usual actix-web shape.
#![allow(clippy::result_large_err)]

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::admin_api::{act, json_error, read};
use crate::engine::hosted::{HostedError, TopicOptions};
use crate::storage::hosted::PostingPolicy;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopic {
    name: String,
    token: String,
    #[serde(default)]
    title: Option<String>,
    /// Who may post by mail: "open" (the default), "subscribers" or "allow-list".
    #[serde(default)]
    policy: Option<String>,
    /// Addresses allowed to post by mail (with "allow-list").
    #[serde(default)]
    allow: Vec<String>,
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpResponse> {
    serde_json::from_slice(bytes).map_err(|e| {
        json_error(
            StatusCode::BAD_REQUEST,
            format!("the body is not the JSON object expected: {e}"),
        )
    })
}

pub async fn create(
    req: HttpRequest,
    bytes: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = act(&req, &state) {
        return r;
    }
    if !state.cfg.hosted.enabled {
        return json_error(
            StatusCode::NOT_FOUND,
            "hosted topics are off (hosted.enabled is false)",
        );
    }
    let t: NewTopic = match body(&bytes) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let policy = match t.policy.as_deref() {
        None => PostingPolicy::Open,
        Some(p) => match PostingPolicy::parse(p) {
            Some(p) => p,
            None => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!("policy {p:?} is not open, subscribers or allow-list"),
                );
            }
        },
    };
    let options = TopicOptions {
        title: t.title.clone(),
        policy,
        allow: t.allow.clone(),
    };
    let hosted = state.ingest.hosted();
    match hosted.create(&t.name, &t.token, options).await {
        Ok(true) => {
            let urls = hosted.urls();
            HttpResponse::Created()
                .insert_header(("location", urls.atom(&t.name)))
                .json(serde_json::json!({
                    "name": t.name,
                    "topic": urls.atom(&t.name),
                    "json_topic": urls.json(&t.name),
                    "profile": urls.profile(&t.name),
                    "acct": super::webfinger::acct(&state, &t.name),
                }))
        }
        Ok(false) => json_error(
            StatusCode::CONFLICT,
            format!("a hosted topic named {:?} exists", t.name),
        ),
        Err(HostedError::Input(e)) => json_error(StatusCode::BAD_REQUEST, e),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    req: HttpRequest,
    q: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = read(&req, &state) {
        return r;
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let urls = super::hosted::urls(&state);
    match state
        .store
        .hosted
        .hosted_topics(q.after.as_deref(), limit)
        .await
    {
        Ok(topics) => {
            let items: Vec<_> = topics
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "name": t.name,
                        "title": t.title,
                        "topic": urls.atom(&t.name),
                        "created_ms": t.created_ms,
                        "max_entries": t.max_entries,
                        "max_age_ms": t.max_age_ms,
                        "trail": t.trail,
                        "policy": t.policy.as_str(),
                        "allow": t.allow,
                    })
                })
                .collect();
            HttpResponse::Ok().json(items)
        }
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, format!("storage: {e}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveRequest {
    name: String,
    #[serde(default)]
    callback: Option<String>,
    #[serde(default)]
    secret: Option<String>,
}

pub async fn resolve(
    req: HttpRequest,
    bytes: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = act(&req, &state) {
        return r;
    }
    let r: ResolveRequest = match body(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let callback = match r
        .callback
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        Some(c) => match crate::urls::HttpUrl::parse(c) {
            Ok(u) => Some(u.to_string()),
            Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("callback: {e}")),
        },
        None => None,
    };
    match by_name(&state, &r.name, callback.as_deref(), r.secret.as_deref()).await {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(crate::names::NameError::Invalid(n)) => json_error(
            StatusCode::BAD_REQUEST,
            format!("{n:?} is not a name like user@example.org"),
        ),
        Err(e) => json_error(StatusCode::BAD_GATEWAY, e),
    }
}

/// Resolves `name`, and subscribes `callback` to what it names when one is given: shared by
/// the admin API and the status page.
pub(super) async fn by_name(
    state: &AppState,
    name: &str,
    callback: Option<&str>,
    secret: Option<&str>,
) -> Result<serde_json::Value, crate::names::NameError> {
    let client = state.engine.topic_client();
    let policy = state.engine.topic_policy();
    let resolved =
        crate::names::resolve(client, policy, name, state.cfg.webfinger.allow_http).await?;
    let mut v = serde_json::to_value(&resolved).expect("serialisable");
    if let Some(cb) = callback {
        let status = crate::names::subscribe(client, policy, &resolved, cb, secret).await?;
        v["subscribed"] = serde_json::json!({ "callback": cb, "hub_status": status });
    }
    Ok(v)
}
