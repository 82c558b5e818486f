//! In-process and deterministic: a sender's datagrams through a seeded shim that drops,
//! duplicates and reorders them, into a receiver's window, with repairs answered from the
//! sender's log after a simulated round trip. Time is simulated (no sleeping).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::datagram::{self, Body};
use super::record;
use super::reorder::{Reorder, ReorderConfig};
use crate::relay::wire::EventLine;
use crate::storage::Event;

const KEY: &[u8] = b"the group's shared key";
const ORIGIN: &str = "hub-sender";
const MAX_EVENT: usize = 64 * 1024;

fn config() -> ReorderConfig {
    ReorderConfig {
        window: 65_536,
        max_bytes: 512 << 20,
        repair_delay: Duration::from_millis(10),
        retry: Duration::from_millis(250),
        retry_max: Duration::from_secs(5),
        max_record: MAX_EVENT + 4096,
        merge_within: 8,
    }
}

/// The sender's log: events numbered 1…n; those whose topic the group carries are multicast.
struct Log {
    events: Vec<Event>,
}

impl Log {
    fn new(n: usize, rng: &mut StdRng) -> Log {
        let events = (1..=n as u64)
            .map(|seq| {
                // Log-uniform sizes from 100 B to 100 KiB.
                let size = (100f64 * 1024f64.powf(rng.random_range(0.0..1.0))) as usize;
                let body: Vec<u8> = (0..size).map(|i| (i as u64 ^ seq) as u8).collect();
                Event {
                    seq,
                    topic: format!("https://t.example/{}", seq % 50),
                    topic_seq: seq,
                    origin: ORIGIN.into(),
                    origin_seq: seq,
                    path: vec![ORIGIN.into()],
                    content_type: "text/plain".into(),
                    body: Bytes::from(body),
                    created_ms: seq,
                }
            })
            .collect();
        Log { events }
    }

    /// The group carries every topic but those ending in 7.
    fn carried(e: &Event) -> bool {
        !e.topic.ends_with('7')
    }

    fn group(&self) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(|e| Log::carried(e))
    }

    /// The datagrams of the whole stream, in sending order, a heartbeat after every 100 events.
    fn datagrams(&self) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut prev = 0;
        for (i, e) in self.group().enumerate() {
            let rec = record::encode(e);
            if rec.len() > MAX_EVENT {
                let body = Body::Announce {
                    seq: e.seq,
                    prev,
                    size: rec.len() as u32,
                    topic: e.topic.clone(),
                };
                out.push(datagram::encode(KEY, ORIGIN, &body));
            } else {
                out.extend(datagram::fragments(KEY, ORIGIN, e.seq, prev, &rec));
            }
            prev = e.seq;
            if i % 100 == 99 {
                out.push(self.heartbeat(prev));
            }
        }
        out
    }

    fn heartbeat(&self, lead: u64) -> Bytes {
        datagram::encode(KEY, ORIGIN, &Body::Heartbeat { lead, trail: 1 })
    }

    /// What `/relay/events?from=&to=` answers: the group's events in the range.
    fn range(&self, from: u64, to: u64) -> Vec<(EventLine, Bytes)> {
        self.group()
            .filter(|e| e.seq >= from && e.seq <= to)
            .map(|e| {
                let mut line = EventLine::of(e);
                line.content = String::new();
                (line, e.body.clone())
            })
            .collect()
    }
}

/// Drops, duplicates and reorders datagrams with a seeded generator.
struct Shim {
    rng: StdRng,
    drop: f64,
    dup: f64,
    reorder: f64,
    /// Held back: (release after this many more datagrams, datagram).
    held: Vec<(usize, Bytes)>,
    dropped: usize,
}

impl Shim {
    fn pass(&mut self, d: Bytes) -> Vec<Bytes> {
        let mut out = Vec::new();
        for h in &mut self.held {
            h.0 = h.0.saturating_sub(1);
        }
        let (due, kept): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|h| h.0 == 0);
        self.held = kept;
        out.extend(due.into_iter().map(|h| h.1));
        if self.rng.random_bool(self.drop) {
            self.dropped += 1;
            return out;
        }
        if self.rng.random_bool(self.reorder) {
            let after = self.rng.random_range(1..=40);
            self.held.push((after, d));
            return out;
        }
        if self.rng.random_bool(self.dup) {
            out.push(d.clone());
        }
        out.push(d);
        out
    }

    fn flush(&mut self) -> Vec<Bytes> {
        self.held.drain(..).map(|h| h.1).collect()
    }
}

/// The receiver's side: datagrams in, repairs out and back after `rtt`.
struct Receiver {
    window: Reorder,
    log_taken: Vec<(EventLine, Bytes)>,
    /// Repairs on their way: (answer due at, from, to).
    repairs: VecDeque<(Instant, u64, u64)>,
    rtt: Duration,
    bad_tags: usize,
}

