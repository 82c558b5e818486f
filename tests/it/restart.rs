//! Durability with a real process: after `kill -9` and a restart, active subscriptions, pending
//! verifications, undelivered events and scheduled retries are all there and resume. The store
//! must outlive its hub, so every hub here is on [`persistent_backend`] (sled), whatever
//! `HUBCAST_TEST_BACKEND` says.

use std::time::Duration;

use crate::helpers::*;
use crate::process::*;

async fn subscribers(url: &str, topic: &str) -> u64 {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("hub.topic", topic)
        .finish();
    let body = client()
        .get(format!("{url}?{q}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("subscribers: "))
        .unwrap()
        .parse()
        .unwrap()
}

async fn wait_subscribers(url: &str, topic: &str, n: u64) {
    poll_until(&format!("{n} subscribers"), PATIENCE, || async {
        (subscribers(url, topic).await == n).then_some(())
    })
    .await
}

const ATOM: &str = "application/atom+xml";

/// Does this delivery carry the Atom entry `id`?
fn has(r: &Recorded, id: &str) -> bool {
    String::from_utf8_lossy(&r.body).contains(&format!("<id>{id}</id>"))
}

#[tokio::test]
async fn kill_9_and_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = process_config(
        &dir,
        persistent_backend(),
        "[delivery]\nretry_schedule = [\"4s\"]\ntimeout = \"60s\"\n",
    );
    let publisher = Publisher::start().await;
    let topic = publisher.topic("/t");
    let (a, b, c) = (
        Subscriber::start().await,
        Subscriber::start().await,
        Subscriber::start().await,
    );

    let mut hub = start_process(&config).await;
    for s in [&a, &c] {
        assert_eq!(
            post(
                &hub.url,
                &[
                    ("hub.mode", "subscribe"),
                    ("hub.topic", &topic),
                    ("hub.callback", &s.callback("/cb"))
                ]
            )
            .await,
            202
        );
    }
    wait_subscribers(&hub.url, &topic, 2).await;
    // B's verification is in progress when the hub dies.
    b.set_verify(Verify::Hang);
    post(
        &hub.url,
        &[
            ("hub.mode", "subscribe"),
            ("hub.topic", &topic),
            ("hub.callback", &b.callback("/cb")),
        ],
    )
    .await;
    b.wait_verifications(1).await;
    // An Atom topic: v1 has entry e1, v2 adds e2 (so v2's event carries e2 only), v3 adds e3.
    // A accepts v1 and never answers; C refuses v1 once (a retry is scheduled), then takes v2.
    a.reply_with(&[0]);
    c.reply_with(&[500]);
    publisher.set("/t", ATOM, atom(&[("e1", "one")]));
    assert_eq!(
        post(&hub.url, &[("hub.mode", "publish"), ("hub.url", &topic)]).await,
        202
    );
    a.wait_deliveries(1).await;
    c.wait_deliveries(1).await;
    publisher.set("/t", ATOM, atom(&[("e2", "two"), ("e1", "one")]));
    post(&hub.url, &[("hub.mode", "publish"), ("hub.url", &topic)]).await;
    // C's destination handles events in order: v2 arriving means v1's retry is recorded.
    c.wait_deliveries(2).await;

    hub.child.start_kill().unwrap(); // SIGKILL
    hub.child.wait().await.unwrap();
    b.set_verify(Verify::Echo);
    let restarted_at = c.requests().len();
    let hub = start_process(&config).await;

    // The pending verification resumes and succeeds.
    b.wait_verifications(2).await;
    wait_subscribers(&hub.url, &topic, 3).await;
    // A never acknowledged v1, and v2 waited behind it: the restarted hub owes A both entries.
    // It sends v1 again and then v2, or, when both are still queued together, one coalesced
    // delivery carrying e1 and e2. Either way both entries reach A after the restart.
    let got = a
        .wait("e1 and e2 at A after the restart", |r| {
            let after: Vec<&Recorded> = r
                .iter()
                .filter(|r| r.method == "POST")
                .skip(1) // the v1 that was never answered
                .collect();
            after.iter().any(|r| has(r, "e1")) && after.iter().any(|r| has(r, "e2"))
        })
        .await;
    assert!(has(got.iter().find(|r| r.method == "POST").unwrap(), "e1"));
    // C's retry keeps its schedule and arrives after the restart.
    let got = c
        .wait("v1 retried at C", |r| {
            r.iter()
                .filter(|r| r.method == "POST" && has(r, "e1"))
                .count()
                >= 2
        })
        .await;
    let retry_index = got.iter().rposition(|r| has(r, "e1")).unwrap();
    assert!(
        retry_index >= restarted_at,
        "the retry was delivered by the restarted hub"
    );

    // All three subscriptions are active: a new update reaches each.
    publisher.set(
        "/t",
        ATOM,
        atom(&[("e3", "three"), ("e2", "two"), ("e1", "one")]),
    );
    post(&hub.url, &[("hub.mode", "publish"), ("hub.url", &topic)]).await;
    for s in [&a, &b, &c] {
        s.wait("e3", |r| r.iter().any(|r| has(r, "e3"))).await;
    }
    stop_gracefully(hub).await;
}

#[tokio::test]
async fn kill_9_in_the_middle_of_a_fan_out_then_every_subscriber_gets_it() {
    const PAGE: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let config = process_config(
        &dir,
        persistent_backend(),
        &format!("[delivery]\npage_size = {PAGE}\ninitial_window = 2\nper_destination = 2\n"),
    );
    let publisher = Publisher::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "the update");
    let (big, small) = (Subscriber::start().await, Subscriber::start().await);
    let callbacks: Vec<String> = (0..120)
        .map(|i| big.callback(&format!("/cb{i}")))
        .chain((0..30).map(|i| small.callback(&format!("/cb{i}"))))
        .collect();

    let hub = start_process(&config).await;
    for chunk in callbacks.chunks(50) {
        let (url, topic) = (&hub.url, &topic);
        let all = chunk.iter().map(|cb| async move {
            let form = [
                ("hub.mode", "subscribe"),
                ("hub.topic", topic.as_str()),
                ("hub.callback", cb.as_str()),
            ];
            post(url, &form).await
        });
        futures_util::future::join_all(all).await;
    }
    wait_subscribers(&hub.url, &topic, callbacks.len() as u64).await;
    // Slow answers: the fan-out takes seconds, and the hub dies a third of the way in.
    big.answer_after(Duration::from_millis(20));
    small.answer_after(Duration::from_millis(20));
    post(&hub.url, &[("hub.mode", "publish"), ("hub.url", &topic)]).await;
    big.wait_deliveries(40).await;
    let mut hub = hub;
    hub.child.start_kill().unwrap();
    hub.child.wait().await.unwrap();
    let before_restart = big.deliveries().len() + small.deliveries().len();
    assert!(
        before_restart < callbacks.len(),
        "the fan-out was cut short"
    );

    let hub = start_process(&config).await;
    for (s, n) in [(&big, 120), (&small, 30)] {
        s.wait("every callback delivered", |r| {
            (0..n).all(|i| {
                let cb = format!("/cb{i}");
                r.iter()
                    .any(|r| r.method == "POST" && r.target == cb && r.body == b"the update")
            })
        })
        .await;
    }
    // Duplicates are bounded by what was in flight: at most a page per destination again.
    let total = big.deliveries().len() + small.deliveries().len();
    let duplicates = total - callbacks.len();
    assert!(
        duplicates <= 2 * PAGE,
        "{duplicates} duplicates after the restart"
    );
    stop_gracefully(hub).await;
}

#[tokio::test]
async fn a_stopped_in_process_hub_reopens_its_store() {
    let hub = spawn_hub_on(persistent_backend(), "").await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "after restart");
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    let dir = hub.stop().await;
    let cfg = config_on(&dir, persistent_backend(), "");
    let hub = start_in(dir, cfg).await;
    assert_eq!(hub.store().subs.count_for_topic(&topic).await.unwrap(), 1);
    hub.publish(&topic).await;
    assert_eq!(sub.wait_deliveries(1).await[0].body, b"after restart");
}
