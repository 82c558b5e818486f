//! The admin JSON API over HTTP: totals, destinations, topic and callback lookups, listings,
//! dead-letter replay, access control, request ids.

use serde_json::Value;

use crate::helpers::*;
use crate::ops_scene::scene;

const TOKEN: &str = "test-admin-token-0123456789";

async fn get_json(hub: &TestHub, path: &str) -> (u16, Value) {
    let r = hub
        .client
        .get(format!("{}{}", hub.url, path.trim_start_matches('/')))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "{path}: {ct}");
    (status, r.json().await.unwrap())
}

/// An admin action as the status page's own script would send it (same origin).
async fn post_json(hub: &TestHub, path: &str) -> (u16, Value) {
    let r = hub
        .client
        .post(format!("{}{}", hub.url, path.trim_start_matches('/')))
        .header("origin", hub.url.trim_end_matches('/'))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn the_api_explains_deliveries_and_replays_dead_letters() {
    let s = scene("").await;
    let hub = &s.hub;

    let (status, o) = get_json(hub, "/admin/api/status").await;
    assert_eq!(status, 200);
    assert_eq!(o["topics"], 1);
    assert_eq!(o["subscriptions"], 3);
    assert_eq!(o["deliveries"]["delivered"], 1);
    assert_eq!(o["deliveries"]["failed"], 3, "{o}");
    assert_eq!(o["dead_letters"], 1);
    assert_eq!(o["pending_retries"], 1);
    assert_eq!(o["queued_jobs"], 0);
    assert_eq!(o["destinations"]["healthy"], 2);
    assert_eq!(o["destinations"]["dead"], 1);

    // Destinations: the dead one first, with its error and the next probe.
    let (_, d) = get_json(hub, "/admin/api/destinations").await;
    let d = d.as_array().unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d[0]["destination"], s.dead.base.as_str());
    assert_eq!(d[0]["state"], "dead");
    assert_eq!(d[0]["last_error"]["error"], "HTTP 503");
    assert_eq!(d[0]["last_error"]["class"], "5xx");
    assert_eq!(d[0]["queued_jobs"], 0);
    assert_eq!(d[0]["running_jobs"], 0);
    let probe = d[0]["next_probe_in_seconds"].as_f64().unwrap();
    assert!(probe > 3000.0 && probe <= 3600.0, "{probe}");
    assert!(d[1..].iter().all(|x| x["state"] == "healthy"));

    // The failing callback: its subscription (no secret shown), its last deliveries, the
    // dead letter.
    let (status, c) = get_json(
        hub,
        &format!("/admin/api/callback?callback={}", q(&s.failing_cb)),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!c.to_string().contains("failing-secret-value"));
    assert_eq!(c["subscriptions"][0]["topic"], s.topic.as_str());
    assert_eq!(c["subscriptions"][0]["state"], "active");
    assert_eq!(c["subscriptions"][0]["has_secret"], true);
    let recent = c["recent_deliveries"].as_array().unwrap();
    assert_eq!(recent.len(), 2);
    for r in recent {
        assert_eq!(r["outcome"], "failed");
        assert_eq!(r["error"], "HTTP 404");
        assert_eq!(r["class"], "4xx");
        assert!(r["latency_ms"].as_f64().unwrap() > 0.0);
    }
    let dl = &c["dead_letters"][0];
    assert_eq!(dl["attempts"], 2);
    assert_eq!(dl["last_error"], "HTTP 404");
    let dl_id = dl["id"].as_u64().unwrap();

    // The healthy callback: delivered, with the topic's content.
    assert_eq!(s.ok.deliveries()[0].body, b"first update");
    let (_, c) = get_json(
        hub,
        &format!("/admin/api/callback?callback={}", q(&s.ok_cb)),
    )
    .await;
    assert_eq!(c["recent_deliveries"][0]["outcome"], "delivered");
    assert_eq!(c["recent_deliveries"][0]["error"], Value::Null);
    assert_eq!(c["destination"]["state"], "healthy");

    // The dead destination's callback: a retry parked, nothing delivered.
    let (_, c) = get_json(
        hub,
        &format!("/admin/api/callback?callback={}", q(&s.dead_cb)),
    )
    .await;
    assert_eq!(c["pending_retries"][0]["attempts"], 1);
    assert_eq!(c["pending_retries"][0]["last_error"], "HTTP 503");
    assert_eq!(c["destination"]["state"], "dead");

    // The topic: subscribers, last fetch, the event.
    let (_, t) = get_json(hub, &format!("/admin/api/topic?topic={}", q(&s.topic))).await;
    assert_eq!(t["subscribers"], 3);
    assert_eq!(t["last_result"], "200");
    assert_eq!(t["recent_events"][0]["bytes"], "first update".len());
    assert_eq!(t["subscriptions"].as_array().unwrap().len(), 3);

    // Listing in pages.
    let (_, page1) = get_json(
        hub,
        &format!("/admin/api/subscriptions?topic={}&limit=2", q(&s.topic)),
    )
    .await;
    let page1 = page1.as_array().unwrap();
    assert_eq!(page1.len(), 2);
    let last = &page1[1];
    let (_, page2) = get_json(
        hub,
        &format!(
            "/admin/api/subscriptions?topic={}&after_topic={}&after_callback={}",
            q(&s.topic),
            q(last["topic"].as_str().unwrap()),
            q(last["callback"].as_str().unwrap())
        ),
    )
    .await;
    assert_eq!(page2.as_array().unwrap().len(), 1);

    // Replay: the subscriber is fixed; the replayed delivery arrives.
    s.failing.usually_reply(204);
    let (status, r) = post_json(hub, &format!("/admin/api/dead-letters/{dl_id}/replay")).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["callback"], s.failing_cb.as_str());
    let got = s.failing.wait_deliveries(3).await;
    assert_eq!(got[2].body, b"first update");
    hub.wait_for("the replay's outcome in the history", || async {
        let (_, c) = get_json(
            hub,
            &format!("/admin/api/callback?callback={}", q(&s.failing_cb)),
        )
        .await;
        c["recent_deliveries"][0]["outcome"] == "delivered"
    })
    .await;
    let (_, o) = get_json(hub, "/admin/api/status").await;
    assert_eq!(o["dead_letters"], 0);
    let (status, e) = post_json(hub, &format!("/admin/api/dead-letters/{dl_id}/replay")).await;
    assert_eq!(status, 404);
    assert!(e["error"].as_str().unwrap().contains("no dead letter"));
}

