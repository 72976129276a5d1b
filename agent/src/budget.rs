//! Bounds in bytes for the queues and tables that hold what the node sends the agent: the
//! producer takes room before it queues an item, the consumer gives it back once the item is
//! done, and an item that finds no room is dropped (and counted by the caller). Counts of
//! items alone do not bound memory when one item can be 40 bytes or 40 KiB.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A shared number of bytes that may be in use at once. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: usize,
    used: AtomicUsize,
}

impl ByteBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                limit,
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// No bound (tests, tools).
    pub fn unbounded() -> Self {
        Self::new(usize::MAX)
    }

    /// Takes `bytes` when they fit under the limit; `false` (and nothing taken) otherwise.
    pub fn try_take(&self, bytes: usize) -> bool {
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&after| after <= self.inner.limit)
            })
            .is_ok()
    }

    /// Gives back `bytes` taken before.
    pub fn release(&self, bytes: usize) {
        let _ = self
            .inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_taken_up_to_the_limit_and_given_back() {
        let budget = ByteBudget::new(100);
        assert!(budget.try_take(60));
        assert!(!budget.try_take(41), "61 + 41 > 100");
        assert_eq!(budget.used(), 60, "a refused take takes nothing");
        assert!(budget.clone().try_take(40), "clones share the budget");
        assert_eq!(budget.used(), 100);
        budget.release(60);
        assert!(budget.try_take(50));
        assert_eq!(budget.used(), 90);
        budget.release(1000);
        assert_eq!(budget.used(), 0, "never below zero");
        assert!(!ByteBudget::new(10).try_take(usize::MAX));
        assert!(ByteBudget::unbounded().try_take(1 << 40));
    }
}
