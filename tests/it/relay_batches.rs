//! Delegated delivery: a destination server registers a relay on its own origin
//! (`hub.mode=relay`); while registered, its deliveries go as batches with each subscriber's
//! own signature; `gone` answers remove subscriptions; failures retry each delivery; a lapsed
//! registration goes back to direct delivery.

use std::collections::BTreeSet;

use base64::Engine as _;
use hubcast::signature::{Algorithm, sign, verify};
use hubcast::storage::RELAY_TOPIC;

use crate::helpers::*;

const TOKEN: &str = "publisher-token-0123";
const RELAY_SECRET: &str = "the-relay-secret";

fn config() -> String {
    format!(
        "[[publishers]]\nname = \"pub\"\ntoken = \"{TOKEN}\"\ntopics = [\"http://127.0.0.1\"]\n"
    )
}

/// `n` subscribers of `topic` at the destination server `server`, each with its own secret.
async fn subscribers(hub: &TestHub, topic: &str, server: &Subscriber, n: usize) -> Vec<String> {
    let callbacks: Vec<String> = (0..n)
        .map(|i| server.callback(&format!("/inbox/{i:05}")))
        .collect();
    hub.store_subscriptions(topic, &callbacks).await;
    callbacks
}

/// Registers `server`'s relay at `/relay` and waits until the hub has it.
async fn register(hub: &TestHub, server: &Subscriber) -> String {
    let relay = server.callback("/relay");
    let r = hub
        .post_form(&[
            ("hub.mode", "relay"),
            ("hub.callback", &relay),
            ("hub.secret", RELAY_SECRET),
            ("hub.lease_seconds", "600"),
        ])
        .await;
    assert_eq!(r.status(), 202);
    hub.wait_active(RELAY_TOPIC, &relay).await;
    let check = server
        .verifications()
        .into_iter()
        .find(|v| v.path() == "/relay")
        .expect("the relay was asked");
    assert_eq!(check.param("hub.mode"), Some("relay"));
    assert_eq!(check.param("hub.lease_seconds"), Some("600"));
    assert_eq!(check.param("hub.topic"), None);
    relay
}

struct Batch {
    json: serde_json::Value,
}

