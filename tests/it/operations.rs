//! Operations endpoints over HTTP: health, readiness, and Prometheus metrics whose values
//! follow known traffic.

use crate::helpers::*;

async fn get(hub: &TestHub, path: &str) -> (u16, String, String) {
    let r = hub
        .client
        .get(format!("{}{}", hub.url, path.trim_start_matches('/')))
        .send()
        .await
        .unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status().as_u16(), ct, r.text().await.unwrap())
}

fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in\n{metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let hub = spawn_hub().await;
    assert_eq!(get(&hub, "/healthz").await.0, 200);
    let (status, _, body) = get(&hub, "/readyz").await;
    assert_eq!((status, body.trim()), (200, "ready"));
}

#[tokio::test]
async fn metrics_count_known_traffic() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "x");
    let (a, b, c) = (
        Subscriber::start().await,
        Subscriber::start().await,
        Subscriber::start().await,
    );
    hub.subscribed(&topic, &a.callback("/cb")).await;
    b.set_verify(Verify::Wrong);
    hub.subscribe(&topic, &b.callback("/cb")).await;
    b.wait_verifications(1).await;
    c.reply_with(&[500]);
    hub.subscribed(&topic, &c.callback("/cb")).await;

    hub.publish(&topic).await;
    a.wait_deliveries(1).await;
    c.wait_deliveries(2).await; // the 500, then the retry
    hub.wait_jobs_done().await;
    hub.wait_retries_settled().await;

    let (status, ct, m) = get(&hub, "/metrics").await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let v = |s: &str| value(&m, s);
    assert_eq!(v("hubcast_verifications_total{result=\"verified\"}"), 2.0);
    assert_eq!(v("hubcast_verifications_total{result=\"failed\"}"), 1.0);
    assert_eq!(v("hubcast_verifications_total{result=\"denied\"}"), 0.0);
    assert_eq!(v("hubcast_topic_fetches_total{result=\"ok\"}"), 1.0);
    assert_eq!(v("hubcast_deliveries_total{outcome=\"delivered\"}"), 2.0);
    assert_eq!(v("hubcast_deliveries_total{outcome=\"failed\"}"), 1.0);
    assert_eq!(v("hubcast_retries_scheduled_total"), 1.0);
    assert_eq!(v("hubcast_dead_letters_total"), 0.0);
    assert_eq!(v("hubcast_delivery_duration_seconds_count"), 3.0);
    assert_eq!(
        v("hubcast_delivery_duration_seconds_bucket{le=\"+Inf\"}"),
        3.0
    );
    assert_eq!(v("hubcast_destinations{state=\"healthy\"}"), 2.0);
    assert_eq!(v("hubcast_destinations{state=\"dead\"}"), 0.0);
    assert_eq!(v("hubcast_queued_jobs"), 0.0);
    assert_eq!(v("hubcast_pending_retries"), 0.0);
    // No per-host labels: nothing names a callback, topic or address.
    assert!(!m.contains("127.0.0.1"), "{m}");
}
