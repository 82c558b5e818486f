//! Delivery jobs, retries and dead letters in PostgreSQL.

use async_trait::async_trait;
use tokio_postgres::Row;

use deadpool_postgres::GenericClient;

use super::{PgStore, exec, lim, n, rec, to_rec, u};
use crate::storage::*;

pub(super) const JOB_COLS: &str = "event, destination, topic, cursor";

pub(super) fn job_of(row: &Row) -> Result<Job> {
    Ok(Job {
        event: u(row.try_get("event")?),
        destination: row.try_get("destination")?,
        cursor: row.try_get("cursor")?,
        topic: row.try_get("topic")?,
    })
}

pub(super) fn retry_of(row: &Row) -> Result<Retry> {
    rec(row, "rec")
}

async fn insert_retry<C: GenericClient>(c: &C, r: &Retry) -> Result<()> {
    exec(
        c,
        "INSERT INTO retries (due_ms, event, topic, callback, rec) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (due_ms, event, topic, callback) DO UPDATE SET rec = excluded.rec",
        &[&n(r.due_ms), &n(r.event), &r.topic, &r.callback, &to_rec(r)],
    )
    .await?;
    Ok(())
}

async fn delete_retry<C: GenericClient>(c: &C, r: &Retry) -> Result<()> {
    exec(
        c,
        "DELETE FROM retries WHERE due_ms = $1 AND event = $2 AND topic = $3 AND callback = $4",
        &[&n(r.due_ms), &n(r.event), &r.topic, &r.callback],
    )
    .await?;
    Ok(())
}

fn dead_of(row: &Row) -> Result<DeadLetter> {
    rec(row, "rec")
}

#[async_trait]
impl DeliveryStore for PgStore {
    async fn jobs(&self) -> Result<Vec<Job>> {
        let r = self
            .rows(
                &format!("SELECT {JOB_COLS} FROM jobs ORDER BY event, destination"),
                &[],
            )
            .await?;
        r.iter().map(job_of).collect()
    }

    async fn jobs_of(&self, event: u64) -> Result<Vec<Job>> {
        let r = self
            .rows(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE event = $1 ORDER BY destination"),
                &[&n(event)],
            )
            .await?;
        r.iter().map(job_of).collect()
    }

    async fn job(&self, event: u64, destination: &str) -> Result<Option<Job>> {
        let r = self
            .rows(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE event = $1 AND destination = $2"),
                &[&n(event), &destination],
            )
            .await?;
        r.first().map(job_of).transpose()
    }

    async fn put_job(&self, job: Job) -> Result<()> {
        self.exec(
            "INSERT INTO jobs (event, destination, topic, cursor) VALUES ($1, $2, $3, $4)
             ON CONFLICT (event, destination) DO UPDATE SET cursor = excluded.cursor, topic = excluded.topic",
            &[&n(job.event), &job.destination, &job.topic, &job.cursor],
        )
        .await?;
        Ok(())
    }

    async fn remove_jobs(&self, event: u64, destinations: &[String]) -> Result<()> {
        self.exec(
            "DELETE FROM jobs WHERE event = $1 AND destination = ANY($2)",
            &[&n(event), &destinations],
        )
        .await?;
        Ok(())
    }

    async fn remove_all_jobs(&self, event: u64) -> Result<()> {
        self.exec("DELETE FROM jobs WHERE event = $1", &[&n(event)])
            .await?;
        Ok(())
    }

    async fn put_merged(&self, destination: &str, topic: &str, event: NewEvent) -> Result<Job> {
        let id = <Self as IdSource>::next_id(self).await?;
        let seq = id | DELIVERY_DOC;
        let ev = event.stored(seq, topic, 0, &self.hub_id);
        let job = Job::new(seq, destination, topic);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        super::log::insert_event(&tx, "docs", &ev).await?;
        super::exec(
            &tx,
            "INSERT INTO jobs (event, destination, topic) VALUES ($1, $2, $3)",
            &[&n(seq), &destination, &topic],
        )
        .await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn put_retry(&self, retry: Retry) -> Result<()> {
        insert_retry(&self.client().await?, &retry).await
    }

    async fn remove_retry(&self, retry: &Retry) -> Result<()> {
        delete_retry(&self.client().await?, retry).await
    }

    async fn due_retries(&self, now_ms: u64, limit: usize) -> Result<Vec<Retry>> {
        let r = self
            .rows(
                "SELECT rec FROM retries WHERE due_ms <= $1
                 ORDER BY due_ms, event, topic, callback LIMIT $2",
                &[&n(now_ms), &lim(limit)],
            )
            .await?;
        r.iter().map(retry_of).collect()
    }

    async fn next_retry_due(&self) -> Result<Option<u64>> {
        let r = self
            .rows("SELECT due_ms FROM retries ORDER BY due_ms LIMIT 1", &[])
            .await?;
        Ok(r.first().map(|r| u(r.get(0))))
    }

    async fn count_retries(&self) -> Result<u64> {
        let r = self.rows("SELECT count(*) FROM retries", &[]).await?;
        Ok(r[0].get::<_, i64>(0) as u64)
    }

    async fn dead_letter(&self, retry: &Retry, failed_ms: u64) -> Result<DeadLetter> {
        let id = <Self as IdSource>::next_id(self).await?;
        let dl = retry.dead(id, failed_ms);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        delete_retry(&tx, retry).await?;
        super::exec(
            &tx,
            "INSERT INTO dead_letters (id, event, rec) VALUES ($1, $2, $3)",
            &[&n(id), &n(dl.event), &to_rec(&dl)],
        )
        .await?;
        tx.commit().await?;
        Ok(dl)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let r = self
            .rows(
                "SELECT rec FROM dead_letters ORDER BY id LIMIT $1",
                &[&lim(limit)],
            )
            .await?;
        r.iter().map(dead_of).collect()
    }

    async fn remove_dead_letter(&self, id: u64) -> Result<Option<DeadLetter>> {
        let r = self
            .rows(
                "DELETE FROM dead_letters WHERE id = $1 RETURNING rec",
                &[&n(id)],
            )
            .await?;
        r.first().map(dead_of).transpose()
    }

    async fn count_dead_letters(&self) -> Result<u64> {
        let r = self.rows("SELECT count(*) FROM dead_letters", &[]).await?;
        Ok(r[0].get::<_, i64>(0) as u64)
    }

    async fn put_dead_letter(&self, dead: DeadLetter) -> Result<()> {
        self.exec(
            "INSERT INTO dead_letters (id, event, rec) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET event = excluded.event, rec = excluded.rec",
            &[&n(dead.id), &n(dead.event), &to_rec(&dead)],
        )
        .await?;
        Ok(())
    }

    async fn replay_dead_letter(&self, id: u64, now_ms: u64) -> Result<Option<Retry>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let r = super::rows(
            &tx,
            "DELETE FROM dead_letters WHERE id = $1 RETURNING rec",
            &[&n(id)],
        )
        .await?;
        let Some(row) = r.first() else {
            return Ok(None);
        };
        let retry = dead_of(row)?.replayed(now_ms);
        insert_retry(&tx, &retry).await?;
        tx.commit().await?;
        Ok(Some(retry))
    }

    async fn retries(&self, limit: usize) -> Result<Vec<Retry>> {
        let r = self
            .rows(
                "SELECT rec FROM retries ORDER BY due_ms, event, topic, callback LIMIT $1",
                &[&lim(limit)],
            )
            .await?;
        r.iter().map(retry_of).collect()
    }
}
