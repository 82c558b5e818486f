//! A multicast receiver's window (a self-contained state machine, its time given by the
//! caller): fragments reassembled, events handed on in sequence order exactly once, gaps found
//! and their repairs scheduled.
//!
//! Every event carries the number of the event sent to the group before it, so the receiver
//! knows the group's numbers without receiving every one: a gap is a number it was told of
//! (by a later event, or by a heartbeat's lead) and does not hold. A gap is asked for over HTTP
//! once it is `repair_delay` old (a reordered datagram usually fills it first), again after a
//! backoff doubling from `retry` up to `retry_max` while it stays open; adjacent gaps are one
//! request. A repair's answer covers its whole range: the events in it, and the knowledge that
//! the group has no other event there. Events beyond `cursor + window`, or more than
//! `max_bytes` held, mean the receiver has fallen too far behind: the caller follows over HTTP
//! until it has caught up and then [`Reorder::resume`]s.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::datagram::Body;
use super::record;
use crate::relay::wire::EventLine;

#[derive(Debug, Clone)]
pub struct ReorderConfig {
    /// Most events held past the cursor.
    pub window: u64,
    /// Most bytes held (fragments and events) past the cursor.
    pub max_bytes: usize,
    /// A gap's age before it is asked for.
    pub repair_delay: Duration,
    /// First pause before asking for a gap again; doubles up to `retry_max`.
    pub retry: Duration,
    pub retry_max: Duration,
    /// Largest record accepted from fragments.
    pub max_record: usize,
    /// Gaps due together at most this many events apart are asked for in one request.
    pub merge_within: u64,
}

/// What became of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// New: held (or an event completed).
    New,
    /// Already held or handed on.
    Duplicate,
    /// Past the window: the receiver is too far behind.
    Beyond,
    /// Inconsistent with what is held (a size that changed, a record too large or not
    /// decodable): dropped; the event is repaired over HTTP.
    Refused,
}

/// Counts since the receiver started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReorderCounts {
    pub events: u64,
    pub duplicates: u64,
    pub refused: u64,
    /// Gaps noticed (each found once, however many requests it took).
    pub gaps: u64,
    /// Events that came by repair.
    pub repaired: u64,
    pub repair_requests: u64,
}

enum State {
    Partial {
        size: u32,
        parts: Vec<Option<Bytes>>,
        have: usize,
    },
    /// Too large for the group: fetched over HTTP.
    Announced,
    Ready(Box<EventLine>, Bytes),
    /// The end of a repaired range: the group has no event between `prev` and here.
    Nothing,
}

struct Entry {
    prev: u64,
    state: State,
    bytes: usize,
}

struct Gap {
    hi: u64,
    noticed: Instant,
    /// Asked for at least once (a gap a late datagram fills is no repair).
    requested: bool,
    /// The range last asked for: numbers the gap grew to since are asked for after
    /// `repair_delay`, not after the backoff.
    asked: (u64, u64),
    next_request: Instant,
    backoff: Duration,
}

pub struct Reorder {
    cfg: ReorderConfig,
    /// Every event up to here was handed on.
    cursor: u64,
    /// The newest event the group is known to have.
    lead: u64,
    entries: BTreeMap<u64, Entry>,
    bytes: usize,
    gaps: BTreeMap<u64, Gap>,
    counts: ReorderCounts,
    /// Ages of gaps closed since last taken.
    latencies: Vec<Duration>,
    /// Since when datagrams changed what is held without the gaps being looked at.
    changed: Option<Instant>,
    /// When the gaps were last looked at.
    looked: Instant,
    /// The numbers whose entries (or the lead) changed since the gaps were last looked at:
    /// only the gaps around them are looked at again.
    dirty: Option<(u64, u64)>,
    /// A datagram was not held for `max_bytes` (cleared once half the budget is free).
    over_budget: bool,
}

/// Shortest time between two looks for gaps while datagrams keep coming.
pub const LOOK_AGAIN: Duration = Duration::from_millis(2);

