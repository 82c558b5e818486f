//! The event log in PostgreSQL. An append locks the log's head row, takes the next numbers
//! from it and writes events, jobs, topic states, ping removals, cursors and hosted entries in
//! the same transaction: numbers are dense, never reused, and assigned in commit order, so
//! every number up to the head's lead is committed once the head is read.

use std::collections::BTreeMap;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{PgStore, exec, lim, n, rows, to_rec, u};
use crate::storage::*;

/// Most events one retention pass removes (the rest go at the next sweep).
const PRUNE_BATCH: i64 = 5_000;

const EVENT_COLS: &str =
    "seq, topic, topic_seq, origin, origin_seq, path, content_type, body, created_ms";
const SUMMARY_COLS: &str = "seq, topic, topic_seq, origin, origin_seq, path, content_type, length(body)::bigint AS bytes, created_ms";

fn event_of(row: &Row) -> Result<Event> {
    let path: serde_json::Value = row.try_get("path")?;
    let body: Vec<u8> = row.try_get("body")?;
    Ok(Event {
        seq: u(row.try_get("seq")?),
        topic: row.try_get("topic")?,
        topic_seq: u(row.try_get("topic_seq")?),
        origin: row.try_get("origin")?,
        origin_seq: u(row.try_get("origin_seq")?),
        path: serde_json::from_value(path).map_err(|e| StorageError::Corrupt(e.to_string()))?,
        content_type: row.try_get("content_type")?,
        body: bytes::Bytes::from(body),
        created_ms: u(row.try_get("created_ms")?),
    })
}

fn summary_of(row: &Row) -> Result<EventSummary> {
    let path: serde_json::Value = row.try_get("path")?;
    let e = Event {
        seq: u(row.try_get("seq")?),
        topic: row.try_get("topic")?,
        topic_seq: u(row.try_get("topic_seq")?),
        origin: row.try_get("origin")?,
        origin_seq: u(row.try_get("origin_seq")?),
        path: serde_json::from_value(path).map_err(|e| StorageError::Corrupt(e.to_string()))?,
        content_type: row.try_get("content_type")?,
        body: bytes::Bytes::new(),
        created_ms: u(row.try_get("created_ms")?),
    };
    let mut s = e.summary();
    s.bytes = row.try_get::<_, i64>("bytes")? as usize;
    Ok(s)
}

