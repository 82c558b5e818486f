//! `POST /`: subscribe, unsubscribe, publish (light and fat pings). `GET /`: the status page
//! (`?hub.topic=URL`: a plain-text report on one topic; `?hub.mode=retrieve`: a hosted topic's
//! past entries).

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use url::form_urlencoded;

use super::fat_ping::{AuthError, authenticate};
use super::{AppState, text};
use crate::feed::essence;
use crate::ingest::IngestError;
use crate::metrics::Refusal;
use crate::storage::{FatContent, IntentMode, StorageError};
use crate::websub::{self, HubRequest};

const FORM: &str = "application/x-www-form-urlencoded";

/// The status page (or, for non-admins, a short notice); with `?hub.topic=URL`, that topic's
/// subscriber count and last fetch, as plain text for anyone.
pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let pairs = match crate::form::parse(req.query_string().as_bytes()) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    match pairs
        .iter()
        .find(|(k, _)| k == "hub.mode")
        .map(|(_, v)| v.as_str())
    {
        Some("retrieve") => return super::retrieve::retrieve(&pairs, state).await,
        Some(m) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("hub.mode={m} is not answered on GET (retrieve is; the others are POST)"),
            );
        }
        None => {}
    }
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
    let pairs = match parameters(&req, is_form.then_some(&body[..])) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };

    let request = match websub::parse(&pairs) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    if let HubRequest::Publish(topics) = &request {
        let urls = crate::hosted::Urls::new(&state.hub_url);
        if let Some(t) = topics.iter().find(|t| urls.topic_of(t.as_str()).is_some()) {
            return text(
                StatusCode::BAD_REQUEST,
                format!("{t} is a topic this hub hosts: its owner posts entries to it (POST {t})"),
            );
        }
    }
    let light = is_form || body.is_empty();
    if let Some(refused) = over_rate(&state, &req, &request, light) {
        return refused;
    }
    let ingest = &state.ingest;
    let result = match request {
        HubRequest::Subscribe(s) => ingest
            .subscription(IntentMode::Subscribe, s)
            .await
            .map(|()| accepted("the hub will verify this subscribe request")),
        HubRequest::Unsubscribe(s) => ingest
            .subscription(IntentMode::Unsubscribe, s)
            .await
            .map(|()| accepted("the hub will verify this unsubscribe request")),
        HubRequest::Mail(m) => {
            let mode = if m.subscribe {
                "subscription"
            } else {
                "unsubscription"
            };
            match ingest.mail_request(m).await {
                Ok(true) => Ok(accepted(&format!(
                    "a mail with a confirmation link goes to the address; the {mode} takes effect when it is followed"
                ))),
                Ok(false) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "this hub sends no mail: mailto: callbacks need smtp.enabled",
                    );
                }
                Err(e) => Err(e),
            }
        }
        HubRequest::Relay(r) => ingest
            .relay(IntentMode::Relay, r)
            .await
            .map(|()| accepted("the hub will verify this relay registration")),
        HubRequest::Unrelay(r) => ingest
            .relay(IntentMode::Unrelay, r)
            .await
            .map(|()| accepted("the hub will verify the end of this relay registration")),
        HubRequest::Publish(topics) if !is_form && !body.is_empty() => {
            let ct = content_type.unwrap_or_default();
            return fat(&state, &req, topics, ct, body).await;
        }
        HubRequest::Publish(topics) => ingest
            .publish(&topics)
            .await
            .map(|_| accepted("the hub will fetch the topic")),
    };
    result.unwrap_or_else(unavailable)
}

/// The form body's parameters (when it is a form), then the query string's.
fn parameters(
    req: &HttpRequest,
    form_body: Option<&[u8]>,
) -> Result<Vec<(String, String)>, crate::form::FormError> {
    let mut pairs = match form_body {
        Some(body) => crate::form::parse(body)?,
        None => Vec::new(),
    };
    pairs.extend(crate::form::parse(req.query_string().as_bytes())?);
    Ok(pairs)
}

/// `429` when the client is over its rate for this kind of request (subscription requests;
/// light pings, counted per topic; fat pings are authenticated and not limited here).
fn over_rate(
    state: &AppState,
    req: &HttpRequest,
    request: &HubRequest,
    light: bool,
) -> Option<HttpResponse> {
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let client = crate::rate_limit::request_client(
        req.peer_addr()?.ip(),
        forwarded,
        &state.cfg.trusted_proxies,
    );
    let ip = crate::rate_limit::client_key(client);
    let (checked, key, refusal) = match request {
        HubRequest::Subscribe(_)
        | HubRequest::Unsubscribe(_)
        | HubRequest::Mail(_)
        | HubRequest::Relay(_)
        | HubRequest::Unrelay(_) => (
            state.subscribe_rate.check(&ip),
            "limits.subscriptions_per_client",
            Refusal::SubscriptionRate,
        ),
        HubRequest::Publish(topics) if light => (
            state.ping_rate.check_n(&ip, topics.len() as u32),
            "limits.pings_per_client",
            Refusal::PingRate,
        ),
        HubRequest::Publish(_) => return None,
    };
    let wait = checked.err()?;
    state.engine.metrics().refused(refusal);
    Some(too_many(wait, key))
}

/// A client over its rate: when to try again, and which setting says so.
fn too_many(wait: std::time::Duration, key: &str) -> HttpResponse {
    let secs = crate::rate_limit::retry_after_secs(wait);
    HttpResponse::TooManyRequests()
        .insert_header((header::RETRY_AFTER, secs.to_string()))
        .content_type("text/plain; charset=utf-8")
        .body(format!(
            "too many requests from this address ({key}); try again in {secs}s\n"
        ))
}

fn accepted(what: &str) -> HttpResponse {
    text(StatusCode::ACCEPTED, format!("accepted: {what}"))
}

/// The store failed, or the hub could not take the work now: the publisher or subscriber
/// may try again shortly.
pub(super) fn unavailable(e: IngestError) -> HttpResponse {
    match &e {
        IngestError::Storage(_) => {
            tracing::error!(error = %e, "storage failed while accepting a request")
        }
        _ => tracing::warn!(error = %e, "request not accepted now"),
    }
    HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, "5"))
        .content_type("text/plain; charset=utf-8")
        .body(format!("{e}\n"))
}

async fn fat(
    state: &AppState,
    req: &HttpRequest,
    topics: Vec<crate::urls::HttpUrl>,
    content_type: String,
    body: web::Bytes,
) -> HttpResponse {
    let [topic] = topics.as_slice() else {
        return text(
            StatusCode::BAD_REQUEST,
            "a fat ping names exactly one topic in hub.url",
        );
    };
    match authenticate(&state.cfg.publishers, topic.as_str(), req, &body) {
        Ok(p) => tracing::debug!(publisher = %p.name, %topic, "fat ping authenticated"),
        Err(AuthError::Missing) => {
            return HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"hubcast\""))
                .content_type("text/plain; charset=utf-8")
                .body("a fat ping needs X-Hub-Signature or Authorization: Bearer\n");
        }
        Err(AuthError::Refused(why)) => return text(StatusCode::FORBIDDEN, why),
    }
    let content = FatContent {
        content_type,
        body: body.to_vec(),
    };
    match state.ingest.publish_content(topic, content).await {
        Ok(_) => accepted("the content will be distributed"),
        Err(e @ IngestError::Refused(_)) => text(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => unavailable(e),
    }
}
