//! The machine's ceiling, measured in the same run as the hub: the leanest client available
//! (wrk where installed, else [`crate::lean_client`]) POSTing what the hub sends (the same
//! body size, Content-Type, Link and X-Hub-Signature) to the lean sink the hub can also deliver
//! to (nginx where installed, else [`crate::lean_sink::HyperSink`]), over keep-alive
//! connections, for a fixed time. Its requests per second are what the hub's deliveries per
//! second are divided by.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use http_body_util::Full;
use serde::Serialize;

use crate::lean_client;
use crate::lean_sink::LeanSink;
use crate::payload;
use crate::sink::now_us;
use crate::wrk;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum CeilingClient {
    /// wrk if installed, else hyper.
    Auto,
    Wrk,
    Hyper,
}

impl CeilingClient {
    pub fn resolve(self) -> CeilingClient {
        match self {
            CeilingClient::Auto if wrk::find().is_some() => CeilingClient::Wrk,
            CeilingClient::Auto => CeilingClient::Hyper,
            c => c,
        }
    }
}

/// One delivery as the hub sends it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub path: String,
    pub body: Bytes,
    pub headers: Vec<(String, String)>,
}

impl Delivery {
    /// Event 0 of a topic to subscriber 0: `payload` bytes of content, signed with that
    /// subscriber's secret, the Link header naming a hub and a topic on loopback ports (the
    /// lengths the hub's have).
    pub fn like_hub(payload_size: usize) -> Delivery {
        let body = payload::body(0, now_us(), payload_size);
        let link = "<http://127.0.0.1:40000/>; rel=\"hub\", <http://127.0.0.1:40001/t/0>; \
                    rel=\"self\""
            .to_owned();
        Delivery {
            path: "/c/0".into(),
            headers: vec![
                ("Content-Type".into(), payload::CONTENT_TYPE.into()),
                ("Link".into(), link),
                ("X-Hub-Signature".into(), payload::sign(0, &body)),
            ],
            body,
        }
    }

    pub fn request(&self, addr: SocketAddr) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::post(self.path.as_str()).header("host", addr.to_string());
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(Full::new(self.body.clone()))
            .expect("the delivery's headers are valid")
    }
}

/// What the ceiling measurement found, and how.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub requests_per_second: f64,
    /// "wrk" or "hyper".
    pub client: &'static str,
    /// "nginx" or "hyper".
    pub sink: &'static str,
    pub command: String,
    /// Failed requests, or answers other than 2xx (wrk: non-2xx/3xx answers and socket errors).
    pub errors: u64,
}

/// Drives `sink` with `client` for `duration` over `connections` keep-alive connections.
pub async fn measure(
    client: CeilingClient,
    sink: &LeanSink,
    delivery: &Delivery,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<Ceiling> {
    let addrs = sink.addrs();
    let ceiling = match client.resolve() {
        CeilingClient::Wrk => {
            let Some(bin) = wrk::find() else {
                bail!("wrk is not installed (looked on PATH and in the sbin directories)");
            };
            let r = wrk::run(&bin, addrs, connections, duration, delivery).await?;
            Ceiling {
                requests_per_second: r.requests_per_second,
                client: "wrk",
                sink: sink.name(),
                command: r.command,
                errors: r.non_2xx + r.socket_errors,
            }
        }
        _ => {
            let r = lean_client::run(addrs, connections, duration, None, delivery).await?;
            Ceiling {
                requests_per_second: r.per_second(),
                client: "hyper",
                sink: sink.name(),
                command: format!(
                    "hyper HTTP/1.1 client: {connections} keep-alive connections over {} \
                     addresses, POST {} B (Content-Type, Link, X-Hub-Signature) back to back \
                     for {:.1} s",
                    addrs.len(),
                    delivery.body.len(),
                    duration.as_secs_f64()
                ),
                errors: r.errors,
            }
        }
    };
    if ceiling.requests_per_second <= 0.0 {
        bail!(
            "the ceiling measurement got no answers: {} ({} errors)",
            ceiling.command,
            ceiling.errors
        );
    }
    Ok(ceiling)
}
