//! Test doubles on loopback: an in-process hub on port 0 (here), subscriber callbacks
//! ([`subscriber`]) and topic servers ([`publisher`]). Tests wait on what the doubles record (a watch channel), never on the clock.
//!
//! Every hub of the suite stores on the backend `HUBCAST_TEST_BACKEND` names: `sled` (the
//! default), `memory` or `postgres` (each hub in a schema of its own, created in the database
//! `DATABASE_URL` names). Tests whose point is a store that outlives its hub (a restart, a
//! process's data on disk, the operator commands) take [`persistent_backend`] instead.

use std::net::TcpListener;
use std::sync::LazyLock;
use std::time::Duration;

use hubcast::config::{Backend, Config};
use hubcast::hub::RunningHub;

mod publisher;
mod subscriber;

pub use publisher::*;
pub use subscriber::*;

/// Longest any test waits for something the hub should do.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// How often [`poll_until`] looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls state that has no notification of its own (the hub's storage, a page, another
/// process's answers) until `check` gives `Some`, and returns that; panics with "timed out
/// waiting for {what}" once `patience` has passed.
pub async fn poll_until<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter("hubcast=debug")
            .init();
    }
});

/// Config for tests: loopback allow-listed (never in the defaults), fast retries, no rate
/// limits (the suite's clients all come from 127.0.0.1; `rate_limits.rs` turns them on).
pub const TEST_CONFIG: &str = r#"
[ssrf]
callback_allow = ["127.0.0.0/8"]
topic_allow = ["127.0.0.0/8"]
[delivery]
retry_schedule = ["100ms", "200ms"]
timeout = "5s"
[subscriptions]
verify_timeout = "5s"
[limits]
subscriptions_per_client = "off"
pings_per_client = "off"
verifications_per_host = "off"
fetches_per_topic = "off"
"#;

/// The switch: which storage backend the suite's hubs use.
pub const BACKEND_VAR: &str = "HUBCAST_TEST_BACKEND";

/// The backend `HUBCAST_TEST_BACKEND` names.
pub fn backend() -> Backend {
    let value = std::env::var_os(BACKEND_VAR).map(|v| v.to_string_lossy().into_owned());
    backend_named(value.as_deref())
}

/// A value of the switch (unset or empty: sled). Any other value is a mistake in the test run,
/// not a reason to fall back quietly.
pub fn backend_named(value: Option<&str>) -> Backend {
    match value {
        None | Some("" | "sled") => Backend::Sled,
        Some("memory") => Backend::Memory,
        Some("postgres") => Backend::Postgres,
        Some(other) => {
            panic!("{BACKEND_VAR}={other:?}: expected \"sled\", \"memory\" or \"postgres\"")
        }
    }
}

/// The backend of a test whose point is a store that outlives its hub: sled, whatever
/// `HUBCAST_TEST_BACKEND` says, since the memory backend forgets everything when its hub stops
/// (and the operator commands refuse it). Such a test still runs under every value of the
/// switch.
pub fn persistent_backend() -> Backend {
    Backend::Sled
}

/// How the config spells `backend`.
pub fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sled => "sled",
        Backend::Memory => "memory",
        Backend::Postgres => "postgres",
    }
}

/// A config's `[storage]` section for `backend`: sled's data in `data_dir`, PostgreSQL's in
/// a fresh schema ([`fresh_database`]).
pub fn storage_section(data_dir: &std::path::Path, backend: Backend) -> String {
    let mut s = format!(
        "[storage]\nbackend = \"{}\"\ndata_dir = {:?}",
        backend_name(backend),
        data_dir.display().to_string()
    );
    if backend == Backend::Postgres {
        s.push_str(&format!(
            "\npostgres_url = {:?}\npool_size = 4",
            fresh_database()
        ));
    }
    s
}

/// The database tests on the PostgreSQL backend use (each in schemas of its own).
pub const DATABASE_VAR: &str = "DATABASE_URL";

/// A URL of `DATABASE_URL`'s database whose connections work in a new, empty schema: what one
/// hub (or several nodes sharing it) gets.
pub fn fresh_database() -> String {
    let base = std::env::var(DATABASE_VAR)
        .unwrap_or_else(|_| panic!("{DATABASE_VAR} must name a PostgreSQL database"));
    let schema = format!("t_{}", hex(&rand_bytes()));
    let create = format!("CREATE SCHEMA {schema}");
    let url = base.clone();
    // Its own thread and runtime: callers may be on a runtime, or on none.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("{DATABASE_VAR}: {e}"));
            let conn = tokio::spawn(conn);
            client.batch_execute(&create).await.unwrap();
            drop(client);
            let _ = conn.await;
        })
    })
    .join()
    .expect("schema created");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

