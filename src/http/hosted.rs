//! Hosted topics over HTTP: `GET /t/{name}` (Atom) and `/t/{name}.json` (JSON Feed), with
//! their RFC 5005 archive pages (`?page=N`); `POST /t/{name}` (the owner posts an Atom entry, a
//! JSON Feed item or form fields); `GET`, `PUT` and `DELETE /t/{name}/{key}` (one entry: its
//! page; a new version; its deletion).

// Early answers are returned as `Err(HttpResponse)`, the usual actix-web shape.
#![allow(clippy::result_large_err)]

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};

use super::{AppState, text};
use crate::engine::hosted::{HostedError, Posted};
use crate::feed::essence;
use crate::hosted::input::{self, EntryInput, InputError};
use crate::hosted::{Urls, atom, json_feed};
use crate::storage::hosted::{EntryRange, HostedEntry, HostedTopic};

/// `404` when hosted topics are off.
pub(super) fn off(state: &AppState) -> Option<HttpResponse> {
    (!state.cfg.hosted.enabled).then(|| {
        text(
            StatusCode::NOT_FOUND,
            "this hub hosts no topics (hosted.enabled is false)",
        )
    })
}

pub(super) fn urls(state: &AppState) -> Urls {
    Urls::new(&state.hub_url)
}

/// The topic, or the answer saying why not.
pub(super) async fn topic_named(state: &AppState, name: &str) -> Result<HostedTopic, HttpResponse> {
    if let Some(off) = off(state) {
        return Err(off);
    }
    if let Err(e) = crate::hosted::valid_name(name) {
        return Err(text(StatusCode::NOT_FOUND, e));
    }
    match state.store.hosted.hosted(name).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(text(
            StatusCode::NOT_FOUND,
            format!("no hosted topic named {name:?}"),
        )),
        Err(e) => Err(text(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

fn page_param(req: &HttpRequest) -> Result<Option<u64>, HttpResponse> {
    let pairs = crate::form::parse(req.query_string().as_bytes())
        .map_err(|e| text(StatusCode::BAD_REQUEST, e))?;
    match pairs.iter().find(|(k, _)| k == "page") {
        None => Ok(None),
        Some((_, v)) => match v.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(text(
                StatusCode::BAD_REQUEST,
                "page must be a whole number from 1",
            )),
        },
    }
}

/// `GET /t/{name}` and `/t/{name}.json`: the newest entries (with a link to the newest
/// archive page), or archive page `?page=N`: the entries numbered `(N-1)×size+1 … N×size`.
pub async fn feed(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (name, json) = match path.strip_suffix(".json") {
        Some(n) => (n.to_owned(), true),
        None => (path.into_inner(), false),
    };
    let topic = match topic_named(&state, &name).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let page = match page_param(&req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match document(&state, &topic, json, page).await {
        Ok(r) => r,
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn document(
    state: &AppState,
    topic: &HostedTopic,
    json: bool,
    page: Option<u64>,
) -> Result<HttpResponse, crate::storage::StorageError> {
    let urls = urls(state);
    let size = state.cfg.hosted.page_size as u64;
    let hosted = &state.store.hosted;
    let newest = hosted.hosted_last(&topic.name).await?;
    // Complete pages: 1 ..= full.
    let full = newest / size;
    let (entries, paging) = match page {
        None => {
            let entries = hosted
                .hosted_entries(&topic.name, EntryRange::Before(u64::MAX), size as usize)
                .await?;
            let prev = (full >= 1 && full * size >= topic.trail)
                .then(|| urls.page(&topic.name, json, full));
            let paging = atom::Paging {
                prev_archive: prev,
                ..atom::Paging::default()
            };
            (entries, paging)
        }
        Some(n) if n > full => {
            return Ok(text(
                StatusCode::NOT_FOUND,
                format!("no archive page {n} yet: the newest complete page is {full}"),
            ));
        }
        Some(n) if n * size < topic.trail => {
            return Ok(text(
                StatusCode::GONE,
                format!(
                    "archive page {n} is past this topic's retention: history starts at seq:{}",
                    topic.trail
                ),
            ));
        }
        Some(n) => {
            let low = (n - 1) * size;
            let entries: Vec<HostedEntry> = hosted
                .hosted_entries(&topic.name, EntryRange::Before(n * size + 1), size as usize)
                .await?
                .into_iter()
                .filter(|e| e.seq > low)
                .collect();
            let prev = (n > 1 && low >= topic.trail).then(|| urls.page(&topic.name, json, n - 1));
            let next = (n < full).then(|| urls.page(&topic.name, json, n + 1));
            let paging = atom::Paging {
                self_url: Some(urls.page(&topic.name, json, n)),
                archive: true,
                prev_archive: prev,
                next_archive: next,
                current: Some(if json {
                    urls.json(&topic.name)
                } else {
                    urls.atom(&topic.name)
                }),
            };
            (entries, paging)
        }
    };
    let link = format!(
        "<{}>; rel=\"hub\", <{}>; rel=\"self\"",
        urls.hub(),
        if json {
            urls.json(&topic.name)
        } else {
            urls.atom(&topic.name)
        }
    );
    let (content_type, body) = if json {
        let body = json_feed::feed(
            &urls,
            topic,
            &entries,
            &[],
            paging.self_url.as_deref(),
            paging.prev_archive.as_deref(),
        );
        (json_feed::MEDIA_TYPE, body)
    } else {
        (
            atom::MEDIA_TYPE,
            atom::feed(&urls, topic, &entries, &[], &paging),
        )
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::LINK, link))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body(body))
}

/// Who may write: `Authorization: Bearer TOKEN`, or `X-Hub-Signature` over the body with the
/// token as the secret. Every credential given must hold. Nobody writes to a mirrored topic.
fn owner(req: &HttpRequest, topic: &HostedTopic, body: &[u8]) -> Result<(), HttpResponse> {
    if let Some(origin) = &topic.mirror_of {
        return Err(text(
            StatusCode::FORBIDDEN,
            format!("this topic mirrors {origin}: its publisher writes it"),
        ));
    }
    let header_str = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let bearer = header_str("authorization").and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("bearer "))
            .map(str::trim)
    });
    let sig = header_str("x-hub-signature");
    if bearer.is_none() && sig.is_none() {
        return Err(HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"hubcast\""))
            .content_type("text/plain; charset=utf-8")
            .body(
                "writing to a hosted topic needs Authorization: Bearer TOKEN or X-Hub-Signature\n",
            ));
    }
    let token_holds = bearer.is_none_or(|t| crate::hosted::token_matches(topic, t));
    let sig_holds = sig.is_none_or(|s| crate::signature::verify(s, topic.token.as_bytes(), body));
    if token_holds && sig_holds {
        Ok(())
    } else {
        Err(text(StatusCode::FORBIDDEN, "credentials do not match"))
    }
}

