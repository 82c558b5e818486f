//! A hubcast node as the relay of a destination server: it registers itself at the origin hub
//! (`[[relay.register]]`), takes that hub's batches at `POST /relay/batch`, and delivers each
//! callback the origin's body, `Content-Type`, `Link` and signature byte for byte, through its
//! own retries; gone callbacks go back to the origin in the answer to its next batch.
//!
//! The destination server is a small reverse proxy on 127.0.0.2, as a microblog server would
//! run: `/relay/batch` goes to the relay node, everything else to the subscriber server.

use std::collections::BTreeSet;
use std::net::TcpListener;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hubcast::signature::{Algorithm, sign, verify};
use hubcast::storage::RELAY_TOPIC;
use hubcast::urls::destination_of_endpoint as destination_of;

use crate::helpers::*;

const TOKEN: &str = "publisher-token-0123";
const SECRET: &str = "relay-node-secret-0123";

/// The destination server's front: `/relay/batch` to the relay node, `/inbox/gone` answers
/// 410, the rest to the subscriber server.
fn proxy(relay: String, subscriber: String) -> String {
    let listener = TcpListener::bind(("127.0.0.2", 0)).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let server = HttpServer::new(move || {
        let (relay, subscriber, client) = (relay.clone(), subscriber.clone(), client.clone());
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let (relay, subscriber, client) = (relay.clone(), subscriber.clone(), client.clone());
            async move {
                if req.path() == "/inbox/gone" && req.method() == "POST" {
                    return HttpResponse::Gone().finish();
                }
                let upstream = if req.path().starts_with("/relay/") {
                    relay
                } else {
                    subscriber
                };
                let mut url = format!("{upstream}{}", req.path());
                if !req.query_string().is_empty() {
                    url = format!("{url}?{}", req.query_string());
                }
                let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
                let mut out = client.request(method, url).body(body);
                for name in ["content-type", "link", "x-hub-signature"] {
                    if let Some(v) = req.headers().get(name) {
                        out = out.header(name, v.as_bytes());
                    }
                }
                let answer = out.send().await.unwrap();
                let status = answer.status().as_u16();
                let ct = answer
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = answer.bytes().await.unwrap();
                let mut r =
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
                if let Some(ct) = ct {
                    r.insert_header(("content-type", ct));
                }
                r.body(body)
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    base
}

/// Subscribers of `topic` on the destination, each with its own secret, and one that is gone.
async fn subscribe(hub: &TestHub, topic: &str, front: &str, n: usize) -> Vec<String> {
    let mut callbacks: Vec<String> = (0..n).map(|i| format!("{front}/inbox/{i:03}")).collect();
    callbacks.push(format!("{front}/inbox/gone"));
    hub.store_subscriptions(topic, &callbacks).await;
    callbacks
}

#[tokio::test]
async fn a_hubcast_node_relays_a_destination_end_to_end() {
    let origin = spawn_hub_with(&format!(
        "[subscriptions]\nmin_lease = \"2s\"\n[[publishers]]\nname = \"pub\"\ntoken = \"{TOKEN}\"\n\
         topics = [\"http://127.0.0.1\"]\n"
    ))
    .await;
    let server = Subscriber::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_base = format!("http://{}", listener.local_addr().unwrap());
    let front = proxy(relay_base, server.base.clone());
    let endpoint = format!("{front}/relay/batch");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &dir,
        &format!(
            "[[relay.register]]\nhub = \"{}\"\nendpoint = \"{endpoint}\"\nsecret = \"{SECRET}\"\n\
             lease_seconds = 3\n",
            origin.url
        ),
    );
    let store = hubcast::hub::open_storage(&cfg).await.unwrap();
    let relay = start_on_listener(dir, cfg, store, listener).await;

    // The node registers itself (its endpoint with a token the verification carries back);
    // the origin verifies on the destination's own origin.
    origin
        .wait_for("the relay registered", || async {
            !origin
                .store()
                .subs
                .scan(Some(RELAY_TOPIC), None, 10)
                .await
                .unwrap()
                .is_empty()
        })
        .await;
    let registered = origin
        .store()
        .subs
        .scan(Some(RELAY_TOPIC), None, 10)
        .await
        .unwrap()
        .remove(0)
        .callback;
    assert!(
        registered.starts_with(&format!("{endpoint}?hubcast_relay=")),
        "{registered}"
    );
    let topic = "http://127.0.0.1:1/notes";
    let callbacks = subscribe(&origin, topic, &front, 20).await;
    // Two deliveries fail once at the subscriber: the relay node retries them itself.
    server.reply_with(&[503, 503]);
    let body = "a note for twenty-one followers";
    assert_eq!(origin.fat_ping(topic, TOKEN, body).await.status(), 202);
    server
        .wait("every live callback", |r| {
            let ok: BTreeSet<&str> = r
                .iter()
                .filter(|r| r.method == "POST" && r.path().starts_with("/inbox/"))
                .map(|r| r.path())
                .collect();
            ok.len() == 20
        })
        .await;
    relay.wait_retries_settled().await;
    let link = format!("<{}>; rel=\"hub\", <{topic}>; rel=\"self\"", origin.url);
    let mut delivered = BTreeSet::new();
    for d in server.deliveries() {
        let i: usize = d.path().rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(d.body, body.as_bytes(), "the origin's body");
        assert_eq!(d.header("content-type"), Some("text/plain"));
        assert_eq!(d.header("link"), Some(link.as_str()), "the origin's Link");
        let sig = d.header("x-hub-signature").expect("signed");
        assert_eq!(
            sig,
            sign(
                Algorithm::Sha256,
                format!("secret-{i}").as_bytes(),
                body.as_bytes()
            )
        );
        assert!(verify(
            sig,
            format!("secret-{i}").as_bytes(),
            body.as_bytes()
        ));
        delivered.insert(d.path().to_owned());
    }
    assert_eq!(delivered.len(), 20);
    assert_eq!(
        server.deliveries().len(),
        22,
        "20 deliveries and 2 failed attempts"
    );
    // One batch from the origin (no direct delivery to the destination), taken by the node.
    assert_eq!(
        origin
            .metric("hubcast_relay_batches_total{result=\"taken\"}")
            .await,
        1
    );
    assert_eq!(
        relay
            .metric("hubcast_relay_batches_received_total{result=\"taken\"}")
            .await,
        1
    );
    assert_eq!(
        relay
            .metric("hubcast_relay_forwarded_deliveries_total")
            .await,
        21
    );
    assert_eq!(
        relay
            .metric("hubcast_deliveries_total{outcome=\"gone\"}")
            .await,
        1
    );

    // The gone callback goes back to the origin with the answer to its next batch.
    let gone = callbacks.last().unwrap();
    assert!(origin.is_subscribed(topic, gone).await);
    assert_eq!(origin.fat_ping(topic, TOKEN, "second").await.status(), 202);
    origin.wait_jobs_done().await;
    origin
        .wait_for("the gone subscription removed", || async {
            !origin.is_subscribed(topic, gone).await
        })
        .await;
    for cb in &callbacks[..20] {
        assert!(origin.is_subscribed(topic, cb).await, "{cb}");
    }
    server
        .wait("the second event everywhere", |r| {
            r.iter().filter(|r| r.body == b"second").count() == 20
        })
        .await;

    // The registration is renewed before its 3 s lease ends, and shown to operators.
    relay
        .wait_for("a renewal", || async {
            let v: serde_json::Value =
                serde_json::from_str(&relay.get_text("admin/api/relay").await).unwrap();
            let r = &v["registrations"][0];
            r["requests"].as_u64().unwrap() >= 2 && r["state"] == "registered"
        })
        .await;
    let v: serde_json::Value =
        serde_json::from_str(&relay.get_text("admin/api/relay").await).unwrap();
    assert_eq!(v["registrations"][0]["endpoint"], endpoint.as_str());
    assert_eq!(v["registrations"][0]["lease_seconds"], 3);
    let o: serde_json::Value =
        serde_json::from_str(&origin.get_text("admin/api/relay").await).unwrap();
    assert_eq!(o["relays"][0]["relay"], registered.as_str());
    assert_eq!(
        o["relays"][0]["destination"],
        destination_of(&endpoint).as_str()
    );
    assert!(relay.get_text("").await.contains("id=registrations"));
    assert!(
        relay
            .get_text("metrics")
            .await
            .contains("hubcast_relay_registered{hub=")
    );
}

#[tokio::test]
async fn batches_are_refused_unless_signed_by_a_registered_hub_for_its_destination() {
    let plain = spawn_hub().await;
    let r = plain
        .client
        .post(format!("{}relay/batch", plain.url))
        .header("content-type", "application/vnd.hubcast.batch+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "a hub with no [[relay.register]] is nobody's relay"
    );

    let endpoint = "http://127.0.0.2:9/relay/batch";
    let node = spawn_hub_with(&format!(
        "[relay]\nmax_batch_bytes = \"2KiB\"\n[[relay.register]]\nhub = \"http://127.0.0.1:9/\"\n\
         endpoint = \"{endpoint}\"\nsecret = \"{SECRET}\"\n"
    ))
    .await;
    let batch = |callback: &str| {
        serde_json::json!({
            "hub": "http://127.0.0.1:9/",
            "event": "origin:1",
            "topic": "http://127.0.0.1:1/t",
            "content_type": "text/plain",
            "link": "<http://127.0.0.1:9/>; rel=\"hub\"",
            "content": "aGVsbG8=",
            "deliveries": [{"callback": callback, "signature": null}],
        })
        .to_string()
    };
    let post = |body: String, ct: &'static str, secret: &'static str| {
        let sig = sign(Algorithm::Sha256, secret.as_bytes(), body.as_bytes());
        node.client
            .post(format!("{}relay/batch", node.url))
            .header("content-type", ct)
            .header("x-hub-signature", sig)
            .body(body)
            .send()
    };
    let ct = "application/vnd.hubcast.batch+json";
    let r = post(
        batch("http://127.0.0.2:9/inbox/1"),
        "application/json",
        SECRET,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 415);
    let r = post(
        batch("http://127.0.0.2:9/inbox/1"),
        ct,
        "another-secret-0123",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    let r = post(batch("http://127.0.0.3:9/inbox/1"), ct, SECRET)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("is not on http://127.0.0.2:9")
    );
    let r = post("{\"hub\": 1}".into(), ct, SECRET).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post(format!("{{\"hub\": \"{}\"}}", "x".repeat(4096)), ct, SECRET)
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "beyond relay.max_batch_bytes");
    assert_eq!(
        node.metric("hubcast_relay_batches_received_total{result=\"refused\"}")
            .await,
        5
    );
    // A batch taken is taken once: the same batch again (a resend after a lost answer, or a
    // replay) is answered, not stored twice.
    for _ in 0..2 {
        let r = post(batch("http://127.0.0.2:9/inbox/1"), ct, SECRET)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "{\"gone\":[]}");
    }
    assert_eq!(
        node.metric("hubcast_relay_batches_received_total{result=\"taken\"}")
            .await,
        1
    );
    assert_eq!(
        node.metric("hubcast_relay_batches_received_total{result=\"repeated\"}")
            .await,
        1
    );
    assert_eq!(
        node.metric("hubcast_relay_forwarded_deliveries_total")
            .await,
        1
    );

    // A verification nobody here asked for is not echoed, nor one without the entry's token.
    for q in [
        "hub.mode=unrelay&hub.challenge=abc",
        "hub.mode=relay&hub.challenge=abc&hubcast_relay=0123456789abcdef0123456789abcdef",
    ] {
        let r = node
            .client
            .get(format!("{}relay/batch?{q}", node.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{q}");
    }
    let r = node
        .client
        .get(format!(
            "{}relay/batch?hub.mode=unrelay&hub.challenge=abc",
            node.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
