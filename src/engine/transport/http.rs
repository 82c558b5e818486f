//! The signed HTTP POST of W3C WebSub 7 for `http:` and `https:` callbacks: the content, its
//! `Content-Type`, `Link: <hub>; rel="hub", <topic>; rel="self"` and, when the subscription has
//! a secret, `X-Hub-Signature`. Redirects are never followed; the callback policy is checked
//! on the literal address and again at connect time (after DNS) by the client's resolver.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header;

use super::Transport;
use crate::engine::client::{Failure, classify};
use crate::engine::deliver::{Outcome, Prepared};
use crate::signature::{self, Algorithm};
use crate::ssrf::Policy;
use crate::storage::Subscription;

pub struct HttpTransport {
    /// The callback client: no redirects, SSRF-guarded resolver.
    client: reqwest::Client,
    policy: Policy,
    timeout: Duration,
    algorithm: Algorithm,
}

impl HttpTransport {
    pub fn new(
        client: reqwest::Client,
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
        let mut req = self
            .client
            .post(url)
            .timeout(self.timeout)
            .header(header::CONTENT_TYPE, p.content_type.as_str())
            .header(header::LINK, p.link.as_str())
            .body(p.body.clone());
        if let Some(secret) = &sub.secret {
            let sig = signature::sign(self.algorithm, secret.as_bytes(), &p.body);
            req = req.header("X-Hub-Signature", sig);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                // The answer's body is ignored; dropping the response may close the connection
                // if the subscriber sent a large one, which is its own cost.
                if status.is_success() {
                    Outcome::Delivered
                } else if status == reqwest::StatusCode::GONE {
                    Outcome::Gone
                } else if status.is_redirection() {
                    Outcome::Failed(Failure::Redirect(status.as_u16()))
                } else if let Some(retry_after) = retry_after(&resp) {
                    Outcome::Failed(Failure::Throttled {
                        status: status.as_u16(),
                        retry_after,
                    })
                } else {
                    Outcome::Failed(Failure::Status(status.as_u16()))
                }
            }
            Err(e) => Outcome::Failed(classify(&e)),
        }
    }
}

/// `Retry-After` of a 429 or 503 answer: delay-seconds or an HTTP date.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let status = resp.status().as_u16();
    if status != 429 && status != 503 {
        return None;
    }
    let value = resp
        .headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    parse_retry_after(value, std::time::SystemTime::now())
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
