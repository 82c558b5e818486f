//! This hub registering itself as a destination's relay at the hubs of `[[relay.register]]`:
//! `hub.mode=relay` with its endpoint, secret and lease, sent again well before the lease
//! ends. The hub verifies by a `GET` on the endpoint, answered by
//! [`Registrations::verification`]: the challenge is echoed only while one of this hub's own
//! requests awaits it, so nobody else can make this hub the relay of their choosing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::sync::Notify;

use super::shared::Shared;
use crate::config::relay::RegisterConfig;
use crate::ssrf::Policy;

/// How long a request waits for its verification before it is sent again.
const VERIFY_WAIT: Duration = Duration::from_secs(30);
/// Pause after a first failure (doubling, jittered, up to `relay.reconnect_max`).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest answer read from a hub.
const MAX_ANSWER: usize = 4096;

/// One registration as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct RegistrationStatus {
    pub hub: String,
    pub endpoint: String,
    /// `requesting`, `awaiting_verification`, `registered` or `failing`.
    pub state: &'static str,
    /// When the registration was last verified, and the lease granted then.
    pub verified_ms: Option<u64>,
    pub lease_seconds: Option<u64>,
    pub requests: u64,
    pub last_error: Option<String>,
}

struct Entry {
    cfg: RegisterConfig,
    /// The verification token of the registered relay URL.
    token: String,
    status: Mutex<RegistrationStatus>,
    /// Set while a request of this hub awaits its verification.
    awaiting: Mutex<Option<tokio::time::Instant>>,
    verified: Notify,
}

/// The registrations of this hub, shared by their tasks and the HTTP door.
pub struct Registrations {
    entries: Vec<Arc<Entry>>,
}

impl Registrations {
    pub fn new(cfgs: &[RegisterConfig]) -> Registrations {
        let entries = cfgs
            .iter()
            .map(|c| {
                Arc::new(Entry {
                    status: Mutex::new(RegistrationStatus {
                        hub: c.hub.clone(),
                        endpoint: c.endpoint.clone(),
                        state: "requesting",
                        verified_ms: None,
                        lease_seconds: None,
                        requests: 0,
                        last_error: None,
                    }),
                    token: c.token(),
                    cfg: c.clone(),
                    awaiting: Mutex::new(None),
                    verified: Notify::new(),
                })
            })
            .collect();
        Registrations { entries }
    }

    pub fn status(&self) -> Vec<RegistrationStatus> {
        self.entries
            .iter()
            .map(|e| lock(&e.status).clone())
            .collect()
    }

    /// The secret of the `[[relay.register]]` entry whose hub signed `body` with
    /// `signature`, if any: that entry's hub is the batch's origin.
    pub fn signer(&self, body: &[u8], signature: &str) -> Option<&RegisterConfig> {
        self.entries
            .iter()
            .map(|e| &e.cfg)
            .find(|c| crate::signature::verify(signature, c.secret.as_bytes(), body))
    }

    /// Answers a verification of intent carrying `token` (the `hubcast_relay` parameter of
    /// the registered relay URL): `true` (echo the challenge) when the entry with that token
    /// has a `relay` request awaiting it; the registration is then recorded with the lease
    /// granted (never more than asked for). `unrelay` is never echoed: this hub does not send
    /// it.
    pub fn verification(
        &self,
        mode: &str,
        token: &str,
        lease_seconds: Option<u64>,
        now_ms: u64,
    ) -> bool {
        if mode != "relay" {
            return false;
        }
        let now = tokio::time::Instant::now();
        let Some(e) = self
            .entries
            .iter()
            .find(|e| crate::signature::constant_time_eq(e.token.as_bytes(), token.as_bytes()))
        else {
            return false;
        };
        let mut awaiting = lock(&e.awaiting);
        if !awaiting.is_some_and(|since| now.duration_since(since) < VERIFY_WAIT) {
            return false;
        }
        *awaiting = None;
        drop(awaiting);
        let asked = e.cfg.lease_seconds;
        let mut s = lock(&e.status);
        s.state = "registered";
        s.verified_ms = Some(now_ms);
        s.lease_seconds = Some(lease_seconds.unwrap_or(asked).clamp(1, asked));
        s.last_error = None;
        drop(s);
        e.verified.notify_one();
        true
    }

