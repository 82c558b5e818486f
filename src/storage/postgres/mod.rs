//! PostgreSQL backend: several hub nodes share one database. Every trait is implemented in
//! SQL; the event log's numbers are dense with several writers (each append locks the log's
//! head row, so numbers are assigned in commit order); claims are leases in the `leases`
//! table, taken with `FOR UPDATE SKIP LOCKED`; a destination server's deliveries are leased to
//! one node at a time. Writes are durable when their transaction commits (`flush` is a no-op).
//!
//! The schema is embedded ([`MIGRATIONS`]) and applied at open under an advisory lock, so
//! nodes starting together are safe.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::*;

mod claims;
mod delivery;
mod hosted;
mod log;
mod nodes;
mod subs;

/// The schema, one script per version, applied in order.
const MIGRATIONS: &[&str] = &[include_str!("schema_v1.sql")];

/// Stores a `u64` as a `bigint`, order-preserving (see the schema).
pub(crate) fn n(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

/// A row limit as SQL takes it (`usize::MAX`: no limit in effect).
pub(crate) fn lim(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The `u64` a bigint column holds (the inverse of [`n`]).
pub(crate) fn u(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

impl From<tokio_postgres::Error> for StorageError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let text = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                StorageError::Conflict(text)
            }
            // Connection, resources, operator intervention, system errors: may pass.
            Some(c)
                if ["08", "53", "57", "58"]
                    .iter()
                    .any(|class| c.code().starts_with(class)) =>
            {
                StorageError::Transient(text)
            }
            Some(_) => StorageError::Permanent(text),
            // No SQL state: the connection broke or could not be made.
            None => StorageError::Transient(text),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StorageError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StorageError::Transient(format!("database connection pool: {other}")),
        }
    }
}

/// Why a PostgreSQL store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("storage.postgres_url is not a PostgreSQL URL: {0}")]
    Url(String),
    #[error("cannot reach the database at {target}: {source}")]
    Unreachable {
        target: String,
        #[source]
        source: StorageError,
    },
    #[error("cannot prepare the database schema: {0}")]
    Schema(StorageError),
}

pub struct PgStore {
    pool: Pool,
    hub_id: String,
    hub_key: Mutex<Vec<u8>>,
}

/// Where a URL points, without its password: for messages.
pub fn describe_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

impl PgStore {
    /// Connects (a pool of at most `pool_size` connections), applies the schema's migrations
    /// under an advisory lock, and reads or creates the store's id and key. Fails with
    /// [`OpenError::Unreachable`] when no connection can be made: the caller retries.
    pub async fn open(url: &str, pool_size: usize) -> std::result::Result<PgStore, OpenError> {
        let pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| OpenError::Url(e.to_string()))?;
        let mut pg = pg;
        pg.connect_timeout(Duration::from_secs(5));
        if pg.get_application_name().is_none() {
            pg.application_name("hubcast");
        }
        let manager = Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| OpenError::Url(e.to_string()))?;
        let unreachable = |source: StorageError| OpenError::Unreachable {
            target: describe_url(url),
            source,
        };
        let mut client = pool.get().await.map_err(|e| unreachable(e.into()))?;
        migrate(&mut client).await.map_err(OpenError::Schema)?;
        let hub_id = meta_or(&client, "hub_id", || super::new_hub_id().into_bytes())
            .await
            .map_err(OpenError::Schema)?;
        let hub_key = meta_or(&client, "hub_key", || rand::random::<[u8; 32]>().to_vec())
            .await
            .map_err(OpenError::Schema)?;
        drop(client);
        Ok(PgStore {
            pool,
            hub_id: String::from_utf8_lossy(&hub_id).into_owned(),
            hub_key: Mutex::new(hub_key),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Rows of one statement (prepared once per connection).
    async fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let c = self.client().await?;
        rows(&c, sql, params).await
    }

    async fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let c = self.client().await?;
        exec(&c, sql, params).await
    }
}

pub(crate) async fn rows<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query(&st, params).await?)
}

pub(crate) async fn exec<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.execute(&st, params).await?)
}

/// A JSON column's value.
pub(crate) fn rec<T: serde::de::DeserializeOwned>(row: &Row, col: &str) -> Result<T> {
    let v: serde_json::Value = row.try_get(col)?;
    serde_json::from_value(v).map_err(|e| StorageError::Corrupt(format!("{col}: {e}")))
}

pub(crate) fn to_rec<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("records serialise")
}

async fn migrate(client: &mut deadpool_postgres::Object) -> Result<()> {
    let tx = client.transaction().await?;
    // One node at a time (per schema): the others wait, then find the schema current.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('hubcast-migrations:' || current_schema()))",
        &[],
    )
    .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version int NOT NULL)")
        .await?;
    let current: i32 = tx
        .query_opt("SELECT max(version) FROM schema_version", &[])
        .await?
        .and_then(|r| r.get::<_, Option<i32>>(0))
        .unwrap_or(0);
    for (i, script) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(script).await?;
        tx.execute("INSERT INTO schema_version VALUES ($1)", &[&(i as i32 + 1)])
            .await?;
        tracing::info!(version = i + 1, "database schema migrated");
    }
    if current as usize > MIGRATIONS.len() {
        return Err(StorageError::Permanent(format!(
            "the database schema is version {current}, newer than this hubcast knows ({})",
            MIGRATIONS.len()
        )));
    }
    tx.commit().await?;
    Ok(())
}

/// A `meta` value, created with `make` when absent (the first node to start writes it).
async fn meta_or<C: GenericClient>(
    c: &C,
    k: &str,
    make: impl FnOnce() -> Vec<u8>,
) -> Result<Vec<u8>> {
    let v = make();
    exec(
        c,
        "INSERT INTO meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING",
        &[&k, &v],
    )
    .await?;
    let row = rows(c, "SELECT v FROM meta WHERE k = $1", &[&k]).await?;
    row.first()
        .map(|r| r.get::<_, Vec<u8>>(0))
        .ok_or_else(|| StorageError::Corrupt(format!("meta {k} missing")))
}

#[async_trait]
impl IdSource for PgStore {
    async fn next_id(&self) -> Result<u64> {
        let r = self.rows("SELECT nextval('ids')", &[]).await?;
        Ok(r[0].get::<_, i64>(0) as u64)
    }

    async fn advance_past(&self, id: u64) -> Result<()> {
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        self.rows(
            "SELECT setval('ids', greatest($1, (SELECT last_value FROM ids)))",
            &[&id],
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Flush for PgStore {
    async fn flush(&self) -> Result<()> {
        // Every write is durable once its transaction has committed.
        Ok(())
    }
}
