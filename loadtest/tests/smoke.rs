//! A seconds-long run of the load test against a real hub process, so the tool cannot rot:
//! the fan-out (with its baseline and the machine's ceiling) and the kill -9 paths, checked for
//! loss and bad signatures; then a fan-out delivered to the lean sink, counted from the hub's
//! /metrics, with the ceiling measured by wrk against nginx when both are installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use hubcast_loadtest::ceiling::CeilingClient;
use hubcast_loadtest::lean_sink::LeanSinkKind;
use hubcast_loadtest::report::Report;
use hubcast_loadtest::scenarios::{self, Options, Scenario, SinkChoice};
use hubcast_loadtest::{nginx, wrk};

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

fn options(out: &Path, sink: SinkChoice, client: CeilingClient, lean: LeanSinkKind) -> Options {
    Options {
        subscribers: None,
        destinations: None,
        topics: None,
        events: None,
        payload: Some(512),
        ping: hubcast_loadtest::driver::PingKind::Fat,
        runs: 1,
        timeout_secs: 60,
        rate: None,
        duration_secs: None,
        receivers: 3,
        hub_bin: Some(hub_bin()),
        out: out.to_owned(),
        per_destination: 8,
        max_in_flight: 64,
        sink: Some(sink),
        ceiling_client: client,
        ceiling_sink: lean,
        ceiling_secs: 1,
        ceiling_connections: 16,
    }
}

fn json(out: &Path, scenario: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join(format!("{scenario}.json"))).unwrap()).unwrap()
}

fn assert_ceiling(report: &Report, client: &str, sink: &str) {
    let m = &report.medians;
    let s = report.summary();
    assert!(m["ceiling_requests_per_second"] > 0.0, "{s}");
    assert!(m["hub_to_ceiling_ratio"] > 0.0, "{s}");
    assert!(m["hub_to_baseline_ratio"] > 0.0, "{s}");
    assert_eq!(report.labels["ceiling_client"], client, "{s}");
    assert_eq!(report.labels["ceiling_sink"], sink, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_run_delivers_everything_signed() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let out = tempfile::tempdir().unwrap();
    // The ceiling with the fallbacks: the hyper client against the hyper lean sink.
    let o = options(
        out.path(),
        SinkChoice::Checking,
        CeilingClient::Hyper,
        LeanSinkKind::Hyper,
    );
    let report = scenarios::run(Scenario::Smoke, &o).await.unwrap();
    report.write(out.path()).unwrap();
    let m = &report.medians;
    assert_eq!(m["lost"], 0.0, "{}", report.summary());
    assert_eq!(m["crash_lost"], 0.0, "{}", report.summary());
    assert_eq!(m["bad_signatures"], 0.0);
    assert_eq!(m["crash_bad_signatures"], 0.0);
    assert!(m["hub_deliveries_per_second"] > 0.0);
    assert!(m["baseline_deliveries_per_second"] > 0.0);
    assert_ceiling(&report, "hyper", "hyper");
    assert_eq!(report.labels["hub_sink"], "checking");
    let svg = std::fs::read_to_string(out.path().join("smoke.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    let json = json(out.path(), "smoke");
    assert_eq!(json["scenario"], "smoke");
    assert!(
        json["medians"]["ceiling_requests_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(json["medians"]["hub_to_ceiling_ratio"].is_number());
    assert_eq!(json["labels"]["ceiling_client"], "hyper");
    assert_eq!(json["labels"]["ceiling_sink"], "hyper");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_to_the_lean_sink_counts_from_the_hubs_metrics() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let out = tempfile::tempdir().unwrap();
    // wrk and nginx where installed (CI installs both), else the hyper fallbacks.
    let mut o = options(
        out.path(),
        SinkChoice::Lean,
        CeilingClient::Auto,
        LeanSinkKind::Auto,
    );
    o.subscribers = Some(300);
    o.destinations = Some(6);
    o.events = Some(1);
    let report = scenarios::run(Scenario::Fanout, &o).await.unwrap();
    report.write(out.path()).unwrap();
    let client = if wrk::find().is_some() {
        "wrk"
    } else {
        "hyper"
    };
    let sink = if nginx::find().is_some() {
        "nginx"
    } else {
        "hyper"
    };
    assert_ceiling(&report, client, sink);
    assert_eq!(report.labels["hub_sink"], format!("lean ({sink})"));
    let m = &report.medians;
    assert!(m["hub_deliveries_per_second"] > 0.0, "{}", report.summary());
    // Not measured with the lean sink: absent, not 0.
    for absent in ["lost", "duplicates", "bad_signatures", "hub_latency_p50_us"] {
        assert!(!m.contains_key(absent), "{absent}: {}", report.summary());
    }
    let json = json(out.path(), "fanout");
    let hub = &json["runs"][0][0];
    assert_eq!(hub["counted_by"], "hub metrics");
    assert!(hub["tally"].is_null() && hub["bad_signatures"].is_null());
    assert_eq!(hub["deliveries"], 300);
    assert_eq!(json["labels"]["ceiling_client"], client);
}
