//! A hub as a real child process, for tests of signals, crashes and the operator commands.

use std::process::Stdio;

use hubcast::config::Backend;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::*;

pub struct Proc {
    pub child: Child,
    pub url: String,
}

pub async fn start_process(config: &std::path::Path) -> Proc {
    spawn(config, false).await.0
}

pub type LogLines = tokio::io::Lines<BufReader<tokio::process::ChildStderr>>;

/// A hub process whose log lines (standard error) the test reads; `RUST_LOG` is left unset so
/// the config's `log.level` applies.
pub async fn start_process_with_logs(config: &std::path::Path) -> (Proc, LogLines) {
    let (proc, logs) = spawn(config, true).await;
    (proc, logs.expect("standard error is piped"))
}

async fn spawn(config: &std::path::Path, logs: bool) -> (Proc, Option<LogLines>) {
    let mut cmd = Command::from(hubcast_binary());
    cmd.args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if logs {
        cmd.env_remove("RUST_LOG").stderr(Stdio::piped());
    } else {
        cmd.env(
            "RUST_LOG",
            std::env::var("TEST_HUB_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stderr(Stdio::inherit());
    }
    let mut child = cmd.spawn().unwrap();
    let logs = child.stderr.take().map(|e| BufReader::new(e).lines());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("the hub starts")
        .unwrap()
        .expect("the hub prints its address");
    let addr = line
        .strip_prefix("hubcast listening on ")
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let proc = Proc {
        child,
        url: format!("http://{addr}/"),
    };
    (proc, logs)
}

pub async fn post(url: &str, form: &[(&str, &str)]) -> u16 {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A config file for a hub process on port 0 storing on `backend`, its data (if any) in `dir`,
/// loopback allowed.
pub fn process_config(
    dir: &tempfile::TempDir,
    backend: Backend,
    extra: &str,
) -> std::path::PathBuf {
    process_config_with(dir, backend, "", extra)
}

/// [`process_config`] with more `[server]` keys.
/// The suite's clients all come from 127.0.0.1: no rate limits (`rate_limits.rs` tests them).
const NO_LIMITS: &str = "[limits]\nsubscriptions_per_client = \"off\"\npings_per_client = \"off\"\nverifications_per_host = \"off\"\nfetches_per_topic = \"off\"";

pub fn process_config_with(
    dir: &tempfile::TempDir,
    backend: Backend,
    server: &str,
    extra: &str,
) -> std::path::PathBuf {
    let config = dir.path().join("hubcast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n{}\n[ssrf]\ncallback_allow = [\"127.0.0.0/8\"]\ntopic_allow = [\"127.0.0.0/8\"]\n{NO_LIMITS}\n{extra}",
            storage_section(&dir.path().join("data"), backend)
        ),
    )
    .unwrap();
    config
}

pub fn sigterm(hub: &Proc) {
    let pid = hub.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub async fn stop_gracefully(mut hub: Proc) {
    sigterm(&hub);
    let exit = tokio::time::timeout(PATIENCE, hub.child.wait())
        .await
        .expect("SIGTERM stops the hub")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// A client that gives up instead of hanging the suite.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// GETs `url` until its body passes `check`; returns that body. Each body that does not is
/// printed once, so a test that times out shows what the hub said last.
pub async fn wait_body(url: &str, check: impl Fn(&str) -> bool) -> String {
    let last = std::cell::RefCell::new(String::new());
    poll_until(&format!("an answer from {url}"), PATIENCE, || async {
        let body = client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if check(&body) {
            return Some(body);
        }
        if *last.borrow() != body {
            eprintln!("{url}: {body}");
            *last.borrow_mut() = body;
        }
        None
    })
    .await
}
