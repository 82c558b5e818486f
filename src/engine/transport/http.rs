//! The signed HTTP POST of W3C WebSub 7 for `http:` and `https:` callbacks: the content, its
//! `Content-Type`, `Link: <hub>; rel="hub", <topic>; rel="self"` and, when the subscription has
//! a secret, `X-Hub-Signature`, sent by the lean client ([`super::lean`]). Redirects are never
//! followed; the callback policy is checked on the literal address and again at connect time
//! (after DNS).

use std::time::Duration;

use async_trait::async_trait;
use hyper::StatusCode;
use hyper::header::{HeaderName, HeaderValue};

use super::Transport;
use super::lean::LeanClient;
use crate::engine::client::Failure;
use crate::engine::deliver::{Outcome, Prepared};
use crate::signature::Algorithm;
use crate::ssrf::Policy;
use crate::storage::Subscription;

pub struct HttpTransport {
    /// The delivery client: no redirects, policy checked at connect time.
    client: std::sync::Arc<LeanClient>,
    policy: Policy,
    timeout: Duration,
    algorithm: Algorithm,
}

impl HttpTransport {
    pub fn new(
        client: std::sync::Arc<LeanClient>,
        policy: Policy,
        timeout: Duration,
        algorithm: Algorithm,
    ) -> HttpTransport {
        HttpTransport {
            client,
            policy,
            timeout,
            algorithm,
        }
    }
}

#[async_trait]
impl Transport for HttpTransport {
    fn schemes(&self) -> &'static [&'static str] {
        &["http", "https"]
    }

    async fn send(&self, p: &Prepared, sub: &Subscription) -> Outcome {
        let url = match url::Url::parse(&sub.callback) {
            Ok(u) => u,
            Err(e) => return Outcome::Failed(Failure::Other(e.to_string())),
        };
        if let Err(e) = self.policy.check_literal(&url) {
            return Outcome::Failed(Failure::Blocked(e.to_string()));
        }
        let Some(common) = &p.http_headers else {
            let why = "the content type or the Link header is not a valid header value";
            return Outcome::Failed(Failure::Other(why.into()));
        };
        let mut headers = Vec::with_capacity(3);
        headers.extend_from_slice(common);
        if let Some(sig) = p.signature_for(self.algorithm, sub.secret.as_deref()) {
            match HeaderValue::from_str(&sig) {
                Ok(v) => headers.push((HeaderName::from_static("x-hub-signature"), v)),
                Err(_) => return Outcome::Failed(Failure::Other("bad signature header".into())),
            }
        }
        let sent = self.client.post(&url, &headers, p.body.clone());
        let answer = match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(a)) => a,
            Ok(Err(f)) => return Outcome::Failed(f),
            Err(_) => return Outcome::Failed(Failure::Timeout),
        };
        let status = answer.status;
        // The answer's body is read to a bound and ignored.
        if status.is_success() {
            Outcome::Delivered
        } else if status == StatusCode::GONE {
            Outcome::Gone
        } else {
            Outcome::Failed(failure_of(&answer))
        }
    }
}

/// What an answer that is not a success says went wrong.
pub fn failure_of(answer: &super::lean::Answer) -> Failure {
    let status = answer.status;
    if status.is_redirection() {
        Failure::Redirect(status.as_u16())
    } else if let Some(retry_after) = retry_after(status, answer.retry_after.as_deref()) {
        Failure::Throttled {
            status: status.as_u16(),
            retry_after,
        }
    } else {
        Failure::Status(status.as_u16())
    }
}

/// `Retry-After` of a 429 or 503 answer: delay-seconds or an HTTP date.
fn retry_after(status: StatusCode, value: Option<&str>) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    parse_retry_after(value?, std::time::SystemTime::now())
}

pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = httpdate::parse_http_date("Tue, 24 Nov 2026 10:00:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Tue, 24 Nov 2026 10:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Tue, 24 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
