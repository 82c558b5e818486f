//! The NNTP server's listener: what a session needs ([`Server`]), accepting connections, and at
//! most `nntp.max_connections_per_client` sessions per client address. The commands are
//! [`super::session`]'s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::article::Site;
use super::session::Session;
use crate::config::gateways::NntpConfig;
use crate::storage::Storage;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for NNTP on {listen} (nntp.listen): {source}")]
pub struct BindError {
    listen: std::net::SocketAddr,
    source: std::io::Error,
}

pub struct Server {
    pub cfg: NntpConfig,
    pub site: Site,
    pub store: Storage,
    /// The lists' mail domain, named by POST's refusal.
    pub lmtp_domain: Option<String>,
    pub clock: crate::clock::Clock,
}

pub struct Running {
    pub addr: std::net::SocketAddr,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Running {
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

pub async fn start(server: Server) -> Result<Running, BindError> {
    let listen = server.cfg.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| BindError { listen, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| BindError { listen, source })?;
    tracing::info!(%addr, "NNTP listening");
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(accept_loop(
        listener,
        Arc::new(server),
        stop.clone(),
        tracker.clone(),
    ));
    Ok(Running {
        addr,
        stop,
        tracker,
    })
}

async fn accept_loop(
    listener: TcpListener,
    server: Arc<Server>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let per_client: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "NNTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ip = peer.ip();
        let admitted = {
            let mut m = per_client.lock().unwrap_or_else(|p| p.into_inner());
            let n = m.entry(ip).or_default();
            if *n >= server.cfg.max_connections_per_client {
                false
            } else {
                *n += 1;
                true
            }
        };
        let (server, stop, per_client) = (server.clone(), stop.clone(), per_client.clone());
        tracker.spawn(async move {
            let mut stream = stream;
            if !admitted {
                let _ = stream
                    .write_all(b"400 too many connections from your address (nntp.max_connections_per_client)\r\n")
                    .await;
                return;
            }
            // Counted out however the session ends.
            let _counted = Counted { per_client, ip };
            Session::new(&server).run(stream, &stop).await;
        });
    }
}

/// A session of a client address, counted while it lasts.
struct Counted {
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut m = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}
