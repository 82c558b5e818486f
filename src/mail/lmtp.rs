//! The LMTP door (RFC 2033): the operator's mail server hands mail for `NAME@domain` to this
//! listener (loopback or a Unix socket), and each recipient's message becomes an entry of the
//! hosted topic NAME. Commands are parsed with smtp-proto (its request and DATA receivers,
//! dot-unstuffing included); the session, its replies and the per-recipient answers are here.
//!
//! Answers after DATA, one per accepted recipient: `250` once the entry and its fan-out are
//! durable (or the same message was stored before: a resend), `451` when the hub cannot store
//! it now (the mail server keeps it queued and retries), `550` for a missing Message-ID or a
//! sender the topic's posting policy refuses, `552` for a message over `lmtp.max_message`.
//! Unknown topics are refused at `RCPT` (`550 5.1.1`).

use std::borrow::Cow;
use std::sync::Arc;

use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver, RequestReceiver};
use smtp_proto::{Error as ProtoError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::message;
use crate::config::gateways::{LmtpConfig, LmtpListen};
use crate::engine::hosted::{Hosted, HostedError, Posted};
use crate::hosted::input::InputError;
use crate::storage::Storage;
use crate::storage::hosted::{EntrySource, PostingPolicy};

/// Recipients one message may have.
const MAX_RECIPIENTS: usize = 100;
/// Bytes read at a time.
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LmtpError {
    #[error("cannot listen for LMTP on {listen} (lmtp.listen): {source}")]
    Bind {
        listen: String,
        source: std::io::Error,
    },
}

/// What the door needs.
pub struct Door {
    pub cfg: LmtpConfig,
    pub hosted: Arc<Hosted>,
    pub store: Storage,
    /// Subscription requests by mail go through the ingest service.
    pub ingest: crate::ingest::Ingest,
    /// Mail out, when on: bounce tags, and how many hard bounces end a subscription.
    pub mail: Option<Arc<crate::mail::smtp::MailSender>>,
}

/// What a recipient address asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rcpt {
    /// `NAME@`: a post to the topic.
    Post(String),
    /// `NAME+subscribe@`, `NAME+unsubscribe@`: the sender's mail subscription.
    Subscription { name: String, subscribe: bool },
    /// `NAME-bounces+TAG@`: a bounce of a mail sent to the subscriber TAG names.
    Bounce { name: String, tag: String },
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// A running LMTP listener.
pub struct Running {
    /// Where it listens (the bound address, for `127.0.0.1:0`).
    pub listen: LmtpListen,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Running {
    /// Stops accepting; sessions in progress finish their current command and close.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        if let LmtpListen::Unix(path) = &self.listen {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds the listener and serves sessions until stopped.
pub async fn start(door: Door) -> Result<Running, LmtpError> {
    let bind_err = |source| LmtpError::Bind {
        listen: door.cfg.listen.to_string(),
        source,
    };
    let (listener, listen) = match &door.cfg.listen {
        LmtpListen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(bind_err)?;
            let bound = l.local_addr().map_err(bind_err)?;
            (Listener::Tcp(l), LmtpListen::Tcp(bound))
        }
        LmtpListen::Unix(path) => {
            // A socket left by a previous run that did not stop cleanly.
            if std::os::unix::net::UnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
            let l = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                .map_err(bind_err)?;
            (Listener::Unix(l), LmtpListen::Unix(path.clone()))
        }
    };
    tracing::info!(listen = %listen, domain = %door.cfg.domain, "LMTP listening");
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let door = Arc::new(door);
    let slots = Arc::new(Semaphore::new(door.cfg.max_connections));
    tracker.spawn(accept_loop(
        listener,
        door,
        slots,
        stop.clone(),
        tracker.clone(),
    ));
    Ok(Running {
        listen,
        stop,
        tracker,
    })
}

async fn accept_loop(
    listener: Listener,
    door: Arc<Door>,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = accept(&listener) => a,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "LMTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let door = door.clone();
        let slot = slots.clone().try_acquire_owned();
        let stop = stop.clone();
        tracker.spawn(async move {
            match (stream, slot) {
                (Stream::Tcp(mut s), Err(_)) => busy(&mut s).await,
                (Stream::Unix(mut s), Err(_)) => busy(&mut s).await,
                (Stream::Tcp(s), Ok(_slot)) => session(&door, s, &stop).await,
                (Stream::Unix(s), Ok(_slot)) => session(&door, s, &stop).await,
            }
        });
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<Stream> {
    match l {
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
    }
}

async fn busy<S: AsyncWrite + Unpin>(s: &mut S) {
    let _ = s
        .write_all(b"421 4.3.2 too many LMTP sessions (lmtp.max_connections); try again later\r\n")
        .await;
}

/// One message's envelope.
#[derive(Default)]
struct Envelope {
    from: Option<String>,
    /// One per accepted recipient.
    to: Vec<Rcpt>,
}

enum State {
    Command,
    Data(DataReceiver, Vec<u8>),
    /// Past `lmtp.max_message`: read to the end and refused.
    Oversized(DummyDataReceiver),
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    door: &Door,
    mut s: S,
    stop: &CancellationToken,
) {
    let domain = door.cfg.domain.clone();
    if s.write_all(format!("220 {domain} LMTP hubcast ready\r\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut requests = RequestReceiver::default();
    let mut state = State::Command;
    let mut greeted = false;
    let mut envelope: Option<Envelope> = None;
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => {
                let _ = s.write_all(b"421 4.3.0 the hub is stopping\r\n").await;
                return;
            }
            r = tokio::time::timeout(door.cfg.idle_timeout, s.read(&mut chunk)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => n,
                Err(_) => {
                    let _ = s.write_all(b"421 4.4.2 idle too long (lmtp.idle_timeout)\r\n").await;
                    return;
                }
            },
        };
        let mut bytes = chunk[..n].iter();
        let mut out = Vec::new();
        loop {
            match &mut state {
                State::Data(data, msg) => {
                    let done = data.ingest(&mut bytes, msg);
                    if done {
                        let msg = std::mem::take(msg);
                        let env = envelope.take().unwrap_or_default();
                        state = State::Command;
                        let replies = if msg.len() > door.cfg.max_message {
                            env.to.iter().map(|_| too_big(door)).collect()
                        } else {
                            deliver_all(door, &env, &msg).await
                        };
                        for reply in replies {
                            out.extend_from_slice(reply.as_bytes());
                        }
                        continue;
                    }
                    if msg.len() > door.cfg.max_message {
                        let State::Data(data, _) = std::mem::replace(&mut state, State::Command)
                        else {
                            unreachable!()
                        };
                        state = State::Oversized(DummyDataReceiver::new_data(&data));
                        continue;
                    }
                    break;
                }
                State::Oversized(dummy) => {
                    if dummy.ingest(&mut bytes) {
                        let env = envelope.take().unwrap_or_default();
                        state = State::Command;
                        for _ in &env.to {
                            out.extend_from_slice(too_big(door).as_bytes());
                        }
                        continue;
                    }
                    break;
                }
                State::Command => {
                    let request = match requests.ingest(&mut bytes) {
                        Ok(r) => r.into_owned(),
                        Err(ProtoError::NeedsMoreData { .. }) => break,
                        Err(e) => {
                            out.extend_from_slice(protocol_error(&e).as_bytes());
                            continue;
                        }
                    };
                    let (reply, next) = command(door, request, &mut greeted, &mut envelope).await;
                    out.extend_from_slice(reply.as_bytes());
                    match next {
                        Next::Go => {}
                        Next::Data => {
                            state = State::Data(DataReceiver::new(), Vec::new());
                        }
                        Next::Quit => {
                            let _ = s.write_all(&out).await;
                            return;
                        }
                    }
                }
            }
        }
        if !out.is_empty() && s.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn too_big(door: &Door) -> String {
    format!(
        "552 5.3.4 the message is larger than {} bytes (lmtp.max_message)\r\n",
        door.cfg.max_message
    )
}

enum Next {
    Go,
    Data,
    Quit,
}

fn protocol_error(e: &ProtoError) -> String {
    match e {
        ProtoError::UnknownCommand => "500 5.5.1 unknown command\r\n".into(),
        ProtoError::ResponseTooLong => "500 5.5.2 line too long\r\n".into(),
        ProtoError::InvalidSenderAddress => "501 5.1.7 bad sender address\r\n".into(),
        ProtoError::InvalidRecipientAddress => "501 5.1.3 bad recipient address\r\n".into(),
        ProtoError::SyntaxError { syntax } => format!("501 5.5.4 syntax: {syntax}\r\n"),
        ProtoError::InvalidParameter { param } => format!("501 5.5.4 bad parameter {param}\r\n"),
        ProtoError::UnsupportedParameter { param } => {
            format!("504 5.5.4 unsupported parameter {param}\r\n")
        }
        other => format!("500 5.5.0 {other:?}\r\n"),
    }
}

async fn command(
    door: &Door,
    request: Request<String>,
    greeted: &mut bool,
    envelope: &mut Option<Envelope>,
) -> (String, Next) {
    let domain = &door.cfg.domain;
    let reply = match request {
        Request::Lhlo { .. } => {
            *greeted = true;
            *envelope = None;
            format!(
                "250-{domain}\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE {}\r\n",
                door.cfg.max_message
            )
        }
        Request::Ehlo { .. } | Request::Helo { .. } => {
            "500 5.5.1 this is LMTP (RFC 2033): greet with LHLO\r\n".into()
        }
        Request::Mail { from } => {
            if !*greeted {
                "503 5.5.1 LHLO first\r\n".into()
            } else if envelope.is_some() {
                "503 5.5.1 one MAIL FROM per message (RSET to start over)\r\n".into()
            } else if from.size > door.cfg.max_message {
                format!(
                    "552 5.3.4 the message is larger than {} bytes (lmtp.max_message)\r\n",
                    door.cfg.max_message
                )
            } else {
                *envelope = Some(Envelope {
                    from: Some(from.address.to_ascii_lowercase()).filter(|a| !a.is_empty()),
                    to: Vec::new(),
                });
                "250 2.1.0 sender ok\r\n".into()
            }
        }
        Request::Rcpt { to } => match envelope {
            None => "503 5.5.1 MAIL FROM first\r\n".into(),
            Some(env) if env.to.len() >= MAX_RECIPIENTS => {
                "452 4.5.3 too many recipients\r\n".into()
            }
            Some(env) => match recipient(door, &to.address).await {
                Ok(name) => {
                    env.to.push(name);
                    "250 2.1.5 recipient ok\r\n".into()
                }
                Err(reply) => reply,
            },
        },
        Request::Data => match envelope {
            Some(env) if !env.to.is_empty() => {
                return (
                    "354 3.0.0 send the message, end with <CRLF>.<CRLF>\r\n".into(),
                    Next::Data,
                );
            }
            _ => "503 5.5.1 no valid recipients\r\n".into(),
        },
        Request::Rset => {
            *envelope = None;
            "250 2.0.0 reset\r\n".into()
        }
        Request::Noop { .. } => "250 2.0.0 ok\r\n".into(),
        Request::Vrfy { .. } => "252 2.1.5 cannot verify, but will try\r\n".into(),
        Request::Quit => return ("221 2.0.0 bye\r\n".into(), Next::Quit),
        other => format!("502 5.5.1 {} is not offered here\r\n", other.name()),
    };
    (reply, Next::Go)
}

/// What a recipient address names, or the refusal.
async fn recipient(door: &Door, address: &str) -> Result<Rcpt, String> {
    let (local, domain) = address
        .rsplit_once('@')
        .ok_or_else(|| format!("550 5.1.3 {address:?} is not an address\r\n"))?;
    if !domain.eq_ignore_ascii_case(&door.cfg.domain) {
        return Err(format!(
            "550 5.1.2 {domain} is not this hub's lists' domain ({})\r\n",
            door.cfg.domain
        ));
    }
    let local = local.to_ascii_lowercase();
    let rcpt = match local.split_once('+') {
        None => Rcpt::Post(local.clone()),
        Some((name, "subscribe")) => Rcpt::Subscription {
            name: name.to_owned(),
            subscribe: true,
        },
        Some((name, "unsubscribe")) => Rcpt::Subscription {
            name: name.to_owned(),
            subscribe: false,
        },
        Some((base, tag)) if base.ends_with("-bounces") && door.mail.is_some() => Rcpt::Bounce {
            name: base.strip_suffix("-bounces").unwrap_or(base).to_owned(),
            tag: tag.to_owned(),
        },
        Some((_, command)) => {
            return Err(format!(
                "550 5.1.1 {local}@{domain}: {command:?} is not a command here (subscribe, unsubscribe)\r\n"
            ));
        }
    };
    let name = match &rcpt {
        Rcpt::Post(n) | Rcpt::Subscription { name: n, .. } | Rcpt::Bounce { name: n, .. } => n,
    };
    if matches!(rcpt, Rcpt::Subscription { .. }) && door.mail.is_none() {
        return Err(
            "550 5.3.3 this hub sends no mail: no mail subscriptions (smtp.enabled)\r\n".into(),
        );
    }
    if name == "hub" && matches!(rcpt, Rcpt::Bounce { .. }) {
        return Ok(rcpt);
    }
    if crate::hosted::valid_name(name).is_err() {
        return Err(format!("550 5.1.1 no list {local}@{domain} here\r\n"));
    }
    match door.store.hosted.hosted(name).await {
        Ok(Some(_)) => Ok(rcpt),
        Ok(None) => Err(format!("550 5.1.1 no list {name}@{domain} here\r\n")),
        Err(e) => {
            tracing::warn!(error = %e, "LMTP recipient lookup failed");
            Err("451 4.3.0 storage unavailable; try again later\r\n".into())
        }
    }
}

/// A mail subscription asked for by mail: confirmed by mail like any other.
async fn subscription_by_mail(
    door: &Door,
    name: &str,
    subscribe: bool,
    from: Option<&str>,
) -> String {
    let Some(address) = from else {
        return "550 5.1.7 no sender address to subscribe\r\n".into();
    };
    let Ok(topic) = crate::urls::HttpUrl::parse(&door.hosted.urls().atom(name)) else {
        return "451 4.3.0 the hub URL is not usable\r\n".into();
    };
    let Ok(address) = crate::websub::mail_address(&format!("mailto:{address}")) else {
        return format!("550 5.1.7 {address:?} is not a mail address\r\n");
    };
    let request = crate::websub::MailRequest {
        topic,
        address: address.clone(),
        subscribe,
    };
    match door.ingest.mail_request(request).await {
        Ok(true) => format!("250 2.0.0 a confirmation mail goes to {address}\r\n"),
        Ok(false) => "550 5.3.3 this hub sends no mail (smtp.enabled)\r\n".into(),
        Err(e) => format!("451 4.3.0 {}\r\n", one_line(&e.to_string())),
    }
}

/// A bounce (a delivery status notification): a hard one counts against the subscriber its
/// tag names, and ends the subscription at `smtp.max_bounces`.
async fn bounce(door: &Door, name: &str, tag: &str, raw: &[u8]) -> String {
    let Some(mail) = &door.mail else {
        return "250 2.0.0 ignored\r\n".into();
    };
    // RFC 3464: the per-recipient Status field; 5.x.x is permanent.
    let text = String::from_utf8_lossy(raw);
    let hard = text.lines().any(|l| {
        l.trim_start()
            .to_ascii_lowercase()
            .starts_with("status: 5.")
    });
    if !hard {
        return "250 2.0.0 bounce noted (not permanent)\r\n".into();
    }
    let _ = name; // the tag alone names the subscription
    let (topic, address) = match door.store.hosted.bounce_tag(tag).await {
        Ok(Some(found)) => found,
        Ok(None) => return "250 2.0.0 bounce for no known subscriber\r\n".into(),
        Err(_) => return "451 4.3.0 storage unavailable; try again later\r\n".into(),
    };
    let callback = format!("mailto:{address}");
    match door.store.subs.get(&topic, &callback).await {
        Ok(Some(_)) => {}
        Ok(None) => return "250 2.0.0 bounce for no current subscriber\r\n".into(),
        Err(_) => return "451 4.3.0 storage unavailable; try again later\r\n".into(),
    }
    let count = match door.store.hosted.note_bounce(&topic, &address).await {
        Ok(n) => n,
        Err(_) => return "451 4.3.0 storage unavailable; try again later\r\n".into(),
    };
    if count >= mail.smtp.max_bounces {
        if door.store.subs.remove(&topic, &callback).await.is_err()
            || door.store.flush().await.is_err()
        {
            return "451 4.3.0 storage unavailable; try again later\r\n".into();
        }
        tracing::info!(%topic, %address, count, "mail subscription ended after hard bounces");
        return format!(
            "250 2.0.0 {} bounced {count} times: unsubscribed\r\n",
            one_line(&address)
        );
    }
    if door.store.flush().await.is_err() {
        return "451 4.3.0 storage unavailable; try again later\r\n".into();
    }
    format!(
        "250 2.0.0 bounce {count} of {} noted\r\n",
        mail.smtp.max_bounces
    )
}

/// One reply per recipient, in order.
async fn deliver_all(door: &Door, env: &Envelope, raw: &[u8]) -> Vec<String> {
    let incoming = message::read(raw);
    let mut replies = Vec::with_capacity(env.to.len());
    for rcpt in &env.to {
        let reply = match (rcpt, &incoming) {
            (Rcpt::Bounce { name, tag }, _) => bounce(door, name, tag, raw).await,
            (Rcpt::Subscription { name, subscribe }, m) => {
                let from = m
                    .as_ref()
                    .ok()
                    .and_then(|m| m.from.as_deref())
                    .or(env.from.as_deref());
                subscription_by_mail(door, name, *subscribe, from).await
            }
            (Rcpt::Post(_), Err(e)) => format!("550 5.6.0 {e}\r\n"),
            (Rcpt::Post(name), Ok(m)) => deliver(door, name, m, env.from.as_deref()).await,
        };
        replies.push(reply);
    }
    replies
}

/// Whether the topic's posting policy lets `from` post.
async fn allowed(door: &Door, name: &str, from: Option<&str>) -> Result<bool, String> {
    let topic = match door.store.hosted.hosted(name).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(format!(
                "550 5.1.1 no list {name}@{} here\r\n",
                door.cfg.domain
            ));
        }
        Err(_) => return Err("451 4.3.0 storage unavailable; try again later\r\n".into()),
    };
    if topic.mirror_of.is_some() {
        return Ok(false);
    }
    let Some(from) = from else {
        return Ok(topic.policy == PostingPolicy::Open);
    };
    Ok(match topic.policy {
        PostingPolicy::Open => true,
        PostingPolicy::AllowList => topic.allow.iter().any(|a| a == from),
        PostingPolicy::Subscribers => {
            let url = door.hosted.urls().atom(name);
            match door.store.subs.get(&url, &format!("mailto:{from}")).await {
                Ok(s) => s.is_some(),
                Err(_) => return Err("451 4.3.0 storage unavailable; try again later\r\n".into()),
            }
        }
    })
}

/// `envelope_from`: the sender the mail server gave, when the message has no From.
async fn deliver(
    door: &Door,
    name: &str,
    m: &message::Incoming,
    envelope_from: Option<&str>,
) -> String {
    let from = m.from.as_deref().or(envelope_from);
    // Loops: a mail this hub sent (to a subscriber that forwards to a list, or to a list
    // subscribed to itself) or any robot's mail does not become an entry again.
    if let Some(auto) = &m.auto_submitted {
        return format!(
            "550 5.7.0 Auto-Submitted: {} mail is not posted (mail loops)\r\n",
            one_line(auto)
        );
    }
    if let (Some(list_id), Some(mail)) = (&m.list_id, &door.mail)
        && list_id.contains(&format!(".{}>", mail.smtp.from_domain))
    {
        return format!(
            "550 5.7.0 {} is a list of this hub: not posted again (mail loops)\r\n",
            one_line(list_id)
        );
    }
    match allowed(door, name, from).await {
        Ok(true) => {}
        Ok(false) => {
            return format!(
                "550 5.7.1 {name}@{} does not take mail from {} (its posting policy)\r\n",
                door.cfg.domain,
                one_line(from.unwrap_or("an unknown sender"))
            );
        }
        Err(reply) => return reply,
    }
    let hosted = &door.hosted;
    let mut taken = hosted
        .take(
            name,
            m.input.clone(),
            message::identity(&m.message_id),
            EntrySource::Mail,
        )
        .await;
    if matches!(taken, Err(HostedError::Taken(_))) {
        // A different message reusing the Message-ID: kept apart, never over the first.
        let apart = message::apart(&m.message_id, &m.content_hash);
        // Its own Message-ID for newsreaders, which keep one article per Message-ID.
        let mut input = m.input.clone();
        input.message_id = None;
        taken = hosted.take(name, input, apart, EntrySource::Mail).await;
    }
    let mid = &m.message_id;
    match taken {
        Ok(Posted::Unchanged(e)) => {
            format!(
                "250 2.0.0 <{mid}> was stored before as seq:{} (not stored again)\r\n",
                e.seq
            )
        }
        Ok(p) => format!("250 2.0.0 <{mid}> stored as seq:{}\r\n", p.entry().seq),
        Err(HostedError::Input(InputError::TooLarge(max))) => format!(
            "552 5.3.4 the message text is larger than {max} bytes (hosted.max_entry_bytes)\r\n"
        ),
        Err(HostedError::Input(e)) => format!("550 5.6.0 {}\r\n", one_line(&e.to_string())),
        Err(HostedError::NoTopic(_)) => {
            format!("550 5.1.1 no list {name}@{} here\r\n", door.cfg.domain)
        }
        Err(e @ (HostedError::Storage(_) | HostedError::Stopping)) => {
            tracing::warn!(error = %e, topic = %name, "mail not stored now; the mail server will retry");
            "451 4.3.0 cannot store the message now; try again later\r\n".into()
        }
        Err(e) => format!("451 4.3.0 {}\r\n", one_line(&e.to_string())),
    }
}

fn one_line(s: &str) -> Cow<'_, str> {
    if s.contains(['\r', '\n']) {
        Cow::Owned(s.replace(['\r', '\n'], " "))
    } else {
        Cow::Borrowed(s)
    }
}
