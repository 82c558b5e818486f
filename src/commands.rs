//! Operator commands of the binary, run on a stopped hub's store.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use hubcast::admin::SubscriptionInfo;
use hubcast::backup;
use hubcast::clock::Clock;
use hubcast::progress::Progress;
use hubcast::storage::Storage;
use hubcast::urls::HttpUrl;

fn create_private(path: &PathBuf) -> anyhow::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))
}

pub async fn export(store: Storage, output: Option<PathBuf>) -> anyhow::Result<()> {
    let now = Clock::new().now_ms();
    let mut progress = Progress::new("export");
    let counts = match &output {
        Some(path) => {
            let mut out = BufWriter::new(create_private(path)?);
            let counts = backup::export(&store, &mut out, now, &mut progress).await?;
            out.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            counts
        }
        None => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            backup::export(&store, &mut out, now, &mut progress).await?
        }
    };
    eprintln!("exported {counts}");
    Ok(())
}

pub async fn import(store: Storage, file: PathBuf) -> anyhow::Result<()> {
    let open = || {
        File::open(&file)
            .map(BufReader::new)
            .with_context(|| format!("cannot open {}", file.display()))
    };
    let total = backup::check(open()?)
        .with_context(|| format!("{} is not a usable backup", file.display()))?;
    let mut progress = Progress::new("import");
    let counts = backup::import(&store, open()?, total, &mut progress).await?;
    eprintln!("imported {counts}");
    Ok(())
}

pub async fn subscriptions(store: Storage, topic: String, limit: usize) -> anyhow::Result<()> {
    let topic = HttpUrl::parse(&topic).map_err(|e| anyhow::anyhow!("--topic: {e}"))?;
    let now = Clock::new().now_ms();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut after: Option<(String, String)> = None;
    let mut listed = 0;
    while listed < limit {
        let page = store
            .subs
            .scan(
                Some(topic.as_str()),
                after.as_ref().map(|(t, c)| (t.as_str(), c.as_str())),
                (limit - listed).min(1000),
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.topic.clone(), last.callback.clone()));
        for s in page {
            serde_json::to_writer(&mut out, &SubscriptionInfo::new(s, now))?;
            out.write_all(b"\n")?;
            listed += 1;
        }
    }
    out.flush()?;
    Ok(())
}

pub async fn dead_letters(store: Storage, limit: usize) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    for d in store.delivery.dead_letters(limit).await? {
        serde_json::to_writer(&mut out, &d)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

pub async fn replay(store: Storage, ids: Vec<u64>, all: bool) -> anyhow::Result<()> {
    let now = Clock::new().now_ms();
    let ids: Vec<u64> = if all {
        store
            .delivery
            .dead_letters(usize::MAX)
            .await?
            .iter()
            .map(|d| d.id)
            .collect()
    } else {
        ids
    };
    let mut progress = Progress::new("replay");
    progress.set_total(ids.len() as u64);
    let mut replayed = 0;
    let mut missing = Vec::new();
    for id in ids {
        match store.delivery.replay_dead_letter(id, now).await? {
            Some(_) => replayed += 1,
            None => missing.push(id),
        }
        progress.inc(1);
    }
    store.flush().await?;
    progress.finish();
    eprintln!("replayed {replayed} dead letter(s); they are retried when the hub next runs");
    if !missing.is_empty() {
        anyhow::bail!("no dead letter with id {missing:?}");
    }
    Ok(())
}

pub async fn topic_create(
    store: Storage,
    cfg: hubcast::config::Config,
    name: String,
    token: String,
    (title, policy, allow): (Option<String>, String, Vec<String>),
) -> anyhow::Result<()> {
    let now = Clock::new().now_ms();
    let policy = hubcast::storage::hosted::PostingPolicy::parse(&policy).ok_or_else(|| {
        anyhow::anyhow!("--policy {policy:?} is not open, subscribers or allow-list")
    })?;
    let options = hubcast::engine::hosted::TopicOptions {
        title,
        policy,
        allow,
    };
    let topic = hubcast::engine::hosted::new_topic(&cfg.hosted, &name, &token, options, now)
        .map_err(|e| anyhow::anyhow!(e))?;
    if !store.hosted.create_hosted(topic).await? {
        anyhow::bail!("a hosted topic named {name:?} exists");
    }
    store.flush().await?;
    if !cfg.hosted.enabled {
        eprintln!(
            "note: hosted.enabled is false in this config: the hub will not serve it until it is true"
        );
    }
    eprintln!("created hosted topic {name:?}: /t/{name} (Atom), /t/{name}.json (JSON Feed)");
    Ok(())
}

pub async fn topic_list(store: Storage) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut after: Option<String> = None;
    loop {
        let topics = store.hosted.hosted_topics(after.as_deref(), 1000).await?;
        let Some(last) = topics.last() else { break };
        after = Some(last.name.clone());
        for t in &topics {
            let line = serde_json::json!({
                "name": t.name,
                "title": t.title,
                "created_ms": t.created_ms,
                "max_entries": t.max_entries,
                "max_age_ms": t.max_age_ms,
                "trail": t.trail,
                "policy": t.policy.as_str(),
            });
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}
