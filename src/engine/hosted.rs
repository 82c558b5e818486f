//! Hosted topics' writes: an entry posted, edited or deleted becomes the topic's next event
//! (Atom for `/t/{name}`, JSON Feed for `/t/{name}.json`, appended together) carrying the
//! history change in the same transaction, so the entry and its fan-out are durable together.
//! Writes of one topic take turns (a lock per topic, of a fixed set), so an entry's versions and
//! a resend's duplicate check see each other.

use std::sync::Arc;

use bytes::Bytes;

use super::shared::Shared;
use super::stream::{CommitError, EventStream};
use crate::hosted::input::{EntryInput, InputError};
use crate::hosted::{Urls, atom, json_feed};
use crate::storage::hosted::{
    EntrySource, HostedChange, HostedEntry, HostedTopic, HostedWrite, PostingPolicy,
};
use crate::storage::{Commit, NewEvent, StorageError};

/// Locks writes of a topic take turns on (topics share them by hash).
const LOCKS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HostedError {
    #[error("no hosted topic named {0:?}")]
    NoTopic(String),
    #[error("no entry {0:?} in this topic")]
    NoEntry(String),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("another entry has the identity {0:?}")]
    Taken(String),
    #[error("storage unavailable; try again shortly")]
    Storage(#[from] StorageError),
    #[error("the hub is stopping; try again shortly")]
    Stopping,
}

impl From<CommitError> for HostedError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Storage(e) => HostedError::Storage(e),
            CommitError::Stopping => HostedError::Stopping,
        }
    }
}

/// What a post did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// A new entry (as stored, with its number).
    Created(HostedEntry),
    /// A new version of an entry.
    Updated(HostedEntry),
    /// The same entry was there already (a resend): nothing was written.
    Unchanged(HostedEntry),
}

impl Posted {
    pub fn entry(&self) -> &HostedEntry {
        match self {
            Posted::Created(e) | Posted::Updated(e) | Posted::Unchanged(e) => e,
        }
    }
}

/// Identity of a new entry, when the caller decides it (mail: from the Message-ID).
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: String,
    pub id: String,
}

