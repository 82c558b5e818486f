//! A seconds-long run of the load test against a real hub process, so the tool cannot rot:
//! the fan-out (with its baseline) and the kill -9 paths, checked for loss and bad signatures.

use std::path::PathBuf;
use std::process::Command;

use hubcast_loadtest::scenarios::{self, Options, Scenario};

/// The hub binary of this workspace's build, built if a lone `cargo test -p` left it out.
fn hub_bin() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile_dir = deps.parent().unwrap().parent().unwrap().to_owned();
    let bin = profile_dir.join("hubcast");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "hubcast", "--bin", "hubcast"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_run_delivers_everything_signed() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let out = tempfile::tempdir().unwrap();
    let options = Options {
        subscribers: None,
        destinations: None,
        topics: None,
        events: None,
        payload: 512,
        ping: hubcast_loadtest::driver::PingKind::Fat,
        runs: 1,
        timeout_secs: 60,
        rate: 1000.0,
        duration_secs: 10,
        hub_bin: Some(hub_bin()),
        out: out.path().to_owned(),
        per_destination: 8,
        max_in_flight: 64,
    };
    let report = scenarios::run(Scenario::Smoke, &options).await.unwrap();
    report.write(out.path()).unwrap();
    let m = &report.medians;
    assert_eq!(m["lost"], 0.0, "{}", report.summary());
    assert_eq!(m["crash_lost"], 0.0, "{}", report.summary());
    assert_eq!(m["bad_signatures"], 0.0);
    assert_eq!(m["crash_bad_signatures"], 0.0);
    assert!(m["hub_deliveries_per_second"] > 0.0);
    assert!(m["baseline_deliveries_per_second"] > 0.0);
    let svg = std::fs::read_to_string(out.path().join("smoke.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("smoke.json")).unwrap()).unwrap();
    assert_eq!(json["scenario"], "smoke");
}
