//! The fallback ceiling client when wrk is not installed: hyper's HTTP/1.1 client connection,
//! no pool, no redirects, no timeouts per request beyond a bound. `connections` keep-alive
//! connections spread over the destinations' addresses, each sending the same POST back to
//! back until the time is up (or `max_requests` in all were sent).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::ceiling::Delivery;

/// Longest wait for one connection or one answer.
const STEP_LIMIT: Duration = Duration::from_secs(5);
/// Reconnections a connection may make (after the sink closed it) before giving up.
const RECONNECTS: usize = 10;

#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests answered otherwise, or failed.
    pub errors: u64,
    pub seconds: f64,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok as f64 / self.seconds
        } else {
            0.0
        }
    }
}

type Sender = http1::SendRequest<Full<bytes::Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::time::timeout(STEP_LIMIT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} took longer than {STEP_LIMIT:?}"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Runs `connections` connections over `addrs` for `duration` (the clock starts once all are
/// connected).
pub async fn run(
    addrs: &[SocketAddr],
    connections: usize,
    duration: Duration,
    max_requests: Option<u64>,
    delivery: &Delivery,
) -> anyhow::Result<Outcome> {
    if addrs.is_empty() || connections == 0 {
        bail!("the lean client needs at least one address and one connection");
    }
    let mut senders = Vec::with_capacity(connections);
    for c in 0..connections {
        let addr = addrs[c % addrs.len()];
        senders.push((addr, connect(addr).await?));
    }
    let sent = Arc::new(AtomicU64::new(0));
    let budget = max_requests.unwrap_or(u64::MAX);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (addr, sender) in senders {
        let (sent, delivery) = (sent.clone(), delivery.clone());
        tasks.spawn(connection(addr, sender, delivery, deadline, sent, budget));
    }
    let (mut ok, mut errors) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (o, e) = r.context("a lean client connection panicked")?;
        ok += o;
        errors += e;
    }
    Ok(Outcome {
        ok,
        errors,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One connection's loop: (answered 2xx, failed).
async fn connection(
    addr: SocketAddr,
    mut sender: Sender,
    delivery: Delivery,
    deadline: Instant,
    sent: Arc<AtomicU64>,
    budget: u64,
) -> (u64, u64) {
    let (mut ok, mut errors, mut reconnects) = (0, 0, 0);
    while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < budget {
        if sender.ready().await.is_err() {
            // The sink closed the connection: open another, a bounded number of times.
            reconnects += 1;
            if reconnects > RECONNECTS {
                break;
            }
            match connect(addr).await {
                Ok(s) => {
                    sender = s;
                    continue;
                }
                Err(_) => break,
            }
        }
        let answer = tokio::time::timeout(STEP_LIMIT, async {
            let response = sender.send_request(delivery.request(addr)).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        })
        .await;
        match answer {
            Ok(Ok(status)) if status.is_success() => ok += 1,
            Ok(Ok(_)) => errors += 1,
            Ok(Err(_)) => errors += 1,
            Err(_) => {
                errors += 1;
                break;
            }
        }
    }
    (ok, errors)
}
