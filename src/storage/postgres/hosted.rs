//! Hosted topics and their entries in PostgreSQL: the same numbering (per topic name, never
//! reused) and retention as the embedded backends.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{PgStore, exec, lim, n, rec, rows, to_rec, u};
use crate::storage::Result;
use crate::storage::hosted::{
    EntryRange, HostedChange, HostedEntry, HostedStore, HostedTopic, HostedWrite,
};

fn entry_of(row: &Row) -> Result<HostedEntry> {
    rec(row, "rec")
}

/// Stores an entry under the topic's next number, its previous version (same key) gone.
async fn put_entry<C: GenericClient>(c: &C, name: &str, mut e: HostedEntry) -> Result<()> {
    exec(
        c,
        "DELETE FROM hosted_entries WHERE name = $1 AND key = $2",
        &[&name, &e.key],
    )
    .await?;
    let r = rows(
        c,
        "INSERT INTO hosted_seqs (name, last) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET last = hosted_seqs.last + 1 RETURNING last",
        &[&name, &n(1)],
    )
    .await?;
    e.seq = u(r[0].get(0));
    insert_entry(c, name, &e).await
}

async fn insert_entry<C: GenericClient>(c: &C, name: &str, e: &HostedEntry) -> Result<()> {
    exec(
        c,
        "INSERT INTO hosted_entries (name, seq, key, id, updated_ms, rec) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&name, &n(e.seq), &e.key, &e.id, &n(e.updated_ms), &to_rec(e)],
    )
    .await?;
    Ok(())
}

/// A hosted write, inside the append that stores its event.
pub(super) async fn apply<C: GenericClient>(c: &C, w: &HostedWrite) -> Result<()> {
    match &w.change {
        HostedChange::Put(e) => put_entry(c, &w.name, (**e).clone()).await,
        HostedChange::Delete { key } => {
            exec(
                c,
                "DELETE FROM hosted_entries WHERE name = $1 AND key = $2",
                &[&w.name, key],
            )
            .await?;
            Ok(())
        }
    }
}

#[async_trait]
impl HostedStore for PgStore {
    async fn create_hosted(&self, topic: HostedTopic) -> Result<bool> {
        let n = self
            .exec(
                "INSERT INTO hosted (name, rec) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&topic.name, &to_rec(&topic)],
            )
            .await?;
        Ok(n == 1)
    }

    async fn hosted(&self, name: &str) -> Result<Option<HostedTopic>> {
        let r = self
            .rows("SELECT rec FROM hosted WHERE name = $1", &[&name])
            .await?;
        r.first().map(|r| rec(r, "rec")).transpose()
    }

    async fn hosted_topics(&self, after: Option<&str>, limit: usize) -> Result<Vec<HostedTopic>> {
        let r = self
            .rows(
                "SELECT rec FROM hosted WHERE ($1::text IS NULL OR name > $1) ORDER BY name LIMIT $2",
                &[&after, &lim(limit)],
            )
            .await?;
        r.iter().map(|r| rec(r, "rec")).collect()
    }

    async fn hosted_entry(&self, name: &str, key: &str) -> Result<Option<HostedEntry>> {
        let r = self
            .rows(
                "SELECT rec FROM hosted_entries WHERE name = $1 AND key = $2",
                &[&name, &key],
            )
            .await?;
        r.first().map(entry_of).transpose()
    }

    async fn hosted_entry_by_id(&self, name: &str, id: &str) -> Result<Option<HostedEntry>> {
        let r = self
            .rows(
                "SELECT rec FROM hosted_entries WHERE name = $1 AND id = $2 ORDER BY seq LIMIT 1",
                &[&name, &id],
            )
            .await?;
        r.first().map(entry_of).transpose()
    }

    async fn hosted_entries(
        &self,
        name: &str,
        range: EntryRange,
        limit: usize,
    ) -> Result<Vec<HostedEntry>> {
        let r = match range {
            EntryRange::Before(b) => {
                self.rows(
                    "SELECT rec FROM hosted_entries WHERE name = $1 AND seq < $2
                     ORDER BY seq DESC LIMIT $3",
                    &[&name, &n(b), &lim(limit)],
                )
                .await?
            }
            EntryRange::After(a) => {
                self.rows(
                    "SELECT rec FROM hosted_entries WHERE name = $1 AND seq > $2
                     ORDER BY seq LIMIT $3",
                    &[&name, &n(a), &lim(limit)],
                )
                .await?
            }
        };
        r.iter().map(entry_of).collect()
    }

    async fn hosted_count(&self, name: &str) -> Result<(u64, u64)> {
        let r = self
            .rows(
                "SELECT count(*), max(seq) FROM hosted_entries WHERE name = $1",
                &[&name],
            )
            .await?;
        let newest: Option<i64> = r[0].get(1);
        Ok((r[0].get::<_, i64>(0) as u64, newest.map_or(0, u)))
    }