    /// Whether any `[[relay.register]]` entry is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts a task per registration.
pub fn start(shared: &Arc<Shared>, clients: &super::client::Clients, regs: &Arc<Registrations>) {
    for e in &regs.entries {
        shared.tracker.spawn(run(
            shared.clone(),
            clients.topics.clone(),
            clients.topic_policy.clone(),
            e.clone(),
        ));
    }
}

async fn run(shared: Arc<Shared>, client: reqwest::Client, policy: Policy, e: Arc<Entry>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let wait = match register_once(&shared, &client, &policy, &e).await {
            Ok(lease) => {
                backoff = FIRST_BACKOFF;
                // Renewed when two thirds of the lease have passed.
                lease.mul_f64(2.0 / 3.0).max(Duration::from_secs(1))
            }
            Err(why) => {
                tracing::warn!(hub = %e.cfg.hub, endpoint = %e.cfg.endpoint, error = %why,
                    "relay registration failed; trying again");
                let mut s = lock(&e.status);
                s.state = "failing";
                s.last_error = Some(why);
                drop(s);
                let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
                backoff = (backoff * 2).min(shared.cfg.relay.reconnect_max);
                wait
            }
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends the request and waits for its verification; the lease granted.
async fn register_once(
    shared: &Shared,
    client: &reqwest::Client,
    policy: &Policy,
    e: &Entry,
) -> Result<Duration, String> {
    let cfg = &e.cfg;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("hub.mode", "relay")
        .append_pair("hub.callback", cfg.relay_url().as_str())
        .append_pair("hub.secret", &cfg.secret)
        .append_pair("hub.lease_seconds", &cfg.lease_seconds.to_string())
        .finish();
    {
        let mut s = lock(&e.status);
        s.requests += 1;
        if s.state != "registered" {
            s.state = "requesting";
        }
    }
    if let Err(err) = policy.check_literal(cfg.hub_url()) {
        return Err(format!("blocked: {err}"));
    }
    *lock(&e.awaiting) = Some(tokio::time::Instant::now());
    // A verification still counts only for this request.
    let _ = futures_util::FutureExt::now_or_never(e.verified.notified());
    let sent = client
        .post(cfg.hub_url().clone())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .timeout(shared.cfg.delivery_timeout)
        .send()
        .await;
    let answer = match sent {
        Ok(a) => a,
        Err(err) => {
            *lock(&e.awaiting) = None;
            return Err(format!("{}: {err}", super::client::classify(&err)));
        }
    };
    let status = answer.status();
    if !status.is_success() {
        *lock(&e.awaiting) = None;
        let body = answer.bytes().await.unwrap_or_default();
        let body = String::from_utf8_lossy(&body[..body.len().min(MAX_ANSWER)]).into_owned();
        return Err(format!("the hub answered {status}: {}", body.trim()));
    }
    {
        let mut s = lock(&e.status);
        if s.state != "registered" {
            s.state = "awaiting_verification";
        }
    }
    tokio::select! {
        _ = e.verified.notified() => {}
        _ = tokio::time::sleep(VERIFY_WAIT) => {
            *lock(&e.awaiting) = None;
            return Err(format!(
                "the hub accepted the request but did not verify {} within {}s",
                cfg.endpoint,
                VERIFY_WAIT.as_secs()
            ));
        }
        _ = shared.shutdown.cancelled() => return Err("stopping".into()),
    }
    let lease = lock(&e.status).lease_seconds.unwrap_or(cfg.lease_seconds);
    tracing::info!(hub = %cfg.hub, endpoint = %cfg.endpoint, lease, "registered as relay");
    Ok(Duration::from_secs(lease))
}
