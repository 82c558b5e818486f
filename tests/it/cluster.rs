//! Three hub processes on one PostgreSQL database, each with its own `cluster.node_id` and
//! `--listen`: any node accepts subscriptions and pings, every node delivers, a node killed
//! with SIGKILL loses nothing (its leases end and the others resume from the stored cursors),
//! a topic pinged on every node at once is fetched once, a destination's window is not
//! multiplied by the nodes, and a rolling restart under load loses nothing. PostgreSQL by name,
//! whatever `HUBCAST_TEST_BACKEND` says (the database named by `DATABASE_URL`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hubcast::storage::Storage;
use hubcast::storage::postgres::PgStore;

use crate::helpers::*;
use crate::process::*;

const TOKEN: &str = "cluster-publisher-token";
/// How long a cluster test waits for a whole fan-out.
const FAN_OUT_PATIENCE: Duration = Duration::from_secs(180);

struct Cluster {
    db: String,
    store: Storage,
    dir: tempfile::TempDir,
    nodes: Vec<Option<Proc>>,
}

impl Cluster {
    /// `n` nodes on a fresh database, `delivery` more keys of each one's `[delivery]`.
    async fn start(n: usize, delivery: &str) -> Cluster {
        let db = fresh_database();
        let store = Storage::new_shared(Arc::new(PgStore::open(&db, 4).await.unwrap()));
        let mut c = Cluster {
            db,
            store,
            dir: tempfile::tempdir().unwrap(),
            nodes: Vec::new(),
        };
        for i in 0..n {
            let p = c.spawn(i, delivery).await;
            c.nodes.push(Some(p));
        }
        c
    }

    async fn spawn(&self, i: usize, delivery: &str) -> Proc {
        let dir = self.dir.path().join(format!("node-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("hubcast.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n\
                 [storage]\nbackend = \"postgres\"\npostgres_url = {db:?}\npool_size = 8\n\
                 [cluster]\nnode_id = \"node-{i}\"\nlease = \"3s\"\nheartbeat_interval = \"300ms\"\n\
                 poll_interval = \"20ms\"\nrescan_interval = \"500ms\"\n\
                 [ssrf]\ncallback_allow = [\"127.0.0.0/8\"]\ntopic_allow = [\"127.0.0.0/8\"]\n\
                 [limits]\nsubscriptions_per_client = \"off\"\npings_per_client = \"off\"\n\
                 verifications_per_host = \"off\"\nfetches_per_topic = \"off\"\n\
                 [delivery]\nretry_schedule = [\"200ms\", \"500ms\", \"1s\", \"2s\"]\n{delivery}\n\
                 [[publishers]]\nname = \"p\"\ntopics = [\"http://127.0.0.1:\"]\ntoken = \"{TOKEN}\"\n",
                db = self.db
            ),
        )
        .unwrap();
        start_process(&config).await
    }

    fn url(&self, i: usize) -> String {
        self.nodes[i].as_ref().expect("node runs").url.clone()
    }

    fn kill(&mut self, i: usize) {
        let mut p = self.nodes[i].take().expect("node runs");
        p.child.start_kill().unwrap(); // SIGKILL
    }

    /// Subscribes every callback through node `i` and waits until all are active.
    async fn subscribe_all(&self, i: usize, topic: &str, callbacks: &[String]) {
        let url = self.url(i);
        futures_util::stream::iter(callbacks.iter().cloned())
            .for_each_concurrent(16, |cb| {
                let url = url.clone();
                async move {
                    let status = post(
                        &url,
                        &[
                            ("hub.mode", "subscribe"),
                            ("hub.topic", topic),
                            ("hub.callback", &cb),
                        ],
                    )
                    .await;
                    assert_eq!(status, 202);
                }
            })
            .await;
        let want = callbacks.len() as u64;
        poll_until("every subscription to be active", PATIENCE, || async {
            (self.store.subs.count_for_topic(topic).await.unwrap() == want).then_some(())
        })
        .await;
    }

    /// Nothing pending: no pings, jobs, retries or verifications.
    async fn wait_quiet(&self) {
        let last = std::cell::RefCell::new((0, 0, 0, 0));
        poll_until("the cluster to finish", FAN_OUT_PATIENCE, || async {
            let s = &self.store;
            let now = (
                s.publish.pings().await.unwrap().len(),
                s.delivery.jobs().await.unwrap().len(),
                s.delivery.count_retries().await.unwrap() as usize,
                s.subs.intents().await.unwrap().len(),
            );
            if now != *last.borrow() {
                eprintln!("pending (pings, jobs, retries, verifications): {now:?}");
                *last.borrow_mut() = now;
            }
            (now == (0, 0, 0, 0)).then_some(())
        })
        .await;
    }
}

