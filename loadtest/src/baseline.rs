//! The machine's ceiling: the same sink driven by a plain HTTP client, no hub. Each delivery
//! carries the same payload and headers the hub sends (Content-Type, Link, a per-subscriber
//! HMAC signature), over keep-alive connections with the hub's per-destination concurrency and
//! global cap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::Semaphore;

use crate::driver::{TopicServer, Topology};
use crate::payload;
use crate::sink::{Sink, now_us};

/// Sends every delivery of `topo` to the sink and returns how long it took.
pub async fn run(
    topo: &Topology,
    sink: &Sink,
    topics: &TopicServer,
    per_destination: usize,
    max_in_flight: usize,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(per_destination)
        .timeout(Duration::from_secs(10))
        .build()?;
    let global = Arc::new(Semaphore::new(max_in_flight));
    let start = Instant::now();
    for event in 0..topo.events {
        // One body per event, shared by all its deliveries, as the hub does.
        let bodies: Vec<bytes::Bytes> = (0..topo.topics)
            .map(|_| payload::body(event, now_us(), topo.payload))
            .collect();
        let mut per_dest = Vec::with_capacity(topo.destinations);
        for d in 0..topo.destinations {
            let subscribers: Vec<usize> =
                (d..topo.subscribers()).step_by(topo.destinations).collect();
            let (client, global, bodies) = (client.clone(), global.clone(), bodies.clone());
            let callbacks: Vec<(usize, String)> = subscribers
                .into_iter()
                .map(|i| (i, sink.callback(d, i)))
                .collect();
            let topic_urls: Vec<String> = (0..topo.topics).map(|t| topics.url(t)).collect();
            let topo = topo.clone();
            per_dest.push(tokio::spawn(async move {
                futures_util::stream::iter(callbacks)
                    .for_each_concurrent(per_destination, |(i, callback)| {
                        let (client, global) = (&client, &global);
                        let t = topo.topic_of(i);
                        let body = bodies[t].clone();
                        let link = format!(
                            "<http://127.0.0.1/>; rel=\"hub\", <{}>; rel=\"self\"",
                            topic_urls[t]
                        );
                        async move {
                            let _permit = global.acquire().await;
                            let sig = payload::sign(i, &body);
                            let _ = client
                                .post(callback)
                                .header("content-type", payload::CONTENT_TYPE)
                                .header("link", link)
                                .header("x-hub-signature", sig)
                                .body(body)
                                .send()
                                .await;
                        }
                    })
                    .await;
            }));
        }
        for task in per_dest {
            tokio::time::timeout(limit.saturating_sub(start.elapsed()), task).await??;
        }
    }
    Ok(start.elapsed())
}
