//! Subscriptions, pending verifications, pings and topic states in PostgreSQL.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PgStore, lim, n, rec, to_rec, u};
use crate::storage::*;

fn sub_of(row: &Row) -> Result<Subscription> {
    rec(row, "rec")
}

const SUB_COLS: &str = "rec";

#[async_trait]
impl SubscriptionStore for PgStore {
    async fn upsert(&self, sub: Subscription) -> Result<()> {
        self.exec(
            "INSERT INTO subs (topic, destination, callback, expires_ms, rec) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (topic, destination, callback)
             DO UPDATE SET expires_ms = excluded.expires_ms, rec = excluded.rec",
            &[&sub.topic, &sub.destination, &sub.callback, &n(sub.expires_ms), &to_rec(&sub)],
        )
        .await?;
        Ok(())
    }

    async fn get(&self, topic: &str, callback: &str) -> Result<Option<Subscription>> {
        let d = destination_of(callback);
        let r = self
            .rows(
                "SELECT rec FROM subs WHERE topic = $1 AND destination = $2 AND callback = $3",
                &[&topic, &d, &callback],
            )
            .await?;
        r.first().map(sub_of).transpose()
    }

    async fn remove(&self, topic: &str, callback: &str) -> Result<bool> {
        let d = destination_of(callback);
        let n = self
            .exec(
                "DELETE FROM subs WHERE topic = $1 AND destination = $2 AND callback = $3",
                &[&topic, &d, &callback],
            )
            .await?;
        Ok(n > 0)
    }

    async fn count_for_topic(&self, topic: &str) -> Result<u64> {
        let r = self
            .rows("SELECT count(*) FROM subs WHERE topic = $1", &[&topic])
            .await?;
        Ok(r[0].get::<_, i64>(0) as u64)
    }

    async fn destinations(&self, topic: &str) -> Result<Vec<String>> {
        // A loose index scan: one index probe per destination, however many subscribers.
        let r = self
            .rows(
                "WITH RECURSIVE d(dest) AS (
                    (SELECT destination FROM subs WHERE topic = $1 ORDER BY destination LIMIT 1)
                    UNION ALL
                    SELECT (SELECT destination FROM subs WHERE topic = $1 AND destination > d.dest
                            ORDER BY destination LIMIT 1)
                    FROM d WHERE d.dest IS NOT NULL)
                 SELECT dest FROM d WHERE dest IS NOT NULL",
                &[&topic],
            )
            .await?;
        Ok(r.iter().map(|r| r.get(0)).collect())
    }

    async fn page(
        &self,
        topic: &str,
        destination: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        let after = after.unwrap_or("");
        let r = self
            .rows(
                "SELECT rec FROM subs WHERE topic = $1 AND destination = $2 AND callback > $3
                 ORDER BY callback LIMIT $4",
                &[&topic, &destination, &after, &lim(limit)],
            )
            .await?;
        r.iter().map(sub_of).collect()
    }

    async fn expired(&self, now_ms: u64, limit: usize) -> Result<Vec<Subscription>> {
        let r = self
            .rows(
                "SELECT rec FROM subs WHERE expires_ms < $1
                 ORDER BY topic, destination, callback LIMIT $2",
                &[&n(now_ms), &lim(limit)],
            )
            .await?;
        r.iter().map(sub_of).collect()
    }

    async fn totals(&self) -> Result<(u64, u64)> {
        let r = self
            .rows("SELECT count(DISTINCT topic), count(*) FROM subs", &[])
            .await?;
        Ok((r[0].get::<_, i64>(0) as u64, r[0].get::<_, i64>(1) as u64))
    }

    async fn scan(
        &self,
        topic: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        let (at, ad, ac) = match after {
            Some((t, c)) => (t.to_owned(), destination_of(c), c.to_owned()),
            None => (String::new(), String::new(), String::new()),
        };
        let has_after = after.is_some();
        let r = self
            .rows(
                &format!(
                    "SELECT {SUB_COLS} FROM subs
                     WHERE ($1::text IS NULL OR topic = $1)
                       AND (NOT $2 OR (topic, destination, callback) > ($3, $4, $5))
                     ORDER BY topic, destination, callback LIMIT $6"
                ),
                &[&topic, &has_after, &at, &ad, &ac, &lim(limit)],
            )
            .await?;
        r.iter().map(sub_of).collect()
    }

    async fn for_callback(&self, callback: &str, limit: usize) -> Result<Vec<Subscription>> {
        let r = self
            .rows(
                "SELECT rec FROM subs WHERE callback = $1 ORDER BY topic, destination LIMIT $2",
                &[&callback, &lim(limit)],
            )
            .await?;
        r.iter().map(sub_of).collect()
    }

    async fn put_intent(&self, intent: Intent) -> Result<()> {
        self.exec(
            "INSERT INTO intents (id, rec) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET rec = excluded.rec",
            &[&n(intent.id), &to_rec(&intent)],
        )
        .await?;
        Ok(())
    }

    async fn remove_intent(&self, id: u64) -> Result<()> {
        self.exec("DELETE FROM intents WHERE id = $1", &[&n(id)])
            .await?;
        Ok(())
    }

    async fn intents(&self) -> Result<Vec<Intent>> {
        let r = self
            .rows("SELECT rec FROM intents ORDER BY id", &[])
            .await?;
        r.iter().map(|r| rec(r, "rec")).collect()
    }
}