/// Editing or deleting by key needs the bearer token: a signature covers only the body, so a
/// captured one could be replayed against another key (or, for an empty body, forever).
fn bearer_owner(req: &HttpRequest, topic: &HostedTopic) -> Result<(), HttpResponse> {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        });
    if let Some(token) = bearer {
        return if crate::hosted::token_matches(topic, token.trim()) {
            Ok(())
        } else {
            Err(text(StatusCode::FORBIDDEN, "credentials do not match"))
        };
    }
    Err(HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"hubcast\""))
        .content_type("text/plain; charset=utf-8")
        .body("editing or deleting an entry needs Authorization: Bearer TOKEN\n"))
}

/// The posted body as an entry, by media type.
fn parse_body(req: &HttpRequest, body: &[u8], max: usize) -> Result<EntryInput, HttpResponse> {
    if body.len() > max.saturating_mul(2).max(4096) {
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            InputError::TooLarge(max),
        ));
    }
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(essence)
        .unwrap_or_default();
    let parsed = match ct.as_str() {
        "application/atom+xml" | "application/xml" | "text/xml" => atom::parse_entry(body),
        "application/json" | "application/feed+json" => json_feed::parse_item(body),
        "application/x-www-form-urlencoded" | "" => crate::form::parse(body)
            .map_err(|e| InputError::Invalid(e.to_string()))
            .and_then(|pairs| input::from_form(&pairs)),
        other => Err(InputError::MediaType(other.to_owned())),
    };
    parsed.map_err(input_error)
}

