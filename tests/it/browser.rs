//! The status page in a real browser (headless Chromium, driven over the DevTools protocol): it
//! shows the totals, a failing subscription's error and a dead destination of a hub with known
//! traffic, stays within a phone's width, refreshes its numbers by itself, and its replay
//! button delivers. A screenshot is kept in `target/test-artifacts/status-page.png`.
//!
//! Needs Debian's `chromium` package (the CI script installs it).

use std::path::PathBuf;
use std::process::Stdio;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

use crate::helpers::*;
use crate::ops_scene::scene;

/// A phone-sized window.
const WIDTH: u32 = 412;
const HEIGHT: u32 = 915;

fn chromium_binary() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = PathBuf::from(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("the browser test needs Chromium: apt-get install chromium");
}

/// Longest wait for chromium to announce its DevTools address.
const LAUNCH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

struct Browser {
    process: tokio::process::Child,
    _profile: tempfile::TempDir,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Browser {
    async fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut process = tokio::process::Command::new(chromium_binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={WIDTH},{HEIGHT}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let mut lines = BufReader::new(process.stderr.take().unwrap()).lines();
        // A cold start while the rest of the suite keeps both cores busy can take a while.
        let browser_ws = tokio::time::timeout(LAUNCH_PATIENCE, async {
            while let Some(l) = lines.next_line().await.unwrap() {
                if let Some(url) = l.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("chromium ended before it listened");
        })
        .await
        .expect("chromium announces its DevTools address");
        // Keep draining its standard error so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = browser_ws
            .trim_start_matches("ws://")
            .split(['/', ':'])
            .nth(1)
            .unwrap()
            .to_owned();
        let targets: Vec<Value> = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let (ws, _) =
            tokio_tungstenite::connect_async(page["webSocketDebuggerUrl"].as_str().unwrap())
                .await
                .unwrap();
        let mut b = Browser {
            process,
            _profile: profile,
            ws,
            next_id: 0,
        };
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": true }),
        )
        .await;
        b.call("Page.enable", json!({})).await;
        b.call("Runtime.enable", json!({})).await;
        b
    }

    /// Sends a command and returns its result; events that arrive meanwhile are passed over.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.call_until(method, params, None).await.0
    }

    /// Sends a command, then waits for its result and (if given) for an event of that name.
    async fn call_until(
        &mut self,
        method: &str,
        params: Value,
        event: Option<&str>,
    ) -> (Value, Option<Value>) {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::text(msg)).await.unwrap();
        let mut result = None;
        let mut seen = None;
        tokio::time::timeout(PATIENCE, async {
            while result.is_none() || (event.is_some() && seen.is_none()) {
                let Some(msg) = self.ws.next().await else {
                    panic!("DevTools connection closed");
                };
                let Message::Text(text) = msg.unwrap() else {
                    continue;
                };
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    result = Some(v["result"].clone());
                } else if event.is_some_and(|e| v["method"] == e) {
                    seen = Some(v["params"].clone());
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method}"));
        (result.unwrap(), seen)
    }

    async fn navigate(&mut self, url: &str) {
        self.call_until(
            "Page.navigate",
            json!({ "url": url }),
            Some("Page.loadEventFired"),
        )
        .await;
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    async fn text(&mut self, selector: &str) -> String {
        let v = self
            .eval(&format!(
                "(document.querySelector({}) || {{}}).textContent || null",
                json!(selector)
            ))
            .await;
        v.as_str()
            .unwrap_or_else(|| panic!("nothing matches {selector}"))
            .trim()
            .to_owned()
    }

    /// Clicks an element that submits a form, and waits for the page that follows.
    async fn click_and_wait(&mut self, selector: &str) {
        let expression = format!("document.querySelector({}).click()", json!(selector));
        self.call_until(
            "Runtime.evaluate",
            json!({ "expression": expression }),
            Some("Page.loadEventFired"),
        )
        .await;
    }

    async fn screenshot(&mut self, path: &std::path::Path) {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = self.process.kill().await;
    }
}

fn artifact(name: &str) -> PathBuf {
    // CARGO_TARGET_TMPDIR is target/tmp; artifacts go beside it.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts")
        .join(name)
}

#[tokio::test]
async fn the_status_page_shows_the_hub_and_its_replay_delivers() {
    let s = scene("").await;
    let hub = &s.hub;
    let mut b = Browser::launch().await;

    b.navigate(&hub.url).await;
    assert_eq!(b.text("[data-k=subscriptions]").await, "3");
    assert_eq!(b.text("[data-k=topics]").await, "1");
    assert_eq!(b.text("[data-k=delivered]").await, "1");
    assert_eq!(b.text("[data-k=dead_letters]").await, "1");
    assert_eq!(b.text("[data-k=dead]").await, "1");
    // The dead destination, with its error.
    let row = format!("tr[data-destination=\"{}\"]", s.dead.base);
    assert_eq!(b.text(&format!("{row} td:nth-child(2)")).await, "dead");
    assert!(b.text(&row).await.contains("HTTP 503"));
    // The failing subscription's dead letter, with its error.
    let dead_letter = b.text("tr.dead-letter").await;
    assert!(dead_letter.contains(&s.failing_cb), "{dead_letter}");
    assert!(dead_letter.contains("HTTP 404"), "{dead_letter}");
    // Readable on a phone: nothing wider than the screen.
    let fits = b
        .eval("document.documentElement.scrollWidth <= window.innerWidth")
        .await;
    assert_eq!(fits, true);
    // No secret anywhere.
    let html = b.eval("document.documentElement.outerHTML").await;
    assert!(!html.as_str().unwrap().contains("failing-secret-value"));
    b.screenshot(&artifact("status-page.png")).await;

    // The callback's page (through the dead letter's link): its last deliveries and errors.
    b.click_and_wait("tr.dead-letter a").await;
    let deliveries = b.text("#deliveries").await;
    assert!(deliveries.contains("failed"), "{deliveries}");
    assert!(deliveries.contains("HTTP 404"), "{deliveries}");
    b.screenshot(&artifact("status-page-callback.png")).await;

    // Look up the topic with the form.
    let fill = format!(
        "document.querySelector('input[name=topic]').value = {}",
        json!(s.topic)
    );
    b.eval(&fill).await;
    b.click_and_wait("form[action='/admin/topic'] button").await;
    assert_eq!(b.text("#topic-subscribers").await, "3");
    assert!(b.text("body").await.contains("last fetch: 200"));

    // Replay from the page: the subscriber is fixed, the delivery arrives.
    s.failing.usually_reply(200);
    b.navigate(&hub.url).await;
    b.click_and_wait("tr.dead-letter button.replay").await;
    assert!(
        b.text("#flash")
            .await
            .starts_with("1 dead letter(s) replayed")
    );
    let got = s.failing.wait_deliveries(3).await;
    assert_eq!(got[2].body, b"first update");

    // The totals refresh by themselves: a new delivery shows up without reloading.
    hub.wait_for("the replayed delivery to be counted", || async {
        hub.running().engine.metrics().deliveries()[0] == 2
    })
    .await;
    let page = tokio::sync::Mutex::new(&mut b);
    poll_until("the page to show 2 deliveries", PATIENCE, || async {
        let shown = page.lock().await.text("[data-k=delivered]").await;
        (shown == "2").then_some(())
    })
    .await;
    assert_eq!(b.text("[data-k=dead_letters]").await, "0");
    b.close().await;
}