impl Batch {
    fn callbacks(&self) -> Vec<String> {
        self.json["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["callback"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn batches(server: &Subscriber) -> Vec<Batch> {
    server
        .deliveries()
        .into_iter()
        .filter(|r| r.path() == "/relay")
        .map(|r| {
            assert_eq!(
                r.header("content-type"),
                Some("application/vnd.hubcast.batch+json")
            );
            let sig = r.header("x-hub-signature").expect("a signed batch");
            assert!(sig.starts_with("sha256="));
            assert!(
                verify(sig, RELAY_SECRET.as_bytes(), &r.body),
                "the batch signature"
            );
            Batch {
                json: serde_json::from_slice(&r.body).unwrap(),
            }
        })
        .collect()
}

#[tokio::test]
async fn a_registered_relay_takes_one_batch_per_thousand_deliveries() {
    let hub = spawn_hub_with(&config()).await;
    let server = Subscriber::start_on("127.0.0.9").await;
    let topic = "http://127.0.0.1:1/big";
    let callbacks = subscribers(&hub, topic, &server, 5_000).await;
    register(&hub, &server).await;
    let body = "a short message";
    assert_eq!(hub.fat_ping(topic, TOKEN, body).await.status(), 202);
    server
        .wait("five batches", |r| {
            r.iter()
                .filter(|r| r.path() == "/relay" && r.method == "POST")
                .count()
                >= 5
        })
        .await;
    hub.wait_jobs_done().await;
    let got = batches(&server);
    assert_eq!(got.len(), 5, "exactly 5 batch requests for 5,000 callbacks");
    assert_eq!(
        server.deliveries().len(),
        5,
        "and no direct delivery to any callback"
    );
    let mut seen = BTreeSet::new();
    let origin = hub.store().log.hub_id();
    for b in &got {
        let j = &b.json;
        assert_eq!(j["hub"], hub.url.as_str());
        assert_eq!(j["event"], format!("{origin}:1"));
        assert_eq!(j["topic"], topic);
        assert_eq!(j["content_type"], "text/plain");
        assert!(j["link"].as_str().unwrap().contains("rel=\"hub\""));
        let content = base64::engine::general_purpose::STANDARD
            .decode(j["content"].as_str().unwrap())
            .unwrap();
        assert_eq!(content, body.as_bytes());
        let deliveries = j["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), 1000);
        for d in deliveries {
            let cb = d["callback"].as_str().unwrap();
            let i: usize = cb.rsplit('/').next().unwrap().parse().unwrap();
            // Exactly what the subscriber would have received from the hub directly.
            assert_eq!(
                d["signature"].as_str().unwrap(),
                sign(
                    Algorithm::Sha256,
                    format!("secret-{i}").as_bytes(),
                    body.as_bytes()
                )
            );
            assert!(seen.insert(cb.to_owned()), "each callback once");
        }
    }
    assert_eq!(seen, callbacks.iter().cloned().collect::<BTreeSet<_>>());
    let metrics = hub.get_text("metrics").await;
    assert!(
        metrics.contains("hubcast_relay_batches_total{result=\"taken\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains("hubcast_deliveries_total{outcome=\"delivered\"} 5000"));

    // A `gone` answer removes exactly those subscriptions, of the batch it answers (the
    // first batch holds the first thousand callbacks: 1000 is not its to remove).
    let gone = [&callbacks[3], &callbacks[999]];
    let claimed = [&callbacks[3], &callbacks[999], &callbacks[1_000]];
    server.answer_next_with(&serde_json::json!({ "gone": claimed }).to_string());
    hub.fat_ping(topic, TOKEN, "second").await;
    server
        .wait("the second event's batches", |r| {
            r.iter()
                .filter(|r| r.path() == "/relay" && r.method == "POST")
                .count()
                >= 10
        })
        .await;
    hub.wait_jobs_done().await;
    for cb in &callbacks {
        let kept = hub.is_subscribed(topic, cb).await;
        assert_eq!(kept, !gone.contains(&cb), "{cb}");
    }
}

#[tokio::test]
async fn a_failed_batch_is_retried_as_a_batch_and_a_lapsed_relay_means_direct_delivery() {
    let hub = spawn_hub_with(&config()).await;
    let server = Subscriber::start_on("127.0.0.10").await;
    let topic = "http://127.0.0.1:1/small";
    let callbacks = subscribers(&hub, topic, &server, 30).await;
    let relay = register(&hub, &server).await;
    // The relay fails the batch once: every delivery is retried (through the relay again, as
    // one batch: they fall due together).
    server.reply_with(&[503]);
    hub.fat_ping(topic, TOKEN, "one").await;
    let all = |r: &[Recorded], body: &str| {
        let mut got = BTreeSet::new();
        for r in r.iter().filter(|r| r.method == "POST") {
            if r.path() == "/relay" {
                let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                let content = base64::engine::general_purpose::STANDARD
                    .decode(j["content"].as_str().unwrap())
                    .unwrap();
                if content == body.as_bytes() {
                    got.extend(Batch { json: j }.callbacks());
                }
            } else if r.body == body.as_bytes() {
                got.insert(format!("{}{}", server.base, r.path()));
            }
        }
        got
    };
    let want: BTreeSet<String> = callbacks.iter().cloned().collect();
    server
        .wait("every delivery of the failed batch, retried", |r| {
            all(r, "one") == want
                && r.iter()
                    .filter(|r| r.path() == "/relay" && r.method == "POST")
                    .count()
                    >= 2
        })
        .await;
    hub.wait_retries_settled().await;
    let relayed = batches(&server);
    let sizes: Vec<usize> = relayed.iter().map(|b| b.callbacks().len()).collect();
    assert_eq!(
        sizes,
        vec![30, 30],
        "the first batch, refused, then its retries due together, as one batch"
    );
    // The registration lapses: the next event goes to each callback directly.
    hub.end_lease(RELAY_TOPIC, &relay).await;
    hub.fat_ping(topic, TOKEN, "two").await;
    server
        .wait("every callback, directly", |r| all(r, "two") == want)
        .await;
    let direct = server
        .deliveries()
        .into_iter()
        .filter(|r| r.path() != "/relay" && r.body == b"two")
        .collect::<Vec<_>>();
    assert_eq!(direct.len(), 30);
    let i: usize = direct[0]
        .path()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        direct[0].header("x-hub-signature").unwrap(),
        sign(Algorithm::Sha256, format!("secret-{i}").as_bytes(), b"two")
    );
}

#[tokio::test]
async fn a_batch_refused_as_too_large_goes_again_in_halves() {
    let hub = spawn_hub_with(&config()).await;
    let server = Subscriber::start_on("127.0.0.11").await;
    let topic = "http://127.0.0.1:1/halves";
    let callbacks = subscribers(&hub, topic, &server, 40).await;
    register(&hub, &server).await;
    // The relay refuses the batch of 40 and then the first half of 20 as too large.
    server.reply_with(&[413, 413]);
    hub.fat_ping(topic, TOKEN, "in halves").await;
    server
        .wait("five batch requests", |r| {
            r.iter()
                .filter(|r| r.path() == "/relay" && r.method == "POST")
                .count()
                >= 5
        })
        .await;
    hub.wait_jobs_done().await;
    let got = batches(&server);
    let sizes: Vec<usize> = got.iter().map(|b| b.callbacks().len()).collect();
    assert_eq!(
        sizes,
        vec![40, 20, 10, 10, 20],
        "each refused batch goes again as two halves, in order"
    );
    let mut taken: Vec<String> = got[2..].iter().flat_map(|b| b.callbacks()).collect();
    taken.sort();
    let mut want = callbacks.clone();
    want.sort();
    assert_eq!(taken, want, "the batches taken carry every delivery once");
    assert_eq!(hub.store().delivery.count_retries().await.unwrap(), 0);
    assert!(
        hub.store()
            .delivery
            .dead_letters(10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        hub.metric("hubcast_relay_batches_total{result=\"split\"}")
            .await,
        2
    );
    assert_eq!(
        hub.metric("hubcast_relay_batches_total{result=\"taken\"}")
            .await,
        3
    );
    // Operators see the destination's batches.
    let v: serde_json::Value =
        serde_json::from_str(&hub.get_text("admin/api/relay").await).unwrap();
    assert_eq!(
        v["relays"][0]["batches"],
        serde_json::json!({"taken": 3, "failed": 0, "split": 2, "deliveries": 40})
    );
    let page = hub.get_text("").await;
    assert!(
        page.contains("<td>3</td><td>40</td><td>0</td><td>2</td>"),
        "the status page shows them too"
    );
}

#[tokio::test]
async fn unrelay_is_verified_and_a_relay_without_a_secret_is_refused() {
    let hub = spawn_hub_with(&config()).await;
    let server = Subscriber::start_on("127.0.0.11").await;
    let relay = register(&hub, &server).await;
    let r = hub
        .post_form(&[("hub.mode", "relay"), ("hub.callback", &relay)])
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("hub.secret"));
    let r = hub
        .post_form(&[("hub.mode", "unrelay"), ("hub.callback", &relay)])
        .await;
    assert_eq!(r.status(), 202);
    hub.wait_for("the registration to end", || async {
        !hub.is_subscribed(RELAY_TOPIC, &relay).await
    })
    .await;
    let asked = server.verifications();
    assert_eq!(asked.last().unwrap().param("hub.mode"), Some("unrelay"));
}

#[tokio::test]
async fn a_batch_that_exhausts_the_schedule_is_one_dead_letter_per_delivery() {
    let hub = spawn_hub_with(&config()).await;
    let server = Subscriber::start_on("127.0.0.11").await;
    let topic = "http://127.0.0.1:1/doomed";
    let callbacks = subscribers(&hub, topic, &server, 10).await;
    register(&hub, &server).await;
    // The first attempt and both retries of the schedule (100ms, 200ms) fail.
    server.reply_with(&[503, 503, 503]);
    hub.fat_ping(topic, TOKEN, "doomed").await;
    hub.wait_for("ten dead letters", || async {
        hub.store().delivery.count_dead_letters().await.unwrap() == 10
    })
    .await;
    hub.wait_retries_settled().await;
    let sizes: Vec<usize> = batches(&server)
        .iter()
        .map(|b| b.callbacks().len())
        .collect();
    assert_eq!(sizes, vec![10, 10, 10], "each attempt one batch");
    let dead = hub.store().delivery.dead_letters(100).await.unwrap();
    let mut named: Vec<String> = dead.iter().map(|d| d.callback.clone()).collect();
    named.sort();
    assert_eq!(named, callbacks);
    assert!(
        dead.iter()
            .all(|d| d.attempts == 3 && d.last_error.contains("503"))
    );

    // Replayed one by one: only that delivery goes again (as a batch of one, to the relay).
    let r = hub
        .client
        .post(format!(
            "{}admin/api/dead-letters/{}/replay",
            hub.url, dead[0].id
        ))
        .header("origin", hub.url.trim_end_matches('/'))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    server
        .wait("the replayed delivery", |r| {
            r.iter()
                .filter(|r| r.path() == "/relay" && r.method == "POST")
                .count()
                == 4
        })
        .await;
    hub.wait_retries_settled().await;
    let last = batches(&server).pop().unwrap();
    assert_eq!(last.callbacks(), vec![dead[0].callback.clone()]);
    assert_eq!(hub.store().delivery.count_dead_letters().await.unwrap(), 9);
}