fn rand_bytes() -> [u8; 8] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish().to_le_bytes()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The hub's binary with the test's environment minus the switch: the hub reads every
/// `HUBCAST_…` variable as a config key and would refuse `HUBCAST_TEST_BACKEND` as unknown.
pub fn hubcast_binary() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hubcast"));
    cmd.env_remove(BACKEND_VAR);
    cmd
}

/// The system's Python 3 (Debian's `/usr/bin/python3`, where the suite's packages —
/// python3-feedparser, python3-aiosmtpd — are installed), else the first on the path.
pub fn python3() -> tokio::process::Command {
    let system = std::path::Path::new("/usr/bin/python3");
    tokio::process::Command::new(if system.exists() {
        system.as_os_str()
    } else {
        "python3".as_ref()
    })
}

pub struct TestHub {
    pub hub: Option<RunningHub>,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

pub async fn spawn_hub() -> TestHub {
    spawn_hub_with("").await
}

/// A hub on 127.0.0.1:0 with TEST_CONFIG, then `extra` TOML layered over it.
pub async fn spawn_hub_with(extra: &str) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, extra);
    start_in(dir, cfg).await
}

/// [`spawn_hub_with`] on a given backend instead of the switch's.
pub async fn spawn_hub_on(backend: Backend, extra: &str) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_on(&dir, backend, extra);
    start_in(dir, cfg).await
}

/// The test config on the switch's backend, its data (if any) in `dir`.
pub fn config(dir: &tempfile::TempDir, extra: &str) -> Config {
    config_on(dir, backend(), extra)
}

pub fn config_on(dir: &tempfile::TempDir, backend: Backend, extra: &str) -> Config {
    let storage = format!(
        "{}\ncache_capacity = \"8MiB\"",
        storage_section(&dir.path().join("data"), backend)
    );
    Config::from_toml_layers(&[TEST_CONFIG, &storage, extra]).expect("test config is valid")
}

pub async fn start_in(dir: tempfile::TempDir, cfg: Config) -> TestHub {
    let store = hubcast::hub::open_storage(&cfg)
        .await
        .expect("storage opens");
    start_with_storage(dir, cfg, store).await
}

/// A hub on a store the test made (and keeps a handle on).
pub async fn start_with_storage(
    dir: tempfile::TempDir,
    cfg: Config,
    store: hubcast::storage::Storage,
) -> TestHub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    start_on_listener(dir, cfg, store, listener).await
}

/// A hub on a listener the test bound first (so other hubs' configs can name its address
/// before it starts).
pub async fn start_on_listener(
    dir: tempfile::TempDir,
    cfg: Config,
    store: hubcast::storage::Storage,
    listener: TcpListener,
) -> TestHub {
    LazyLock::force(&TRACING);
    let hub = hubcast::hub::start_with_storage(cfg, listener, store)
        .await
        .expect("hub starts");
    TestHub {
        url: hub.hub_url.clone(),
        hub: Some(hub),
        dir,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PATIENCE)
            .build()
            .unwrap(),
    }
}

