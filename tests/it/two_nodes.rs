//! Two hub nodes sharing one store (`cluster.node_id` names each in its claims): every update
//! is numbered once in one dense log and delivered once, whichever node accepted it.

use std::collections::BTreeSet;
use std::sync::Arc;

use hubcast::config::Backend;
use hubcast::storage::Storage;
use hubcast::storage::memory::MemoryStore;

use crate::helpers::*;

const TOKEN: &str = "two-nodes-token";
const UPDATES: usize = 60;

fn topic(i: usize) -> String {
    format!("http://127.0.0.1:1/n/{i}")
}

async fn node(store: &Storage, name: &str) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[cluster]\nnode_id = \"{name}\"\n[[publishers]]\nname = \"p\"\ntopics = [\"http://127.0.0.1:1/n/\"]\ntoken = \"{TOKEN}\"\n"
    );
    let cfg = config_on(&dir, Backend::Memory, &extra);
    start_with_storage(dir, cfg, store.clone()).await
}

#[tokio::test]
async fn two_nodes_on_one_store_number_each_update_once_and_deliver_it_once() {
    // One store object shared by two in-process hubs: what a shared database gives two nodes.
    let store = Storage::new(Arc::new(MemoryStore::new()));
    let a = node(&store, "node-a").await;
    let b = node(&store, "node-b").await;
    let sub = Subscriber::start().await;
    for i in 0..UPDATES {
        let hub = if i % 2 == 0 { &a } else { &b };
        hub.subscribed(&topic(i), &sub.callback(&format!("/cb{i}")))
            .await;
    }
    let pings = (0..UPDATES).map(|i| {
        let hub = if i % 2 == 0 { &a } else { &b };
        async move {
            let r = hub.fat_ping(&topic(i), TOKEN, &format!("update {i}")).await;
            assert_eq!(r.status(), 202);
        }
    });
    futures_util::future::join_all(pings).await;
    sub.wait_deliveries(UPDATES).await;
    // Quiet: nothing pending anywhere, then every update was delivered exactly once.
    poll_until("both nodes to finish", PATIENCE, || async {
        let pending = store.publish.pings().await.unwrap().len()
            + store.delivery.jobs().await.unwrap().len()
            + store.delivery.count_retries().await.unwrap() as usize;
        (pending == 0).then_some(())
    })
    .await;
    let bodies: Vec<String> = sub
        .deliveries()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    let distinct: BTreeSet<&String> = bodies.iter().collect();
    assert_eq!(
        bodies.len(),
        UPDATES,
        "no update delivered twice: {bodies:?}"
    );
    assert_eq!(distinct.len(), UPDATES);
    // One log, numbered 1…N across both nodes, each topic once.
    let events = store.log.read(1, u64::MAX, 1_000).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=UPDATES as u64).collect::<Vec<_>>());
    let topics: BTreeSet<&str> = events.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(topics.len(), UPDATES);
}
