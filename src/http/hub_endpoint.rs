//! `POST /`: subscribe, unsubscribe, publish (light and fat pings). `GET /`: the status page
//! (`?hub.topic=URL`: a plain-text report on one topic).

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use url::form_urlencoded;

use super::fat_ping::{AuthError, authenticate};
use super::{AppState, text};
use crate::engine::Work;
use crate::feed::essence;
use crate::storage::{FatContent, Intent, IntentMode, Ping, StorageError};
use crate::websub::{self, HubRequest, SubRequest};

const FORM: &str = "application/x-www-form-urlencoded";

/// The status page (or, for non-admins, a short notice); with `?hub.topic=URL`, that topic's
/// subscriber count and last fetch, as plain text for anyone.
pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let topic = form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "hub.topic")
        .map(|(_, v)| v.into_owned());
    let Some(topic) = topic else {
        return super::status_page::dashboard(req, state).await;
    };
    let Ok(topic) = crate::urls::HttpUrl::parse(&topic) else {
        return text(StatusCode::BAD_REQUEST, "hub.topic is not an http(s) URL");
    };
    let report = async {
        let count = state.store.subs.count_for_topic(topic.as_str()).await?;
        let last = state.store.publish.topic_state(topic.as_str()).await?;
        let last = last
            .map(|s| s.last_result)
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "never".to_owned());
        Ok::<_, StorageError>((count, last))
    };
    match report.await {
        Ok((count, last)) => text(
            StatusCode::OK,
            format!("topic: {topic}\nsubscribers: {count}\nlast fetch: {last}"),
        ),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

pub async fn post(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let is_form = match &content_type {
        Some(ct) => essence(ct) == FORM,
        None => true, // a bare body is read as a form
    };
    // Body parameters first, then the query string: the first value of a key wins.
    let mut pairs: Vec<(String, String)> = Vec::new();
    if is_form {
        pairs.extend(form_urlencoded::parse(&body).into_owned());
    }
    pairs.extend(form_urlencoded::parse(req.query_string().as_bytes()).into_owned());

    let request = match websub::parse(&pairs) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let result = match request {
        HubRequest::Subscribe(s) => subscription(&state, IntentMode::Subscribe, s).await,
        HubRequest::Unsubscribe(s) => subscription(&state, IntentMode::Unsubscribe, s).await,
        HubRequest::Publish(topics) if !is_form && !body.is_empty() => {
            let ct = content_type.unwrap_or_default();
            fat(&state, &req, topics, ct, body).await
        }
        HubRequest::Publish(topics) => light(&state, topics).await,
    };
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "storage failed while accepting a request");
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "5"))
            .content_type("text/plain; charset=utf-8")
            .body("storage unavailable; try again shortly\n")
    })
}

async fn subscription(
    state: &AppState,
    mode: IntentMode,
    s: SubRequest,
) -> Result<HttpResponse, StorageError> {
    let lease_seconds = match mode {
        IntentMode::Subscribe => state.cfg.clamp_lease(s.lease_seconds),
        IntentMode::Unsubscribe => 0,
    };
    let intent = Intent {
        id: state.store.next_id()?,
        mode,
        topic: s.topic.to_string(),
        callback: s.callback.to_string(),
        secret: s.secret,
        lease_seconds,
        created_ms: state.clock.now_ms(),
    };
    state.store.subs.put_intent(intent.clone()).await?;
    state.store.flush().await?;
    state.intake.hand_off(Work::Intent(intent));
    Ok(text(
        StatusCode::ACCEPTED,
        format!(
            "accepted: the hub will verify this {} request",
            mode.as_str()
        ),
    ))
}

async fn light(
    state: &AppState,
    topics: Vec<crate::urls::HttpUrl>,
) -> Result<HttpResponse, StorageError> {
    let now = state.clock.now_ms();
    let mut pings = Vec::new();
    for topic in topics {
        // A topic nobody subscribed to costs one read and nothing more.
        if state.store.subs.count_for_topic(topic.as_str()).await? == 0 {
            continue;
        }
        pings.push(Ping {
            id: state.store.next_id()?,
            topic: topic.to_string(),
            fat: None,
            received_ms: now,
        });
    }
    if !pings.is_empty() {
        state.store.publish.put_pings(pings.clone()).await?;
        state.store.flush().await?;
        for p in pings {
            state.intake.hand_off(Work::Ping(p));
        }
    }
    Ok(text(
        StatusCode::ACCEPTED,
        "accepted: the hub will fetch the topic",
    ))
}

async fn fat(
    state: &AppState,
    req: &HttpRequest,
    topics: Vec<crate::urls::HttpUrl>,
    content_type: String,
    body: web::Bytes,
) -> Result<HttpResponse, StorageError> {
    let [topic] = topics.as_slice() else {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            "a fat ping names exactly one topic in hub.url",
        ));
    };
    match authenticate(&state.cfg.publishers, topic.as_str(), req, &body) {
        Ok(p) => tracing::debug!(publisher = %p.name, %topic, "fat ping authenticated"),
        Err(AuthError::Missing) => {
            return Ok(HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"hubcast\""))
                .content_type("text/plain; charset=utf-8")
                .body("a fat ping needs X-Hub-Signature or Authorization: Bearer\n"));
        }
        Err(AuthError::Refused(why)) => return Ok(text(StatusCode::FORBIDDEN, why)),
    }
    let ping = Ping {
        id: state.store.next_id()?,
        topic: topic.to_string(),
        fat: Some(FatContent {
            content_type,
            body: body.to_vec(),
        }),
        received_ms: state.clock.now_ms(),
    };
    state.store.publish.put_pings(vec![ping.clone()]).await?;
    state.store.flush().await?;
    state.intake.hand_off(Work::Ping(ping));
    Ok(text(
        StatusCode::ACCEPTED,
        "accepted: the content will be distributed",
    ))
}