impl Receiver {
    fn take(&mut self, d: &[u8], now: Instant) {
        match datagram::decode(KEY, d) {
            Ok(d) => {
                self.window.datagram(d.body, now);
            }
            Err(_) => self.bad_tags += 1,
        }
        self.log_taken.extend(self.window.ready());
    }

    fn tick(&mut self, log: &Log, now: Instant) {
        while self.repairs.front().is_some_and(|r| r.0 <= now) {
            let (_, from, to) = self.repairs.pop_front().expect("checked");
            self.window.repaired(from, to, log.range(from, to), now);
            self.log_taken.extend(self.window.ready());
        }
        if self.window.next_due().is_some_and(|at| at <= now) {
            for (from, to) in self.window.due(now) {
                self.repairs.push_back((now + self.rtt, from, to));
            }
        }
    }
}

fn run(seed: u64, n: usize, drop: f64, dup: f64, reorder: f64) -> (Receiver, Log, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let log = Log::new(n, &mut rng);
    let mut shim = Shim {
        rng: StdRng::seed_from_u64(seed ^ 0x5eed),
        drop,
        dup,
        reorder,
        held: Vec::new(),
        dropped: 0,
    };
    let start = Instant::now();
    let mut rx = Receiver {
        window: Reorder::new(config(), 0),
        log_taken: Vec::new(),
        repairs: VecDeque::new(),
        rtt: Duration::from_millis(2),
        bad_tags: 0,
    };
    // 20 µs between datagrams (about 70 MB/s of 1,408-byte datagrams).
    let mut now = start;
    for d in log.datagrams() {
        now += Duration::from_micros(20);
        for out in shim.pass(d) {
            rx.take(&out, now);
        }
        rx.tick(&log, now);
    }
    for d in shim.flush() {
        rx.take(&d, now);
    }
    // Heartbeats every 100 ms until the receiver holds the lead (10 s at most).
    let lead = log.group().last().map_or(0, |e| e.seq);
    for _ in 0..100 {
        if rx.window.cursor() >= lead {
            break;
        }
        let beat = log.heartbeat(lead);
        for out in shim.pass(beat) {
            rx.take(&out, now);
        }
        for _ in 0..100 {
            now += Duration::from_millis(1);
            rx.tick(&log, now);
        }
    }
    let dropped = shim.dropped;
    (rx, log, dropped)
}

fn assert_exactly_once_in_order(rx: &Receiver, log: &Log) {
    let want: Vec<u64> = log.group().map(|e| e.seq).collect();
    let got: Vec<u64> = rx.log_taken.iter().map(|(l, _)| l.seq).collect();
    assert_eq!(got.len(), want.len(), "every event of the group, once");
    assert_eq!(got, want, "in order");
    for ((line, body), e) in rx.log_taken.iter().zip(log.group()) {
        assert_eq!(body, &e.body, "event {}", e.seq);
        assert_eq!(
            (line.topic.as_str(), line.origin_seq, line.path.len()),
            (e.topic.as_str(), e.seq, 1)
        );
    }
}

#[test]
fn ten_thousand_events_through_loss_duplication_and_reordering_arrive_once_in_order() {
    let (mut rx, log, dropped) = run(7, 10_000, 0.05, 0.01, 0.03);
    assert_exactly_once_in_order(&rx, &log);
    let c = rx.window.counts();
    assert!(dropped > 1000, "the shim dropped {dropped} datagrams");
    assert!(c.gaps > 100 && c.repaired > 100, "repairs counted: {c:?}");
    assert!(c.duplicates > 100, "duplicates counted: {c:?}");
    assert_eq!(rx.bad_tags, 0);
    let latencies = rx.window.take_latencies();
    assert!(!latencies.is_empty());
    assert!(
        latencies.iter().all(|l| *l < Duration::from_secs(1)),
        "each repair within a second of simulated time"
    );
}

#[test]
fn other_seeds_and_heavier_loss_converge_too() {
    for (seed, drop) in [(1, 0.0), (2, 0.2), (3, 0.5)] {
        let (rx, log, _) = run(seed, 600, drop, 0.02, 0.05);
        assert_exactly_once_in_order(&rx, &log);
    }
}

