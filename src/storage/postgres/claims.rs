//! Claims in PostgreSQL: one row of `leases` per item a node holds, and one per destination
//! server it delivers to. `claim_*` read unleased items with `FOR UPDATE SKIP LOCKED` (two
//! nodes claiming at once skip each other's rows) and lease them in the same transaction;
//! leases are taken with an upsert that only replaces an ended lease (or, for `acquire`, the
//! node's own), so two nodes never both hold an item. A delivery job or retry is only leased
//! with its destination's lease: a destination's window is never multiplied by the nodes.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::delivery::{JOB_COLS, job_of, retry_of};
use super::subs::{PING_COLS, ping_of};
use super::{PgStore, exec, lim, n, rec, rows};
use crate::storage::*;

/// The lease row of an item: its key, and the destination server it delivers to.
pub(super) fn lease_key(k: &WorkKey) -> (String, Option<String>) {
    match k {
        WorkKey::Intent(id) => (format!("i:{}", n(*id)), None),
        WorkKey::Ping(id) => (format!("p:{}", n(*id)), None),
        WorkKey::Job { destination, event } => (
            format!("j:{}:{destination}", n(*event)),
            Some(destination.clone()),
        ),
        WorkKey::Retry(r) => (
            format!(
                "r:{}:{}:{} {}",
                n(r.due_ms),
                n(r.event),
                r.topic,
                r.callback
            ),
            Some(destination_of(&r.callback)),
        ),
        WorkKey::Topic(t) => (format!("t:{t}"), None),
    }
}

fn dest_key(d: &str) -> String {
    format!("d:{d}")
}

/// Takes the destinations' leases for `c.node` where free or its own; returns those taken.
async fn take_destinations<C: GenericClient>(
    tx: &C,
    c: &Claim,
    dests: &BTreeSet<String>,
) -> Result<BTreeSet<String>> {
    if dests.is_empty() {
        return Ok(BTreeSet::new());
    }
    let keys: Vec<String> = dests.iter().map(|d| dest_key(d)).collect();
    let got = rows(
        tx,
        "INSERT INTO leases (k, node, until_ms, dest)
         SELECT x, $2, $3, NULL FROM unnest($1::text[]) AS x ORDER BY x
         ON CONFLICT (k) DO UPDATE SET node = excluded.node, until_ms = excluded.until_ms
           WHERE leases.until_ms < $4 OR leases.node = excluded.node
         RETURNING k",
        &[&keys, &c.node, &n(c.until_ms), &n(c.now_ms)],
    )
    .await?;
    Ok(got
        .iter()
        .map(|r| r.get::<_, String>(0)[2..].to_owned())
        .collect())
}

/// Leases items for `c.node` (sorted by key, so concurrent callers lock rows in one order):
/// free ones, and with `own_too` those it holds now. Returns the keys leased.
async fn take_items<C: GenericClient>(
    tx: &C,
    c: &Claim,
    items: &[(String, Option<String>)],
    own_too: bool,
) -> Result<BTreeSet<String>> {
    if items.is_empty() {
        return Ok(BTreeSet::new());
    }
    let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
    let dests: Vec<Option<&str>> = items.iter().map(|(_, d)| d.as_deref()).collect();
    let got = rows(
        tx,
        "INSERT INTO leases (k, node, until_ms, dest)
         SELECT x.k, $3, $4, x.d FROM unnest($1::text[], $2::text[]) AS x(k, d) ORDER BY x.k
         ON CONFLICT (k) DO UPDATE SET node = excluded.node, until_ms = excluded.until_ms,
           dest = excluded.dest
           WHERE leases.until_ms < $5 OR ($6 AND leases.node = excluded.node)
         RETURNING k",
        &[
            &keys,
            &dests,
            &c.node,
            &n(c.until_ms),
            &n(c.now_ms),
            &own_too,
        ],
    )
    .await?;
    Ok(got.iter().map(|r| r.get(0)).collect())
}

