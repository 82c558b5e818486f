//! The destination scheduler over real HTTP: adaptive windows, dead destinations and their
//! probes, Retry-After, fairness between destinations. (The window's timing rules are unit
//! tests with paused time in `src/engine/window.rs`; these check the wiring end to end.)
//!
//! These run on real time: the in-process hub's engine shares the test's runtime, and paused time
//! jumps to the next timer whenever that runtime waits on a socket, so the first request already
//! times out (the test client's, the hub's delivery and verification timeouts).

use std::time::Duration;

use hubcast::engine::window::{Health, WindowStatus};

use crate::helpers::*;

fn window(hub: &TestHub, sub: &Subscriber) -> WindowStatus {
    hub.running()
        .engine
        .dispatcher()
        .destination(&sub.base)
        .window
        .status()
}

/// Subscribes `n` callbacks of `sub` to `topic`: /cb0, /cb1, ...
async fn subscribe_many(hub: &TestHub, topic: &str, sub: &Subscriber, n: usize) {
    let all = (0..n).map(|i| {
        let cb = sub.callback(&format!("/cb{i}"));
        async move { hub.subscribed(topic, &cb).await }
    });
    futures_util::future::join_all(all).await;
}

#[tokio::test]
async fn the_window_grows_with_successes_and_stays_within_its_maximum() {
    let hub = spawn_hub_with("[delivery]\ninitial_window = 1\nper_destination = 4").await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "x");
    subscribe_many(&hub, &topic, &sub, 60).await;
    sub.answer_after(Duration::from_millis(20));
    hub.publish(&topic).await;
    sub.wait_deliveries(60).await;
    assert_eq!(window(&hub, &sub).limit, 4, "grew from 1 to the maximum");
    let most = sub.max_concurrency();
    assert!(
        (2..=4).contains(&most),
        "at most 4 at once, and more than 1: {most}"
    );
}

#[tokio::test]
async fn failures_shrink_the_window_and_kill_the_destination_until_a_probe_succeeds() {
    let hub = spawn_hub_with(
        "[delivery]\ninitial_window = 4\nper_destination = 4\ndead_after = 3\n\
         probe_interval = \"300ms\"\nmax_probe_interval = \"300ms\"\n\
         retry_schedule = [\"100ms\", \"100ms\", \"100ms\", \"100ms\", \"100ms\", \"100ms\", \"100ms\", \"100ms\"]",
    )
    .await;
    let publisher = Publisher::start().await;
    let dead = Subscriber::start().await;
    let healthy = Subscriber::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "x");
    subscribe_many(&hub, &topic, &dead, 20).await;
    hub.subscribed(&topic, &healthy.callback("/cb")).await;

    dead.usually_reply(500);
    hub.publish(&topic).await;
    // The healthy destination is not held up by the failing one.
    healthy.wait_deliveries(1).await;
    hub.wait_for("the failing destination to be dead", || async {
        window(&hub, &dead).health == Health::Dead
    })
    .await;
    let status = window(&hub, &dead);
    assert!(status.limit < 4, "the window shrank: {status:?}");
    // While dead it gets single probes, not the 20 deliveries and their retries.
    let at_death = dead.deliveries().len();
    assert!(
        at_death < 20,
        "{at_death} requests before it was declared dead"
    );
    // Up to three requests let in before it died may still arrive; the fourth is a probe,
    // a probe interval after the death.
    let got = dead.wait_deliveries(at_death + 4).await;
    // Real time (see the module's note): the probe is a real request over loopback.
    let gap = got[at_death + 3].at - got[at_death + 2].at;
    assert!(gap >= Duration::from_millis(200), "probe after {gap:?}");

    // It comes back: every subscriber there gets the update (from the job or its retries).
    dead.usually_reply(200);
    dead.wait("every callback delivered once", |r| {
        (0..20).all(|i| {
            let cb = format!("/cb{i}");
            r.iter().any(|r| r.method == "POST" && r.target == cb)
        })
    })
    .await;
    hub.wait_for("the destination to be healthy", || async {
        window(&hub, &dead).health == Health::Healthy
    })
    .await;
}

