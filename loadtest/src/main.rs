//! `hubcast-loadtest SCENARIO [options]`: runs a scenario against a hub process, prints the
//! medians, and writes `<out>/<scenario>.json` and `<out>/<scenario>.svg`.

use std::process::ExitCode;

use clap::Parser;
use hubcast_loadtest::scenarios::{self, Options, Scenario};

#[derive(Parser)]
#[command(
    name = "hubcast-loadtest",
    version,
    about = "Load test for the hubcast WebSub hub"
)]
struct Cli {
    #[arg(value_enum)]
    scenario: Scenario,
    #[command(flatten)]
    options: Options,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hubcast-loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let run = async {
            let report = scenarios::run(cli.scenario, &cli.options).await?;
            report.write(&cli.options.out)?;
            Ok::<_, anyhow::Error>(report)
        };
        // On SIGINT or SIGTERM the run is dropped, so its child processes are stopped (nginx
        // runs in its own process group and would not see a terminal's Ctrl-C).
        tokio::select! {
            r = run => r,
            s = interrupted() => Err(anyhow::anyhow!("interrupted by {s}")),
        }
    });
    match result {
        Ok(report) => {
            print!("{}", report.summary());
            println!("report: {}", cli.options.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hubcast-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
