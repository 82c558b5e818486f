//! The `hubcast` binary: `serve` and `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hubcast::config::{Config, Overrides};

/// Exit code for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "hubcast", version, about = "A WebSub hub and relay")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve {
        /// Config file layered over the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (server.listen).
        #[arg(long)]
        listen: Option<String>,
        /// Directory of the sled store (storage.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Hub URL advertised as rel="hub" (server.public_url).
        #[arg(long)]
        public_url: Option<String>,
        /// CIDR added to the SSRF allow-lists of callbacks and topics; repeatable.
        #[arg(long = "allow-cidr")]
        allow_cidr: Vec<String>,
    },
    /// Check a config file (layered over the defaults and the environment) and exit.
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = std::env::vars();
    match cli.command {
        Command::CheckConfig { file } => {
            match Config::load(Some(&file), env, &Overrides::default()) {
                Ok(cfg) => {
                    println!(
                        "{}: ok (listen {}, storage {:?} in {})",
                        file.display(),
                        cfg.listen,
                        cfg.backend,
                        cfg.data_dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hubcast: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Serve {
            config,
            listen,
            data_dir,
            public_url,
            allow_cidr,
        } => {
            let overrides = Overrides {
                listen,
                data_dir,
                public_url,
                allow_cidr,
            };
            let cfg = match Config::load(config.as_deref(), env, &overrides) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("hubcast: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hubcast: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "hubcast=info,warn".into()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.engine_threads)
        .thread_name("hubcast-engine")
        .enable_all()
        .build()
        .context("cannot build the engine runtime")?;
    let listener = std::net::TcpListener::bind(cfg.listen)
        .with_context(|| format!("cannot listen on {} (server.listen)", cfg.listen))?;
    runtime.block_on(async move {
        let hub = hubcast::hub::start(cfg, listener).await?;
        println!(
            "hubcast listening on {} (hub URL {})",
            hub.addr, hub.hub_url
        );
        wait_for_signal().await;
        tracing::info!("shutting down");
        hub.stop().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
