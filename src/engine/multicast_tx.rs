//! The stream sent over IP multicast (`[multicast]`, `send = true`): each durable event (of
//! `multicast.topics`, when set) as tagged datagrams to the group, on the configured interface
//! only, paced to `multicast.rate`; a heartbeat (the last event sent, the oldest kept) every
//! `multicast.heartbeat`. An event whose record is larger than `multicast.max_event_bytes` is
//! announced, and receivers fetch it over HTTP.

use std::net::{SocketAddr, SocketAddrV4};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use governor::{Quota, RateLimiter};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use super::shared::Shared;
use super::stream::EventStream;
use crate::config::multicast::MulticastConfig;
use crate::multicast::datagram::{self, Body};
use crate::multicast::record;
use crate::storage::Event;

/// Events read from the stream at once.
const BATCH: usize = 256;

/// What the sender did, for operators.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SenderCounts {
    pub group: String,
    pub interface: String,
    /// `sending`, or `failed` when the socket could not be opened.
    pub state: &'static str,
    /// The last event sent to the group.
    pub last_sent: u64,
    pub events: u64,
    /// Events too large for the group, announced for receivers to fetch over HTTP.
    pub announced: u64,
    pub datagrams: u64,
    pub bytes: u64,
    pub heartbeats: u64,
    pub send_errors: u64,
    pub last_error: Option<String>,
}

#[derive(Default)]
pub struct Sender {
    counts: Mutex<SenderCounts>,
}

impl Sender {
    pub fn counts(&self) -> SenderCounts {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut SenderCounts)) {
        f(&mut self.counts.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The sending socket: multicast out of `interface` only, `ttl` hops, looped back to
/// receivers on this machine.
pub fn open(cfg: &MulticastConfig) -> std::io::Result<tokio::net::UdpSocket> {
    let interface = cfg.interface.expect("validated: send needs an interface");
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_multicast_if_v4(&interface)?;
    s.set_multicast_ttl_v4(cfg.ttl)?;
    s.set_multicast_loop_v4(true)?;
    s.set_send_buffer_size(4 << 20)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(interface, 0)).into())?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// Sends the stream until the hub stops.
pub async fn run(shared: Arc<Shared>, stream: Arc<EventStream>, sender: Arc<Sender>) {
    let cfg = shared.cfg.relay.multicast.clone();
    let group = cfg.group.expect("validated: send needs a group");
    let key = cfg.key.clone().expect("validated: send needs a key");
    sender.update(|c| {
        c.group = group.to_string();
        c.interface = cfg.interface.map(|i| i.to_string()).unwrap_or_default();
        c.state = "sending";
    });
    let socket = match open(&cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, group = %group, "the multicast socket could not be opened: nothing is sent (see [multicast])");
            sender.update(|c| {
                c.state = "failed";
                c.last_error = Some(e.to_string());
            });
            return;
        }
    };
    let origin = shared.store.log.hub_id();
    let burst = NonZeroU32::new((64 * 1024).max(datagram::MAX_DATAGRAM as u32)).expect("nonzero");
    let rate = NonZeroU32::new(cfg.rate as u32).expect("validated rate");
    let mut follower = stream.follow(stream.lead());
    // Nothing of the group lies between what receivers hold and the lead at start that a
    // repair cannot bring: the first event sent names it as its previous.
    let last_sent = Arc::new(AtomicU64::new(follower.position()));
    let stop = shared.shutdown.clone();
    tracing::info!(group = %group, interface = ?cfg.interface, ttl = cfg.ttl,
        "sending the stream by multicast");
    let out = Out {
        socket: Arc::new(socket),
        pace: Arc::new(RateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        )),
        sender: sender.clone(),
        group,
    };
    // Heartbeats go out on their own, whatever the events' sending is waiting for.
    let beats = {
        let (out, shared, key, origin, last_sent, stop) = (
            out.clone(),
            shared.clone(),
            key.clone(),
            origin.clone(),
            last_sent.clone(),
            stop.clone(),
        );
        let every = cfg.heartbeat;
        async move {
            let mut beat = tokio::time::interval(every);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = beat.tick() => {}
                }
                let trail = shared
                    .store
                    .log
                    .bounds()
                    .await
                    .map(|b| b.trail)
                    .unwrap_or(0);
                let lead = last_sent.load(Ordering::Relaxed);
                let d = datagram::encode(&key, &origin, &Body::Heartbeat { lead, trail });
                out.send(d).await;
                out.sender.update(|c| c.heartbeats += 1);
            }
        }
    };
    let events = async {
        let mut prev = last_sent.load(Ordering::Relaxed);
        loop {
            let expected = follower.position() + 1;
            let batch = tokio::select! {
                _ = stop.cancelled() => return,
                next = follower.next(BATCH) => match next {
                    Ok(b) if b.is_empty() => return, // the stream closed
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "the stream could not be read for multicast");
                        tokio::time::sleep(cfg.heartbeat).await;
                        continue;
                    }
                },
            };
            // Events pruned before they were sent: receivers are told of the numbers, ask for
            // them, learn the trail and reconcile, as an HTTP follower would.
            if let Some(first) = batch.first()
                && first.event.seq > expected
            {
                prev = prev.max(first.event.seq - 1);
            }
            for c in batch {
                if stop.is_cancelled() {
                    return;
                }
                let e = &c.event;
                if !cfg.topics.is_empty() && !cfg.topics.iter().any(|p| p.covers(&e.topic)) {
                    continue;
                }
                let (datagrams, announced) =
                    datagrams_of(&key, &origin, e, prev, cfg.max_event_bytes);
                for d in datagrams {
                    out.send(d).await;
                }
                prev = e.seq;
                last_sent.store(prev, Ordering::Relaxed);
                sender.update(|c| {
                    c.events += 1;
                    c.announced += u64::from(announced);
                    c.last_sent = prev;
                });
            }
        }
    };
    tokio::select! {
        _ = beats => {}
        _ = events => {}
    }
}