impl Reorder {
    /// A window after `cursor` (everything up to it already taken).
    pub fn new(cfg: ReorderConfig, cursor: u64) -> Reorder {
        Reorder {
            cfg,
            cursor,
            lead: cursor,
            entries: BTreeMap::new(),
            bytes: 0,
            gaps: BTreeMap::new(),
            counts: ReorderCounts::default(),
            latencies: Vec::new(),
            changed: None,
            looked: Instant::now(),
            dirty: None,
            over_budget: false,
        }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn lead(&self) -> u64 {
        self.lead
    }

    pub fn counts(&self) -> ReorderCounts {
        self.counts
    }

    /// Too far behind to catch up by repairs: more than the window, or the byte budget, past
    /// the cursor.
    pub fn behind(&self) -> bool {
        self.lead > self.cursor.saturating_add(self.cfg.window) || self.over_budget
    }

    /// Takes a datagram's body (its tag already checked). Gaps are looked at again by
    /// [`Reorder::due`], not here: a datagram costs no walk over what is held.
    pub fn datagram(&mut self, body: Body, now: Instant) -> Taken {
        let lead = self.lead;
        let seq = match &body {
            Body::Heartbeat { .. } => None,
            Body::Announce { seq, .. } | Body::Fragment { seq, .. } => Some(*seq),
        };
        let taken = match body {
            Body::Heartbeat { lead, .. } => {
                self.lead = self.lead.max(lead);
                if self.behind() {
                    Taken::Beyond
                } else {
                    Taken::New
                }
            }
            Body::Announce { seq, prev, .. } => self.hold(
                seq,
                Entry {
                    prev,
                    state: State::Announced,
                    bytes: 0,
                },
            ),
            Body::Fragment {
                seq,
                prev,
                size,
                index,
                count,
                data,
            } => self.fragment(seq, prev, size, index, count, data),
        };
        if let Some(seq) = seq
            && matches!(taken, Taken::New | Taken::Refused)
        {
            self.touch(seq, seq);
        }
        if self.lead > lead {
            self.touch(lead + 1, self.lead);
        }
        if self.dirty.is_some() {
            self.changed.get_or_insert(now);
        }
        taken
    }

    /// Notes that what is held for `lo..=hi` (or the lead) changed.
    fn touch(&mut self, lo: u64, hi: u64) {
        self.dirty = Some(match self.dirty {
            Some((a, b)) => (a.min(lo), b.max(hi)),
            None => (lo, hi),
        });
    }

    fn fragment(
        &mut self,
        seq: u64,
        prev: u64,
        size: u32,
        index: u16,
        count: u16,
        data: Bytes,
    ) -> Taken {
        // `decode` checked count against size and the payload room; this window's own limits.
        let fits = (size as usize) <= self.cfg.max_record && index < count;
        if !fits {
            self.counts.refused += 1;
            return Taken::Refused;
        }
        if seq > self.cursor
            && let Some(entry) = self.entries.get_mut(&seq)
        {
            // A further fragment of an event held in part.
            let State::Partial {
                size: held_size,
                parts,
                have,
            } = &mut entry.state
            else {
                self.counts.duplicates += 1;
                return Taken::Duplicate;
            };
            if *held_size != size || parts.len() != count as usize || entry.prev != prev {
                self.counts.refused += 1;
                return Taken::Refused;
            }
            let slot = &mut parts[index as usize];
            if slot.is_some() {
                self.counts.duplicates += 1;
                return Taken::Duplicate;
            }
            if self.bytes + data.len() > self.cfg.max_bytes {
                self.over_budget = true;
                self.lead = self.lead.max(seq);
                return Taken::Beyond;
            }
            entry.bytes += data.len();
            self.bytes += data.len();
            *slot = Some(data);
            *have += 1;
            return self.complete(seq);
        }
        // Nothing is allocated for a datagram the window does not take.
        if seq <= self.cursor {
            self.counts.duplicates += 1;
            return Taken::Duplicate;
        }
        let bytes = data.len() + count as usize * std::mem::size_of::<Option<Bytes>>();
        if seq > self.cursor.saturating_add(self.cfg.window) {
            self.lead = self.lead.max(seq);
            return Taken::Beyond;
        }
        if self.bytes + bytes > self.cfg.max_bytes {
            self.over_budget = true;
            self.lead = self.lead.max(seq);
            return Taken::Beyond;
        }
        let mut parts = vec![None; count as usize];
        parts[index as usize] = Some(data);
        let entry = Entry {
            prev,
            state: State::Partial {
                size,
                parts,
                have: 1,
            },
            bytes,
        };
        match self.hold(seq, entry) {
            Taken::New => self.complete(seq),
            other => other,
        }
    }

    /// Holds a new entry for `seq`, or says why not.
    fn hold(&mut self, seq: u64, entry: Entry) -> Taken {
        if seq <= self.cursor || self.entries.contains_key(&seq) {
            self.counts.duplicates += 1;
            return Taken::Duplicate;
        }
        if seq > self.cursor.saturating_add(self.cfg.window) {
            self.lead = self.lead.max(seq);
            return Taken::Beyond;
        }
        // The next entry held says the group has nothing between its previous event and
        // itself: an event in there contradicts it (only a key holder can send one).
        if let Some((_, next)) = self.entries.range(seq.saturating_add(1)..).next()
            && next.prev < seq
        {
            self.counts.refused += 1;
            return Taken::Refused;
        }
        self.bytes += entry.bytes;
        self.entries.insert(seq, entry);
        self.lead = self.lead.max(seq);
        Taken::New
    }

    /// Joins an entry's fragments once all are held; a record that does not decode is
    /// dropped (and so repaired).
    fn complete(&mut self, seq: u64) -> Taken {
        let Some(entry) = self.entries.get_mut(&seq) else {
            return Taken::New;
        };
        let State::Partial { size, parts, have } = &mut entry.state else {
            return Taken::New;
        };
        if *have < parts.len() {
            return Taken::New;
        }
        let mut whole = BytesMut::with_capacity(*size as usize);
        for p in parts.iter().flatten() {
            whole.extend_from_slice(p);
        }
        let decoded = if whole.len() == *size as usize {
            record::decode(seq, whole.freeze()).ok()
        } else {
            None
        };
        match decoded {
            Some((line, body)) => {
                entry.state = State::Ready(Box::new(line), body);
                Taken::New
            }
            None => {
                self.bytes -= entry.bytes;
                entry.state = State::Announced;
                entry.bytes = 0;
                self.counts.refused += 1;
                Taken::Refused
            }
        }
    }

    /// A repair's answer: the group's events in `from..=through` (all of them: numbers the
    /// answer does not hold are not the group's). What was held in the range gives way to it.
    pub fn repaired(
        &mut self,
        from: u64,
        through: u64,
        events: Vec<(EventLine, Bytes)>,
        now: Instant,
    ) {
        let from = from.max(self.cursor.saturating_add(1));
        if through < from {
            return;
        }
        // The gaps the answer closes (those datagrams filled meanwhile are no longer open):
        // their age is the repair's latency.
        if self.changed.is_some() {
            self.refresh(now);
        }
        let closed: Vec<Duration> = self
            .gaps
            .range(from..=through)
            .filter(|(_, g)| g.requested)
            .map(|(_, g)| now.saturating_duration_since(g.noticed))
            .collect();
        self.latencies.extend(closed);
        let held: Vec<u64> = self
            .entries
            .range(from..=through)
            .map(|(s, _)| *s)
            .collect();
        let mut had_ready = std::collections::HashSet::new();
        for s in held {
            if let Some(e) = self.entries.remove(&s) {
                self.bytes -= e.bytes;
                if matches!(e.state, State::Ready(..)) {
                    had_ready.insert(s);
                }
            }
        }
        let mut prev = from - 1;
        for (line, body) in events {
            let seq = line.seq;
            if seq < from || seq > through || seq <= prev {
                continue;
            }
            if !had_ready.contains(&seq) {
                self.counts.repaired += 1;
            }
            let bytes = body.len();
            self.bytes += bytes;
            self.entries.insert(
                seq,
                Entry {
                    prev,
                    state: State::Ready(Box::new(line), body),
                    bytes,
                },
            );
            prev = seq;
        }
        if prev < through {
            self.entries.insert(
                through,
                Entry {
                    prev,
                    state: State::Nothing,
                    bytes: 0,
                },
            );
        }
        // The entry after the range follows on from its end.
        if let Some((_, next)) = self.entries.range_mut(through.saturating_add(1)..).next()
            && next.prev >= from - 1
            && next.prev < through
        {
            next.prev = through;
        }
        self.lead = self.lead.max(through);
        self.touch(from, through);
        self.refresh(now);
    }

    /// Hands on the events that follow the cursor without a gap, in order.
    pub fn ready(&mut self) -> Vec<(EventLine, Bytes)> {
        let mut out = Vec::new();
        while let Some(entry) = self.entries.first_entry() {
            let seq = *entry.key();
            let e = entry.get();
            if seq <= self.cursor {
                let e = entry.remove();
                self.bytes -= e.bytes;
                continue;
            }
            if e.prev > self.cursor || !matches!(e.state, State::Ready(..) | State::Nothing) {
                break;
            }
            let e = entry.remove();
            self.bytes -= e.bytes;
            self.cursor = seq;
            if let State::Ready(line, body) = e.state {
                self.counts.events += 1;
                out.push((*line, body));
            }
        }
        self.lead = self.lead.max(self.cursor);
        // Only entries held and complete were handed on: the gaps stay as they are.
        self.budget_freed();
        out
    }

    /// The gaps to ask for now, as ranges `(from, to)`; each is asked for again after its
    /// backoff if still open.
    pub fn due(&mut self, now: Instant) -> Vec<(u64, u64)> {
        if self.changed.is_some() {
            self.refresh(now);
        }
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (lo, g) in self.gaps.iter_mut() {
            if g.next_request <= now {
                g.requested = true;
                g.asked = (*lo, g.hi);
                g.next_request = now + g.backoff;
                g.backoff = (g.backoff * 2).min(self.cfg.retry_max);
                // Gaps a few events apart are one request: the events between come again,
                // which costs less than a request each.
                match out.last_mut() {
                    Some(last) if *lo <= last.1 + 1 + self.cfg.merge_within => last.1 = g.hi,
                    _ => {
                        out.push((*lo, g.hi));
                        self.counts.repair_requests += 1;
                    }
                }
            }
        }
        out
    }

    /// When [`Reorder::due`] is next to be called: when a gap falls due, or a moment after
    /// datagrams changed what is held (gaps are looked for at most every [`LOOK_AGAIN`]).
    pub fn next_due(&self) -> Option<Instant> {
        let looked = self.changed.map(|at| at.max(self.looked + LOOK_AGAIN));
        self.gaps
            .values()
            .map(|g| g.next_request)
            .chain(looked)
            .min()
    }

    /// Ages (from noticed to the answer) of the gaps repairs closed since the last call.
    pub fn take_latencies(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.latencies)
    }