fn input_error(e: InputError) -> HttpResponse {
    let status = match e {
        InputError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        InputError::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        InputError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    text(status, e)
}

fn hosted_error(e: HostedError) -> HttpResponse {
    match e {
        HostedError::NoTopic(_) | HostedError::NoEntry(_) => text(StatusCode::NOT_FOUND, e),
        HostedError::Taken(_) => text(StatusCode::CONFLICT, e),
        HostedError::Input(e) => input_error(e),
        HostedError::Storage(_) | HostedError::Stopping => {
            tracing::warn!(error = %e, "hosted topic write not taken");
            HttpResponse::ServiceUnavailable()
                .insert_header((header::RETRY_AFTER, "5"))
                .content_type("text/plain; charset=utf-8")
                .body(format!("{e}\n"))
        }
    }
}

/// The answer to a write: the entry as JSON, `201` with `Location` when it is new.
fn written(urls: &Urls, name: &str, posted: Posted) -> HttpResponse {
    let (status, e) = match &posted {
        Posted::Created(e) => (StatusCode::CREATED, e),
        Posted::Updated(e) => (StatusCode::OK, e),
        Posted::Unchanged(e) => (StatusCode::OK, e),
    };
    let url = urls.entry(name, &e.key);
    HttpResponse::build(status)
        .insert_header((header::LOCATION, url.clone()))
        .json(serde_json::json!({
            "key": e.key,
            "id": e.id,
            "seq": e.seq,
            "url": url,
            "changed": !matches!(posted, Posted::Unchanged(_)),
        }))
}

/// `POST /t/{name}`: a new entry (or a new version of the entry with the posted id).
pub async fn post(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let topic = match topic_named(&state, &path).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Err(r) = owner(&req, &topic, &body) {
        return r;
    }
    let input = match parse_body(&req, &body, state.cfg.hosted.max_entry_bytes) {
        Ok(i) => i,
        Err(r) => return r,
    };
    match state.ingest.hosted().post(&topic.name, input).await {
        Ok(p) => written(&urls(&state), &topic.name, p),
        Err(e) => hosted_error(e),
    }
}

/// `PUT /t/{name}/{key}`: a new version of the entry.
pub async fn edit(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (name, key) = path.into_inner();
    let topic = match topic_named(&state, &name).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Err(r) = bearer_owner(&req, &topic) {
        return r;
    }
    if let Err(r) = owner(&req, &topic, &body) {
        return r;
    }
    let input = match parse_body(&req, &body, state.cfg.hosted.max_entry_bytes) {
        Ok(i) => i,
        Err(r) => return r,
    };
    match state.ingest.hosted().edit(&name, &key, input).await {
        Ok(p) => written(&urls(&state), &name, p),
        Err(e) => hosted_error(e),
    }
}

/// `DELETE /t/{name}/{key}`.
pub async fn delete(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (name, key) = path.into_inner();
    let topic = match topic_named(&state, &name).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Err(r) = bearer_owner(&req, &topic) {
        return r;
    }
    match state.ingest.hosted().delete(&name, &key).await {
        Ok(_) => HttpResponse::NoContent().finish(),
        Err(e) => hosted_error(e),
    }
}

/// `GET /t/{name}/{key}`: the entry's page (`?format=atom`: its Atom entry document).
pub async fn entry(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (name, key) = path.into_inner();
    let topic = match topic_named(&state, &name).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let e = match state.store.hosted.hosted_entry(&name, &key).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return text(
                StatusCode::NOT_FOUND,
                format!("no entry {key:?} in this topic"),
            );
        }
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let urls = urls(&state);
    if req.query_string() == "format=atom" {
        return HttpResponse::Ok()
            .content_type(atom::ENTRY_MEDIA_TYPE)
            .body(atom::entry_document(&urls, &topic, &e));
    }
    let page = super::profile::entry_page(&urls, &topic, &e);
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:",
        ))
        .body(page)
}
