//! The baseline: the same checking sink driven by a plain HTTP client (reqwest), no hub. Each delivery
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
        .pool_idle_timeout(crate::driver::POOL_IDLE)
        .timeout(Duration::from_secs(10))
        .build()?;
    let global = Arc::new(Semaphore::new(max_in_flight));
    // Prepared before the clock starts, as the hub has them before the publish: the callbacks
    // of each destination, and each topic's Link header (the hub formats it once per event).
    let links: Arc<Vec<String>> = Arc::new(
        (0..topo.topics)
            .map(|t| {
                format!(
                    "<http://127.0.0.1/>; rel=\"hub\", <{}>; rel=\"self\"",
                    topics.url(t)
                )
            })
            .collect(),
    );
    let callbacks: Vec<Arc<Vec<(usize, String)>>> = (0..topo.destinations)
        .map(|d| {
            Arc::new(
                (d..topo.subscribers())
                    .step_by(topo.destinations)
                    .map(|i| (i, sink.callback(d, i)))
                    .collect(),
            )
        })
        .collect();
    let start = Instant::now();
    for event in 0..topo.events {
        // One body per event, shared by all its deliveries, as the hub does.
        let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
            (0..topo.topics)
                .map(|_| payload::body(event, now_us(), topo.payload))
                .collect(),
        );
        let mut per_dest = Vec::with_capacity(topo.destinations);
        for callbacks in &callbacks {
            let (client, global) = (client.clone(), global.clone());
            let (bodies, links, callbacks) = (bodies.clone(), links.clone(), callbacks.clone());
            let topo = topo.clone();
            per_dest.push(tokio::spawn(async move {
                futures_util::stream::iter(callbacks.iter())
                    .for_each_concurrent(per_destination, |(i, callback)| {
                        let (client, global) = (&client, &global);
                        let t = topo.topic_of(*i);
                        let body = bodies[t].clone();
                        let link = links[t].as_str();
                        async move {
                            let _permit = global.acquire().await;
                            let sig = payload::sign(*i, &body);
                            let _ = client
                                .post(callback.as_str())
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