impl PgStore {
    /// Claims rows read by `select` (which locks them `FOR UPDATE SKIP LOCKED`): each item
    /// with a destination only if this node holds (or takes) that destination's lease.
    async fn claim_rows<T>(
        &self,
        c: &Claim,
        select: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        item: impl Fn(&tokio_postgres::Row) -> Result<(T, WorkKey)>,
    ) -> Result<Vec<T>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let found = rows(&tx, select, params).await?;
        let mut items = Vec::with_capacity(found.len());
        for r in &found {
            let (t, key) = item(r)?;
            let (k, dest) = lease_key(&key);
            items.push((t, k, dest));
        }
        let dests: BTreeSet<String> = items.iter().filter_map(|(_, _, d)| d.clone()).collect();
        let held = take_destinations(&tx, c, &dests).await?;
        items.retain(|(_, _, d)| d.as_ref().is_none_or(|d| held.contains(d)));
        let keys: Vec<(String, Option<String>)> = items
            .iter()
            .map(|(_, k, d)| (k.clone(), d.clone()))
            .collect();
        let got = take_items(&tx, c, &keys, false).await?;
        tx.commit().await?;
        Ok(items
            .into_iter()
            .filter(|(_, k, _)| got.contains(k))
            .map(|(t, _, _)| t)
            .collect())
    }
}

