//! A hub as a real child process, for tests of signals, crashes and the operator commands.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::*;

pub struct Proc {
    pub child: Child,
    pub url: String,
}

pub async fn start_process(config: &std::path::Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
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
    Proc {
        child,
        url: format!("http://{addr}/"),
    }
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

/// A config file for a hub process on port 0 with its data in `dir`, loopback allowed.
pub fn process_config(dir: &tempfile::TempDir, extra: &str) -> std::path::PathBuf {
    process_config_with(dir, "", extra)
}

/// [`process_config`] with more `[server]` keys.
pub fn process_config_with(
    dir: &tempfile::TempDir,
    server: &str,
    extra: &str,
) -> std::path::PathBuf {
    let config = dir.path().join("hubcast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[storage]\ndata_dir = {:?}\n[ssrf]\ncallback_allow = [\"127.0.0.0/8\"]\ntopic_allow = [\"127.0.0.0/8\"]\n{extra}",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    config
}

pub async fn stop_gracefully(mut hub: Proc) {
    let pid = hub.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
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

/// A hub process whose log lines (standard error) the test reads; `RUST_LOG` is left unset so
/// the config's `log.level` applies.
pub async fn start_process_with_logs(
    config: &std::path::Path,
) -> (
    Proc,
    tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let logs = BufReader::new(child.stderr.take().unwrap()).lines();
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
