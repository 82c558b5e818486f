//! Topics the hub does not host, opted in as newsgroups (`[[nntp.groups]]`): their entries are
//! kept as the topics' events arrive — whatever the hub fetched, was pushed or took from
//! another hub —, in a hosted topic record marked as a mirror, so the NNTP server (and the
//! topic's `/t/NAME` history) serve them with numbers like any hosted topic's. History starts
//! when the topic was opted in. A cursor in the log (`mirror`) says how far it has read; an
//! event read twice after a crash writes nothing (same entry, same digest).

use std::collections::HashMap;
use std::sync::Arc;

use sha1::{Digest, Sha1};

use super::shared::Shared;
use super::stream::EventStream;
use crate::hosted::input::EntryInput;
use crate::storage::hosted::{ContentKind, EntrySource, HostedEntry, HostedTopic, PostingPolicy};

/// The log cursor of the mirrors.
const CURSOR: &str = "mirror";
/// Events read at a time.
const BATCH: usize = 256;

/// The entries of an event of a mirrored topic, as stored.
pub fn entries(shared: &Shared, content_type: &str, body: &[u8]) -> Vec<HostedEntry> {
    let now = shared.clock.now_ms();
    let max = shared.cfg.hosted.max_entry_bytes;
    let (_, found) = crate::feed::entries::entries_of(content_type, body);
    found
        .into_iter()
        .filter_map(|e| {
            let key = hex::encode(&Sha1::digest(e.id.as_bytes())[..8]);
            let (content, kind, text) = match e.html {
                Some(h) => (h, ContentKind::Html, Some(e.text)),
                None => (e.text, ContentKind::Text, None),
            };
            let input = EntryInput {
                title: e.title,
                content,
                kind,
                text,
                author: e.author_name.map(|name| crate::storage::hosted::Author {
                    name,
                    email: e.author_email,
                    uri: None,
                }),
                in_reply_to: e.in_reply_to,
                link: e.link,
                ..EntryInput::default()
            };
            input
                .into_entry(key, e.id, now, max, EntrySource::Mirror)
                .map_err(|why| tracing::debug!(%why, "a mirrored entry is not kept"))
                .ok()
        })
        .collect()
}

/// Makes sure each opted-in topic has its record; the groups whose name a hosted topic has
/// are left out (said in the log).
async fn records(shared: &Shared) -> HashMap<String, String> {
    let mut by_topic = HashMap::new();
    for g in &shared.cfg.nntp.groups {
        let record = HostedTopic {
            name: g.name.clone(),
            token: hex::encode(rand::random::<[u8; 24]>()),
            title: g.topic.clone(),
            created_ms: shared.clock.now_ms(),
            max_entries: shared.cfg.hosted.max_entries,
            max_age_ms: shared.cfg.hosted.max_age.as_millis() as u64,
            trail: 1,
            policy: PostingPolicy::Open,
            allow: Vec::new(),
            mirror_of: Some(g.topic.clone()),
        };
        let store = &shared.store.hosted;
        let existing = shared
            .health
            .persist("hosted topic record", &shared.shutdown, || async {
                store.create_hosted(record.clone()).await?;
                store.hosted(&g.name).await
            })
            .await
            .flatten();
        match existing {
            Some(t) if t.mirror_of.as_deref() == Some(g.topic.as_str()) => {
                by_topic.insert(g.topic.clone(), g.name.clone());
            }
            Some(_) => tracing::error!(name = %g.name, topic = %g.topic,
                "nntp.groups: the name is another hosted topic's; this group is not served"),
            None => {}
        }
    }
    by_topic
}

pub async fn run(shared: Arc<Shared>, stream: Arc<EventStream>) {
    if shared.cfg.nntp.groups.is_empty() {
        return;
    }
    let by_topic = records(&shared).await;
    let log = shared.store.log.clone();
    let start = match shared
        .health
        .persist("mirror cursor", &shared.shutdown, || log.cursor(CURSOR))
        .await
    {
        Some(Some(c)) => c,
        Some(None) => stream.lead(),
        None => return,
    };
    let mut follower = stream.follow(start);
    loop {
        let next = tokio::select! {
            n = follower.next(BATCH) => n,
            _ = shared.shutdown.cancelled() => return,
        };
        let events = match next {
            Ok(e) if e.is_empty() => return,
            Ok(e) => e,
            Err(e) => {
                shared.health.failed("event log read", &e);
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = shared.shutdown.cancelled() => return,
                }
                continue;
            }
        };
        let Some(last) = events.last().map(|c| c.event.seq) else {
            continue;
        };
        for c in &events {
            let Some(name) = by_topic.get(&c.event.topic) else {
                continue;
            };
            let found = entries(&shared, &c.event.content_type, &c.event.body);
            let store = &shared.store.hosted;
            let written = shared
                .health
                .persist("mirrored entries", &shared.shutdown, || {
                    store.put_mirrored(name, found.clone())
                })
                .await;
            match written {
                Some(n) if n > 0 => tracing::debug!(%name, n, "mirrored entries kept"),
                Some(_) => {}
                None => return,
            }
        }
        let put = || async {
            log.put_cursor(CURSOR, last).await?;
            shared.store.flush().await
        };
        if shared
            .health
            .persist("mirror cursor", &shared.shutdown, put)
            .await
            .is_none()
        {
            return;
        }
    }
}