    async fn hosted_last(&self, name: &str) -> Result<u64> {
        let r = self
            .rows("SELECT last FROM hosted_seqs WHERE name = $1", &[&name])
            .await?;
        Ok(r.first().map_or(0, |r| u(r.get(0))))
    }

    async fn put_mirrored(&self, name: &str, entries: Vec<HostedEntry>) -> Result<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // One writer per topic at a time: the numbering row is locked first.
        exec(
            &tx,
            "INSERT INTO hosted_seqs (name, last) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &n(0)],
        )
        .await?;
        exec(
            &tx,
            "SELECT 1 FROM hosted_seqs WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await?;
        let mut written = 0;
        for e in entries {
            let same = rows(
                &tx,
                "SELECT rec->>'digest' FROM hosted_entries WHERE name = $1 AND key = $2",
                &[&name, &e.key],
            )
            .await?;
            if same
                .first()
                .is_some_and(|r| r.get::<_, Option<String>>(0).as_deref() == Some(&e.digest))
            {
                continue;
            }
            put_entry(&tx, name, e).await?;
            written += 1;
        }
        tx.commit().await?;
        Ok(written)
    }

    async fn note_bounce(&self, topic: &str, address: &str) -> Result<u32> {
        let r = self
            .rows(
                "INSERT INTO bounces (topic, address, n) VALUES ($1, $2, 1)
                 ON CONFLICT (topic, address) DO UPDATE SET n = bounces.n + 1 RETURNING n",
                &[&topic, &address],
            )
            .await?;
        Ok(r[0].get::<_, i32>(0) as u32)
    }

    async fn put_bounce_tag(&self, tag: &str, topic: &str, address: &str) -> Result<()> {
        self.exec(
            "INSERT INTO bounce_tags (tag, topic, address) VALUES ($1, $2, $3)
             ON CONFLICT (tag) DO UPDATE SET topic = excluded.topic, address = excluded.address",
            &[&tag, &topic, &address],
        )
        .await?;
        Ok(())
    }

    async fn bounce_tag(&self, tag: &str) -> Result<Option<(String, String)>> {
        let r = self
            .rows(
                "SELECT topic, address FROM bounce_tags WHERE tag = $1",
                &[&tag],
            )
            .await?;
        Ok(r.first().map(|r| (r.get(0), r.get(1))))
    }

    async fn restore_hosted_last(&self, name: &str, last: u64) -> Result<()> {
        self.exec(
            "INSERT INTO hosted_seqs (name, last) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET last = greatest(hosted_seqs.last, excluded.last)",
            &[&name, &n(last)],
        )
        .await?;
        Ok(())
    }

    async fn restore_hosted_entry(&self, name: &str, e: HostedEntry) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        exec(
            &tx,
            "INSERT INTO hosted_seqs (name, last) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET last = greatest(hosted_seqs.last, excluded.last)",
            &[&name, &n(e.seq)],
        )
        .await?;
        exec(
            &tx,
            "DELETE FROM hosted_entries WHERE name = $1 AND (key = $2 OR seq = $3)",
            &[&name, &e.key, &n(e.seq)],
        )
        .await?;
        insert_entry(&tx, name, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn prune_hosted(&self, name: &str, older_than_ms: u64, limit: usize) -> Result<u64> {
        let Some(topic) = self.hosted(name).await? else {
            return Ok(0);
        };
        let (count, _) = self.hosted_count(name).await?;
        let mut over = match topic.max_entries {
            0 => 0,
            max => count.saturating_sub(max),
        };
        let oldest = self
            .rows(
                "SELECT seq, updated_ms FROM hosted_entries WHERE name = $1 ORDER BY seq LIMIT $2",
                &[&name, &lim(limit)],
            )
            .await?;
        let mut doomed = Vec::new();
        for r in &oldest {
            let old = older_than_ms > 0 && u(r.get(1)) < older_than_ms;
            if !(over > 0 || old) {
                break;
            }
            over = over.saturating_sub(1);
            doomed.push(r.get::<_, i64>(0));
        }
        let Some(&last) = doomed.last() else {
            return Ok(0);
        };
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let gone = exec(
            &tx,
            "DELETE FROM hosted_entries WHERE name = $1 AND seq = ANY($2)",
            &[&name, &doomed],
        )
        .await?;
        let trail = (u(last) + 1).max(topic.trail);
        exec(
            &tx,
            "UPDATE hosted SET rec = jsonb_set(rec, '{trail}', to_jsonb(greatest((rec->>'trail')::bigint, $2::bigint)))
             WHERE name = $1",
            &[&name, &(trail as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok(gone)
    }
}
