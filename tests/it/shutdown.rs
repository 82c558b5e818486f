//! Graceful shutdown of a real process: on SIGTERM nothing new is sent, deliveries in flight
//! finish (up to `server.shutdown_deadline`), the rest is stored and resumes after a restart.
//! What was not sent must outlive the process, so its store is on [`persistent_backend`] (sled),
//! whatever `HUBCAST_TEST_BACKEND` says.

use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::process::*;

const CALLBACKS: usize = 40;

/// How long the process takes to exit, in real time: paused time cannot reach another process.
async fn exits(hub: &mut Proc) -> Duration {
    let started = Instant::now();
    let exit = tokio::time::timeout(PATIENCE, hub.child.wait())
        .await
        .expect("the hub stops")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    started.elapsed()
}

/// Subscribes `n` callbacks of `sub` to `topic` and waits until they are active.
async fn subscribe_all(hub: &Proc, topic: &str, sub: &Subscriber, n: usize) -> Vec<String> {
    let callbacks: Vec<String> = (0..n)
        .map(|i| sub.callback(&format!("/cb{i:02}")))
        .collect();
    for cb in &callbacks {
        let form = [
            ("hub.mode", "subscribe"),
            ("hub.topic", topic),
            ("hub.callback", cb.as_str()),
        ];
        assert_eq!(post(&hub.url, &form).await, 202);
    }
    sub.wait_verifications(n).await;
    // Verified is not yet stored: wait for the hub to say so.
    let url = format!("{}admin/api/topic?topic={}", hub.url, enc(topic));
    wait_body(&url, |b| b.contains(&format!("\"subscribers\":{n}"))).await;
    callbacks
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn per_callback(sub: &Subscriber, callbacks: &[String]) -> Vec<usize> {
    let d = sub.deliveries();
    callbacks
        .iter()
        .map(|cb| {
            let path = &cb[sub.base.len()..];
            d.iter().filter(|r| r.target == path).count()
        })
        .collect()
}

#[tokio::test]
async fn sigterm_lets_deliveries_in_flight_finish_and_the_rest_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = process_config_with(
        &dir,
        persistent_backend(),
        "shutdown_deadline = \"10s\"",
        "[delivery]\npage_size = 10\ninitial_window = 2\nper_destination = 2\n",
    );
    let publisher = Publisher::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "the update");
    let sub = Subscriber::start().await;
    let mut hub = start_process(&config).await;
    let callbacks = subscribe_all(&hub, &topic, &sub, CALLBACKS).await;

    // Each answer takes 400 ms, two at a time: the whole fan-out would take 8 s.
    sub.answer_after(Duration::from_millis(400));
    post(&hub.url, &[("hub.mode", "publish"), ("hub.url", &topic)]).await;
    sub.wait_deliveries(3).await;
    sigterm(&hub);
    let took = exits(&mut hub).await;
    let before = sub.deliveries().len();
    assert!(
        before < 10,
        "{before} deliveries: new ones started after SIGTERM"
    );
    assert!(took < Duration::from_secs(5), "took {took:?} to stop");

    sub.answer_after(Duration::ZERO);
    let hub = start_process(&config).await;
    sub.wait_deliveries(CALLBACKS).await;
    stop_gracefully(hub).await;
    // Those in flight finished and were recorded as done: every callback got it exactly once.
    let counts = per_callback(&sub, &callbacks);
    assert!(counts.iter().all(|n| *n == 1), "{counts:?}");
    assert!(sub.deliveries().iter().all(|r| r.body == b"the update"));
}

#[tokio::test]
async fn past_the_deadline_deliveries_in_flight_are_cut_off_and_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = process_config_with(
        &dir,
        persistent_backend(),
        "shutdown_deadline = \"1s\"",
        "[delivery]\ninitial_window = 2\nper_destination = 2\n",
    );
    let publisher = Publisher::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "the update");
    let sub = Subscriber::start().await;
    let mut hub = start_process(&config).await;
    let callbacks = subscribe_all(&hub, &topic, &sub, 6).await;

    // The subscriber takes longer than the deadline (but less than the delivery timeout).
    sub.answer_after(Duration::from_secs(12));
    post(&hub.url, &[("hub.mode", "publish"), ("hub.url", &topic)]).await;
    sub.wait_deliveries(2).await;
    sigterm(&hub);
    let took = exits(&mut hub).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "took {took:?}: the deadline is 1 s"
    );
    assert_eq!(sub.deliveries().len(), 2, "nothing new after SIGTERM");

    sub.answer_after(Duration::ZERO);
    let hub = start_process(&config).await;
    sub.wait("every callback delivered", |r| {
        callbacks.iter().all(|cb| {
            let path = &cb[sub.base.len()..];
            r.iter()
                .filter(|r| r.method == "POST" && r.target == path)
                .count()
                >= 1
        })
    })
    .await;
    stop_gracefully(hub).await;
    // The two cut off are sent again (at least once), the others once.
    let counts = per_callback(&sub, &callbacks);
    assert_eq!(counts.iter().sum::<usize>(), 8, "{counts:?}");
}
