//! Outbound HTTP: one client for callbacks (verification, denial, delivery; redirects never
//! followed) and one for topic fetches (redirects followed a bounded number of times), each
//! behind the SSRF guard with its own policy. Built on the engine runtime only.

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::config::Config;
use crate::ssrf::{GuardError, GuardedResolver, Policy};

pub const USER_AGENT: &str = concat!("hubcast/", env!("CARGO_PKG_VERSION"));

/// What allows a topic the SSRF guard blocked (said where the refusal is shown or logged).
pub const TOPIC_HINT: &str = "topics at non-global addresses (loopback, private, …) are refused \
                              unless ssrf.topic_allow lists their range (command line: \
                              --allow-cidr)";
/// What allows a callback the SSRF guard blocked.
pub const CALLBACK_HINT: &str = "callbacks at non-global addresses (loopback, private, …) are \
                                 refused unless ssrf.callback_allow lists their range (command \
                                 line: --allow-cidr)";

/// Why an outbound request failed; retries and metrics depend on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    Dns(String),
    Refused,
    Tls(String),
    Blocked(String),
    /// Redirect answered where none is followed.
    Redirect(u16),
    /// A topic fetch gave up on its redirects (too many, or a hop that is not http(s)).
    Redirects(String),
    Status(u16),
    /// 429 or 503 with a `Retry-After` the hub honours.
    Throttled {
        status: u16,
        retry_after: Duration,
    },
    TooLarge,
    /// A topic sent with a `Content-Encoding` the hub does not decode.
    Encoding(String),
    Other(String),
}

impl Failure {
    pub fn class(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Dns(_) => "dns",
            Failure::Refused => "refused",
            Failure::Tls(_) => "tls",
            Failure::Blocked(_) => "blocked",
            Failure::Redirect(_) | Failure::Redirects(_) => "3xx",
            Failure::Status(s) | Failure::Throttled { status: s, .. } if *s < 500 => "4xx",
            Failure::Status(_) | Failure::Throttled { .. } => "5xx",
            Failure::TooLarge => "too-large",
            Failure::Encoding(_) => "encoding",
            Failure::Other(_) => "other",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout => write!(f, "timeout"),
            Failure::Dns(m) => write!(f, "dns: {m}"),
            Failure::Refused => write!(f, "connection refused"),
            Failure::Tls(m) => write!(f, "tls: {m}"),
            Failure::Blocked(m) => write!(f, "{m}"),
            Failure::Redirect(s) => write!(f, "HTTP {s} (redirects are not followed)"),
            Failure::Redirects(m) => write!(f, "redirects: {m}"),
            Failure::Status(s) => write!(f, "HTTP {s}"),
            Failure::Throttled {
                status,
                retry_after,
            } => write!(
                f,
                "HTTP {status} (Retry-After {})",
                humantime::format_duration(*retry_after)
            ),
            Failure::TooLarge => write!(f, "response too large"),
            Failure::Encoding(e) => write!(
                f,
                "Content-Encoding {e:?} is not one the hub decodes ({TOPIC_ENCODINGS})"
            ),
            Failure::Other(m) => write!(f, "{m}"),
        }
    }
}

/// Walks the error's cause chain to classify it.
pub fn classify(err: &reqwest::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(g) = e.downcast_ref::<GuardError>() {
            return match g {
                GuardError::Blocked(_) => Failure::Blocked(g.to_string()),
                GuardError::Dns(m) => Failure::Dns(m.clone()),
            };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return Failure::Refused;
        }
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Failure::Tls(t.to_string());
        }
        source = e.source();
    }
    if err.is_timeout() {
        return Failure::Timeout;
    }
    if err.is_redirect() {
        let why = std::error::Error::source(err).map_or_else(String::new, |e| e.to_string());
        return Failure::Redirects(why);
    }
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        msg.push_str(": ");
        msg.push_str(&e.to_string());
        source = e.source();
    }
    Failure::Other(msg)
}

#[derive(Clone)]
pub struct Clients {
    pub callbacks: reqwest::Client,
    pub topics: reqwest::Client,
    pub callback_policy: Policy,
    pub topic_policy: Policy,
}

impl Clients {
    pub fn build(cfg: &Config) -> Result<Clients, reqwest::Error> {
        let callback_policy = Policy::new(cfg.callback_allow.clone());
        let topic_policy = Policy::new(cfg.topic_allow.clone());
        let base = |policy: &Policy| {
            reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .no_proxy()
                .connect_timeout(cfg.connect_timeout)
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(cfg.per_destination.max(1))
                .tcp_keepalive(Duration::from_secs(60))
                .dns_resolver(std::sync::Arc::new(GuardedResolver::new(policy.clone())))
        };
        // Callbacks' answers are read only for a challenge: no compression offered.
        let callbacks = base(&callback_policy)
            .no_gzip()
            .no_deflate()
            .no_brotli()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let max = cfg.fetch_max_redirects;
        let hop_policy = topic_policy.clone();
        let topics = base(&topic_policy)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > max {
                    attempt.error(format!("more than {max} redirects"))
                } else if let Err(e) = hop_policy.check_literal(attempt.url()) {
                    // Host names are checked by the resolver; literal addresses here.
                    attempt.error(e)
                } else {
                    attempt.follow()
                }
            }))
            .build()?;
        Ok(Clients {
            callbacks,
            topics,
            callback_policy,
            topic_policy,
        })
    }
}

/// The encodings topic fetches offer (`Accept-Encoding`) and decode; the decoded size counts
/// against `fetch.max_bytes`.
pub const TOPIC_ENCODINGS: &str = "gzip, deflate, br";

/// Refuses a topic whose `Content-Encoding` was not decoded (one the hub did not offer).
pub fn check_encoding(resp: &reqwest::Response) -> Result<(), Failure> {
    match resp.headers().get(reqwest::header::CONTENT_ENCODING) {
        None => Ok(()),
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"identity") => Ok(()),
        Some(v) => Err(Failure::Encoding(
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )),
    }
}

/// Reads at most `limit` bytes of a response body.
pub async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, Failure> {
    if resp.content_length().is_some_and(|n| n as usize > limit) {
        return Err(Failure::TooLarge);
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e))? {
        if buf.len() + chunk.len() > limit {
            return Err(Failure::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
