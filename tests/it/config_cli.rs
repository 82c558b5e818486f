//! The binary's configuration handling: bad config names the key and exits 64 before binding.

use std::process::Command;

use crate::helpers::hubcast_binary;

fn hubcast() -> Command {
    hubcast_binary()
}

#[test]
fn check_config_accepts_the_shipped_defaults() {
    let out = hubcast()
        .args([
            "check-config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/hub-config/hubcast.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `check-config` on a file holding `text`: exit code and standard error.
fn check_config(dir: &tempfile::TempDir, text: &str) -> (Option<i32>, String) {
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, text).unwrap();
    let out = hubcast().arg("check-config").arg(&file).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_names_the_key_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = check_config(&dir, "[delivery]\nretry_schedule = [\"2s\", \"often\"]\n");
    assert_eq!(code, Some(64));
    assert!(err.contains("delivery.retry_schedule[1]"), "{err}");

    let (code, err) = check_config(&dir, "[delivery]\nsurprise = 1\n");
    assert_eq!(code, Some(64));
    assert!(err.contains("surprise"), "{err}");
}

#[test]
fn serve_refuses_bad_flags_and_env_before_binding() {
    let out = hubcast()
        .args(["serve", "--listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let out = hubcast()
        .args(["serve", "--allow-cidr", "10.0.0.0/99"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = hubcast()
        .args(["serve"])
        .env("HUBCAST_SUBSCRIPTIONS__MAX_LEASE", "1s")
        .env("HUBCAST_SUBSCRIPTIONS__MIN_LEASE", "1h")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("subscriptions.max_lease"));
}

#[test]
fn every_problem_of_a_file_is_reported_with_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = check_config(
        &dir,
        "[delivery]\ntimeout = 10\nnope = 1\n[server]\nlisten = \"x\"\n[limits]\npings_per_client = \"lots\"\n",
    );
    assert_eq!(code, Some(64));
    let file = dir.path().join("bad.toml").display().to_string();
    for part in [
        "4 problems",
        "`delivery.timeout`",
        "\"15s\"",
        "`delivery.nope`",
        "`server.listen`",
        "`limits.pings_per_client`",
    ] {
        assert!(err.contains(part), "{part} missing in: {err}");
    }
    assert_eq!(
        err.matches(&format!("set by file {file}")).count(),
        4,
        "{err}"
    );

    // A value from the environment says so.
    let file = dir.path().join("ok.toml");
    std::fs::write(&file, "").unwrap();
    let out = hubcast()
        .arg("check-config")
        .arg(&file)
        .env("HUBCAST_FETCH__TIMEOUT", "soon")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("set by environment variable HUBCAST_FETCH__TIMEOUT")
            && err.contains("\"10s\"")
            && !err.contains("expected number"),
        "{err}"
    );
}
