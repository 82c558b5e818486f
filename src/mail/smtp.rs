//! Sending mail through the operator's mail server (the `[smtp]` smarthost), with lettre's
//! pooled SMTP client; and the `mailto:` transport, which turns each delivery of an update to a
//! mail subscriber into one mail per entry. The smarthost is a destination like any other: the
//! dispatcher's window, retries and dead letters apply to it, per recipient domain.

use std::sync::Arc;

use async_trait::async_trait;
use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::outbound::{self, List};
use super::token::{Action, Claim, Signer};
use crate::config::gateways::{LmtpConfig, SmtpConfig};
use crate::engine::client::Failure;
use crate::engine::deliver::{Outcome, Prepared};
use crate::engine::transport::Transport;
use crate::hosted::Urls;
use crate::storage::Subscription;

/// Sends mail through the smarthost.
pub struct MailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    pub smtp: SmtpConfig,
    pub lmtp: LmtpConfig,
    pub urls: Urls,
    pub signer: Signer,
}

impl MailSender {
    pub fn new(smtp: SmtpConfig, lmtp: LmtpConfig, hub_url: &str, key: Vec<u8>) -> MailSender {
        let (host, port) = smtp.smarthost.clone();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(smtp.timeout))
            .build();
        MailSender {
            transport,
            smtp,
            lmtp,
            urls: Urls::new(hub_url),
            signer: Signer::new(key),
        }
    }

    /// Hands one message to the smarthost.
    pub async fn send(&self, from: &str, to: &str, message: &[u8]) -> Result<(), Failure> {
        let from = if from.is_empty() {
            None
        } else {
            Some(
                from.parse()
                    .map_err(|e| Failure::Other(format!("sender {from:?}: {e}")))?,
            )
        };
        let to = to
            .parse()
            .map_err(|e| Failure::Other(format!("recipient {to:?}: {e}")))?;
        let envelope = Envelope::new(from, vec![to]).map_err(|e| Failure::Other(e.to_string()))?;
        self.transport
            .send_raw(&envelope, message)
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }

    /// The list a topic's mail comes from.
    pub fn list(&self, topic: &str, title: Option<&str>, subscriber: &str) -> List {
        let domain = &self.smtp.from_domain;
        let name = self.urls.topic_of(topic).map(|(n, _)| n.to_owned());
        let local = name.clone().unwrap_or_else(|| "hub".into());
        let claim = Claim {
            act: Action::Unsubscribe,
            topic: topic.to_owned(),
            address: subscriber.to_owned(),
            exp: 0,
        };
        List {
            topic: topic.to_owned(),
            title: title
                .map(str::to_owned)
                .or_else(|| name.clone())
                .unwrap_or_else(|| topic.to_owned()),
            address: format!("{local}@{domain}"),
            list_id: format!("{local}.{domain}"),
            unsubscribe_mailto: name.map(|n| format!("{n}+unsubscribe@{}", self.lmtp.domain)),
            unsubscribe_https: format!(
                "{}mail/unsubscribe?t={}",
                self.urls.hub(),
                self.signer.token(&claim)
            ),
            from_domain: domain.clone(),
        }
    }

    /// The envelope sender of a subscriber's mail: `NAME-bounces+TAG@` the LMTP domain, so
    /// bounces come back through the LMTP door naming the subscriber.
    pub fn bounce_address(&self, topic: &str, subscriber: &str) -> String {
        let local = self
            .urls
            .topic_of(topic)
            .map(|(n, _)| n.to_owned())
            .unwrap_or_else(|| "hub".into());
        let tag = self.signer.bounce_tag(topic, subscriber);
        format!("{local}-bounces+{tag}@{}", self.lmtp.domain)
    }

    /// Sends the confirmation of a mail subscription (or of its end).
    pub async fn confirm(
        &self,
        topic: &str,
        address: &str,
        act: Action,
        now_ms: u64,
    ) -> Result<(), Failure> {
        let claim = Claim {
            act,
            topic: topic.to_owned(),
            address: address.to_owned(),
            exp: now_ms + CONFIRM_FOR_MS,
        };
        let link = format!(
            "{}mail/confirm?t={}",
            self.urls.hub(),
            self.signer.token(&claim)
        );
        let list = self.list(topic, None, address);
        let message = outbound::confirmation(
            &list.address,
            address,
            topic,
            act == Action::Subscribe,
            &link,
        )
        .map_err(Failure::Other)?;
        self.send(&self.bounce_address(topic, address), address, &message)
            .await
    }
}

/// How long a confirmation link works: a week.
const CONFIRM_FOR_MS: u64 = 7 * 24 * 3600 * 1000;

fn classify(e: &lettre::transport::smtp::Error) -> Failure {
    if e.is_timeout() {
        return Failure::Timeout;
    }
    if let Some(code) = e.status() {
        let n: u16 = code.to_string().parse().unwrap_or(500);
        return Failure::Status(n);
    }
    let text = e.to_string();
    if text.contains("refused") {
        Failure::Refused
    } else {
        Failure::Other(format!("smtp: {text}"))
    }
}

/// The `mailto:` transport.
pub struct MailTransport {
    pub sender: Arc<MailSender>,
}

#[async_trait]
impl Transport for MailTransport {
    fn schemes(&self) -> &'static [&'static str] {
        &["mailto"]
    }

    async fn send(&self, p: &Prepared, sub: &Subscription) -> Outcome {
        let Some(address) = sub.callback.strip_prefix("mailto:") else {
            return Outcome::Failed(Failure::Other("not a mailto: callback".into()));
        };
        let (title, entries) = crate::feed::entries::entries_of(&p.content_type, &p.body);
        let list = self.sender.list(&p.topic, title.as_deref(), address);
        let from = self.sender.bounce_address(&p.topic, address);
        for e in &entries {
            let message = match outbound::entry_mail(&list, e, address) {
                Ok(m) => m,
                Err(why) => return Outcome::Failed(Failure::Other(why)),
            };
            if let Err(f) = self.sender.send(&from, address, &message).await {
                // Entries sent before are sent again with the retry: their Message-IDs are
                // stable, so the reader's mailbox keeps one copy.
                return Outcome::Failed(f);
            }
        }
        Outcome::Delivered
    }
}
