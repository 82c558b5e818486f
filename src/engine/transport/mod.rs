//! Transports: how one delivery reaches one endpoint, chosen by the endpoint's scheme. The
//! signed HTTP POST of W3C WebSub ([`http::HttpTransport`]) serves `http:` and `https:`
//! callbacks; a relay batch, a mail message or a news article plug in here as further
//! transports, with their own endpoint schemes, and share everything before the send: the
//! planner, the destination windows, retries and dead letters.

pub mod http;
pub mod lean;

use std::sync::Arc;

use async_trait::async_trait;

use super::deliver::{Outcome, Prepared};
use crate::storage::Subscription;

#[async_trait]
pub trait Transport: Send + Sync {
    /// The endpoint schemes this transport serves, lower case, without the colon.
    fn schemes(&self) -> &'static [&'static str];

    /// Sends `p` to the subscription's endpoint and classifies the answer. Each transport
    /// keeps its own checks (address policy, size, authentication).
    async fn send(&self, p: &Prepared, sub: &Subscription) -> Outcome;
}

/// The transports of a hub, by scheme (a handful: a list beats a map).
#[derive(Clone, Default)]
pub struct Transports {
    by_scheme: Vec<(&'static str, Arc<dyn Transport>)>,
}

impl Transports {
    /// A hub's transports: the signed POST for `http`/`https`, and mail for `mailto` when
    /// `[smtp]` is on.
    pub fn of_hub(
        cfg: &crate::config::Config,
        lean: Arc<lean::LeanClient>,
        policy: &crate::ssrf::Policy,
        mail: &Option<Arc<crate::mail::smtp::MailSender>>,
    ) -> Transports {
        let mut all: Vec<Arc<dyn Transport>> = vec![Arc::new(http::HttpTransport::new(
            lean,
            policy.clone(),
            cfg.delivery_timeout,
            cfg.signature,
        ))];
        if let Some(sender) = mail {
            all.push(Arc::new(crate::mail::smtp::MailTransport {
                sender: sender.clone(),
            }));
        }
        Transports::new(all)
    }

    pub fn new(all: Vec<Arc<dyn Transport>>) -> Transports {
        let by_scheme = all
            .iter()
            .flat_map(|t| t.schemes().iter().map(move |s| (*s, t.clone())))
            .collect();
        Transports { by_scheme }
    }

    /// The transport for an endpoint (`scheme:…`), if the hub has one. Called per delivery:
    /// no allocation.
    pub fn for_endpoint(&self, endpoint: &str) -> Option<&Arc<dyn Transport>> {
        let scheme = endpoint.split_once(':')?.0;
        self.by_scheme
            .iter()
            .find(|(s, _)| s.eq_ignore_ascii_case(scheme))
            .map(|(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static [&'static str], bool);

    #[async_trait]
    impl Transport for Fixed {
        fn schemes(&self) -> &'static [&'static str] {
            self.0
        }
        async fn send(&self, _: &Prepared, _: &Subscription) -> Outcome {
            if self.1 {
                Outcome::Delivered
            } else {
                Outcome::Gone
            }
        }
    }

    #[tokio::test]
    async fn the_endpoint_scheme_chooses_the_transport() {
        let t = Transports::new(vec![
            Arc::new(Fixed(&["http", "https"], true)),
            Arc::new(Fixed(&["mailto"], false)),
        ]);
        let p = Prepared {
            event: 1,
            topic: "http://t/".into(),
            content_type: "text/plain".into(),
            http_headers: None,
            body: bytes::Bytes::new(),
            event_id: "o:1".into(),
            link: String::new(),
            signature: None,
        };
        let sub = |endpoint: &str| Subscription {
            topic: "http://t/".into(),
            callback: endpoint.into(),
            destination: crate::urls::destination_of_endpoint(endpoint),
            secret: None,
            lease_seconds: 1,
            expires_ms: 1,
            created_ms: 1,
        };
        for (endpoint, outcome) in [
            ("https://a.example/cb", Outcome::Delivered),
            ("HTTP://a.example/cb", Outcome::Delivered),
            ("mailto:list@lists.example", Outcome::Gone),
        ] {
            let transport = t.for_endpoint(endpoint).expect(endpoint);
            assert_eq!(transport.send(&p, &sub(endpoint)).await, outcome);
        }
        assert!(t.for_endpoint("news:comp.lang.rust").is_none());
        assert!(t.for_endpoint("no scheme").is_none());
    }
}
