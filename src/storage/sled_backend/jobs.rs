//! Delivery jobs on sled: one record per event in the `fanouts` tree (key: the event's number),
//! listing the destination servers still due and the cursor of each that has one. An event's
//! jobs are written with it in one insert and, once the engine has done them all, go with one
//! update; a checkpoint rewrites the record. Jobs stored one record per (event, destination) by
//! earlier versions (the `jobs` tree) are moved into `fanouts` at open.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use super::*;

/// The pending jobs of one event.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Fanout {
    #[serde(rename = "t")]
    topic: String,
    /// (destination, cursor), in the order they were stored.
    #[serde(rename = "d")]
    jobs: Vec<(String, Option<String>)>,
}

impl Fanout {
    pub(super) fn new<'a>(topic: &str, destinations: impl IntoIterator<Item = &'a String>) -> Self {
        Fanout {
            topic: topic.to_owned(),
            jobs: destinations
                .into_iter()
                .map(|d| (d.clone(), None))
                .collect(),
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        json(self)
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Fanout> {
        from_json(bytes)
    }

    /// The jobs of event `event`.
    pub(super) fn expand(self, event: u64) -> impl Iterator<Item = Job> {
        let topic = self.topic;
        self.jobs.into_iter().map(move |(destination, cursor)| Job {
            event,
            destination,
            cursor,
            topic: topic.clone(),
        })
    }

    /// Adds `job`, or sets its cursor if its destination is there already.
    fn set(&mut self, job: &Job) {
        if self.topic.is_empty() {
            self.topic = job.topic.clone();
        }
        match self.jobs.iter_mut().find(|(d, _)| *d == job.destination) {
            Some((_, cursor)) => *cursor = job.cursor.clone(),
            None => self
                .jobs
                .push((job.destination.clone(), job.cursor.clone())),
        }
    }
}

impl SledStore {
    /// Rewrites event `event`'s record with `change` (atomically: a compare-and-swap loop);
    /// the record goes when no job is left. `change` may run more than once.
    fn update_fanout(&self, event: u64, change: impl Fn(&mut Fanout)) -> Result<()> {
        let failed = RefCell::new(None);
        self.fanouts.fetch_and_update(be(event), |old| {
            let mut f = match old.map(Fanout::decode).transpose() {
                Ok(f) => f.unwrap_or_default(),
                Err(e) => {
                    *failed.borrow_mut() = Some(e);
                    return old.map(<[u8]>::to_vec);
                }
            };
            change(&mut f);
            (!f.jobs.is_empty()).then(|| f.encode())
        })?;
        match failed.into_inner() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(super) fn all_jobs(&self) -> Result<Vec<Job>> {
        let mut out = Vec::new();
        for entry in self.fanouts.iter() {
            let (k, v) = entry?;
            out.extend(Fanout::decode(&v)?.expand(read_be(&k)?));
        }
        Ok(out)
    }

    pub(super) fn jobs_of_event(&self, event: u64) -> Result<Vec<Job>> {
        match self.fanouts.get(be(event))? {
            Some(v) => Ok(Fanout::decode(&v)?.expand(event).collect()),
            None => Ok(Vec::new()),
        }
    }

    pub(super) fn one_job(&self, event: u64, destination: &str) -> Result<Option<Job>> {
        match self.fanouts.get(be(event))? {
            Some(v) => Ok(Fanout::decode(&v)?
                .expand(event)
                .find(|j| j.destination == destination)),
            None => Ok(None),
        }
    }

    /// Stores `job` (its cursor included) in its event's record.
    pub(super) fn store_job(&self, job: &Job) -> Result<()> {
        self.update_fanout(job.event, |f| f.set(job))
    }

    /// Removes the jobs of `event` at `destinations`.
    pub(super) fn drop_jobs(&self, event: u64, destinations: &[String]) -> Result<()> {
        self.update_fanout(event, |f| {
            f.jobs.retain(|(d, _)| !destinations.contains(d));
        })
    }

    /// Jobs of events up to `up_to` and of delivery documents, walked in key order, each
    /// `take`n or skipped; at most `limit`.
    pub(super) fn walk_jobs(
        &self,
        up_to: u64,
        limit: usize,
        mut take: impl FnMut(&Job) -> bool,
    ) -> Result<Vec<Job>> {
        let mut out = Vec::new();
        let events = self.fanouts.range(..=be(up_to.min(DELIVERY_DOC - 1)));
        let docs = self.fanouts.range(be(DELIVERY_DOC)..);
        for entry in events.chain(docs) {
            let (k, v) = entry?;
            for job in Fanout::decode(&v)?.expand(read_be(&k)?) {
                if out.len() >= limit {
                    return Ok(out);
                }
                if take(&job) {
                    out.push(job);
                }
            }
        }
        Ok(out)
    }
}

/// Moves jobs stored one record each (under `destination \0 event` or `event destination`) by
/// earlier versions into `fanouts`.
pub(super) fn migrate_old_jobs(old: &sled::Tree, fanouts: &sled::Tree) -> Result<()> {
    for entry in old.iter() {
        let (k, v) = entry?;
        let job: Job = from_json(&v)?;
        let mut f = match fanouts.get(be(job.event))? {
            Some(v) => Fanout::decode(&v)?,
            None => Fanout::default(),
        };
        f.set(&job);
        fanouts.insert(be(job.event), f.encode())?;
        old.remove(k)?;
    }
    Ok(())
}
