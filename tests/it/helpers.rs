//! Test doubles on loopback: an in-process hub on port 0, subscriber callbacks and topic
//! servers. Tests wait on what the doubles record (a watch channel), never on the clock.
//!
//! Every hub of the suite stores on the backend `HUBCAST_TEST_BACKEND` names: `sled` (the
//! default) or `memory`. Tests whose point is a store that outlives its hub (a restart, a
//! process's data on disk, the operator commands) take [`persistent_backend`] instead.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hubcast::config::{Backend, Config};
use hubcast::hub::RunningHub;
use tokio::sync::watch;

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

/// Config for tests: loopback allow-listed (never in the defaults), fast retries.
pub const TEST_CONFIG: &str = r#"
[ssrf]
callback_allow = ["127.0.0.0/8"]
topic_allow = ["127.0.0.0/8"]
[delivery]
retry_schedule = ["100ms", "200ms"]
timeout = "5s"
[subscriptions]
verify_timeout = "5s"
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
        Some(other) => panic!("{BACKEND_VAR}={other:?}: expected \"sled\" or \"memory\""),
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
    }
}

/// The hub's binary with the test's environment minus the switch: the hub reads every
/// `HUBCAST_…` variable as a config key and would refuse `HUBCAST_TEST_BACKEND` as unknown.
pub fn hubcast_binary() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hubcast"));
    cmd.env_remove(BACKEND_VAR);
    cmd
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
        "[storage]\nbackend = \"{}\"\ndata_dir = {:?}\ncache_capacity = \"8MiB\"",
        backend_name(backend),
        dir.path().join("data").display().to_string()
    );
    Config::from_toml_layers(&[TEST_CONFIG, &storage, extra]).expect("test config is valid")
}

pub async fn start_in(dir: tempfile::TempDir, cfg: Config) -> TestHub {
    let store = hubcast::hub::open_storage(&cfg).expect("storage opens");
    start_with_storage(dir, cfg, store).await
}