#[tokio::test]
async fn bad_requests_get_reasons() {
    let hub = spawn_hub().await;
    for (path, reason) in [
        ("/admin/api/topic", "topic is required"),
        ("/admin/api/topic?topic=ftp%3A%2F%2Fx%2F", "topic:"),
        ("/admin/api/callback?callback=nope", "callback:"),
        ("/admin/api/destinations?limit=0", "limit must be between"),
        (
            "/admin/api/subscriptions?after_topic=http%3A%2F%2Fa%2F",
            "go together",
        ),
    ] {
        let (status, v) = get_json(&hub, path).await;
        assert_eq!(status, 400, "{path}");
        assert!(v["error"].as_str().unwrap().contains(reason), "{path}: {v}");
    }
    let (status, v) = post_json(&hub, "/admin/api/dead-letters/x/replay").await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("number"));
    let (status, v) = post_json(&hub, "/admin/api/dead-letters/replay-all").await;
    assert_eq!((status, &v["replayed"]), (200, &Value::from(0)));
}

#[tokio::test]
async fn a_configured_token_is_required() {
    let hub = spawn_hub_with(&format!("[admin]\ntoken = \"{TOKEN}\"")).await;
    let url = |p: &str| format!("{}{}", hub.url, p.trim_start_matches('/'));

    let r = hub
        .client
        .get(url("/admin/api/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("admin token"));
    let r = hub
        .client
        .get(url("/admin/api/status"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = hub
        .client
        .get(url("/admin/api/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The page: a notice with a sign-in form, then the dashboard with the cookie.
    let page = hub.client.get(url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("name=token") && !html.contains("Totals"),
        "{html}"
    );
    let r = hub
        .client
        .post(url("/admin/login"))
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = hub
        .client
        .post(url("/admin/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let html = hub
        .client
        .get(url("/"))
        .header("cookie", pair)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Totals"), "{html}");

    // Actions from another origin are refused even with the cookie.
    let r = hub
        .client
        .post(url("/admin/dead-letters/replay-all"))
        .header("cookie", pair)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn without_a_token_proxied_requests_are_refused() {
    let hub = spawn_hub().await;
    let r = hub
        .client
        .get(format!("{}admin/api/status", hub.url))
        .header("x-forwarded-for", "192.0.2.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("admin.token"));
    // The public page still answers, without the dashboard.
    let html = hub
        .client
        .get(&hub.url)
        .header("x-forwarded-for", "192.0.2.7")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("WebSub hub at") && !html.contains("Totals"));
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let hub = spawn_hub().await;
    let r = hub
        .client
        .get(format!("{}healthz", hub.url))
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 16);
    let r = hub
        .client
        .get(format!("{}healthz", hub.url))
        .header("x-request-id", "from-the-proxy.42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "from-the-proxy.42");
    let r = hub
        .client
        .get(format!("{}healthz", hub.url))
        .header("x-request-id", "not ok!")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "not ok!");
}

#[tokio::test]
async fn a_rebinding_page_and_a_forged_action_are_refused() {
    let hub = spawn_hub().await;
    let port = hub.running().addr.port();
    // A page on another site whose name now resolves to this machine sends its own name.
    let r = hub
        .client
        .get(format!("{}admin/api/status", hub.url))
        .header("host", format!("rebind.evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("server.public_url"),
        "{v}"
    );
    let r = hub
        .client
        .post(format!("{}admin/api/dead-letters/replay-all", hub.url))
        .header("host", format!("rebind.evil.example:{port}"))
        .header("origin", format!("http://rebind.evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    // An action that does not say where it comes from (a form another page submits in a
    // browser without Origin) is refused; the same with Origin, or as `localhost`, is served.
    let (status, v) = {
        let r = hub
            .client
            .post(format!("{}admin/api/dead-letters/replay-all", hub.url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 403, "{v}");
    assert_eq!(
        post_json(&hub, "/admin/api/dead-letters/replay-all")
            .await
            .0,
        200
    );
    let r = hub
        .client
        .get(format!("http://localhost:{port}/admin/api/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
