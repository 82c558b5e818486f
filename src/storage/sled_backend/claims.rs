//! Claimed work on sled: pending items are walked in key order and leased in the store's
//! in-memory [`LeaseTable`](crate::storage::claims::LeaseTable) (one process holds a sled store).

use async_trait::async_trait;

use super::*;

impl SledStore {
    /// Walks `tree` (up to `end` if given), claiming each item nobody holds; at most `limit`.
    fn claim_walk<T>(
        &self,
        c: &Claim,
        tree: &sled::Tree,
        end: Option<Vec<u8>>,
        limit: usize,
        decode: impl Fn(&[u8]) -> Result<T>,
        key_of: impl Fn(&T) -> WorkKey,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let range = match end {
            Some(e) => tree.range(..e),
            None => tree.range::<&[u8], _>(..),
        };
        for entry in range {
            if out.len() >= limit {
                break;
            }
            let (_, v) = entry?;
            let item = decode(&v)?;
            if self.leases.take(c, &key_of(&item), false) {
                out.push(item);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ClaimStore for SledStore {
    async fn claim_intents(&self, c: &Claim, limit: usize) -> Result<Vec<Intent>> {
        self.claim_walk(c, &self.intents, None, limit, from_json, |i: &Intent| {
            WorkKey::Intent(i.id)
        })
    }

    async fn claim_pings(&self, c: &Claim, limit: usize) -> Result<Vec<Ping>> {
        self.claim_walk(c, &self.pings, None, limit, decode_ping, |p: &Ping| {
            WorkKey::Ping(p.id)
        })
    }

    async fn claim_topic_pings(
        &self,
        c: &Claim,
        topic: &str,
        received_by: u64,
        limit: usize,
    ) -> Result<Vec<Ping>> {
        // Pings are keyed by id: the walk reads them all (one process holds a sled store, so
        // this is only called when several nodes share one in a test).
        let mut out = Vec::new();
        for entry in self.pings.iter() {
            if out.len() >= limit {
                break;
            }
            let (_, v) = entry?;
            let p = decode_ping(&v)?;
            let answers = p.topic == topic && p.fat.is_none() && p.received_ms <= received_by;
            if answers && self.leases.take(c, &WorkKey::Ping(p.id), false) {
                out.push(p);
            }
        }
        Ok(out)
    }

    async fn claim_jobs(&self, c: &Claim, up_to: u64, limit: usize) -> Result<Vec<Job>> {
        self.walk_jobs(up_to, limit, |j| {
            self.leases.take(c, &WorkKey::job(j), false)
        })
    }

    async fn claim_due_retries(&self, c: &Claim, limit: usize) -> Result<Vec<Retry>> {
        // Keys begin with the due time: the range holds exactly the retries due by now.
        let mut end = be(c.now_ms).to_vec();
        end.push(0xff);
        self.claim_walk(
            c,
            &self.retries,
            Some(end),
            limit,
            from_json,
            WorkKey::retry,
        )
    }

    async fn release_all(&self, node: &str) -> Result<u64> {
        Ok(self.leases.release_all(node))
    }

    async fn acquire(&self, c: &Claim, keys: &[WorkKey]) -> Result<Vec<bool>> {
        Ok(self.leases.acquire(c, keys))
    }

    async fn renew(&self, c: &Claim, keys: &[WorkKey]) -> Result<Vec<WorkKey>> {
        Ok(self.leases.renew(c, keys))
    }

    async fn release(&self, node: &str, keys: &[WorkKey]) -> Result<()> {
        self.leases.release(node, keys);
        Ok(())
    }
}
