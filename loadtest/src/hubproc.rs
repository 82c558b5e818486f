//! The hub under test, as a child process with a config written for the run: port 0, its own
//! data directory, loopback allowed, one fat-ping publisher. Reports its RSS and disk use, and
//! can be killed with SIGKILL and restarted on the same data.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Token of the publisher the load test pushes fat pings as.
pub const PUBLISHER_TOKEN: &str = "loadtest-token";

#[derive(Debug, Clone, serde::Serialize)]
pub struct HubSettings {
    /// Largest window per destination.
    pub per_destination: usize,
    pub initial_window: usize,
    pub max_in_flight: usize,
    pub delivery_timeout: String,
    pub engine_threads: usize,
    pub page_size: usize,
    /// More config, appended (e.g. `[[peers]]`, `[[upstreams]]`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub extra: String,
    /// More `[storage]` keys (e.g. the PostgreSQL backend's; never reported: a URL).
    #[serde(skip)]
    pub storage: String,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            per_destination: 32,
            initial_window: 2,
            max_in_flight: 256,
            delivery_timeout: "2s".into(),
            engine_threads: 2,
            page_size: 500,
            extra: String::new(),
            storage: String::new(),
        }
    }
}

pub struct HubProcess {
    bin: PathBuf,
    pub dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    pub url: String,
}

impl HubProcess {
    /// Writes the config into `dir` and starts the hub on it.
    pub async fn start(bin: &Path, dir: &Path, s: &HubSettings) -> anyhow::Result<HubProcess> {
        if !bin.exists() {
            bail!(
                "hub binary {} not found: build it first (cargo build --release -p hubcast) \
                 or pass --hub-bin",
                bin.display()
            );
        }
        let config = dir.join("hubcast.toml");
        let data = dir.join("data");
        std::fs::write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:0"
max_body = "4MiB"
max_connections_per_client = 0
engine_threads = {threads}
[storage]
data_dir = {data:?}
{storage}
[subscriptions]
verify_timeout = "10s"
[delivery]
timeout = {timeout:?}
connect_timeout = "1s"
per_destination = {per}
initial_window = {initial}
max_in_flight = {global}
page_size = {page}
retry_schedule = ["1s", "2s", "4s", "8s", "16s", "32s"]
dead_after = 5
probe_interval = "1s"
max_probe_interval = "5s"
[ssrf]
callback_allow = ["127.0.0.0/8"]
topic_allow = ["127.0.0.0/8"]
[limits]
subscriptions_per_client = "off"
pings_per_client = "off"
verifications_per_host = "off"
fetches_per_topic = "off"
[[publishers]]
name = "loadtest"
topics = ["http://127.0.0.1"]
token = "{PUBLISHER_TOKEN}"
{extra}
"#,
                extra = s.extra,
                storage = s.storage,
                threads = s.engine_threads,
                data = data.display().to_string(),
                timeout = s.delivery_timeout,
                per = s.per_destination,
                initial = s.initial_window.min(s.per_destination),
                global = s.max_in_flight,
                page = s.page_size,
            ),
        )?;
        let mut hub = HubProcess {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            config,
            child: None,
            url: String::new(),
        };
        hub.spawn().await?;
        Ok(hub)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("hub.log"))?;
        let mut child = Command::new(&self.bin)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the hub did not start within 30 s")??
            .context("the hub exited before listening (see hub.log)")?;
        let addr = line
            .strip_prefix("hubcast listening on ")
            .and_then(|l| l.split(' ').next())
            .with_context(|| format!("unexpected first line from the hub: {line:?}"))?;
        self.url = format!("http://{addr}/");
        // Keep draining stdout so the hub never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Resident set size now and at its peak, in bytes.
    pub fn rss(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Bytes the data directory takes.
    pub fn disk(&self) -> u64 {
        dir_size(&self.dir.join("data"))
    }

    /// SIGKILL, no chance to flush anything.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.start_kill()?;
            c.wait().await?;
        }
        Ok(())
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9().await?;
        self.spawn().await
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            match tokio::time::timeout(Duration::from_secs(20), c.wait()).await {
                Ok(r) => {
                    r?;
                }
                Err(_) => c.kill().await?,
            }
        }
        Ok(())
    }
}

pub fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
