//! Logs of a real process: JSON lines when `log.format = "json"`, each request's lines carrying
//! the request id that the answer's `X-Request-Id` names.

use serde_json::Value;

use crate::helpers::*;
use crate::process::*;

/// A hub process, with what must live as long as it does (its log pipe, its directory).
struct Logged {
    hub: Proc,
    _logs: LogLines,
    _dir: tempfile::TempDir,
}

/// Starts a hub process with `log` as its `[log]` table, sends it a request it refuses (400),
/// and returns the first log line `wanted` picks (given the answer's request id).
async fn refused_request_line<T>(
    log: &str,
    wanted: impl Fn(&str, &str) -> Option<T>,
) -> (T, Logged) {
    let dir = tempfile::tempdir().unwrap();
    let config = process_config(&dir, backend(), &format!("[log]\n{log}"));
    let (hub, mut logs) = start_process_with_logs(&config).await;
    let r = client()
        .post(&hub.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("hub.mode=nonsense")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let found = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = logs.next_line().await.unwrap() {
            if let Some(found) = wanted(&line, &id) {
                return found;
            }
        }
        panic!("the log ended without the request's line");
    })
    .await
    .expect("a log line for the request");
    let running = Logged {
        hub,
        _logs: logs,
        _dir: dir,
    };
    (found, running)
}

#[tokio::test]
async fn json_logs_carry_the_request_id() {
    // A refused request is logged at info with its status.
    let (found, running) = refused_request_line(
        "format = \"json\"\nlevel = \"hubcast=info\"\n",
        |line, id| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            (v["span"]["request_id"] == id).then_some(v)
        },
    )
    .await;
    assert_eq!(found["status"], 400);
    assert_eq!(found["span"]["path"], "/");
    assert_eq!(found["level"], "INFO");
    stop_gracefully(running.hub).await;
}

#[tokio::test]
async fn human_logs_to_a_pipe_have_no_colour_codes_and_round_durations() {
    let (line, running) = refused_request_line("level = \"hubcast=info\"\n", |line, _| {
        line.contains("answered").then(|| line.to_owned())
    })
    .await;
    assert!(!line.contains('\u{1b}'), "colour codes in a pipe: {line:?}");
    let took = line
        .split("took_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{line}"));
    let decimals = took.split('.').nth(1).map_or(0, str::len);
    assert!(decimals <= 1, "took_ms={took}");
    stop_gracefully(running.hub).await;
}
