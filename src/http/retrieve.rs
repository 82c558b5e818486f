//! `GET /?hub.mode=retrieve&hub.topic=URL` (compatible with Superfeedr's retrieve): a hosted
//! topic's past entries. `count` (default 10, at most 50), `before` / `after` an entry's id or
//! `seq:N`, `format=atom|json` (by default the topic URL's own format). Entries come newest
//! first; `after` takes the `count` entries just after the cursor, so a client pages forward
//! with the newest number it has seen. Asking below what the topic still keeps is `410 Gone`.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, web};

use super::{AppState, text};
use crate::hosted::{atom, json_feed};
use crate::storage::hosted::{EntryRange, HostedTopic};

pub const DEFAULT_COUNT: usize = 10;
pub const MAX_COUNT: usize = 50;

/// A cursor: `seq:N` or an entry id, as a number.
async fn cursor(
    state: &AppState,
    topic: &HostedTopic,
    param: &str,
    value: &str,
) -> Result<u64, HttpResponse> {
    if let Some(n) = value.strip_prefix("seq:") {
        return n.parse::<u64>().map_err(|_| {
            text(
                StatusCode::BAD_REQUEST,
                format!("{param}: seq:N takes a whole number"),
            )
        });
    }
    match state
        .store
        .hosted
        .hosted_entry_by_id(&topic.name, value)
        .await
    {
        Ok(Some(e)) => Ok(e.seq),
        Ok(None) => Err(text(
            StatusCode::NOT_FOUND,
            format!("{param}: no entry with id {value:?} in this topic (it may be past retention)"),
        )),
        Err(e) => Err(text(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

pub async fn retrieve(pairs: &[(String, String)], state: web::Data<AppState>) -> HttpResponse {
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(topic_url) = get("hub.topic") else {
        return text(StatusCode::BAD_REQUEST, "hub.topic is required");
    };
    let urls = super::hosted::urls(&state);
    let Some((name, json_topic)) = urls.topic_of(topic_url.trim()) else {
        return text(
            StatusCode::NOT_FOUND,
            "retrieve serves topics this hub hosts (/t/NAME); this one is not",
        );
    };
    let topic = match super::hosted::topic_named(&state, name).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let count = match get("count") {
        None => DEFAULT_COUNT,
        Some(c) => match c.parse::<usize>() {
            // Superfeedr's cap: more is answered with the most allowed.
            Ok(n) if n >= 1 => n.min(MAX_COUNT),
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("count must be a whole number from 1 to {MAX_COUNT}"),
                );
            }
        },
    };
    let json = match get("format") {
        None => json_topic,
        Some("atom") => false,
        Some("json") => true,
        Some(f) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("format {f:?} is not atom or json"),
            );
        }
    };
    let before = match get("before") {
        Some(v) => match cursor(&state, &topic, "before", v.trim()).await {
            Ok(n) => Some(n),
            Err(r) => return r,
        },
        None => None,
    };
    let after = match get("after") {
        Some(v) => match cursor(&state, &topic, "after", v.trim()).await {
            Ok(n) => Some(n),
            Err(r) => return r,
        },
        None => None,
    };
    let trail = topic.trail;
    let gone = match (after, before) {
        (Some(a), _) if a.saturating_add(1) < trail => Some(a),
        (None, Some(b)) if trail > 1 && b <= trail => Some(b),
        _ => None,
    };
    if let Some(n) = gone {
        return text(
            StatusCode::GONE,
            format!(
                "entries around seq:{n} are past this topic's retention: history starts at seq:{trail}"
            ),
        );
    }
    let hosted = &state.store.hosted;
    let read = match after {
        Some(a) => hosted
            .hosted_entries(&topic.name, EntryRange::After(a), count)
            .await
            .map(|mut v| {
                v.retain(|e| before.is_none_or(|b| e.seq < b));
                v.reverse();
                v
            }),
        None => {
            hosted
                .hosted_entries(
                    &topic.name,
                    EntryRange::Before(before.unwrap_or(u64::MAX)),
                    count,
                )
                .await
        }
    };
    let entries = match read {
        Ok(e) => e,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let (content_type, body) = if json {
        (
            json_feed::MEDIA_TYPE,
            json_feed::feed(&urls, &topic, &entries, &[], None, None),
        )
    } else {
        (
            atom::MEDIA_TYPE,
            atom::feed(&urls, &topic, &entries, &[], &atom::Paging::default()),
        )
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body(body)
}