pub(super) const PING_COLS: &str = "id, topic, received_ms, fat_type, fat_body";

pub(super) fn ping_of(row: &Row) -> Result<Ping> {
    let fat_type: Option<String> = row.try_get("fat_type")?;
    let fat_body: Option<Vec<u8>> = row.try_get("fat_body")?;
    Ok(Ping {
        id: u(row.try_get("id")?),
        topic: row.try_get("topic")?,
        fat: fat_type.map(|content_type| FatContent {
            content_type,
            body: fat_body.unwrap_or_default(),
        }),
        received_ms: u(row.try_get("received_ms")?),
    })
}

#[async_trait]
impl PublishStore for PgStore {
    async fn put_pings(&self, pings: Vec<Ping>) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        for p in &pings {
            let (ft, fb) = match &p.fat {
                Some(f) => (Some(f.content_type.as_str()), Some(f.body.as_slice())),
                None => (None, None),
            };
            super::exec(
                &tx,
                "INSERT INTO pings (id, topic, received_ms, fat_type, fat_body)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                &[&n(p.id), &p.topic, &n(p.received_ms), &ft, &fb],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn pings(&self) -> Result<Vec<Ping>> {
        let r = self
            .rows(&format!("SELECT {PING_COLS} FROM pings ORDER BY id"), &[])
            .await?;
        r.iter().map(ping_of).collect()
    }

    async fn topic_state(&self, topic: &str) -> Result<Option<TopicState>> {
        let r = self
            .rows("SELECT rec FROM topic_states WHERE topic = $1", &[&topic])
            .await?;
        r.first().map(|r| rec(r, "rec")).transpose()
    }

    async fn drop_ping(&self, ping_id: u64, topic: &str, state: Option<TopicState>) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if let Some(s) = state {
            super::exec(&tx, UPSERT_STATE, &[&topic, &to_rec(&s)]).await?;
        }
        super::exec(&tx, "DELETE FROM pings WHERE id = $1", &[&n(ping_id)]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn topic_states(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, TopicState)>> {
        let r = self
            .rows(
                "SELECT topic, rec FROM topic_states WHERE ($1::text IS NULL OR topic > $1)
                 ORDER BY topic LIMIT $2",
                &[&after, &lim(limit)],
            )
            .await?;
        r.iter()
            .map(|r| Ok((r.try_get("topic")?, rec(r, "rec")?)))
            .collect()
    }

    async fn put_topic_state(&self, topic: &str, state: TopicState) -> Result<()> {
        self.exec(UPSERT_STATE, &[&topic, &to_rec(&state)]).await?;
        Ok(())
    }
}

pub(super) const UPSERT_STATE: &str = "INSERT INTO topic_states (topic, rec) VALUES ($1, $2)
     ON CONFLICT (topic) DO UPDATE SET rec = excluded.rec";
