//! The `hubcast` binary: `serve`, `check-config`, and operator commands on a stopped hub's
//! store: `export`, `import`, `subscriptions`, `dead-letters`, `replay`, `topic create|list`;
//! `resolve`, which looks a name up; `deliver`, which hands a message to the running hub.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hubcast::config::{Config, LogFormat, Overrides};

/// mimalloc: a delivery allocates and frees many small, short-lived buffers across threads,
/// where the system allocator showed up at ~8% of the hub's CPU in fan-out profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commands;

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
    /// Write the whole store as JSON lines (a backup; it holds subscription secrets).
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// File to write (created with owner-only permissions); standard output when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Restore a backup written by `export` into an empty data directory.
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// The backup file.
        file: PathBuf,
    },
    /// List the subscriptions of a topic as JSON lines (without secrets).
    Subscriptions {
        #[command(flatten)]
        store: StoreArgs,
        /// Topic URL.
        #[arg(long)]
        topic: String,
        /// Most subscriptions listed.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// List dead letters as JSON lines.
    DeadLetters {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Hosted topics (the hub publishes them at /t/NAME), on a stopped hub's store.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// What a name like user@example.org stands for (WebFinger): its topic and hub, as JSON;
    /// with --subscribe, subscribe that callback to it at its hub.
    Resolve {
        /// The name: user@domain (or acct:user@domain).
        name: String,
        /// Callback to subscribe to the named topic (a normal WebSub subscribe request, which
        /// the named hub then verifies with the callback).
        #[arg(long)]
        subscribe: Option<String>,
        /// hub.secret of that subscription.
        #[arg(long, requires = "subscribe")]
        secret: Option<String>,
        /// Config file (its [ssrf] and [webfinger] settings apply).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Hand a mail message (standard input) to the running hub for a hosted topic, through its
    /// LMTP listener: for .forward, procmail or a pipe transport. Exit codes (sysexits): 0
    /// stored, 75 try again later, 67 no such topic, 65 message refused.
    Deliver {
        /// The hosted topic's name.
        #[arg(long)]
        topic: String,
        /// The envelope sender (mail servers set SENDER for the programs they run).
        #[arg(long, env = "SENDER", default_value = "")]
        sender: String,
        /// Config file (its [lmtp] section says where the hub listens).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Turn dead letters back into retries, due at once when the hub next runs.
    Replay {
        #[command(flatten)]
        store: StoreArgs,
        /// Dead letter ids to replay.
        #[arg(long = "id", required_unless_present = "all")]
        ids: Vec<u64>,
        /// Replay every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Create a hosted topic owned by whoever holds TOKEN.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// Its name: lowercase letters, digits, '-' and '_'.
        name: String,
        /// The owner's token (16 characters or more): posts carry it as a bearer token or
        /// sign with it.
        #[arg(long, env = "HUBCAST_TOPIC_TOKEN", hide_env_values = true)]
        token: String,
        /// Its title (the name when absent).
        #[arg(long)]
        title: Option<String>,
        /// Who may post by mail: open, subscribers or allow-list.
        #[arg(long, default_value = "open")]
        policy: String,
        /// An address allowed to post by mail (with --policy allow-list); repeatable.
        #[arg(long)]
        allow: Vec<String>,
    },
    /// List hosted topics as JSON lines.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Which store an operator command works on. The hub must not be running on it (the store is
/// locked while it runs; use the admin API then).
#[derive(clap::Args)]
struct StoreArgs {
    /// Config file layered over the built-in defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory of the sled store (storage.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Export { store, output } => operate(store, |s| commands::export(s, output)),
        Command::Import { store, file } => operate(store, |s| commands::import(s, file)),
        Command::Subscriptions {
            store,
            topic,
            limit,
        } => operate(store, |s| commands::subscriptions(s, topic, limit)),
        Command::DeadLetters { store, limit } => {
            operate(store, |s| commands::dead_letters(s, limit))
        }
        Command::Replay { store, ids, all } => operate(store, |s| commands::replay(s, ids, all)),
        Command::Topic {
            command:
                TopicCommand::Create {
                    store,
                    name,
                    token,
                    title,
                    policy,
                    allow,
                },
        } => operate_cfg(store, |s, cfg| {
            commands::topic_create(s, cfg, name, token, (title, policy, allow))
        }),
        Command::Topic {
            command: TopicCommand::List { store },
        } => operate(store, commands::topic_list),
        Command::Deliver {
            topic,
            sender,
            config,
        } => match load(config.as_deref(), Overrides::default()) {
            Ok(cfg) => deliver(cfg, topic, sender),
            Err(code) => code,
        },
        Command::Resolve {
            name,
            subscribe,
            secret,
            config,
        } => match load(config.as_deref(), Overrides::default()) {
            Ok(cfg) => finish(resolve(cfg, name, subscribe, secret)),
            Err(code) => code,
        },
        Command::CheckConfig { file } => match load(Some(&file), Overrides::default()) {
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
            Err(code) => code,
        },
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
            match load(config.as_deref(), overrides) {
                Ok(cfg) => finish(serve(cfg)),
                Err(code) => code,
            }
        }
    }
}

/// Loads the config for an operator command, opens its store and runs `f` on it.
fn operate<F, Fut>(args: StoreArgs, f: F) -> ExitCode
where
    F: FnOnce(hubcast::storage::Storage) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    operate_cfg(args, |s, _| f(s))
}

/// [`operate`] for commands that also read the config.
fn operate_cfg<F, Fut>(args: StoreArgs, f: F) -> ExitCode
where
    F: FnOnce(hubcast::storage::Storage, Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let overrides = Overrides {
        data_dir: args.data_dir,
        ..Overrides::default()
    };
    let cfg = match load(args.config.as_deref(), overrides) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let result = (|| {
        if cfg.backend == hubcast::config::Backend::Memory {
            anyhow::bail!("storage.backend is \"memory\": there is no stored data to work on");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build a runtime")?;
        runtime.block_on(async {
            let store = hubcast::hub::open_storage(&cfg).await.map_err(|e| {
                if cfg.backend == hubcast::config::Backend::Sled {
                    anyhow::anyhow!(
                        "{e}\n(if a hub is running on {}, stop it first, or use the admin API)",
                        cfg.data_dir.display()
                    )
                } else {
                    anyhow::anyhow!("{e}")
                }
            })?;
            f(store, cfg.clone()).await
        })
    })();
    finish(result)
}

/// The config from every layer, or the exit code of a configuration error (said on stderr).
fn load(file: Option<&std::path::Path>, overrides: Overrides) -> Result<Config, ExitCode> {
    Config::load(file, std::env::vars(), &overrides).map_err(|e| {
        eprintln!("hubcast: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Success, or the error on stderr and a failing exit code.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log_level));
    // Logs go to standard error; standard output carries the listening line only. Colours
    // only for a terminal: a file or a log collector gets plain text.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// `hubcast deliver`: the message on standard input to the hub's LMTP listener.
fn deliver(cfg: Config, topic: String, sender: String) -> ExitCode {
    use hubcast::mail::deliver::{EX_DATAERR, EX_TEMPFAIL};
    use std::io::Read;
    let max = cfg.lmtp.max_message;
    let mut message = Vec::new();
    if let Err(e) = std::io::stdin()
        .take(max as u64 + 1)
        .read_to_end(&mut message)
    {
        eprintln!("hubcast deliver: cannot read the message: {e}");
        return ExitCode::from(EX_TEMPFAIL);
    }
    if message.len() > max {
        eprintln!("hubcast deliver: the message is larger than {max} bytes (lmtp.max_message)");
        return ExitCode::from(EX_DATAERR);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hubcast deliver: cannot build a runtime: {e}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    let outcome = runtime.block_on(hubcast::mail::deliver::deliver(
        &cfg.lmtp, &topic, &sender, &message,
    ));
    if outcome.exit == 0 {
        eprintln!("{}", outcome.reply);
    } else {
        eprintln!("hubcast deliver: {}", outcome.reply);
    }
    ExitCode::from(outcome.exit)
}

/// `hubcast resolve`: the name's topic and hub as JSON on standard output.
fn resolve(
    cfg: Config,
    name: String,
    subscribe: Option<String>,
    secret: Option<String>,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build a runtime")?;
    runtime.block_on(async {
        let clients = hubcast::engine::client::Clients::build(&cfg)
            .context("cannot build the HTTP client")?;
        let client = &clients.topics;
        let resolved =
            hubcast::names::resolve(client, &clients.topic_policy, &name, cfg.webfinger.allow_http).await?;
        let mut out = serde_json::to_value(&resolved)?;
        if let Some(callback) = subscribe {
            let callback = hubcast::urls::HttpUrl::parse(&callback)
                .map_err(|e| anyhow::anyhow!("--subscribe: {e}"))?
                .to_string();
            let status =
                hubcast::names::subscribe(client, &clients.topic_policy, &resolved, &callback, secret.as_deref()).await?;
            out["subscribed"] = serde_json::json!({ "callback": callback, "hub_status": status });
            eprintln!("subscribe request accepted by {} ({status}); the hub verifies it with the callback", resolved.hub);
        }
        println!("{out}");
        Ok(())
    })
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    init_logging(&cfg);
    if cfg.admin.token.is_none() && !cfg.listen.ip().is_loopback() {
        tracing::warn!(listen = %cfg.listen,
            "admin.token is not set: the status page and admin API answer direct loopback clients only");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.engine_threads)
        .thread_name("hubcast-engine")
        .enable_all()
        .build()
        .context("cannot build the engine runtime")?;
    let listener = std::net::TcpListener::bind(cfg.listen)
        .with_context(|| format!("cannot listen on {} (server.listen)", cfg.listen))?;
    runtime.block_on(async move {
        // Handlers first: a SIGTERM that arrives as soon as the address is printed must stop
        // the hub gracefully, not kill it.
        let signals = Signals::install().context("cannot install signal handlers")?;
        let hub = hubcast::hub::start(cfg, listener).await?;
        println!(
            "hubcast listening on {} (hub URL {})",
            hub.addr, hub.hub_url
        );
        signals.wait().await;
        tracing::info!("shutting down");
        hub.stop().await;
        Ok(())
    })
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