impl TestHub {
    /// Creates a hosted topic through the admin API with the admin token `admin`; `body` is the
    /// API's JSON (`name`, `token`, …). Asserts `201`.
    pub async fn create_hosted_topic(&self, admin: &str, body: serde_json::Value) {
        let r = self
            .client
            .post(format!("{}admin/api/hosted-topics", self.url))
            .bearer_auth(admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    pub fn running(&self) -> &RunningHub {
        self.hub.as_ref().unwrap()
    }

    pub fn store(&self) -> &hubcast::storage::Storage {
        self.running().engine.store()
    }

    pub async fn post_form(&self, form: &[(&str, &str)]) -> reqwest::Response {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.client
            .post(&self.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn subscribe(&self, topic: &str, callback: &str) -> reqwest::Response {
        self.post_form(&[
            ("hub.mode", "subscribe"),
            ("hub.topic", topic),
            ("hub.callback", callback),
        ])
        .await
    }

    /// Subscribes and waits until the subscription is active.
    pub async fn subscribed(&self, topic: &str, callback: &str) {
        let r = self.subscribe(topic, callback).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        self.wait_active(topic, callback).await;
    }

    pub async fn wait_active(&self, topic: &str, callback: &str) {
        self.wait_for("subscription to be active", || async {
            self.store()
                .subs
                .get(topic, callback)
                .await
                .unwrap()
                .is_some()
        })
        .await;
    }

    /// Waits until no verification is pending.
    pub async fn wait_intents_done(&self) {
        self.wait_for("pending verifications to finish", || async {
            self.store().subs.intents().await.unwrap().is_empty()
        })
        .await;
    }

    /// Waits until every accepted ping has been processed.
    pub async fn wait_pings_done(&self) {
        self.wait_for("pings to be processed", || async {
            self.store().publish.pings().await.unwrap().is_empty()
        })
        .await;
    }

    /// Waits until no retry is stored (every failed delivery has been settled).
    pub async fn wait_retries_settled(&self) {
        self.wait_for("the retries to settle", || async {
            self.store().delivery.count_retries().await.unwrap() == 0
        })
        .await;
    }

    /// Waits until no delivery job is pending.
    pub async fn wait_jobs_done(&self) {
        self.wait_for("delivery jobs to finish", || async {
            self.store().delivery.jobs().await.unwrap().is_empty()
        })
        .await;
    }

    /// Polls hub state that has no notification of its own (storage) until `check` holds,
    /// within PATIENCE.
    pub async fn wait_for<F, Fut>(&self, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        poll_until(what, PATIENCE, || async { check().await.then_some(()) }).await
    }

    /// Stores an hour-long subscription of `topic` for each callback, the i-th with the
    /// secret `secret-i`, straight into the store (no verification: for tests of delivery).
    pub async fn store_subscriptions(&self, topic: &str, callbacks: &[String]) {
        let now = self.running().engine.clock().now_ms();
        for (i, cb) in callbacks.iter().enumerate() {
            self.store()
                .subs
                .upsert(hubcast::storage::Subscription {
                    topic: topic.to_owned(),
                    destination: hubcast::urls::destination_of_endpoint(cb),
                    callback: cb.clone(),
                    secret: Some(format!("secret-{i}")),
                    lease_seconds: 3600,
                    expires_ms: now + 3_600_000,
                    created_ms: now,
                })
                .await
                .unwrap();
        }
    }

    /// The value of the first `/metrics` sample whose line starts with `series` (name and
    /// labels as written), 0 when there is none.
    pub async fn metric(&self, series: &str) -> u64 {
        self.get_text("metrics")
            .await
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// The body of `GET path` (relative to the hub URL, e.g. `metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn publish(&self, topic: &str) -> reqwest::Response {
        self.post_form(&[("hub.mode", "publish"), ("hub.url", topic)])
            .await
    }

    /// A fat ping of `body` as text/plain for `topic`, authenticated with a bearer `token`.
    pub async fn fat_ping(&self, topic: &str, token: &str, body: &str) -> reqwest::Response {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("hub.mode", "publish"), ("hub.url", topic)])
            .finish();
        self.client
            .post(format!("{}?{q}", self.url))
            .header("content-type", "text/plain")
            .header("authorization", format!("Bearer {token}"))
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// The result of the topic's last fetch as the hub recorded it.
    pub async fn last_fetch(&self, topic: &str) -> String {
        self.store()
            .publish
            .topic_state(topic)
            .await
            .unwrap()
            .expect("the topic has state")
            .last_result
    }

    pub async fn is_subscribed(&self, topic: &str, callback: &str) -> bool {
        let sub = self.store().subs.get(topic, callback).await.unwrap();
        sub.is_some()
    }

    /// Moves a subscription's lease end into the past.
    pub async fn end_lease(&self, topic: &str, callback: &str) {
        let subs = &self.store().subs;
        let mut s = subs
            .get(topic, callback)
            .await
            .unwrap()
            .expect("subscribed");
        s.expires_ms = 1;
        subs.upsert(s).await.unwrap();
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        self.hub.take().unwrap().stop().await;
        self.dir
    }
}

/// A hub, a topic server serving `content` as text/plain at `/t`, and one subscriber whose
/// callback `/cb` is subscribed to it.
pub struct OneSubscriber {
    pub hub: TestHub,
    pub publisher: Publisher,
    pub sub: Subscriber,
    pub topic: String,
    pub cb: String,
}

pub async fn one_subscriber(content: &str) -> OneSubscriber {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/t");
    let cb = sub.callback("/cb");
    publisher.set("/t", "text/plain", content);
    hub.subscribed(&topic, &cb).await;
    OneSubscriber {
        hub,
        publisher,
        sub,
        topic,
        cb,
    }
}

/// [`poll_until`] itself, on paused time (it does no I/O).
mod poll_until_checks {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_what_the_check_found() {
        let mut calls = 0;
        let got = poll_until("the third call", PATIENCE, || {
            calls += 1;
            let n = calls;
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out waiting for what never comes")]
    async fn panics_naming_what_it_waited_for_once_its_patience_is_spent() {
        let start = tokio::time::Instant::now();
        poll_until::<(), _, _>("what never comes", Duration::from_secs(1), || async {
            assert!(start.elapsed() <= Duration::from_secs(1) + POLL_INTERVAL);
            None
        })
        .await;
    }
}
