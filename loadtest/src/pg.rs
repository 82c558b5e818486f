//! PostgreSQL for the `cluster` scenario: the database `DATABASE_URL` names, or a throwaway
//! cluster started here (Debian's `initdb` and `pg_ctl`, as the `postgres` user when run as
//! root, in a temporary directory, on a free loopback port, durability settings off) and stopped
//! on drop. `pg_stat_statements` is loaded in a throwaway cluster, so statements are counted.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

pub struct Postgres {
    pub url: String,
    /// Set for a cluster started here (stopped on drop).
    owned: Option<(PathBuf, tempfile::TempDir, bool)>,
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (apt-get install postgresql)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .context("no initdb under /usr/lib/postgresql (apt-get install postgresql)")
}

fn as_postgres(root: bool, program: PathBuf) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> anyhow::Result<Postgres> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Ok(Postgres { url, owned: None });
        }
        let bin = bin_dir()?;
        let dir = tempfile::tempdir()?;
        let root = running_as_root();
        if root {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()?
                .success();
            if !ok {
                bail!("cannot hand {} to the postgres user", dir.path().display());
            }
        }
        let data = dir.path().join("data");
        let out = as_postgres(root, bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "hub", "--auth=trust", "-E", "UTF8"])
            .output()?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let opts = format!(
            "-k {} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300 -c shared_buffers=256MB \
             -c shared_preload_libraries=pg_stat_statements",
            dir.path().display()
        );
        let out = as_postgres(root, bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("server.log"))
            .args(["-w", "start", "-o", &opts])
            .output()?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Postgres {
            url: format!("postgres://hub@127.0.0.1:{port}/postgres"),
            owned: Some((bin, dir, root)),
        })
    }

    /// A new, empty schema and the URL whose connections work in it.
    pub async fn fresh_schema(&self, name: &str) -> anyhow::Result<String> {
        let c = self.connect().await?;
        c.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        ))
        .await?;
        let sep = if self.url.contains('?') { '&' } else { '?' };
        Ok(format!("{}{sep}options=-csearch_path%3D{name}", self.url))
    }

    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("cannot reach {}", self.url))?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// What the database has done so far: (statements, when counted; transactions committed;
    /// WAL bytes written).
    pub async fn work(&self) -> anyhow::Result<DbWork> {
        let c = self.connect().await?;
        let _ = c
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await;
        let statements = match c
            .query_one("SELECT sum(calls)::bigint FROM pg_stat_statements", &[])
            .await
        {
            Ok(r) => r.get::<_, Option<i64>>(0).map(|v| v as u64),
            Err(_) => None,
        };
        let r = c
            .query_one(
                "SELECT xact_commit, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint
                 FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await?;
        Ok(DbWork {
            statements,
            transactions: r.get::<_, i64>(0) as u64,
            wal_bytes: r.get::<_, i64>(1) as u64,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct DbWork {
    pub statements: Option<u64>,
    pub transactions: u64,
    pub wal_bytes: u64,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some((bin, dir, root)) = &self.owned {
            let _ = as_postgres(*root, bin.join("pg_ctl"))
                .arg("-D")
                .arg(dir.path().join("data"))
                .args(["-m", "immediate", "stop"])
                .output();
        }
    }
}

fn running_as_root() -> bool {
    // The effective user, from /proc (no libc call needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
