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
        let report = scenarios::run(cli.scenario, &cli.options).await?;
        report.write(&cli.options.out)?;
        Ok::<_, anyhow::Error>(report)
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
