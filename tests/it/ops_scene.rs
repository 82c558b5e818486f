//! A hub with known traffic for the operator tests (admin API, status page in a browser): one
//! topic, a subscriber that takes deliveries, one whose callback refuses them with 404 (its
//! delivery ends as a dead letter), and a destination server that answers 503 (dead at once,
//! its retry parked until a probe an hour away).

use crate::helpers::*;

pub const SCENE_CONFIG: &str = r#"
[delivery]
retry_schedule = ["100ms"]
dead_after = 1
probe_interval = "1h"
max_probe_interval = "1h"
"#;

pub struct Scene {
    pub hub: TestHub,
    /// Kept so the topic server lives as long as the scene.
    pub _publisher: Publisher,
    pub topic: String,
    pub ok: Subscriber,
    pub ok_cb: String,
    pub failing: Subscriber,
    pub failing_cb: String,
    pub dead: Subscriber,
    pub dead_cb: String,
}

/// Builds the scene (with `extra` config over [`SCENE_CONFIG`]) and waits until the
/// publication has settled: one delivery, one dead letter, one dead destination.
pub async fn scene(extra: &str) -> Scene {
    let hub = spawn_hub_with(&format!("{SCENE_CONFIG}\n{extra}")).await;
    let publisher = Publisher::start().await;
    let topic = publisher.topic("/feed");
    publisher.set("/feed", "text/plain", "first update");
    let ok = Subscriber::start().await;
    let failing = Subscriber::start_on("127.0.0.4").await;
    let dead = Subscriber::start_on("127.0.0.5").await;
    failing.usually_reply(404);
    dead.usually_reply(503);
    let (ok_cb, failing_cb, dead_cb) = (
        ok.callback("/ok"),
        failing.callback("/failing"),
        dead.callback("/dead"),
    );
    hub.subscribed(&topic, &ok_cb).await;
    let r = hub
        .post_form(&[
            ("hub.mode", "subscribe"),
            ("hub.topic", &topic),
            ("hub.callback", &failing_cb),
            ("hub.secret", "failing-secret-value"),
        ])
        .await;
    assert_eq!(r.status(), 202);
    hub.wait_active(&topic, &failing_cb).await;
    hub.subscribed(&topic, &dead_cb).await;

    hub.publish(&topic).await;
    ok.wait_deliveries(1).await;
    failing.wait_deliveries(2).await;
    dead.wait_deliveries(1).await;
    hub.wait_for("the dead letter", || async {
        hub.store().delivery.count_dead_letters().await.unwrap() == 1
    })
    .await;
    hub.wait_for("the dead destination's retry to be parked", || async {
        let r = hub.store().delivery.retries(10).await.unwrap();
        r.len() == 1 && r[0].due_ms > hub.running().engine.clock().now_ms() + 60_000
    })
    .await;
    hub.wait_jobs_done().await;
    Scene {
        hub,
        _publisher: publisher,
        topic,
        ok,
        ok_cb,
        failing,
        failing_cb,
        dead,
        dead_cb,
    }
}
