//! Starting and stopping a whole hub: storage, engine, HTTP server. `main` and the tests share
//! this path; the caller binds the listener (port 0 in tests).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::{App, HttpServer, web};

use crate::config::{Backend, Config};
use crate::engine::{Engine, EngineError};
use crate::http::{AppState, configure};
use crate::storage::memory::MemoryStore;
use crate::storage::postgres::{OpenError, PgStore};
use crate::storage::sled_backend::SledStore;
use crate::storage::{Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open storage in {dir}: {source}")]
    Storage { dir: String, source: StorageError },
    #[error("{0} (storage.postgres_url)")]
    Database(#[from] crate::storage::postgres::OpenError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Lmtp(#[from] crate::mail::lmtp::LmtpError),
    #[error(transparent)]
    Nntp(#[from] crate::news::server::BindError),
    #[error("cannot serve HTTP: {0}")]
    Http(#[from] std::io::Error),
}

/// Opens the configured store (one attempt).
pub async fn open_storage(cfg: &Config) -> Result<Storage, StartError> {
    match cfg.backend {
        Backend::Postgres => {
            let url = cfg
                .postgres_url
                .as_ref()
                .map(|u| u.0.as_str())
                .unwrap_or("");
            let store = PgStore::open(url, cfg.pool_size).await?;
            Ok(Storage::new_shared(Arc::new(store)))
        }
        Backend::Memory => Ok(Storage::new(Arc::new(MemoryStore::new()))),
        Backend::Sled => {
            let store = SledStore::open(&cfg.data_dir, cfg.cache_capacity).map_err(|source| {
                StartError::Storage {
                    dir: cfg.data_dir.display().to_string(),
                    source,
                }
            })?;
            Ok(Storage::new(Arc::new(store)))
        }
    }
}

pub struct RunningHub {
    pub addr: SocketAddr,
    /// Where the LMTP door listens (the bound address), when `[lmtp]` is on.
    pub lmtp_listen: Option<crate::config::gateways::LmtpListen>,
    lmtp: Option<crate::mail::lmtp::Running>,
    /// Where the NNTP server listens (the bound address), when `[nntp]` is on.
    pub nntp_addr: Option<SocketAddr>,
    nntp: Option<crate::news::server::Running>,
    pub hub_url: String,
    pub engine: Arc<Engine>,
    shutdown_deadline: std::time::Duration,
    server: actix_web::dev::ServerHandle,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Opens the configured store; while the database cannot be reached, says so and tries
/// again (backing off to 30 s), until it can.
pub async fn open_storage_patiently(cfg: &Config) -> Result<Storage, StartError> {
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        match open_storage(cfg).await {
            Err(StartError::Database(e @ OpenError::Unreachable { .. })) => {
                tracing::error!(error = %e, key = "storage.postgres_url", retry_in = ?pause,
                    "cannot reach the database; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(30));
            }
            other => return other,
        }
    }
}

/// This node's name in a cluster when `cluster.node_id` is empty: the host's name and the
/// port it listens on (stable across restarts, so a restarted node lets go of what its
/// previous run held).
pub fn default_node_id(addr: SocketAddr) -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "node".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    format!("{host}-{}", addr.port())
}

/// Starts a hub on an already-bound listener. Must run on the engine's tokio runtime.
pub async fn start(cfg: Config, listener: TcpListener) -> Result<RunningHub, StartError> {
    let store = open_storage_patiently(&cfg).await?;
    start_with_storage(cfg, listener, store).await
}

pub async fn start_with_storage(
    cfg: Config,
    listener: TcpListener,
    store: Storage,
) -> Result<RunningHub, StartError> {
    let addr = listener.local_addr()?;
    let mut cfg = cfg;
    if store.shared && cfg.node_id.is_none() {
        cfg.node_id = Some(default_node_id(addr));
    }
    let hub_url = match &cfg.public_url {
        Some(u) => u.to_string(),
        None => format!("http://{addr}/"),
    };
    let (engine, intake) = Engine::start(cfg.clone(), store.clone(), hub_url.clone()).await?;
    let shared_cfg = Arc::new(cfg.clone());
    let ingest = crate::ingest::Ingest::new(shared_cfg.clone(), store.clone(), intake, &engine);
    let state = web::Data::new(AppState {
        cfg: shared_cfg,
        store,
        ingest,
        clock: engine.clock(),
        hub_url: hub_url.clone(),
        admin: Arc::new(crate::admin::Admin::new(engine.clone())),
        admin_gate: crate::http::admin_auth::Gate::new(&cfg),
        subscribe_rate: crate::rate_limit::Limiter::new(cfg.limits.subscriptions_per_client),
        ping_rate: crate::rate_limit::Limiter::new(cfg.limits.pings_per_client),
        engine: engine.clone(),
    });
    let lmtp = if cfg.lmtp.enabled {
        let door = crate::mail::lmtp::Door {
            cfg: cfg.lmtp.clone(),
            hosted: engine.hosted().clone(),
            store: engine.store().clone(),
            ingest: state.ingest.clone(),
            mail: engine.mail().cloned(),
        };
        Some(crate::mail::lmtp::start(door).await?)
    } else {
        None
    };
    let nntp = if cfg.nntp.enabled {
        let host = cfg.nntp.path_host.clone().unwrap_or_else(|| {
            url::Url::parse(&hub_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "localhost".into())
        });
        let mail_domain = cfg.lmtp.enabled.then(|| cfg.lmtp.domain.clone());
        let server = crate::news::server::Server {
            cfg: cfg.nntp.clone(),
            site: crate::news::article::Site {
                host,
                group_prefix: cfg.nntp.group_prefix.clone(),
                mail_domain: mail_domain.clone(),
                urls: crate::hosted::Urls::new(&hub_url),
            },
            store: engine.store().clone(),
            lmtp_domain: mail_domain,
            clock: engine.clock(),
        };
        Some(crate::news::server::start(server).await?)
    } else {
        None
    };
    let connections = crate::http::conn_limit::ConnLimit::new(cfg.max_connections_per_client);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(
                crate::http::body_deadline::middleware,
            ))
            .wrap(actix_web::middleware::from_fn(
                crate::http::conn_limit::middleware,
            ))
            .wrap(actix_web::middleware::from_fn(
                crate::http::request_id::middleware,
            ))
            .configure(configure(state.clone()))
    })
    .on_connect(move |conn, data| connections.on_connect(conn, data))
    .workers(cfg.http_workers)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let server_task = tokio::spawn(server);
    tracing::info!(%addr, %hub_url, "hub listening");
    Ok(RunningHub {
        nntp_addr: nntp.as_ref().map(|n| n.addr),
        nntp,
        lmtp_listen: lmtp.as_ref().map(|l| l.listen.clone()),
        lmtp,
        addr,
        hub_url,
        engine,
        shutdown_deadline: cfg.shutdown_deadline,
        server: handle,
        server_task,
    })
}

impl RunningHub {
    /// Stops accepting requests (those being answered finish), drains the engine (nothing new
    /// starts; deliveries in flight get `server.shutdown_deadline`, then are cut off and stay
    /// stored), flushes storage.
    pub async fn stop(self) {
        // Peers' streams never end by themselves: end them, so the server's graceful stop
        // does not wait for them.
        self.engine.peer_streams().end_all();
        if let Some(lmtp) = self.lmtp {
            lmtp.stop().await;
        }
        if let Some(nntp) = self.nntp {
            nntp.stop().await;
        }
        self.server.stop(true).await;
        let _ = self.server_task.await;
        self.engine.drain(self.shutdown_deadline).await;
        if let Err(e) = self.engine.store().flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}
