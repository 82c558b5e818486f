//! The lean sink: destinations that cost as little as possible, for measuring the machine's
//! ceiling and the hub's throughput without the checking sink's per-delivery work. nginx where
//! installed ([`crate::nginx`]), else a minimal hyper server on each destination address that
//! answers every POST with 204 without reading anything but the body, and echoes
//! `hub.challenge` on GET so a hub can subscribe callbacks on it.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::nginx::{self, NginxSink};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum LeanSinkKind {
    /// nginx if installed, else hyper.
    Auto,
    Nginx,
    Hyper,
}

impl LeanSinkKind {
    pub fn resolve(self) -> LeanSinkKind {
        match self {
            LeanSinkKind::Auto if nginx::find().is_some() => LeanSinkKind::Nginx,
            LeanSinkKind::Auto => LeanSinkKind::Hyper,
            k => k,
        }
    }
}

pub enum LeanSink {
    Nginx(Box<NginxSink>),
    Hyper(HyperSink),
}

impl LeanSink {
    pub async fn start(kind: LeanSinkKind, ips: &[IpAddr]) -> anyhow::Result<LeanSink> {
        Ok(match kind.resolve() {
            LeanSinkKind::Nginx => LeanSink::Nginx(Box::new(NginxSink::start(ips).await?)),
            _ => LeanSink::Hyper(HyperSink::start(ips).await?),
        })
    }

    /// "nginx" or "hyper".
    pub fn name(&self) -> &'static str {
        match self {
            LeanSink::Nginx(_) => "nginx",
            LeanSink::Hyper(_) => "hyper",
        }
    }

    /// One address per destination, in destination order.
    pub fn addrs(&self) -> &[SocketAddr] {
        match self {
            LeanSink::Nginx(n) => &n.addrs,
            LeanSink::Hyper(h) => &h.addrs,
        }
    }

    /// The callback URL of subscriber `i` at destination `d`.
    pub fn callback(&self, d: usize, i: usize) -> String {
        format!("http://{}/c/{i}", self.addrs()[d])
    }

    pub async fn stop(self) {
        match self {
            LeanSink::Nginx(n) => n.stop().await,
            LeanSink::Hyper(h) => drop(h),
        }
    }
}

/// The fallback lean sink: hyper, 204 to every POST.
pub struct HyperSink {
    pub addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
}

impl HyperSink {
    pub async fn start(ips: &[IpAddr]) -> anyhow::Result<HyperSink> {
        let shutdown = CancellationToken::new();
        let mut addrs = Vec::with_capacity(ips.len());
        for ip in ips {
            let listener = TcpListener::bind((*ip, 0))
                .await
                .map_err(|e| anyhow::anyhow!("the hyper lean sink cannot listen on {ip}: {e}"))?;
            addrs.push(listener.local_addr()?);
            tokio::spawn(accept(listener, shutdown.clone()));
        }
        Ok(HyperSink { addrs, shutdown })
    }
}

impl Drop for HyperSink {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handle));
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let mut r = Response::new(Full::new(Bytes::new()));
    if req.method() == Method::GET {
        let challenge = req.uri().query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "hub.challenge")
                .map(|(_, v)| v.into_owned())
        });
        *r.body_mut() = Full::new(challenge.unwrap_or_default().into());
        return Ok(r);
    }
    // Read (and drop) the body so the connection can carry the next request.
    let _ = req.into_body().collect().await;
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}
