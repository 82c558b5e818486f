//! A set that keeps its newest `cap` keys: inserting past the bound forgets the oldest. For
//! "seen lately" checks held in memory (origin events taken, relay batches taken).

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

#[derive(Debug)]
pub struct BoundedSet<K> {
    cap: usize,
    keys: HashSet<K>,
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Clone> BoundedSet<K> {
    pub fn new(cap: usize) -> BoundedSet<K> {
        BoundedSet {
            cap,
            keys: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains(&self, k: &K) -> bool {
        self.keys.contains(k)
    }

    /// Adds `k`; `false` when it was there already.
    pub fn insert(&mut self, k: K) -> bool {
        if !self.keys.insert(k.clone()) {
            return false;
        }
        self.order.push_back(k);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        true
    }

    /// Forgets `k` (its place in the order goes when it comes up).
    pub fn remove(&mut self, k: &K) {
        self.keys.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_goes_first() {
        let mut s = BoundedSet::new(2);
        assert!(s.insert(1));
        assert!(!s.insert(1));
        assert!(s.insert(2));
        assert!(s.insert(3));
        assert!(!s.contains(&1) && s.contains(&2) && s.contains(&3));
        s.remove(&2);
        assert!(!s.contains(&2));
        assert!(s.insert(2));
    }
}
