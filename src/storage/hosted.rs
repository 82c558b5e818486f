//! Hosted topics: topics this hub publishes itself (`/t/{name}`), with their history.
//!
//! A hosted topic is a record (owner credential, retention) and its entries, each stored under
//! the number of its newest version: the topic's own sequence (1, 2, 3, …, kept by name, never
//! reused), which history, the retrieve cursor (`seq:N`) and newsgroup article numbers share.
//! An entry written, edited or deleted is a [`HostedWrite`] in the same [`super::Commit`] as
//! its event, numbered in the same transaction, so the entry and its fan-out become durable
//! together.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::Result;

/// A topic the hub publishes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedTopic {
    /// `[a-z0-9][a-z0-9_-]*`: the path segment, the mail local part, the newsgroup's last part.
    pub name: String,
    /// The owner's token: a bearer token, and the secret of `X-Hub-Signature` (like a
    /// subscription's secret, it is stored as given and never shown or logged).
    pub token: String,
    pub title: String,
    pub created_ms: u64,
    /// Entries kept (0: no limit).
    pub max_entries: u64,
    /// Oldest entry kept, by last update (0: no limit).
    pub max_age_ms: u64,
    /// The lowest number history still holds: everything below was pruned (1 when nothing was).
    pub trail: u64,
    /// Who may post by mail.
    #[serde(default)]
    pub policy: PostingPolicy,
    /// Addresses allowed to post when the policy is [`PostingPolicy::AllowList`] (lowercase).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Set for a topic the hub does not publish but keeps the entries of (a newsgroup opted
    /// in): that topic's URL. Nobody posts to it here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_of: Option<String>,
}

/// Who may post to a hosted topic by mail (the owner posts over HTTP with the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PostingPolicy {
    /// Anyone (the operator's mail server filters spam).
    #[default]
    Open,
    /// Confirmed mail subscribers of the topic.
    Subscribers,
    /// The addresses listed in `allow`.
    AllowList,
}

impl PostingPolicy {
    pub fn parse(s: &str) -> Option<PostingPolicy> {
        match s {
            "open" => Some(PostingPolicy::Open),
            "subscribers" => Some(PostingPolicy::Subscribers),
            "allow-list" => Some(PostingPolicy::AllowList),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PostingPolicy::Open => "open",
            PostingPolicy::Subscribers => "subscribers",
            PostingPolicy::AllowList => "allow-list",
        }
    }
}

impl std::fmt::Debug for HostedTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedTopic")
            .field("name", &self.name)
            .field("title", &self.title)
            .field("max_entries", &self.max_entries)
            .field("max_age_ms", &self.max_age_ms)
            .field("trail", &self.trail)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// How an entry's content is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ContentKind {
    #[default]
    Text,
    /// Sanitised HTML.
    Html,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Author {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EntrySource {
    /// The owner, over HTTP.
    #[default]
    Post,
    /// A mail to the topic's address.
    Mail,
    /// The topic's own publisher (a mirrored topic).
    Mirror,
}

/// One entry of a hosted topic, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HostedEntry {
    /// Its short name in URLs (`/t/{name}/{key}`), fixed when it is first written.
    pub key: String,
    /// The topic's number of its newest version (set when it is appended).
    pub seq: u64,
    /// Its Atom id (unique in the topic).
    pub id: String,
    pub title: String,
    pub content: String,
    pub kind: ContentKind,
    /// A plain-text rendering of HTML content (mail's HTML parts), for text-only readers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Author>,
    pub published_ms: u64,
    pub updated_ms: u64,
    /// The Atom id of the entry it answers (RFC 4685 `thr:in-reply-to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// Its own web page, when it has one elsewhere (a posted entry's `alternate` link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The Message-ID of the mail it came from, without angle brackets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The Message-IDs it answers (mail `References`, oldest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// SHA-256 (hex) of what makes it this entry: a resend with the same digest is the same.
    pub digest: String,
    #[serde(default)]
    pub source: EntrySource,
}

/// A change to a hosted topic's history, made in the transaction that appends its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedWrite {
    pub name: String,
    pub change: HostedChange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostedChange {
    /// A new entry, or a new version of one (same key): stored under the topic's next
    /// number; the previous version's number is freed.
    Put(Box<HostedEntry>),
    /// The entry with this key leaves the history.
    Delete { key: String },
}

/// Which entries of a topic to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryRange {
    /// The newest with a number below `before` (`u64::MAX`: the newest of all), newest first.
    Before(u64),
    /// The oldest with a number above `after`, oldest first.
    After(u64),
}

#[async_trait]
pub trait HostedStore: Send + Sync {
    /// Creates the topic; `false` when one of that name exists (it is left as it is).
    async fn create_hosted(&self, topic: HostedTopic) -> Result<bool>;
    async fn hosted(&self, name: &str) -> Result<Option<HostedTopic>>;
    /// Hosted topics in name order, after `after`.
    async fn hosted_topics(&self, after: Option<&str>, limit: usize) -> Result<Vec<HostedTopic>>;
    /// The entry with this key.
    async fn hosted_entry(&self, name: &str, key: &str) -> Result<Option<HostedEntry>>;
    /// The entry with this Atom id.
    async fn hosted_entry_by_id(&self, name: &str, id: &str) -> Result<Option<HostedEntry>>;
    async fn hosted_entries(
        &self,
        name: &str,
        range: EntryRange,
        limit: usize,
    ) -> Result<Vec<HostedEntry>>;
    /// Entries kept and the newest number kept.
    async fn hosted_count(&self, name: &str) -> Result<(u64, u64)>;
    /// The last number the topic gave (0: none yet); never goes down.
    async fn hosted_last(&self, name: &str) -> Result<u64>;
    /// Keeps entries of a mirrored topic (no events: they came with the topic's own): each
    /// entry whose key holds the same digest already is skipped; the others get the topic's
    /// next numbers, a new version replacing the old. Returns how many were written.
    async fn put_mirrored(&self, name: &str, entries: Vec<HostedEntry>) -> Result<u64>;
    /// Counts a hard bounce of a mail subscriber of `topic` (any topic, hosted or not);
    /// returns the count so far.
    async fn note_bounce(&self, topic: &str, address: &str) -> Result<u32>;
    /// Remembers whose mail a bounce tag stands for (written when a mail subscription is
    /// confirmed), so a bounce names its topic and subscriber.
    async fn put_bounce_tag(&self, tag: &str, topic: &str, address: &str) -> Result<()>;
    /// The (topic, address) of a bounce tag.
    async fn bounce_tag(&self, tag: &str) -> Result<Option<(String, String)>>;
    /// Moves the topic's last number up to `last` (restoring a backup: numbers are never given
    /// again, also those of entries deleted before it was made).
    async fn restore_hosted_last(&self, name: &str, last: u64) -> Result<()>;
    /// Stores an entry under its own number (restoring a backup).
    async fn restore_hosted_entry(&self, name: &str, entry: HostedEntry) -> Result<()>;
    /// Applies the topic's retention: removes its oldest entries while it keeps more than
    /// `max_entries`, or while they were last updated before `older_than_ms`, at most `limit`
    /// at a time, and moves the trail past them. Returns how many went.
    async fn prune_hosted(&self, name: &str, older_than_ms: u64, limit: usize) -> Result<u64>;
}
