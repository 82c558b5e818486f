//! Requests from hostile or broken clients cost the hub little and get a clear answer: a body
//! that never completes is cut off, a huge topic list is refused in linear time, bytes that are
//! not UTF-8 are refused rather than replaced.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Sends `head` and `body_start` of a request whose body is never finished; returns what the
/// hub answers before it closes the connection (within `patience`).
async fn unfinished_request(hub: &TestHub, body_start: &str, patience: Duration) -> String {
    let addr = hub.url.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 1000\r\n\r\n{body_start}"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(patience, conn.read_to_end(&mut answer))
        .await
        .expect("the hub answers and closes the connection")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_body_that_never_completes_is_cut_off_with_408() {
    let hub = spawn_hub_with("[server]\nbody_timeout = \"1s\"").await;
    let started = std::time::Instant::now();
    let answer = unfinished_request(&hub, "hub.mode=sub", Duration::from_secs(8)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_timeout"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The hub still serves others.
    let ok = hub
        .client
        .get(format!("{}healthz", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_publish_naming_forty_thousand_topics_is_refused_at_once() {
    let hub = spawn_hub().await;
    let mut body = String::from("hub.mode=publish");
    for i in 0..40_000 {
        body.push_str(&format!("&hub.url=http://a/{i}"));
    }
    assert!(body.len() < 1 << 20, "under server.max_body");
    let started = std::time::Instant::now();
    let r = hub
        .client
        .post(&hub.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("more than 100 topics"));
    // Linear: parsing stops at the 101st topic. (Quadratic de-duplication took seconds.)
    assert!(took < Duration::from_secs(2), "took {took:?}");
    hub.wait_pings_done().await;
    assert!(hub.store().publish.pings().await.unwrap().is_empty());
}

#[tokio::test]
async fn form_values_that_are_not_utf8_are_refused_naming_the_parameter() {
    let hub = spawn_hub().await;
    let r = hub
        .client
        .post(&hub.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("hub.mode=subscribe&hub.topic=http%3A%2F%2F127.0.0.1%3A1%2F%FF&hub.callback=http%3A%2F%2F127.0.0.1%3A2%2F")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let why = r.text().await.unwrap();
    assert!(why.contains("hub.topic") && why.contains("UTF-8"), "{why}");
    assert!(hub.store().subs.intents().await.unwrap().is_empty());
}

#[tokio::test]
async fn connections_beyond_a_clients_cap_are_refused_until_some_close() {
    let hub = spawn_hub_with("[server]\nmax_connections_per_client = 3").await;
    let addr = hub.url.trim_start_matches("http://").trim_end_matches('/');
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let health = format!("{}healthz", hub.url);
    let r = poll_until("the idle connections to be counted", PATIENCE, || async {
        let r = hub.client.get(&health).send().await.unwrap();
        (r.status() == 429).then_some(r)
    })
    .await;
    let why = r.text().await.unwrap();
    assert!(why.contains("server.max_connections_per_client"), "{why}");
    // Another address is not affected.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    assert_eq!(other.get(&health).send().await.unwrap().status(), 200);
    drop(idle);
    poll_until("a connection to be allowed again", PATIENCE, || async {
        let r = hub.client.get(&health).send().await.unwrap();
        (r.status() == 200).then_some(())
    })
    .await;
}