#[tokio::test]
async fn retry_after_pauses_the_destination() {
    let hub = spawn_hub_with("[delivery]\ninitial_window = 1\nper_destination = 1").await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "x");
    subscribe_many(&hub, &topic, &sub, 2).await;
    sub.retry_after("1");
    sub.reply_with(&[429]);
    hub.publish(&topic).await;
    let got = sub.wait_deliveries(3).await;
    // Real time (see the module's note): the pause is measured between two real requests.
    // The 429 paused the destination: nothing was sent to it for a second, neither the
    // other subscriber's delivery nor the retry.
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(950),
        "next request {:?} after the 429",
        got[1].at - got[0].at
    );
    assert_eq!(
        window(&hub, &sub).consecutive_failures,
        0,
        "not a step towards dead"
    );
    let dls = hub.store().delivery.dead_letters(10).await.unwrap();
    assert!(dls.is_empty());
}

#[tokio::test]
async fn a_huge_destination_does_not_starve_a_small_one() {
    let hub = spawn_hub_with(
        "[delivery]\ninitial_window = 4\nper_destination = 4\nmax_in_flight = 4\npage_size = 50",
    )
    .await;
    let publisher = Publisher::start().await;
    let huge = Subscriber::start().await;
    let small = Subscriber::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "x");
    subscribe_many(&hub, &topic, &huge, 200).await;
    hub.subscribed(&topic, &small.callback("/cb")).await;
    huge.answer_after(Duration::from_millis(10));
    hub.publish(&topic).await;
    small.wait_deliveries(1).await;
    let before = huge.deliveries().len();
    assert!(
        before < 100,
        "the small destination waited for {before} of the huge one's 200 deliveries"
    );
    huge.wait_deliveries(200).await;
}

#[tokio::test]
async fn a_paused_destination_gets_its_backlog_of_one_topic_in_one_delivery() {
    let hub = spawn_hub_with("[delivery]\ninitial_window = 1\nper_destination = 1").await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/feed");
    let ct = "application/atom+xml";
    publisher.set("/feed", ct, atom(&[("a", "A")]));
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    // The first delivery is answered 429 Retry-After 2: the destination pauses for 2 s.
    // Real time (see the module's note): the backlog builds up over real requests meanwhile.
    sub.retry_after("2");
    sub.reply_with(&[429]);
    hub.publish(&topic).await;
    sub.wait_deliveries(1).await;
    // Three more versions while it is paused; the first becomes the job in progress, the
    // other two wait in the destination's queue.
    for (i, entries) in [
        vec![("b", "B"), ("a", "A")],
        vec![("c", "C"), ("b", "B"), ("a", "A")],
        vec![("d", "D"), ("c", "C"), ("b", "B"), ("a", "A")],
    ]
    .into_iter()
    .enumerate()
    {
        publisher.set("/feed", ct, atom(&entries));
        hub.publish(&topic).await;
        publisher.wait_fetches(i + 2).await;
        hub.wait_pings_done().await;
        if i == 0 {
            // b's job has started (its delivery waits out the pause) before c and d are queued.
            hub.wait_for("b's job to start", || async {
                let d = hub.running().engine.dispatcher().view_of(&sub.base);
                d.is_some_and(|d| d.running_jobs == 1 && d.queued_jobs == 1)
            })
            .await;
        }
    }
    hub.wait_jobs_done().await;
    hub.wait_retries_settled().await;
    let got = sub.deliveries();
    let bodies: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    // v1 (429), v1 again, b, then c and d together: four requests for five.
    assert_eq!(bodies.len(), 4, "{bodies:#?}");
    let merged = bodies
        .iter()
        .find(|b| b.contains("<id>c</id>"))
        .expect("c delivered");
    assert!(
        merged.contains("<id>d</id>"),
        "c and d in one delivery: {merged}"
    );
    assert!(
        !merged.contains("<id>b</id>"),
        "b was delivered before: {merged}"
    );
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("<id>b</id>") && !b.contains("<id>c</id>"))
    );
    // The merged document is still a valid Atom feed with the publisher's metadata.
    atom_syndication::Feed::read_from(merged.as_bytes()).expect("valid Atom");
    assert!(merged.contains("xmlns:media="));
}