/// Inserts (or replaces) one event in `table` (`events` or `docs`).
pub(super) async fn insert_event<C: GenericClient>(c: &C, table: &str, e: &Event) -> Result<()> {
    let sql = format!(
        "INSERT INTO {table} ({EVENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (seq) DO UPDATE SET topic = excluded.topic, topic_seq = excluded.topic_seq,
           origin = excluded.origin, origin_seq = excluded.origin_seq, path = excluded.path,
           content_type = excluded.content_type, body = excluded.body, created_ms = excluded.created_ms"
    );
    exec(
        c,
        &sql,
        &[
            &n(e.seq),
            &e.topic,
            &n(e.topic_seq),
            &e.origin,
            &n(e.origin_seq),
            &to_rec(&e.path),
            &e.content_type,
            &e.body.as_ref(),
            &n(e.created_ms),
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl EventLog for PgStore {
    fn hub_id(&self) -> String {
        self.hub_id.clone()
    }

    fn hub_key(&self) -> Vec<u8> {
        self.hub_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn restore_hub_key(&self, key: Vec<u8>) -> Result<()> {
        self.exec("UPDATE meta SET v = $1 WHERE k = 'hub_key'", &[&key])
            .await?;
        *self.hub_key.lock().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }

    async fn append(&self, commits: &[Commit]) -> Result<Vec<Option<Event>>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Rows every append may touch are locked in one order (topics sorted), so that two
        // nodes appending at once wait for each other instead of deadlocking.
        let mut order: Vec<usize> = (0..commits.len()).collect();
        order.sort_by(|a, b| commits[*a].topic.cmp(&commits[*b].topic));
        for &i in &order {
            if let Some(state) = &commits[i].state {
                exec(
                    &tx,
                    super::subs::UPSERT_STATE,
                    &[&commits[i].topic, &to_rec(state)],
                )
                .await?;
            }
        }
        let pings: Vec<i64> = commits
            .iter()
            .flat_map(|c| c.ping_ids.iter().map(|id| n(*id)))
            .collect();
        if !pings.is_empty() {
            exec(&tx, "DELETE FROM pings WHERE id = ANY($1)", &[&pings]).await?;
        }
        for c in commits {
            if let Some((consumer, seq)) = &c.cursor {
                exec(
                    &tx,
                    "INSERT INTO cursors (consumer, seq) VALUES ($1, $2)
                     ON CONFLICT (consumer) DO UPDATE SET seq = excluded.seq",
                    &[consumer, &n(*seq)],
                )
                .await?;
            }
        }
        // Each topic's numbers: its events in this append, counted, then taken at once.
        let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
        for c in commits.iter().filter(|c| c.event.is_some()) {
            *per_topic.entry(c.topic.as_str()).or_default() += 1;
        }
        let mut next_topic_seq: BTreeMap<&str, u64> = BTreeMap::new();
        for (topic, k) in &per_topic {
            let r = rows(
                &tx,
                "INSERT INTO topic_seqs (topic, last) VALUES ($1, $2)
                 ON CONFLICT (topic) DO UPDATE SET last = topic_seqs.last + $3 RETURNING last",
                &[topic, &n(*k), &(*k as i64)],
            )
            .await?;
            let last = u(r[0].get(0));
            next_topic_seq.insert(topic, last - k + 1);
        }
        let count = per_topic.values().sum::<u64>();
        let mut out = Vec::with_capacity(commits.len());
        if count == 0 {
            tx.commit().await?;
            return Ok(commits.iter().map(|_| None).collect());
        }
        let bytes: u64 = commits
            .iter()
            .filter_map(|c| c.event.as_ref())
            .map(|e| e.body.len() as u64)
            .sum();
        // The head's row lock is held from here to the commit: appends take turns.
        let r = rows(
            &tx,
            "UPDATE log_head SET lead = lead + $1, events = events + $1, bytes = bytes + $2
             WHERE id = 1 RETURNING lead",
            &[&(count as i64), &(bytes as i64)],
        )
        .await?;
        let mut seq = u(r[0].get(0)) - count + 1;
        let mut cols = EventColumns::default();
        let (mut job_events, mut job_dests, mut job_topics) = (Vec::new(), Vec::new(), Vec::new());
        for c in commits {
            let Some(ev) = c.event.clone() else {
                out.push(None);
                continue;
            };
            let ts = next_topic_seq.get_mut(c.topic.as_str()).expect("counted");
            let event = ev.stored(seq, &c.topic, *ts, &self.hub_id);
            *ts += 1;
            seq += 1;
            for d in &c.destinations {
                job_events.push(n(event.seq));
                job_dests.push(d.clone());
                job_topics.push(c.topic.clone());
            }
            if let Some(w) = &c.hosted {
                super::hosted::apply(&tx, w).await?;
            }
            cols.push(&event);
            out.push(Some(event));
        }
        cols.insert(&tx).await?;
        if !job_events.is_empty() {
            exec(
                &tx,
                "INSERT INTO jobs (event, destination, topic)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])
                 ON CONFLICT (event, destination) DO NOTHING",
                &[&job_events, &job_dests, &job_topics],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn bounds(&self) -> Result<LogBounds> {
        let r = self
            .rows(
                "SELECT lead, events, bytes, (SELECT min(seq) FROM events) AS trail
                 FROM log_head WHERE id = 1",
                &[],
            )
            .await?;
        let lead = u(r[0].get("lead"));
        let trail: Option<i64> = r[0].get("trail");
        Ok(LogBounds {
            trail: trail.map(u).unwrap_or(lead + 1),
            lead,
            events: r[0].get::<_, i64>("events") as u64,
            bytes: r[0].get::<_, i64>("bytes") as u64,
        })
    }

    async fn read(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Event>> {
        let r = self.range(EVENT_COLS, from, to, limit).await?;
        r.iter().map(event_of).collect()
    }

    async fn summaries(&self, from: u64, to: u64, limit: usize) -> Result<Vec<EventSummary>> {
        let r = self.range(SUMMARY_COLS, from, to, limit).await?;
        r.iter().map(summary_of).collect()
    }

    async fn event(&self, seq: u64) -> Result<Option<Event>> {
        let r = self
            .rows(
                &format!(
                    "(SELECT {EVENT_COLS} FROM events WHERE seq = $1)
                     UNION ALL (SELECT {EVENT_COLS} FROM docs WHERE seq = $1) LIMIT 1"
                ),
                &[&n(seq)],
            )
            .await?;
        r.first().map(event_of).transpose()
    }

    async fn recent_for_topic(
        &self,
        topic: &str,
        limit: usize,
        scan: usize,
    ) -> Result<Vec<EventSummary>> {
        let r = self
            .rows(
                &format!(
                    "SELECT {SUMMARY_COLS} FROM
                       (SELECT * FROM events ORDER BY seq DESC LIMIT $2) e
                     WHERE topic = $1 ORDER BY seq DESC LIMIT $3"
                ),
                &[&topic, &lim(scan), &lim(limit)],
            )
            .await?;
        r.iter().map(summary_of).collect()
    }

    async fn prune(
        &self,
        retention: Retention,
        now_ms: u64,
        up_to: u64,
        collect: &[u64],
    ) -> Result<(u64, Vec<u64>)> {
        let mut c = self.client().await?;
        let head = rows(&c, "SELECT bytes FROM log_head WHERE id = 1", &[]).await?;
        let mut kept_bytes = head[0].get::<_, i64>(0) as u64;
        let oldest = rows(
            &c,
            "SELECT seq, created_ms, length(body)::bigint FROM events WHERE seq <= $1
             ORDER BY seq LIMIT $2",
            &[&n(up_to), &PRUNE_BATCH],
        )
        .await?;
        let mut gone = Vec::new();
        for r in &oldest {
            let created = u(r.get(1));
            if !retention.drops(created, now_ms, kept_bytes) {
                break;
            }
            kept_bytes = kept_bytes.saturating_sub(r.get::<_, i64>(2) as u64);
            gone.push(r.get::<_, i64>(0));
        }
        let mut pruned = 0;
        if !gone.is_empty() {
            let tx = c.transaction().await?;
            // Removed here, kept as delivery documents where a job, retry or dead letter still
            // refers to them. Another node pruning at once removes each event once.
            let r = rows(
                &tx,
                "WITH gone AS (DELETE FROM events WHERE seq = ANY($1) RETURNING *),
                 kept AS (INSERT INTO docs SELECT * FROM gone g
                          WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.event = g.seq)
                             OR EXISTS (SELECT 1 FROM retries r WHERE r.event = g.seq)
                             OR EXISTS (SELECT 1 FROM dead_letters d WHERE d.event = g.seq)
                          ON CONFLICT (seq) DO NOTHING RETURNING seq)
                 SELECT count(*), coalesce(sum(length(body)), 0)::bigint,
                        (SELECT count(*) FROM kept) FROM gone",
                &[&gone],
            )
            .await?;
            let count: i64 = r[0].get(0);
            let bytes: i64 = r[0].get(1);
            exec(
                &tx,
                "UPDATE log_head SET events = greatest(events - $1, 0), bytes = greatest(bytes - $2, 0)
                 WHERE id = 1",
                &[&count, &bytes],
            )
            .await?;
            tx.commit().await?;
            pruned = count as u64;
        }
        let unreferenced = rows(
            &c,
            "SELECT seq FROM docs d
             WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.event = d.seq)
               AND NOT EXISTS (SELECT 1 FROM retries r WHERE r.event = d.seq)
               AND NOT EXISTS (SELECT 1 FROM dead_letters x WHERE x.event = d.seq)
             ORDER BY seq LIMIT 10000",
            &[],
        )
        .await?;
        let mut remove = Vec::new();
        let mut left = Vec::new();
        for r in &unreferenced {
            let seq = u(r.get(0));
            if collect.contains(&seq) {
                remove.push(n(seq));
            } else {
                left.push(seq);
            }
        }
        if !remove.is_empty() {
            exec(&c, "DELETE FROM docs WHERE seq = ANY($1)", &[&remove]).await?;
        }
        Ok((pruned, left))
    }

    async fn cursor(&self, consumer: &str) -> Result<Option<u64>> {
        let r = self
            .rows("SELECT seq FROM cursors WHERE consumer = $1", &[&consumer])
            .await?;
        Ok(r.first().map(|r| u(r.get(0))))
    }

    async fn put_cursor(&self, consumer: &str, seq: u64) -> Result<()> {
        self.exec(
            "INSERT INTO cursors (consumer, seq) VALUES ($1, $2)
             ON CONFLICT (consumer) DO UPDATE SET seq = excluded.seq",
            &[&consumer, &n(seq)],
        )
        .await?;
        Ok(())
    }

    async fn documents(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let r = self
            .rows(
                &format!("SELECT {EVENT_COLS} FROM docs WHERE seq > $1 ORDER BY seq LIMIT $2"),
                &[&n(after), &lim(limit)],
            )
            .await?;
        r.iter().map(event_of).collect()
    }

    async fn restore(&self, event: Event, document: bool) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if document {
            insert_event(&tx, "docs", &event).await?;
            tx.commit().await?;
            return Ok(());
        }
        let old = rows(
            &tx,
            "SELECT length(body)::bigint FROM events WHERE seq = $1",
            &[&n(event.seq)],
        )
        .await?;
        let (added, old_bytes) = match old.first() {
            Some(r) => (0i64, r.get::<_, i64>(0)),
            None => (1i64, 0),
        };
        insert_event(&tx, "events", &event).await?;
        exec(
            &tx,
            "UPDATE log_head SET lead = greatest(lead, $1), events = events + $2,
               bytes = bytes + $3 WHERE id = 1",
            &[
                &n(event.seq),
                &added,
                &(event.body.len() as i64 - old_bytes),
            ],
        )
        .await?;
        exec(
            &tx,
            "INSERT INTO topic_seqs (topic, last) VALUES ($1, $2)
             ON CONFLICT (topic) DO UPDATE SET last = greatest(topic_seqs.last, excluded.last)",
            &[&event.topic, &n(event.topic_seq)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl PgStore {
    /// The rows (`cols`) of the log's events with `from <= seq < to`, in order, at most `limit`.
    async fn range(&self, cols: &str, from: u64, to: u64, limit: usize) -> Result<Vec<Row>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let sql =
            format!("SELECT {cols} FROM events WHERE seq >= $1 AND seq < $2 ORDER BY seq LIMIT $3");
        self.rows(&sql, &[&n(from), &n(to), &lim(limit)]).await
    }
}

/// Events of one append, as column arrays: inserted with one statement.
#[derive(Default)]
struct EventColumns {
    seq: Vec<i64>,
    topic: Vec<String>,
    topic_seq: Vec<i64>,
    origin: Vec<String>,
    origin_seq: Vec<i64>,
    path: Vec<serde_json::Value>,
    content_type: Vec<String>,
    body: Vec<Vec<u8>>,
    created_ms: Vec<i64>,
}

impl EventColumns {
    fn push(&mut self, e: &Event) {
        self.seq.push(n(e.seq));
        self.topic.push(e.topic.clone());
        self.topic_seq.push(n(e.topic_seq));
        self.origin.push(e.origin.clone());
        self.origin_seq.push(n(e.origin_seq));
        self.path.push(to_rec(&e.path));
        self.content_type.push(e.content_type.clone());
        self.body.push(e.body.to_vec());
        self.created_ms.push(n(e.created_ms));
    }

    async fn insert<C: GenericClient>(&self, c: &C) -> Result<()> {
        exec(
            c,
            &format!(
                "INSERT INTO events ({EVENT_COLS})
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[],
                   $5::bigint[], $6::jsonb[], $7::text[], $8::bytea[], $9::bigint[])"
            ),
            &[
                &self.seq,
                &self.topic,
                &self.topic_seq,
                &self.origin,
                &self.origin_seq,
                &self.path,
                &self.content_type,
                &self.body,
                &self.created_ms,
            ],
        )
        .await?;
        Ok(())
    }
}
