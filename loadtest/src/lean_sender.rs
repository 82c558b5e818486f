//! The leanest multicast sender: events made in memory, sent as the hub's own datagrams at a
//! fixed rate, with an upstream's HTTP side (`/relay/stream` for catching up, `/relay/events`
//! for repairs) served from the same memory. It measures what receivers take, without a
//! sending hub's own intake in the way.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hubcast::multicast::datagram::{self, Body};
use hubcast::multicast::record;
use hubcast::relay::wire::{self, EventLine, Line};
use hubcast::storage::Event;
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The id the sender's datagrams and answers carry.
pub const ORIGIN: &str = "loadtest-lean-sender";

struct Shared {
    /// Each event's stream line.
    lines: Vec<Bytes>,
    /// Each event's datagrams.
    datagrams: Vec<Vec<Bytes>>,
    /// Events sent so far (the lead).
    lead: AtomicU64,
}

pub struct LeanSender {
    pub url: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
    key: Vec<u8>,
    group: SocketAddrV4,
}

type Reply = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

impl LeanSender {
    /// `n` events of `payload` bytes over `topics` topics, made ready to send.
    pub async fn start(
        n: u64,
        payload: usize,
        topics: usize,
        key: &[u8],
        group: SocketAddrV4,
    ) -> anyhow::Result<LeanSender> {
        let mut lines = Vec::with_capacity(n as usize);
        let mut datagrams = Vec::with_capacity(n as usize);
        for seq in 1..=n {
            let e = Event {
                seq,
                topic: format!("http://127.0.0.1:1/lean/{}", seq % topics.max(1) as u64),
                topic_seq: seq,
                origin: ORIGIN.into(),
                origin_seq: seq,
                path: vec![ORIGIN.into()],
                content_type: "text/plain".into(),
                body: Bytes::from(vec![b'x'; payload]),
                created_ms: 1,
            };
            let mut line = Vec::new();
            wire::write(&mut line, &Line::Event(EventLine::of(&e)));
            lines.push(Bytes::from(line));
            datagrams.push(datagram::fragments(
                key,
                ORIGIN,
                seq,
                seq - 1,
                &record::encode(&e),
            ));
        }
        let shared = Arc::new(Shared {
            lines,
            datagrams,
            lead: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?);
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, shared.clone(), stop.clone()));
        let sender = LeanSender {
            url,
            shared,
            stop,
            key: key.to_vec(),
            group,
        };
        sender.beat();
        Ok(sender)
    }

    /// Heartbeats every 100 ms until stopped.
    fn beat(&self) {
        let (shared, stop, key, group) = (
            self.shared.clone(),
            self.stop.clone(),
            self.key.clone(),
            self.group,
        );
        tokio::spawn(async move {
            let Ok(socket) = socket() else { return };
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let lead = shared.lead.load(Ordering::Relaxed);
                let d = datagram::encode(&key, ORIGIN, &Body::Heartbeat { lead, trail: 1 });
                let _ = socket.send_to(&d, SocketAddr::V4(group)).await;
            }
        });
    }

    /// Sends every event at `rate` events per second (in 1 ms steps).
    pub async fn send_all(&self, rate: f64) -> anyhow::Result<()> {
        let socket = socket()?;
        let total = self.shared.lines.len() as u64;
        let start = tokio::time::Instant::now();
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while sent < total {
            tick.tick().await;
            let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
            while sent < due {
                for d in &self.shared.datagrams[sent as usize] {
                    // A full send buffer is waited out. A datagram a firewall rule drops (the
                    // loss phases) is refused with EPERM: lost, as intended, and repaired.
                    if let Err(e) = socket.send_to(d, SocketAddr::V4(self.group)).await
                        && e.kind() != std::io::ErrorKind::PermissionDenied
                    {
                        return Err(e.into());
                    }
                }
                sent += 1;
                self.shared.lead.store(sent, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

fn socket() -> std::io::Result<tokio::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
    s.set_multicast_loop_v4(true)?;
    s.set_multicast_ttl_v4(1)?;
    s.set_send_buffer_size(4 << 20)?;
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s.into())
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let (shared, stop) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (shared, stop) = (shared.clone(), stop.clone());
                async move { Ok::<_, Infallible>(answer(req, &shared, stop)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn param(req: &Request<hyper::body::Incoming>, name: &str) -> Option<u64> {
    url::form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn answer(
    req: Request<hyper::body::Incoming>,
    shared: &Arc<Shared>,
    stop: CancellationToken,
) -> Reply {
    let lead = shared.lead.load(Ordering::Relaxed);
    let reply = Response::builder()
        .header("content-type", wire::MEDIA_TYPE)
        .header(wire::HUB_HEADER, ORIGIN);
    match req.uri().path() {
        "/relay/events" => {
            let (Some(from), Some(to)) = (param(&req, "from"), param(&req, "to")) else {
                return status(400);
            };
            let through = to.min(lead).min(from.saturating_add(9_999));
            let mut body = Vec::new();
            for seq in from.max(1)..=through {
                body.extend_from_slice(&shared.lines[seq as usize - 1]);
            }
            reply
                .header("x-hubcast-through", through.to_string())
                .body(Full::new(Bytes::from(body)).boxed())
                .expect("a response")
        }
        "/relay/stream" => {
            let after = param(&req, "after").unwrap_or(lead);
            let shared = shared.clone();
            let frames = futures_util::stream::unfold(after, move |mut position| {
                let (shared, stop) = (shared.clone(), stop.clone());
                async move {
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                    let lead = shared.lead.load(Ordering::Relaxed);
                    let mut chunk = Vec::new();
                    let until = lead.min(position + 5_000);
                    for seq in position + 1..=until {
                        chunk.extend_from_slice(&shared.lines[seq as usize - 1]);
                    }
                    position = position.max(until);
                    let beat = wire::Beat {
                        lead,
                        trail: 1,
                        position,
                    };
                    wire::write(&mut chunk, &Line::Heartbeat { heartbeat: beat });
                    Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))),
                        position,
                    ))
                }
            });
            reply
                .body(StreamBody::new(frames).boxed())
                .expect("a response")
        }
        _ => status(404),
    }
}

fn status(code: u16) -> Reply {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::new()).boxed())
        .expect("a response")
}