    fn budget_freed(&mut self) {
        if self.bytes <= self.cfg.max_bytes / 2 {
            self.over_budget = false;
        }
    }

    /// Forgets everything held (after falling behind: what was held is fetched over HTTP).
    pub fn reset(&mut self, cursor: u64, now: Instant) {
        self.entries.clear();
        self.bytes = 0;
        self.lead = self.lead.min(cursor.max(self.cursor));
        self.resume(cursor, now);
    }

    /// After following over HTTP up to `cursor`: holds on from there.
    pub fn resume(&mut self, cursor: u64, now: Instant) {
        if cursor > self.cursor {
            self.cursor = cursor;
        }
        // Gaps noticed before are looked at afresh.
        self.gaps.clear();
        let done: Vec<u64> = self
            .entries
            .range(..=self.cursor)
            .map(|(s, _)| *s)
            .collect();
        for s in done {
            if let Some(e) = self.entries.remove(&s) {
                self.bytes -= e.bytes;
            }
        }
        self.budget_freed();
        self.lead = self.lead.max(self.cursor);
        self.touch(0, u64::MAX);
        self.refresh(now);
    }

    /// The gaps in `(start, end]`, found from `start` (held and no gap, or the cursor) on,
    /// up to the first entry held and complete past `past` (or to the lead): numbers the group
    /// is known to have and the receiver does not hold, merged where they touch, each with
    /// whether it is due at once (an announced event). Returns the gaps and `end`.
    fn open_gaps(&self, start: u64, past: u64) -> (Vec<(u64, u64, bool)>, u64) {
        let mut out: Vec<(u64, u64, bool)> = Vec::new();
        let mut push = |lo: u64, hi: u64, urgent: bool| match out.last_mut() {
            Some(last) if last.1 + 1 >= lo => {
                last.1 = last.1.max(hi);
                last.2 |= urgent;
            }
            _ => out.push((lo, hi, urgent)),
        };
        let mut known = start;
        for (&seq, e) in self.entries.range(start.saturating_add(1)..) {
            if e.prev > known {
                push(known.saturating_add(1), e.prev, false);
            }
            match e.state {
                State::Partial { .. } => push(seq, seq, false),
                State::Announced => push(seq, seq, true),
                State::Ready(..) | State::Nothing if seq > past => return (out, seq),
                State::Ready(..) | State::Nothing => {}
            }
            known = seq;
        }
        if self.lead > known {
            push(known.saturating_add(1), self.lead, false);
        }
        (out, u64::MAX)
    }

