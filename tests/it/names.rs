//! Names: `/.well-known/webfinger` (RFC 7033) for hosted topics, the profile page, and
//! resolving `name@domain` — through a second loopback "domain" that redirects its WebFinger
//! path to the hub — with `hubcast resolve` and the admin API, which then subscribe a callback.

use actix_web::{App, HttpResponse, HttpServer, web};

use crate::helpers::*;

const TOKEN: &str = "owner-token-0123456789";
const ADMIN: &str = "admin-token-for-tests";

fn names_config(domain: &str) -> String {
    format!(
        "[hosted]\nenabled = true\n[webfinger]\nenabled = true\ndomain = \"{domain}\"\nallow_http = true\n[admin]\ntoken = \"{ADMIN}\"\n"
    )
}

async fn create(hub: &TestHub, name: &str) {
    let body = serde_json::json!({"name": name, "token": TOKEN, "title": "Brad"});
    hub.create_hosted_topic(ADMIN, body).await;
}

/// A web server for a second domain (127.0.0.2) that sends its WebFinger path to `hub`, as
/// a person's own domain does for the hub hosting their name.
async fn redirecting_domain(
    listener: std::net::TcpListener,
    hub: String,
) -> actix_web::dev::ServerHandle {
    let server = HttpServer::new(move || {
        let hub = hub.clone();
        App::new().route(
            "/.well-known/webfinger",
            web::get().to(move |req: actix_web::HttpRequest| {
                let to = format!("{}.well-known/webfinger?{}", hub, req.query_string());
                async move {
                    HttpResponse::Found()
                        .insert_header(("location", to))
                        .finish()
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    handle
}

#[tokio::test]
async fn webfinger_answers_a_jrd_for_hosted_names_and_refuses_the_rest_with_reasons() {
    let hub = spawn_hub_with(&names_config("example.org")).await;
    create(&hub, "b").await;
    let get = |q: &str| {
        hub.client
            .get(format!("{}.well-known/webfinger{q}", hub.url))
            .send()
    };
    let r = get("?resource=acct:b@example.org").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/jrd+json");
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let jrd: serde_json::Value = r.json().await.unwrap();
    assert_eq!(jrd["subject"], "acct:b@example.org");
    let href = |rel: &str, ty: Option<&str>| {
        jrd["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == rel && ty.is_none_or(|t| l["type"] == t))
            .map(|l| l["href"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        href("alternate", Some("application/atom+xml")),
        Some(format!("{}t/b", hub.url))
    );
    assert_eq!(
        href("alternate", Some("application/feed+json")),
        Some(format!("{}t/b.json", hub.url))
    );
    assert_eq!(href("hub", None), Some(hub.url.clone()));
    assert_eq!(
        href("http://webfinger.net/rel/profile-page", None),
        Some(format!("{}@b", hub.url))
    );
    // rel filters; the topic URL is a resource too.
    let r = get(&format!("?resource={}t/b&rel=hub", hub.url))
        .await
        .unwrap();
    let jrd: serde_json::Value = r.json().await.unwrap();
    assert_eq!(jrd["links"].as_array().unwrap().len(), 1);
    assert_eq!(jrd["links"][0]["rel"], "hub");
    for (q, status) in [
        ("", 400),
        ("?rel=hub", 400),
        ("?resource=acct:nobody@example.org", 404),
        ("?resource=acct:b@elsewhere.example", 404),
        ("?resource=https://elsewhere.example/t/b", 404),
    ] {
        let r = get(q).await.unwrap();
        assert_eq!(r.status(), status, "{q}");
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
    }
    // The profile page shows the name, the ways to follow and recent entries (escaped).
    let r = hub
        .client
        .post(format!("{}t/b", hub.url))
        .bearer_auth(TOKEN)
        .form(&[("content", "<b>not bold</b>")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let page = hub.get_text("@b").await;
    assert!(page.contains("acct:b@example.org"), "{page}");
    assert!(page.contains(&format!("{}t/b.json", hub.url)));
    assert!(page.contains("&lt;b&gt;not bold&lt;/b&gt;"), "{page}");
}

#[tokio::test]
async fn a_name_on_another_domain_resolves_through_its_redirect_and_subscribes_a_callback() {
    let domain_listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let domain = domain_listener.local_addr().unwrap().to_string();
    let hub = spawn_hub_with(&names_config(&domain)).await;
    create(&hub, "b").await;
    let redirector = redirecting_domain(domain_listener, hub.url.clone()).await;
    let name = format!("b@{domain}");

    // The command line, with a config allowing loopback and plain http.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("resolve.toml");
    std::fs::write(
        &conf,
        "[ssrf]\ntopic_allow = [\"127.0.0.0/8\"]\n[webfinger]\nallow_http = true\n",
    )
    .unwrap();
    let out = tokio::process::Command::from(hubcast_binary())
        .args(["resolve", &name, "--config"])
        .arg(&conf)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["topic"], format!("{}t/b", hub.url));
    assert_eq!(v["hub"], hub.url.as_str());
    assert_eq!(v["subject"], format!("acct:{name}"));
    assert!(
        v["answered_by"].as_str().unwrap().starts_with(&hub.url),
        "followed the redirect: {v}"
    );

    // Subscribing by name: the named hub verifies the callback, then delivers to it.
    let sub = Subscriber::start().await;
    let cb = sub.callback("/by-name");
    let out = tokio::process::Command::from(hubcast_binary())
        .args(["resolve", &name, "--subscribe", &cb, "--config"])
        .arg(&conf)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hub.wait_active(&format!("{}t/b", hub.url), &cb).await;

    // The admin API does the same.
    let cb2 = sub.callback("/by-name-api");
    let r = hub
        .client
        .post(format!("{}admin/api/resolve", hub.url))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": name, "callback": cb2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    hub.wait_active(&format!("{}t/b", hub.url), &cb2).await;
    let r = hub
        .client
        .post(format!("{}t/b", hub.url))
        .bearer_auth(TOKEN)
        .form(&[("content", "to everyone who followed a name")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    sub.wait("a delivery to each callback subscribed by name", |r| {
        ["/by-name", "/by-name-api"]
            .iter()
            .all(|p| r.iter().any(|x| x.method == "POST" && x.path() == *p))
    })
    .await;

    // The status page's form shows the same.
    let r = hub
        .client
        .post(format!("{}admin/resolve", hub.url))
        .bearer_auth(ADMIN)
        .form(&[("name", name.as_str()), ("callback", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains(&format!("{}t/b", hub.url)), "{page}");

    // Names that lead nowhere say why.
    let r = hub
        .client
        .post(format!("{}admin/api/resolve", hub.url))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": format!("nobody@{domain}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("404"));
    let r = hub
        .client
        .post(format!("{}admin/api/resolve", hub.url))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": "not a name"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Without the allow-list, loopback is refused by the SSRF guard.
    let strict = dir.path().join("strict.toml");
    std::fs::write(&strict, "[webfinger]\nallow_http = true\n").unwrap();
    let out = tokio::process::Command::from(hubcast_binary())
        .args(["resolve", &name, "--config"])
        .arg(&strict)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not allowed") || err.contains("refused") || err.contains("blocked"),
        "{err}"
    );
    redirector.stop(false).await;
}