#[async_trait]
impl ClaimStore for PgStore {
    async fn claim_intents(&self, c: &Claim, limit: usize) -> Result<Vec<Intent>> {
        self.claim_rows(
            c,
            "SELECT i.rec FROM intents i
             WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.k = 'i:' || i.id AND l.until_ms >= $1)
             ORDER BY i.id LIMIT $2 FOR UPDATE OF i SKIP LOCKED",
            &[&n(c.now_ms), &lim(limit)],
            |r| {
                let i: Intent = rec(r, "rec")?;
                let k = WorkKey::Intent(i.id);
                Ok((i, k))
            },
        )
        .await
    }

    async fn claim_pings(&self, c: &Claim, limit: usize) -> Result<Vec<Ping>> {
        self.claim_rows(
            c,
            &format!(
                "SELECT {PING_COLS} FROM pings p
                 WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.k = 'p:' || p.id AND l.until_ms >= $1)
                 ORDER BY p.id LIMIT $2 FOR UPDATE OF p SKIP LOCKED"
            ),
            &[&n(c.now_ms), &lim(limit)],
            |r| {
                let p = ping_of(r)?;
                let k = WorkKey::Ping(p.id);
                Ok((p, k))
            },
        )
        .await
    }

    async fn claim_topic_pings(
        &self,
        c: &Claim,
        topic: &str,
        received_by: u64,
        limit: usize,
    ) -> Result<Vec<Ping>> {
        self.claim_rows(
            c,
            &format!(
                "SELECT {PING_COLS} FROM pings p
                 WHERE p.topic = $3 AND p.fat_type IS NULL AND p.received_ms <= $4
                   AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.k = 'p:' || p.id AND l.until_ms >= $1)
                 ORDER BY p.topic, p.id LIMIT $2 FOR UPDATE OF p SKIP LOCKED"
            ),
            &[&n(c.now_ms), &lim(limit), &topic, &n(received_by)],
            |r| {
                let p = ping_of(r)?;
                let k = WorkKey::Ping(p.id);
                Ok((p, k))
            },
        )
        .await
    }

    async fn claim_jobs(&self, c: &Claim, up_to: u64, limit: usize) -> Result<Vec<Job>> {
        self.claim_rows(
            c,
            &format!(
                "SELECT {JOB_COLS} FROM jobs j
                 WHERE (j.event <= $1 OR j.event >= $2)
                   AND NOT EXISTS (SELECT 1 FROM leases l
                                   WHERE l.k = 'j:' || j.event || ':' || j.destination AND l.until_ms >= $3)
                   AND NOT EXISTS (SELECT 1 FROM leases d
                                   WHERE d.k = 'd:' || j.destination AND d.until_ms >= $3 AND d.node <> $4)
                 ORDER BY j.event, j.destination LIMIT $5 FOR UPDATE OF j SKIP LOCKED"
            ),
            &[&n(up_to), &n(DELIVERY_DOC), &n(c.now_ms), &c.node, &lim(limit)],
            |r| {
                let j = job_of(r)?;
                let k = WorkKey::job(&j);
                Ok((j, k))
            },
        )
        .await
    }

    async fn claim_due_retries(&self, c: &Claim, limit: usize) -> Result<Vec<Retry>> {
        self.claim_rows(
            c,
            "SELECT r.rec FROM retries r
             WHERE r.due_ms <= $1
               AND NOT EXISTS (SELECT 1 FROM leases l
                               WHERE l.k = 'r:' || r.due_ms || ':' || r.event || ':' || r.topic || ' ' || r.callback
                                 AND l.until_ms >= $1)
               AND NOT EXISTS (SELECT 1 FROM leases d
                               WHERE d.k = 'd:' || (r.rec->>'destination') AND d.until_ms >= $1 AND d.node <> $2)
             ORDER BY r.due_ms, r.event, r.topic, r.callback LIMIT $3 FOR UPDATE OF r SKIP LOCKED",
            &[&n(c.now_ms), &c.node, &lim(limit)],
            |r| {
                let retry = retry_of(r)?;
                let k = WorkKey::retry(&retry);
                Ok((retry, k))
            },
        )
        .await
    }

    async fn release_all(&self, node: &str) -> Result<u64> {
        self.exec("DELETE FROM leases WHERE node = $1", &[&node])
            .await
    }

    async fn acquire(&self, c: &Claim, keys: &[WorkKey]) -> Result<Vec<bool>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let items: Vec<(String, Option<String>)> = keys.iter().map(lease_key).collect();
        let dests: BTreeSet<String> = items.iter().filter_map(|(_, d)| d.clone()).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let held = take_destinations(&tx, c, &dests).await?;
        let allowed: Vec<(String, Option<String>)> = items
            .iter()
            .filter(|(_, d)| d.as_ref().is_none_or(|d| held.contains(d)))
            .cloned()
            .collect();
        let got = take_items(&tx, c, &allowed, true).await?;
        tx.commit().await?;
        Ok(items.iter().map(|(k, _)| got.contains(k)).collect())
    }

    async fn renew(&self, c: &Claim, keys: &[WorkKey]) -> Result<Vec<WorkKey>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let items: HashMap<String, (&WorkKey, Option<String>)> = keys
            .iter()
            .map(|k| {
                let (s, d) = lease_key(k);
                (s, (k, d))
            })
            .collect();
        let names: Vec<&str> = items.keys().map(String::as_str).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let kept = rows(
            &tx,
            "UPDATE leases SET until_ms = $3 WHERE k = ANY($1) AND node = $2 RETURNING k",
            &[&names, &c.node, &n(c.until_ms)],
        )
        .await?;
        let kept: BTreeSet<String> = kept.iter().map(|r| r.get(0)).collect();
        // The destinations of the items kept stay this node's (taken again if another node
        // has not taken them since they ended).
        let dests: BTreeSet<String> = kept
            .iter()
            .filter_map(|k| items.get(k).and_then(|(_, d)| d.clone()))
            .collect();
        take_destinations(&tx, c, &dests).await?;
        tx.commit().await?;
        Ok(keys
            .iter()
            .filter(|k| !kept.contains(&lease_key(k).0))
            .cloned()
            .collect())
    }

    async fn release(&self, node: &str, keys: &[WorkKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = keys.iter().map(|k| lease_key(k).0).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let freed = rows(
            &tx,
            "DELETE FROM leases WHERE k = ANY($1) AND node = $2 RETURNING dest",
            &[&names, &node],
        )
        .await?;
        let dests: BTreeSet<String> = freed.iter().filter_map(|r| r.get(0)).collect();
        if !dests.is_empty() {
            // A destination goes with the last item of it this node holds.
            let dkeys: Vec<String> = dests.iter().map(|d| dest_key(d)).collect();
            exec(
                &tx,
                "DELETE FROM leases d WHERE d.k = ANY($1) AND d.node = $2
                   AND NOT EXISTS (SELECT 1 FROM leases x WHERE x.dest = substr(d.k, 3) AND x.node = $2)",
                &[&dkeys, &node],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
