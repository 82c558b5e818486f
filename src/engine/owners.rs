//! Which node delivers to a destination server when several nodes share the store: the live
//! node with the highest rendezvous hash of (node, destination). Every node computes the same
//! answer from the same list of live nodes (their heartbeats), so each planner takes the jobs
//! of its own destinations and leaves the others' to their owners' planners: destinations
//! spread over the nodes, and one that joins or dies moves only its share. The destination's
//! lease ([`crate::storage::ClaimStore`]) still decides who sends; jobs a dead owner left are
//! claimed by any node's rescan once its leases have ended.

use std::sync::RwLock;

use sha2::{Digest, Sha256};

pub struct Owners {
    me: String,
    /// Live nodes (this one included); empty: this node alone, owner of everything.
    live: RwLock<Vec<String>>,
}

impl Owners {
    pub fn new(me: String) -> Owners {
        Owners {
            me,
            live: RwLock::new(Vec::new()),
        }
    }

    /// The nodes whose heartbeats are recent (this node is always one of them).
    pub fn set_live(&self, mut nodes: Vec<String>) {
        if !nodes.contains(&self.me) {
            nodes.push(self.me.clone());
        }
        nodes.sort();
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = nodes;
    }

    /// Whether this node's planner takes `destination`'s jobs.
    pub fn owns(&self, destination: &str) -> bool {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        match live.iter().max_by_key(|node| score(node, destination)) {
            Some(owner) => *owner == self.me,
            None => true,
        }
    }
}

fn score<'a>(node: &'a str, destination: &str) -> (u64, &'a str) {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update([0]);
    h.update(destination.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(first), node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_agrees_and_destinations_spread() {
        let nodes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let views: Vec<Owners> = nodes
            .iter()
            .map(|n| {
                let o = Owners::new(n.clone());
                o.set_live(nodes.clone());
                o
            })
            .collect();
        let mut per_node = [0; 3];
        for i in 0..300 {
            let d = format!("http://127.0.0.{i}:80");
            let owners: Vec<usize> = (0..3).filter(|n| views[*n].owns(&d)).collect();
            assert_eq!(owners.len(), 1, "exactly one owner of {d}");
            per_node[owners[0]] += 1;
        }
        assert!(per_node.iter().all(|n| *n > 60), "{per_node:?}");
    }

    #[test]
    fn a_node_alone_owns_everything_and_a_dead_ones_share_moves() {
        let a = Owners::new("a".into());
        assert!(a.owns("http://x:80"));
        a.set_live(vec!["a".into(), "b".into()]);
        let mine: Vec<bool> = (0..50).map(|i| a.owns(&format!("http://{i}:80"))).collect();
        a.set_live(vec!["a".into()]);
        assert!((0..50).all(|i| a.owns(&format!("http://{i}:80"))));
        assert!(mine.iter().any(|m| !m), "b owned some while alive");
    }
}