pub struct Hosted {
    shared: Arc<Shared>,
    stream: Arc<EventStream>,
    urls: Urls,
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl Hosted {
    pub fn new(shared: Arc<Shared>, stream: Arc<EventStream>) -> Hosted {
        let urls = Urls::new(&shared.hub_url);
        Hosted {
            shared,
            stream,
            urls,
            locks: (0..LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    pub fn urls(&self) -> &Urls {
        &self.urls
    }

    fn lock_of(&self, name: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        &self.locks[(h.finish() as usize) % LOCKS]
    }

    async fn topic(&self, name: &str) -> Result<HostedTopic, HostedError> {
        self.shared
            .store
            .hosted
            .hosted(name)
            .await?
            .ok_or_else(|| HostedError::NoTopic(name.to_owned()))
    }

    /// Creates a topic owned by whoever holds `token`; `false` when it exists.
    pub async fn create(
        &self,
        name: &str,
        token: &str,
        options: TopicOptions,
    ) -> Result<bool, HostedError> {
        let now = self.shared.clock.now_ms();
        let topic = new_topic(&self.shared.cfg.hosted, name, token, options, now)
            .map_err(|e| HostedError::Input(InputError::Invalid(e)))?;
        let created = self.shared.store.hosted.create_hosted(topic).await?;
        self.shared.store.flush().await?;
        Ok(created)
    }

    /// A post by the owner: a new entry, or a new version of the entry with the posted id.
    pub async fn post(&self, name: &str, input: EntryInput) -> Result<Posted, HostedError> {
        self.write(name, input).await
    }

    /// A new version of the entry with key `key`.
    pub async fn edit(
        &self,
        name: &str,
        key: &str,
        input: EntryInput,
    ) -> Result<Posted, HostedError> {
        let _turn = self.lock_of(name).lock().await;
        let topic = self.topic(name).await?;
        let Some(old) = self.shared.store.hosted.hosted_entry(name, key).await? else {
            return Err(HostedError::NoEntry(key.to_owned()));
        };
        self.put(&topic, Some(old), input).await
    }

    /// An entry from elsewhere (mail) under the identity the caller derived. It never
    /// replaces another: an entry already there under that identity is [`Posted::Unchanged`]
    /// when it is the same (a resend), else [`HostedError::Taken`] (the caller keeps the new
    /// one apart, under another identity).
    pub async fn take(
        &self,
        name: &str,
        input: EntryInput,
        identity: Identity,
        source: EntrySource,
    ) -> Result<Posted, HostedError> {
        let _turn = self.lock_of(name).lock().await;
        let topic = self.topic(name).await?;
        let old = self
            .shared
            .store
            .hosted
            .hosted_entry(name, &identity.key)
            .await?;
        let now = self.shared.clock.now_ms();
        let max = self.shared.cfg.hosted.max_entry_bytes;
        let entry = input.into_entry(identity.key, identity.id, now, max, source)?;
        if let Some(o) = old {
            if o.digest == entry.digest {
                return Ok(Posted::Unchanged(o));
            }
            return Err(HostedError::Taken(o.key));
        }
        self.store_new(&topic, entry).await
    }

    async fn write(&self, name: &str, input: EntryInput) -> Result<Posted, HostedError> {
        let _turn = self.lock_of(name).lock().await;
        let topic = self.topic(name).await?;
        let old = match input.id.as_deref() {
            Some(id) => {
                self.shared
                    .store
                    .hosted
                    .hosted_entry_by_id(name, id)
                    .await?
            }
            None => None,
        };
        self.put(&topic, old, input).await
    }

    async fn put(
        &self,
        topic: &HostedTopic,
        old: Option<HostedEntry>,
        input: EntryInput,
    ) -> Result<Posted, HostedError> {
        let now = self.shared.clock.now_ms();
        let (key, id) = match &old {
            Some(o) => (o.key.clone(), o.id.clone()),
            None => {
                let key = crate::hosted::new_key();
                let id = match &input.id {
                    Some(id) => id.clone(),
                    None => self.urls.entry(&topic.name, &key),
                };
                (key, id)
            }
        };
        let max = self.shared.cfg.hosted.max_entry_bytes;
        let mut entry = input.into_entry(key, id, now, max, EntrySource::Post)?;
        let Some(o) = old else {
            return self.store_new(topic, entry).await;
        };
        if o.digest == entry.digest {
            return Ok(Posted::Unchanged(o));
        }
        entry.published_ms = o.published_ms;
        let stored = self.store_entry(topic, entry).await?;
        Ok(Posted::Updated(stored))
    }

    async fn store_new(
        &self,
        topic: &HostedTopic,
        entry: HostedEntry,
    ) -> Result<Posted, HostedError> {
        Ok(Posted::Created(self.store_entry(topic, entry).await?))
    }

    /// Commits the entry with its event; the entry as stored (with its number).
    async fn store_entry(
        &self,
        topic: &HostedTopic,
        entry: HostedEntry,
    ) -> Result<HostedEntry, HostedError> {
        let atom_body = atom::feed(
            &self.urls,
            topic,
            std::slice::from_ref(&entry),
            &[],
            &atom::Paging::default(),
        );
        let json_body = json_feed::feed(
            &self.urls,
            topic,
            std::slice::from_ref(&entry),
            &[],
            None,
            None,
        );
        let write = HostedWrite {
            name: topic.name.clone(),
            change: HostedChange::Put(Box::new(entry.clone())),
        };
        self.commit(topic, write, atom_body, json_body).await?;
        let stored = self
            .shared
            .store
            .hosted
            .hosted_entry(&topic.name, &entry.key)
            .await?
            .unwrap_or(entry);
        Ok(stored)
    }

    /// Deletes the entry with key `key`: it leaves the history, and the deletion fans out
    /// (RFC 6721 `at:deleted-entry`).
    pub async fn delete(&self, name: &str, key: &str) -> Result<HostedEntry, HostedError> {
        let _turn = self.lock_of(name).lock().await;
        let topic = self.topic(name).await?;
        let Some(old) = self.shared.store.hosted.hosted_entry(name, key).await? else {
            return Err(HostedError::NoEntry(key.to_owned()));
        };
        let deleted = [atom::Deleted {
            id: old.id.clone(),
            when_ms: self.shared.clock.now_ms(),
        }];
        let atom_body = atom::feed(&self.urls, &topic, &[], &deleted, &atom::Paging::default());
        let json_body = json_feed::feed(&self.urls, &topic, &[], &deleted, None, None);
        let write = HostedWrite {
            name: topic.name.clone(),
            change: HostedChange::Delete {
                key: key.to_owned(),
            },
        };
        self.commit(&topic, write, atom_body, json_body).await?;
        Ok(old)
    }

    /// Appends the two events (the Atom one carrying `write`) and waits until they are durable.
    async fn commit(
        &self,
        topic: &HostedTopic,
        write: HostedWrite,
        atom_body: Vec<u8>,
        json_body: Vec<u8>,
    ) -> Result<(), HostedError> {
        let s = &self.shared;
        let now = s.clock.now_ms();
        let mut commits = Vec::with_capacity(2);
        for (url, content_type, body, hosted) in [
            (
                self.urls.atom(&topic.name),
                "application/atom+xml",
                atom_body,
                Some(write),
            ),
            (
                self.urls.json(&topic.name),
                json_feed::MEDIA_TYPE,
                json_body,
                None,
            ),
        ] {
            let (destinations, snapshot) = super::publish::subscribers_of(s, &url).await?;
            let commit = Commit {
                topic: url,
                state: None,
                ping_ids: Vec::new(),
                event: Some(NewEvent {
                    content_type: content_type.to_owned(),
                    body: Bytes::from(body),
                    created_ms: now,
                    relayed: None,
                }),
                destinations,
                cursor: None,
                hosted,
            };
            commits.push((commit, snapshot));
        }
        let numbers = self.stream.commit_all(commits).await?;
        let last = numbers
            .into_iter()
            .flatten()
            .max()
            .ok_or(HostedError::Stopping)?;
        if !self.stream.durable(last).await {
            return Err(HostedError::Stopping);
        }
        Ok(())
    }
}

/// What a new topic is made with beyond its name and token.
#[derive(Debug, Clone, Default)]
pub struct TopicOptions {
    /// Its title (the name when absent).
    pub title: Option<String>,
    pub policy: PostingPolicy,
    /// Addresses allowed to post by mail, for [`PostingPolicy::AllowList`].
    pub allow: Vec<String>,
}

/// A new topic's record, checked: name, token, title, posting policy, and the `[hosted]`
/// retention.
pub fn new_topic(
    cfg: &crate::config::gateways::HostedConfig,
    name: &str,
    token: &str,
    options: TopicOptions,
    now_ms: u64,
) -> Result<HostedTopic, String> {
    crate::hosted::valid_name(name)?;
    crate::hosted::valid_token(token)?;
    let title = options
        .title
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or(name);
    if title.len() > 256 || title.chars().any(char::is_control) {
        return Err("the title must be at most 256 bytes, without control characters".into());
    }
    let mut allow = Vec::with_capacity(options.allow.len());
    for a in &options.allow {
        let a = a.trim().to_ascii_lowercase();
        if a.len() > 254
            || !a.contains('@')
            || a.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("{a:?} is not a mail address"));
        }
        allow.push(a);
    }
    if options.policy == PostingPolicy::AllowList && allow.is_empty() {
        return Err("the allow-list policy needs at least one address to allow".into());
    }
    Ok(HostedTopic {
        name: name.to_owned(),
        token: token.to_owned(),
        title: title.to_owned(),
        created_ms: now_ms,
        max_entries: cfg.max_entries,
        max_age_ms: cfg.max_age.as_millis() as u64,
        trail: 1,
        policy: options.policy,
        allow,
        mirror_of: None,
    })
}