/// A hub on a store the test made (and keeps a handle on).
pub async fn start_with_storage(
    dir: tempfile::TempDir,
    cfg: Config,
    store: hubcast::storage::Storage,
) -> TestHub {
    LazyLock::force(&TRACING);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
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

    pub async fn publish(&self, topic: &str) -> reqwest::Response {
        self.post_form(&[("hub.mode", "publish"), ("hub.url", topic)])
            .await
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

/// How a subscriber double answers verification GETs.
#[derive(Clone, Debug)]
pub enum Verify {
    Echo,
    Wrong,
    Status(u16),
    Redirect(String),
    /// Record the request, then never answer.
    Hang,
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query as received.
    pub target: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    /// What a test server saw of one request.
    pub fn of(req: &HttpRequest, body: &[u8]) -> Recorded {
        Recorded {
            method: req.method().to_string(),
            target: req.uri().to_string(),
            query: url::form_urlencoded::parse(req.query_string().as_bytes())
                .into_owned()
                .collect(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            at: std::time::Instant::now(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct SubState {
    verify: Verify,
    /// Statuses for the next deliveries (0: never answer); `usual` when empty.
    replies: VecDeque<u16>,
    usual: u16,
    /// Sent with 429 and 503 answers.
    retry_after: Option<String>,
    /// `Location` of 3xx delivery answers.
    location: String,
    /// How long each delivery answer takes.
    delay: Duration,
    in_flight: usize,
    max_in_flight: usize,
    requests: Vec<Recorded>,
}

/// A subscriber callback server.
#[derive(Clone)]
pub struct Subscriber {
    pub base: String,
    state: Arc<Mutex<SubState>>,
    changed: watch::Receiver<u64>,
}

impl Subscriber {
    pub async fn start() -> Subscriber {
        Subscriber::start_on("127.0.0.1").await
    }

    pub async fn start_on(ip: &str) -> Subscriber {
        let state = Arc::new(Mutex::new(SubState {
            verify: Verify::Echo,
            replies: VecDeque::new(),
            usual: 200,
            retry_after: None,
            location: "http://127.0.0.1:9/elsewhere".to_owned(),
            delay: Duration::ZERO,
            in_flight: 0,
            max_in_flight: 0,
            requests: Vec::new(),
        }));
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let st = state.clone();
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(move || {
            let st = st.clone();
            let tx = tx.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let st = st.clone();
                let tx = tx.clone();
                async move { answer(&st, &tx, req, body).await }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Subscriber {
            base: format!("http://{addr}"),
            state,
            changed: rx,
        }
    }

    pub fn callback(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn set_verify(&self, v: Verify) {
        self.state.lock().unwrap().verify = v;
    }

    pub fn reply_with(&self, statuses: &[u16]) {
        self.state.lock().unwrap().replies.extend(statuses);
    }

    /// The status of every delivery answer once `reply_with`'s list is used up.
    pub fn usually_reply(&self, status: u16) {
        self.state.lock().unwrap().usual = status;
    }

    /// `Retry-After` value sent with 429 and 503 answers.
    pub fn retry_after(&self, value: &str) {
        self.state.lock().unwrap().retry_after = Some(value.to_owned());
    }

    /// `Location` of 3xx answers to deliveries (by default a closed port).
    pub fn redirect_deliveries_to(&self, location: &str) {
        self.state.lock().unwrap().location = location.to_owned();
    }

    /// Every delivery answer takes this long.
    pub fn answer_after(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// Most deliveries ever in progress at once.
    pub fn max_concurrency(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn verifications(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "GET")
            .collect()
    }

    pub fn deliveries(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }

    /// Waits until `check` holds over everything recorded so far.
    pub async fn wait<F: Fn(&[Recorded]) -> bool>(&self, what: &str, check: F) -> Vec<Recorded> {
        let mut rx = self.changed.clone();
        let state = self.state.clone();
        let ok = tokio::time::timeout(
            PATIENCE,
            rx.wait_for(|_| check(&state.lock().unwrap().requests)),
        )
        .await;
        assert!(
            ok.is_ok(),
            "timed out waiting for {what}; saw {:#?}",
            self.requests()
        );
        self.requests()
    }

    pub async fn wait_deliveries(&self, n: usize) -> Vec<Recorded> {
        self.wait(&format!("{n} deliveries"), |r| {
            r.iter().filter(|r| r.method == "POST").count() >= n
        })
        .await;
        self.deliveries()
    }

    pub async fn wait_verifications(&self, n: usize) -> Vec<Recorded> {
        self.wait(&format!("{n} verification requests"), |r| {
            r.iter().filter(|r| r.method == "GET").count() >= n
        })
        .await;
        self.verifications()
    }
}

async fn answer(
    st: &Mutex<SubState>,
    tx: &watch::Sender<u64>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let rec = Recorded::of(&req, &body);
    let is_get = rec.method == "GET";
    let challenge = rec.param("hub.challenge").unwrap_or("").to_owned();
    let (verify, reply, delay, retry_after, location) = {
        let mut s = st.lock().unwrap();
        s.requests.push(rec);
        let reply = if is_get {
            200
        } else {
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            let usual = s.usual;
            s.replies.pop_front().unwrap_or(usual)
        };
        (
            s.verify.clone(),
            reply,
            s.delay,
            s.retry_after.clone(),
            s.location.clone(),
        )
    };
    tx.send_modify(|v| *v += 1);
    if !is_get {
        if reply == 0 {
            // 0: accept the delivery and never answer.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(delay).await;
        let mut r = HttpResponse::build(actix_web::http::StatusCode::from_u16(reply).unwrap());
        if (300..400).contains(&reply) {
            r.insert_header(("location", location));
        }
        if let (429 | 503, Some(ra)) = (reply, retry_after) {
            r.insert_header(("retry-after", ra));
        }
        st.lock().unwrap().in_flight -= 1;
        tx.send_modify(|v| *v += 1);
        return r.finish();
    }
    match verify {
        Verify::Echo => HttpResponse::Ok()
            .content_type("text/plain")
            .body(challenge),
        Verify::Wrong => HttpResponse::Ok().body("not-the-challenge"),
        Verify::Status(s) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(s).unwrap()).body(challenge)
        }
        Verify::Redirect(to) => HttpResponse::Found()
            .insert_header(("location", to))
            .finish(),
        Verify::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

struct TopicDoc {
    content_type: String,
    body: Vec<u8>,
    etag: Option<String>,
    /// Answer `302 Found` to this location instead.
    redirect: Option<String>,
}

/// A publisher's topic server: serves documents set by the test, records fetches.
#[derive(Clone)]
pub struct Publisher {
    pub base: String,
    docs: Arc<Mutex<std::collections::HashMap<String, TopicDoc>>>,
    fetches: Arc<Mutex<Vec<Recorded>>>,
    changed: watch::Receiver<u64>,
}

impl Publisher {
    pub async fn start() -> Publisher {
        let docs: Arc<Mutex<std::collections::HashMap<String, TopicDoc>>> = Arc::default();
        let fetches: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let (d, f) = (docs.clone(), fetches.clone());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(move || {
            let (d, f, tx) = (d.clone(), f.clone(), tx.clone());
            App::new().default_service(web::to(move |req: HttpRequest| {
                let (d, f, tx) = (d.clone(), f.clone(), tx.clone());
                async move {
                    let rec = Recorded::of(&req, &[]);
                    let inm = rec.header("if-none-match").map(str::to_owned);
                    f.lock().unwrap().push(rec);
                    tx.send_modify(|v| *v += 1);
                    let docs = d.lock().unwrap();
                    let Some(doc) = docs.get(req.path()) else {
                        return HttpResponse::NotFound().finish();
                    };
                    if let Some(to) = &doc.redirect {
                        return HttpResponse::Found()
                            .insert_header(("location", to.clone()))
                            .finish();
                    }
                    if doc.etag.is_some() && inm == doc.etag {
                        return HttpResponse::NotModified().finish();
                    }
                    let mut r = HttpResponse::Ok();
                    r.insert_header(("content-type", doc.content_type.clone()));
                    if let Some(e) = &doc.etag {
                        r.insert_header(("etag", e.clone()));
                    }
                    r.body(doc.body.clone())
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Publisher {
            base: format!("http://{addr}"),
            docs,
            fetches,
            changed: rx,
        }
    }

    pub fn topic(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn set(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) {
        self.set_with_etag(path, content_type, body, None);
    }

    pub fn set_with_etag(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Vec<u8>>,
        etag: Option<&str>,
    ) {
        self.docs.lock().unwrap().insert(
            path.to_owned(),
            TopicDoc {
                content_type: content_type.to_owned(),
                body: body.into(),
                etag: etag.map(str::to_owned),
                redirect: None,
            },
        );
    }

    /// `path` answers `302 Found` with `Location: to`.
    pub fn redirect(&self, path: &str, to: &str) {
        self.docs.lock().unwrap().insert(
            path.to_owned(),
            TopicDoc {
                content_type: String::new(),
                body: vec![],
                etag: None,
                redirect: Some(to.to_owned()),
            },
        );
    }

    pub fn fetches(&self) -> Vec<Recorded> {
        self.fetches.lock().unwrap().clone()
    }

    pub async fn wait_fetches(&self, n: usize) -> Vec<Recorded> {
        let mut rx = self.changed.clone();
        let f = self.fetches.clone();
        let ok =
            tokio::time::timeout(PATIENCE, rx.wait_for(|_| f.lock().unwrap().len() >= n)).await;
        assert!(ok.is_ok(), "timed out waiting for {n} topic fetches");
        self.fetches()
    }
}

/// An Atom feed with these (id, title) entries, feed-level metadata and a namespace extension.
pub fn atom(entries: &[(&str, &str)]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\" xmlns:media=\"http://search.yahoo.com/mrss/\">\n  <title>Blog</title>\n  <id>urn:blog</id>\n  <updated>2026-11-24T00:00:00Z</updated>\n",
    );
    for (id, title) in entries {
        s.push_str(&format!(
            "  <entry>\n    <id>{id}</id>\n    <title>{title}</title>\n    <updated>2026-11-24T00:00:00Z</updated>\n    <media:thumbnail url=\"http://x/{id}.png\"/>\n  </entry>\n"
        ));
    }
    s.push_str("</feed>\n");
    s
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
