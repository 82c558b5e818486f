//! The queue of one destination server's delivery jobs: a FIFO per topic, topics taking turns,
//! at most one job per topic running (so each subscriber gets a topic's events in order), and
//! the backlog of a running topic taken out whole for coalescing. A plain state machine; the
//! dispatcher ([`super::dispatch`]) holds one per destination under a mutex.

use std::collections::{HashMap, HashSet, VecDeque};

use super::snapshot::Page;
use crate::storage::Job;

/// A destination's waiting jobs, one FIFO per topic. Topics take turns; at most one job per
/// topic runs at a time, so each subscriber gets a topic's events in order, and a topic whose
/// previous job is still running is the one place a backlog forms (and is coalesced).
#[derive(Default)]
pub struct Queue {
    pub waiting: HashMap<String, VecDeque<Job>>,
    /// Topics with waiting jobs and none running, in the order they became ready.
    pub ready: VecDeque<String>,
    /// Topics with a job running.
    pub active: HashSet<String>,
    /// Events with a job here, waiting or running.
    pub known: HashSet<u64>,
    /// Events whose job here the planner has just handed on (stored with its event, never
    /// started): it starts without being read back from storage, with the subscribers read
    /// for the event, if kept.
    pub fresh: HashMap<u64, Option<Page>>,
    /// Whether the destination's worker is running.
    pub running: bool,
}

impl Queue {
    /// Queues a job behind the others of its topic.
    pub fn push_back(&mut self, job: Job) {
        let topic = job.topic.clone();
        let queue = self.waiting.entry(topic.clone()).or_default();
        queue.push_back(job);
        if queue.len() == 1 && !self.active.contains(&topic) {
            self.ready.push_back(topic);
        }
    }

    /// Puts back a job (or jobs, last first) of an active topic ahead of its others.
    pub fn push_front(&mut self, job: Job) {
        self.waiting
            .entry(job.topic.clone())
            .or_default()
            .push_front(job);
    }

    /// The next job to start: the first of the topic whose turn it is. Its topic becomes active.
    pub fn start_next(&mut self) -> Option<Job> {
        while let Some(topic) = self.ready.pop_front() {
            let Some(queue) = self.waiting.get_mut(&topic) else {
                continue;
            };
            let job = queue.pop_front();
            if queue.is_empty() {
                self.waiting.remove(&topic);
            }
            if job.is_some() {
                self.active.insert(topic);
                return job;
            }
        }
        None
    }

    /// The running job of `topic` ended; the topic's next job may start.
    pub fn finish(&mut self, topic: &str) {
        self.active.remove(topic);
        if self.waiting.contains_key(topic) {
            self.ready.push_back(topic.to_owned());
        }
    }

    /// Takes up to `max` unstarted jobs of the (active) `topic` out of the queue, in order.
    pub fn take_topic(&mut self, topic: &str, max: usize) -> Vec<Job> {
        let Some(queue) = self.waiting.get_mut(topic) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        let mut rest = VecDeque::with_capacity(queue.len());
        for j in queue.drain(..) {
            if taken.len() < max && j.cursor.is_none() {
                taken.push(j);
            } else {
                rest.push_back(j);
            }
        }
        if rest.is_empty() {
            self.waiting.remove(topic);
        } else {
            *queue = rest;
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(event: u64, topic: &str) -> Job {
        Job::new(event, "http://d", topic)
    }

    fn events(jobs: &[Job]) -> Vec<u64> {
        jobs.iter().map(|j| j.event).collect()
    }

    #[test]
    fn topics_take_turns_one_job_each_at_a_time() {
        let mut q = Queue::default();
        for (e, t) in [(1, "a"), (2, "a"), (3, "b"), (4, "a"), (5, "c")] {
            q.push_back(job(e, t));
        }
        // One job of each topic may run; a's later jobs wait behind its running one.
        assert_eq!(q.start_next().map(|j| j.event), Some(1));
        assert_eq!(q.start_next().map(|j| j.event), Some(3));
        assert_eq!(q.start_next().map(|j| j.event), Some(5));
        assert_eq!(q.start_next().map(|j| j.event), None);
        // A job queued for a running topic waits; one for an idle topic is ready at once.
        q.push_back(job(6, "b"));
        q.push_back(job(7, "d"));
        assert_eq!(q.start_next().map(|j| j.event), Some(7));
        q.finish("b");
        q.finish("a");
        assert_eq!(q.start_next().map(|j| j.event), Some(6));
        assert_eq!(q.start_next().map(|j| j.event), Some(2));
        assert_eq!(q.start_next().map(|j| j.event), None);
        q.finish("a");
        assert_eq!(q.start_next().map(|j| j.event), Some(4));
        for t in ["a", "b", "c", "d"] {
            q.finish(t);
        }
        assert_eq!(q.start_next().map(|j| j.event), None);
        assert!(q.waiting.is_empty() && q.active.is_empty() && q.ready.is_empty());
    }

    #[test]
    fn a_running_topics_backlog_is_taken_in_order_leaving_resumed_jobs() {
        let mut q = Queue::default();
        for e in 1..=5 {
            q.push_back(job(e, "a"));
        }
        let mut resumed = job(6, "a");
        resumed.cursor = Some("http://d/9".into());
        q.push_back(resumed);
        q.push_back(job(7, "a"));
        assert_eq!(q.start_next().map(|j| j.event), Some(1));
        assert_eq!(events(&q.take_topic("a", 3)), [2, 3, 4]);
        assert_eq!(events(&q.take_topic("a", 10)), [5, 7]);
        assert_eq!(events(&q.take_topic("a", 10)), Vec::<u64>::new());
        assert_eq!(q.start_next().map(|j| j.event), None, "a is still running");
        q.finish("a");
        assert_eq!(q.start_next().map(|j| j.event), Some(6));
    }

    #[test]
    fn a_job_put_back_runs_first_when_its_topic_is_free_again() {
        let mut q = Queue::default();
        q.push_back(job(1, "a"));
        q.push_back(job(2, "a"));
        let first = q.start_next().unwrap();
        q.push_front(first);
        q.finish("a");
        assert_eq!(q.start_next().map(|j| j.event), Some(1));
        q.finish("a");
        assert_eq!(q.start_next().map(|j| j.event), Some(2));
    }
}