    /// Brings the gap timers in line with what is held, around what changed since the last
    /// look (a gap never spans an entry held and complete, so those bound the walk): a new gap
    /// is noticed now (an announced event is due at once); a gap that overlaps an older one
    /// keeps its times.
    fn refresh(&mut self, now: Instant) {
        self.changed = None;
        self.looked = now;
        let Some((lo, hi)) = self.dirty.take() else {
            return;
        };
        let start = self
            .entries
            .range(self.cursor.saturating_add(1)..lo.max(self.cursor.saturating_add(1)))
            .rev()
            .find(|(_, e)| matches!(e.state, State::Ready(..) | State::Nothing))
            .map_or(self.cursor, |(s, _)| *s);
        let (open, end) = self.open_gaps(start, hi);
        // The gaps of `(start, end]` as they were, and those the cursor has passed since
        // (filled, then handed on before this look).
        let first = if start == self.cursor {
            0
        } else {
            start.saturating_add(1)
        };
        let before: Vec<u64> = self
            .gaps
            .range(first..)
            .take_while(|(l, _)| **l <= end)
            .map(|(l, _)| *l)
            .collect();
        let mut old: BTreeMap<u64, Gap> = before
            .into_iter()
            .filter_map(|l| self.gaps.remove(&l).map(|g| (l, g)))
            .collect();
        for (lo, hi, urgent) in open {
            let overlapping: Vec<u64> = old
                .range(..=hi)
                .filter(|(_, g)| g.hi >= lo)
                .map(|(l, _)| *l)
                .collect();
            let inherited = overlapping
                .iter()
                .filter_map(|l| old.remove(l))
                .min_by_key(|g| g.noticed);
            let gap = match inherited {
                Some(mut g) => {
                    g.hi = hi;
                    // An announced event is asked for at once, but once asked it waits its
                    // backoff like any gap.
                    if urgent && !g.requested {
                        g.next_request = g.next_request.min(now);
                    }
                    // Grown past what was asked (a later loss next to it, or merged with a
                    // newer gap): the new numbers wait the repair delay, not the backoff.
                    if g.requested && (lo < g.asked.0 || hi > g.asked.1) {
                        g.next_request = g.next_request.min(now + self.cfg.repair_delay);
                    }
                    g
                }
                None => {
                    self.counts.gaps += 1;
                    Gap {
                        hi,
                        noticed: now,
                        requested: false,
                        asked: (1, 0),
                        next_request: if urgent {
                            now
                        } else {
                            now + self.cfg.repair_delay
                        },
                        backoff: self.cfg.retry,
                    }
                }
            };
            self.gaps.insert(lo, gap);
        }
        // Gaps no longer open were filled: by a repair (its latency counted in
        // `repaired`) or by a late datagram (no repair).
        drop(old);
        #[cfg(test)]
        self.check_gaps();
    }

    /// The gaps kept are those a walk over everything held finds.
    #[cfg(test)]
    fn check_gaps(&self) {
        let kept: Vec<(u64, u64)> = self.gaps.iter().map(|(l, g)| (*l, g.hi)).collect();
        let (all, _) = self.open_gaps(self.cursor, u64::MAX);
        let all: Vec<(u64, u64)> = all.into_iter().map(|(l, h, _)| (l, h)).collect();
        assert_eq!(kept, all, "gaps kept and found");
    }
}