/// Where datagrams go: the socket, paced.
#[derive(Clone)]
struct Out {
    socket: Arc<tokio::net::UdpSocket>,
    pace: Arc<governor::DefaultDirectRateLimiter>,
    sender: Arc<Sender>,
    group: SocketAddrV4,
}

impl Out {
    async fn send(&self, d: Bytes) {
        let n = NonZeroU32::new(d.len() as u32).expect("a datagram is never empty");
        // A datagram is never larger than the burst.
        let _ = self.pace.until_n_ready(n).await;
        match self.socket.send_to(&d, SocketAddr::V4(self.group)).await {
            Ok(_) => self.sender.update(|c| {
                c.datagrams += 1;
                c.bytes += d.len() as u64;
            }),
            Err(e) => self.sender.update(|c| {
                // Receivers repair what was not sent (a firewall's drop is refused here too).
                c.send_errors += 1;
                c.last_error = Some(e.to_string());
            }),
        }
    }
}

/// The datagrams of one event sent after `prev`, and whether it is only announced.
pub fn datagrams_of(
    key: &[u8],
    origin: &str,
    e: &Event,
    prev: u64,
    max_event_bytes: usize,
) -> (Vec<Bytes>, bool) {
    let rec = record::fits(e).then(|| record::encode(e));
    let too_large = rec.as_ref().is_none_or(|r| r.len() > max_event_bytes);
    if too_large {
        let size = rec.as_ref().map_or(e.body.len(), |r| r.len());
        // The topic is for operators only (receivers fetch the event by its number): cut to
        // what one datagram holds.
        let room = datagram::payload_room(origin);
        let mut cut = e.topic.len().min(room);
        while !e.topic.is_char_boundary(cut) {
            cut -= 1;
        }
        let body = Body::Announce {
            seq: e.seq,
            prev,
            size: size.min(u32::MAX as usize) as u32,
            topic: e.topic[..cut].to_owned(),
        };
        return (vec![datagram::encode(key, origin, &body)], true);
    }
    let rec = rec.expect("fits");
    (datagram::fragments(key, origin, e.seq, prev, &rec), false)
}