/// Pushes an Atom feed holding one new entry, `urn:u:{n}`, to `topic` through `hub`.
async fn push_entry(hub: &str, topic: &str, n: usize) -> u16 {
    fat_ping(hub, topic, atom(&[(&format!("urn:u:{n}"), "an update")])).await
}

async fn fat_ping(hub: &str, topic: &str, body: String) -> u16 {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("hub.mode", "publish"), ("hub.url", topic)])
        .finish();
    client()
        .post(format!("{hub}?{q}"))
        .header("content-type", "application/atom+xml")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits (looking every quarter second: a tally reads every delivery) until the subscribers
/// have `n` entries, counted once per callback; says how far they got meanwhile.
async fn wait_entries(subs: &[Subscriber], n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + FAN_OUT_PATIENCE;
    let mut last = 0;
    loop {
        let (got, duplicates, _) = tally(subs);
        if got >= n {
            return;
        }
        if got != last {
            eprintln!("{what}: {got} of {n} ({duplicates} duplicates)");
            last = got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {got} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Subscribers on `n` loopback addresses (one destination server each).
async fn destinations(n: usize) -> Vec<Subscriber> {
    let mut subs = Vec::new();
    for i in 0..n {
        subs.push(Subscriber::start_on(&format!("127.0.0.{}", i + 2)).await);
    }
    subs
}

/// The `urn:u:` entries a delivered feed carries (a destination that fell behind gets several
/// updates merged into one delivery).
fn entries(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    text.split("<id>")
        .skip(1)
        .filter_map(|rest| rest.split("</id>").next())
        .filter(|id| id.starts_with("urn:u:"))
        .map(str::to_owned)
        .collect()
}

/// (entries delivered to a callback, counted once; those delivered again; deliveries per
/// delivering hub) over the subscribers.
fn tally(subs: &[Subscriber]) -> (usize, usize, HashMap<String, usize>) {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut per_hub: HashMap<String, usize> = HashMap::new();
    for s in subs {
        for d in s.deliveries() {
            for e in entries(&d.body) {
                total += 1;
                seen.insert((s.base.clone(), d.target.clone(), e));
            }
            let hub = d
                .headers_named("link")
                .into_iter()
                .flat_map(|l| l.split(','))
                .find(|l| l.contains("rel=\"hub\""))
                .unwrap_or_default()
                .to_owned();
            *per_hub.entry(hub).or_default() += 1;
        }
    }
    (seen.len(), total - seen.len(), per_hub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_a_fan_out_and_a_node_killed_midway_loses_nothing() {
    const DESTINATIONS: usize = 10;
    const PER_DESTINATION: usize = 10;
    const UPDATES: usize = 500;
    const DELIVERIES: usize = UPDATES * DESTINATIONS * PER_DESTINATION; // 50,000
    let mut cluster = Cluster::start(3, "").await;
    let subs = destinations(DESTINATIONS).await;
    let topic = "http://127.0.0.1:1/cluster/fan-out";
    let callbacks: Vec<String> = subs
        .iter()
        .flat_map(|s| (0..PER_DESTINATION).map(move |i| s.callback(&format!("/cb{i}"))))
        .collect();
    // Subscriptions through node 0, pings through node 1, deliveries from all.
    cluster.subscribe_all(0, topic, &callbacks).await;
    let pinger = cluster.url(1);
    let pings = tokio::spawn(async move {
        futures_util::stream::iter(0..UPDATES)
            .for_each_concurrent(16, |i| {
                let pinger = pinger.clone();
                async move {
                    assert_eq!(push_entry(&pinger, topic, i).await, 202);
                }
            })
            .await;
    });
    wait_entries(&subs, DELIVERIES / 5, "a fifth of the fan-out").await;
    cluster.kill(2);
    let (at_kill, _, _) = tally(&subs);
    pings.await.unwrap();
    wait_entries(&subs, DELIVERIES, "every delivery").await;
    cluster.wait_quiet().await;
    let (unique, duplicates, per_hub) = tally(&subs);
    eprintln!(
        "50,000 deliveries: node 2 killed after {at_kill}; {duplicates} duplicates; per node: {per_hub:?}"
    );
    assert_eq!(unique, DELIVERIES, "nothing lost");
    assert_eq!(
        cluster.store.log.bounds().await.unwrap().lead,
        UPDATES as u64,
        "every update numbered once"
    );
    // Duplicates only of what node 2 had in flight: at most a window per destination it held.
    assert!(
        duplicates <= DESTINATIONS * 32,
        "{duplicates} duplicates is more than node 2 could have had in flight"
    );
    for i in [0, 1] {
        let url = cluster.url(i);
        assert!(
            per_hub.keys().any(|h| h.contains(&url)),
            "node {i} delivered: {per_hub:?}"
        );
    }
    // Any node shows the cluster, the dead node with its last heartbeat.
    let view: serde_json::Value = client()
        .get(format!("{}admin/api/cluster", cluster.url(0)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["node"], "node-0");
    assert_eq!(view["shared"], true);
    let ids: Vec<&str> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["node-0", "node-1", "node-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_pinged_on_every_node_at_once_is_fetched_once() {
    let cluster = Cluster::start(3, "").await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/feed");
    publisher.set(
        "/feed",
        "application/atom+xml",
        atom(&[("urn:e:1", "first")]),
    );
    cluster
        .subscribe_all(0, &topic, &[sub.callback("/cb")])
        .await;
    for round in 1..=3 {
        let before = publisher.fetches().len();
        publisher.set(
            "/feed",
            "application/atom+xml",
            atom(&[(&format!("urn:e:{round}"), "an entry")]),
        );
        // One client with a connection open to each node: the three pings leave together.
        let http = client();
        for i in 0..3 {
            let r = http.get(format!("{}healthz", cluster.url(i))).send().await;
            assert!(r.unwrap().status().is_success());
        }
        let pings = (0..3).map(|i| {
            http.post(cluster.url(i))
                .form(&[("hub.mode", "publish"), ("hub.url", topic.as_str())])
                .send()
        });
        for r in futures_util::future::join_all(pings).await {
            assert_eq!(r.unwrap().status(), 202);
        }
        cluster.wait_quiet().await;
        sub.wait_deliveries(round).await;
        assert_eq!(
            publisher.fetches().len() - before,
            1,
            "round {round}: three pings, one on each node, one fetch"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_destinations_window_is_not_multiplied_by_the_nodes() {
    // Every node's window for a destination may grow to 4; the destination answers slowly.
    let cluster = Cluster::start(3, "per_destination = 4\ninitial_window = 4").await;
    let sub = Subscriber::start().await;
    sub.answer_after(Duration::from_millis(20));
    let topic = "http://127.0.0.1:1/cluster/window";
    let callbacks: Vec<String> = (0..20).map(|i| sub.callback(&format!("/w{i}"))).collect();
    cluster.subscribe_all(0, topic, &callbacks).await;
    // Pings on every node: each node's planner sees every event.
    let pings = (0..30).map(|i| {
        let url = cluster.url(i % 3);
        async move { push_entry(&url, topic, i).await }
    });
    for status in futures_util::future::join_all(pings).await {
        assert_eq!(status, 202);
    }
    let subs = [sub];
    wait_entries(&subs, 600, "every delivery").await;
    let [sub] = subs;
    cluster.wait_quiet().await;
    assert!(
        sub.max_concurrency() >= 2,
        "the slow destination got concurrent requests"
    );
    assert!(
        sub.max_concurrency() <= 4,
        "{} requests at once at one destination, its window is 4",
        sub.max_concurrency()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_loses_nothing() {
    const UPDATES: usize = 300;
    let mut cluster = Cluster::start(3, "").await;
    let subs = destinations(4).await;
    let topic = "http://127.0.0.1:1/cluster/rolling";
    let callbacks: Vec<String> = subs
        .iter()
        .flat_map(|s| (0..5).map(move |i| s.callback(&format!("/r{i}"))))
        .collect();
    cluster.subscribe_all(0, topic, &callbacks).await;
    let mut sent = 0;
    for restart in 0..3 {
        // Load on the nodes that run, while one after the other stops and starts again.
        let urls: Vec<String> = (0..3)
            .filter(|i| *i != restart)
            .map(|i| cluster.url(i))
            .collect();
        let batch: Vec<(String, usize)> = (sent..sent + UPDATES / 3)
            .map(|n| (urls[n % urls.len()].clone(), n))
            .collect();
        sent += batch.len();
        let load = tokio::spawn(async move {
            futures_util::stream::iter(batch)
                .for_each_concurrent(8, |(url, n)| async move {
                    assert_eq!(push_entry(&url, topic, n).await, 202);
                })
                .await;
        });
        let old = cluster.nodes[restart].take().unwrap();
        stop_gracefully(old).await;
        let again = cluster.spawn(restart, "").await;
        cluster.nodes[restart] = Some(again);
        load.await.unwrap();
    }
    let want = UPDATES * callbacks.len();
    wait_entries(&subs, want, "every delivery").await;
    cluster.wait_quiet().await;
    let (unique, duplicates, _) = tally(&subs);
    eprintln!("rolling restart: {unique} deliveries, {duplicates} duplicates");
    assert_eq!(unique, want, "nothing lost");
}
