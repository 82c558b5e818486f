//! Backups with the operator commands of the real binary: export a hub's store, import it into
//! an empty data directory, and get the same subscriptions (and a hub that delivers to them).
//! The commands work on a store on disk (they refuse the memory backend), so every hub and
//! config here is on [`persistent_backend`], whatever `HUBCAST_TEST_BACKEND` says.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::helpers::*;
use crate::process::*;

fn hubcast(args: &[&str], config: &Path) -> Output {
    hubcast_binary()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The backup's records of one kind, as JSON values.
fn records(file: &Path, kind: &str) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

#[tokio::test]
async fn export_then_import_into_an_empty_directory_gives_the_same_subscriptions() {
    let publisher = Publisher::start().await;
    let (t1, t2) = (publisher.topic("/one"), publisher.topic("/two"));
    publisher.set("/one", "text/plain", "one");
    publisher.set("/two", "text/plain", "two after the restore");
    let sub = Subscriber::start().await;

    let a = tempfile::tempdir().unwrap();
    let config_a = process_config(&a, persistent_backend(), "");
    let hub = start_process(&config_a).await;
    let subscriptions = [
        (&t1, sub.callback("/a"), Some("secret-of-a-0001")),
        (&t1, sub.callback("/b"), None),
        (&t2, sub.callback("/a"), None),
    ];
    for (topic, cb, secret) in &subscriptions {
        let mut form = vec![
            ("hub.mode", "subscribe"),
            ("hub.topic", topic.as_str()),
            ("hub.callback", cb.as_str()),
        ];
        if let Some(s) = secret {
            form.push(("hub.secret", s));
        }
        assert_eq!(post(&hub.url, &form).await, 202);
    }
    sub.wait_verifications(3).await;
    post(&hub.url, &[("hub.mode", "publish"), ("hub.url", &t1)]).await;
    sub.wait_deliveries(2).await;

    // The store is locked while the hub runs: the command says what to do.
    let file = a.path().join("backup.jsonl");
    let o = hubcast(&["export", "-o", file.to_str().unwrap()], &config_a);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("stop it first"), "{}", stderr(&o));
    stop_gracefully(hub).await;

    let o = hubcast(&["export", "-o", file.to_str().unwrap()], &config_a);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("exported 3 subscriptions"),
        "{}",
        stderr(&o)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the backup holds secrets: owner-only");
    }
    let header = records(&file, "header");
    assert_eq!(header[0]["format"], "hubcast-backup");
    assert_eq!(records(&file, "topic_state").len(), 1);

    // Into an empty directory.
    let b = tempfile::tempdir().unwrap();
    let config_b = process_config(&b, persistent_backend(), "");
    let o = hubcast(&["import", file.to_str().unwrap()], &config_b);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("imported 3 subscriptions"),
        "{}",
        stderr(&o)
    );

    // The same subscriptions, secrets included: export B and compare.
    let file_b = b.path().join("backup.jsonl");
    let o = hubcast(&["export", "-o", file_b.to_str().unwrap()], &config_b);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        records(&file, "subscription"),
        records(&file_b, "subscription")
    );
    assert_eq!(records(&file_b, "subscription").len(), 3);
    assert_eq!(
        records(&file, "topic_state"),
        records(&file_b, "topic_state")
    );

    // Listing a topic's subscriptions: JSON lines, no secrets.
    let o = hubcast(&["subscriptions", "--topic", &t1], &config_b);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(!out.contains("secret-of-a-0001"));
    let listed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["callback"], sub.callback("/a").as_str());
    assert_eq!(listed[0]["has_secret"], true);

    // A second import is refused: the store is not empty any more.
    let o = hubcast(&["import", file.to_str().unwrap()], &config_b);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));

    // A hub on the restored store delivers to the restored subscriptions.
    let before = sub.deliveries().len();
    let hub = start_process(&config_b).await;
    post(&hub.url, &[("hub.mode", "publish"), ("hub.url", &t2)]).await;
    let got = sub.wait_deliveries(before + 1).await;
    assert_eq!(got[before].body, b"two after the restore");
    assert_eq!(got[before].target, "/a");
    stop_gracefully(hub).await;
}

