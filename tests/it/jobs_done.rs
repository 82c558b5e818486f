//! Jobs done leave storage by event: together once the event's last job is done, or after a
//! second while another destination of the event is still being delivered to. A restart then
//! repeats only what was not done. (That jobs done everywhere leave storage is what every
//! `wait_jobs_done` in the suite checks.)

use crate::helpers::*;

const CONFIG: &str = r#"
[delivery]
timeout = "60s"
[server]
shutdown_deadline = "1s"

[[publishers]]
name = "p"
topics = ["http://127.0.0.1:1/j/"]
token = "jobs-token"
"#;

const TOPIC: &str = "http://127.0.0.1:1/j/news";

/// The jobs stored, as (event, destination).
async fn stored_jobs(hub: &TestHub) -> Vec<(u64, String)> {
    let mut jobs: Vec<(u64, String)> = hub
        .store()
        .delivery
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| (j.event, j.destination))
        .collect();
    jobs.sort();
    jobs
}

#[tokio::test]
async fn a_job_done_leaves_storage_while_its_events_other_job_hangs_and_is_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, CONFIG);
    // Kept across the restart (a memory store lives only as long as this handle).
    let store = hubcast::hub::open_storage(&cfg).await.unwrap();
    let hub = start_with_storage(dir, cfg.clone(), store.clone()).await;
    let hung = Subscriber::start().await;
    let quick = Subscriber::start_on("127.0.0.2").await;
    hub.subscribed(TOPIC, &hung.callback("/h")).await;
    hub.subscribed(TOPIC, &quick.callback("/q")).await;
    // The hung destination accepts the delivery and never answers (60 s timeout).
    hung.reply_with(&[0]);
    assert_eq!(
        hub.fat_ping(TOPIC, "jobs-token", "news").await.status(),
        202
    );
    hung.wait_deliveries(1).await;
    quick.wait_deliveries(1).await;
    let hung_destination = hubcast::urls::destination_of_endpoint(&hung.callback("/h"));
    // The quick destination's job leaves storage (within about a second) while the hung one
    // still runs.
    hub.wait_for("the job done to leave storage", || async {
        stored_jobs(&hub).await == [(1, hung_destination.clone())]
    })
    .await;

    // Stopping cuts the hung delivery off: its job stays, and only it is sent again.
    let dir = hub.stop().await;
    let hub = start_with_storage(dir, cfg, store).await;
    hung.wait_deliveries(2).await;
    hub.wait_jobs_done().await;
    assert_eq!(
        quick.deliveries().len(),
        1,
        "done before the restart: not sent again"
    );
    assert_eq!(hung.deliveries()[1].body, b"news");
}