#[test]
fn a_lost_tail_is_noticed_by_the_heartbeat() {
    let mut rng = StdRng::seed_from_u64(11);
    let log = Log::new(30, &mut rng);
    let mut rx = Receiver {
        window: Reorder::new(config(), 0),
        log_taken: Vec::new(),
        repairs: VecDeque::new(),
        rtt: Duration::from_millis(2),
        bad_tags: 0,
    };
    let mut now = Instant::now();
    let all = log.datagrams();
    // Everything but the last event's datagrams arrives.
    let last = log.group().last().expect("events").seq;
    let mut kept = 0;
    for d in &all {
        let decoded = datagram::decode(KEY, d).expect("tagged");
        let is_last = matches!(decoded.body, Body::Fragment { seq, .. } | Body::Announce { seq, .. } if seq == last);
        if !is_last {
            rx.take(d, now);
            kept += 1;
        }
    }
    assert!(kept < all.len());
    for _ in 0..50 {
        now += Duration::from_millis(1);
        rx.tick(&log, now);
    }
    assert!(
        rx.window.cursor() < last,
        "nothing tells of the last event yet"
    );
    rx.take(&log.heartbeat(last), now);
    for _ in 0..50 {
        now += Duration::from_millis(1);
        rx.tick(&log, now);
    }
    assert_exactly_once_in_order(&rx, &log);
    // A forged datagram (another key) is refused before it is read.
    rx.take(
        &datagram::encode(
            b"not the key",
            ORIGIN,
            &Body::Heartbeat { lead: 99, trail: 1 },
        ),
        now,
    );
    assert_eq!(rx.bad_tags, 1);
    assert_eq!(rx.window.lead(), last);
}

#[test]
fn a_receiver_past_its_window_says_so_and_resumes_after_following_over_http() {
    let mut cfg = config();
    cfg.window = 100;
    let mut w = Reorder::new(cfg, 0);
    let now = Instant::now();
    let beat = Body::Heartbeat {
        lead: 500,
        trail: 1,
    };
    assert_eq!(w.datagram(beat, now), super::reorder::Taken::Beyond);
    assert!(w.behind());
    w.resume(500, now);
    assert!(!w.behind());
    assert_eq!(w.cursor(), 500);
}

#[test]
fn the_byte_budget_bounds_what_is_held_and_a_reset_forgets_it() {
    let mut cfg = config();
    cfg.max_bytes = 64 * 1024;
    let mut w = Reorder::new(cfg, 0);
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(5);
    let log = Log::new(200, &mut rng);
    // Event 1 never arrives: everything after it is held, until the budget is spent.
    let mut beyond = 0;
    for e in log
        .events
        .iter()
        .skip(1)
        .filter(|e| record::encode(e).len() < MAX_EVENT)
    {
        for d in datagram::fragments(KEY, ORIGIN, e.seq, e.seq - 1, &record::encode(e)) {
            let body = datagram::decode(KEY, &d).expect("tagged").body;
            if w.datagram(body, now) == super::reorder::Taken::Beyond {
                beyond += 1;
            }
        }
    }
    assert!(beyond > 0, "past the budget, datagrams are not held");
    assert!(w.behind(), "and the receiver knows it is behind");
    assert!(w.ready().is_empty(), "nothing follows on without event 1");
    w.reset(150, now);
    assert!(!w.behind());
    assert_eq!(w.cursor(), 150);
}

#[test]
fn an_announced_event_is_asked_for_at_once_then_waits_its_backoff() {
    let mut w = Reorder::new(config(), 0);
    let now = Instant::now();
    let body = Body::Announce {
        seq: 1,
        prev: 0,
        size: 1 << 20,
        topic: "https://t.example/big".into(),
    };
    w.datagram(body, now);
    assert_eq!(w.due(now), vec![(1, 1)], "at once");
    for ms in 1..200 {
        let later = now + Duration::from_millis(ms);
        w.datagram(Body::Heartbeat { lead: 1, trail: 1 }, later);
        assert!(
            w.due(later).is_empty(),
            "not again within the first backoff ({ms} ms)"
        );
    }
    assert_eq!(w.due(now + Duration::from_millis(260)), vec![(1, 1)]);
}

#[test]
fn a_gap_that_grows_after_it_was_asked_for_asks_for_the_rest_after_the_repair_delay() {
    let mut w = Reorder::new(config(), 0);
    let t0 = Instant::now();
    w.datagram(Body::Heartbeat { lead: 3, trail: 1 }, t0);
    let at = |ms| t0 + Duration::from_millis(ms);
    assert!(w.due(at(2)).is_empty(), "not before the repair delay");
    assert_eq!(w.due(at(13)), vec![(1, 3)]);
    // The answer has not come; the group's lead moves on and none of 4..=6 arrives.
    w.datagram(Body::Heartbeat { lead: 6, trail: 1 }, at(20));
    assert!(
        w.due(at(22)).is_empty(),
        "the new numbers wait the repair delay too"
    );
    let again = w.due(at(33));
    assert!(
        again.iter().any(|(from, to)| *from <= 4 && 6 <= *to),
        "4..=6 asked for 10 ms after they were known, not after the 250 ms backoff: {again:?}"
    );
}