#[tokio::test]
async fn a_malformed_backup_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = process_config(&dir, persistent_backend(), "");
    let file = dir.path().join("bad.jsonl");
    std::fs::write(
        &file,
        "{\"kind\":\"header\",\"format\":\"hubcast-backup\",\"version\":1,\"created_ms\":0}\n\
         {\"kind\":\"subscription\",\"topic\":\"http://t.example/\",\"callback\":\"http://c.example/\",\
         \"destination\":\"http://c.example:80\",\"secret\":null,\"lease_seconds\":1,\"expires_ms\":1,\"created_ms\":1}\n\
         {\"kind\":\"nonsense\"}\n",
    )
    .unwrap();
    let o = hubcast(&["import", file.to_str().unwrap()], &config);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("line 3"), "{}", stderr(&o));
    // Nothing was written: the first (valid) subscription is not there.
    let o = hubcast(&["subscriptions", "--topic", "http://t.example/"], &config);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = process_config(
        &dir,
        persistent_backend(),
        "[delivery]\nretry_schedule = [\"50ms\"]\n",
    );
    let publisher = Publisher::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "replayed");
    let sub = Subscriber::start().await;
    sub.usually_reply(404);
    let hub = start_process(&config).await;
    let cb = sub.callback("/cb");
    let form = [
        ("hub.mode", "subscribe"),
        ("hub.topic", topic.as_str()),
        ("hub.callback", cb.as_str()),
    ];
    assert_eq!(post(&hub.url, &form).await, 202);
    sub.wait_verifications(1).await;
    // Subscribed once the verification is answered and stored; publish until it takes.
    poll_until("a delivery of a publish", PATIENCE, || async {
        if !sub.deliveries().is_empty() {
            return Some(());
        }
        post(&hub.url, &[("hub.mode", "publish"), ("hub.url", &topic)]).await;
        None
    })
    .await;
    sub.wait_deliveries(2).await; // the first attempt and its one retry
    let url = format!("{}admin/api/dead-letters", hub.url);
    wait_body(&url, |b| b.contains("HTTP 404")).await;
    stop_gracefully(hub).await;

    let o = hubcast(&["dead-letters"], &config);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let dead: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(dead["callback"], cb.as_str());
    let id = dead["id"].as_u64().unwrap().to_string();
    let o = hubcast(&["replay", "--id", "999999999"], &config);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no dead letter"), "{}", stderr(&o));
    let o = hubcast(&["replay", "--id", &id], &config);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("replayed 1"), "{}", stderr(&o));

    // The next hub run retries it; the subscriber takes it now.
    sub.usually_reply(200);
    let before = sub.deliveries().len();
    let hub = start_process(&config).await;
    let got = sub.wait_deliveries(before + 1).await;
    assert_eq!(got[before].body, b"replayed");
    stop_gracefully(hub).await;
}

/// A hub moves from sled to PostgreSQL (`export`, then `import` into an empty database), runs
/// there and delivers to what it had, then moves back to sled: the same subscriptions and
/// topic states at every step. PostgreSQL by name (the database `DATABASE_URL` names).
#[tokio::test]
async fn a_hub_moves_from_sled_to_postgres_and_back() {
    use hubcast::config::Backend;
    let publisher = Publisher::start().await;
    let topic = publisher.topic("/moving");
    publisher.set("/moving", "text/plain", "before the move");
    let sub = Subscriber::start().await;
    let sled = tempfile::tempdir().unwrap();
    let config_sled = process_config(&sled, Backend::Sled, "");
    let hub = start_process(&config_sled).await;
    for (cb, secret) in [("/a", Some("secret-of-a-0001")), ("/b", None)] {
        let callback = sub.callback(cb);
        let mut form = vec![
            ("hub.mode", "subscribe"),
            ("hub.topic", topic.as_str()),
            ("hub.callback", callback.as_str()),
        ];
        if let Some(s) = secret {
            form.push(("hub.secret", s));
        }
        assert_eq!(post(&hub.url, &form).await, 202);
    }
    sub.wait_verifications(2).await;
    post(&hub.url, &[("hub.mode", "publish"), ("hub.url", &topic)]).await;
    sub.wait_deliveries(2).await;
    stop_gracefully(hub).await;
    let from_sled = sled.path().join("from-sled.jsonl");
    let o = hubcast(&["export", "-o", from_sled.to_str().unwrap()], &config_sled);
    assert!(o.status.success(), "{}", stderr(&o));

    // Into an empty database.
    let pg = tempfile::tempdir().unwrap();
    let config_pg = process_config(&pg, Backend::Postgres, "");
    let o = hubcast(&["import", from_sled.to_str().unwrap()], &config_pg);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("imported 2 subscriptions"),
        "{}",
        stderr(&o)
    );
    let o = hubcast(&["import", from_sled.to_str().unwrap()], &config_pg);
    assert!(!o.status.success(), "a second import is refused");
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    // A hub on the database delivers to the subscriptions it took, and its log goes on from
    // the numbers it had.
    publisher.set("/moving", "text/plain", "after the move");
    let hub = start_process(&config_pg).await;
    post(&hub.url, &[("hub.mode", "publish"), ("hub.url", &topic)]).await;
    let got = sub.wait_deliveries(4).await;
    assert!(got[2..].iter().all(|d| d.body == b"after the move"));
    stop_gracefully(hub).await;
    let from_pg = pg.path().join("from-pg.jsonl");
    let o = hubcast(&["export", "-o", from_pg.to_str().unwrap()], &config_pg);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        records(&from_sled, "subscription"),
        records(&from_pg, "subscription")
    );
    assert_eq!(
        records(&from_pg, "event").len(),
        2,
        "both updates in the log"
    );

    // And back to sled.
    let back = tempfile::tempdir().unwrap();
    let config_back = process_config(&back, Backend::Sled, "");
    let o = hubcast(&["import", from_pg.to_str().unwrap()], &config_back);
    assert!(o.status.success(), "{}", stderr(&o));
    let again = back.path().join("again.jsonl");
    let o = hubcast(&["export", "-o", again.to_str().unwrap()], &config_back);
    assert!(o.status.success(), "{}", stderr(&o));
    for kind in ["subscription", "topic_state", "event"] {
        assert_eq!(records(&from_pg, kind), records(&again, kind), "{kind}");
    }
}
