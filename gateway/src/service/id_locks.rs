//! Per-id serialisation of the two writers of a photo: the ingest commit (file, then
//! record) and the delete (record, then file). Without it a delete landing between an
//! ingest's file write and its record write would leave a record without its photo. The
//! locks are a fixed set of stripes (ids are uniform hashes), so memory stays bounded
//! however many ids pass through.

use tokio::sync::{Mutex, MutexGuard};

pub struct IdLocks {
    stripes: Vec<Mutex<()>>,
}

/// Enough stripes that unrelated ids rarely wait for each other.
const STRIPES: usize = 1024;

impl IdLocks {
    pub fn new() -> IdLocks {
        IdLocks { stripes: (0..STRIPES).map(|_| Mutex::new(())).collect() }
    }

    fn stripe(&self, id: &str) -> usize {
        // Ids are hex SHA-256: their first digits are already uniform.
        let prefix = id.get(..4).and_then(|p| usize::from_str_radix(p, 16).ok()).unwrap_or(0);
        prefix % self.stripes.len()
    }

    /// Holds the id's stripe until the guard drops.
    pub async fn lock(&self, id: &str) -> MutexGuard<'_, ()> {
        self.stripes[self.stripe(id)].lock().await
    }

    /// Holds the stripes of every id, taken in one global order so two batches never
    /// wait on each other in a cycle.
    pub async fn lock_all<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = ids.into_iter().map(|id| self.stripe(id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(self.stripes[stripe].lock().await);
        }
        guards
    }
}

impl Default for IdLocks {
    fn default() -> Self {
        IdLocks::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn one_id_is_held_by_one_writer_at_a_time() {
        let locks = Arc::new(IdLocks::new());
        let id = "ab".repeat(32);
        let held = locks.lock(&id).await;
        let (locks2, id2) = (locks.clone(), id.clone());
        let waiter = tokio::spawn(async move {
            let _guard = locks2.lock(&id2).await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a second writer of the same id got in");
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn batches_sharing_ids_in_any_order_do_not_deadlock() {
        let locks = Arc::new(IdLocks::new());
        let ids: Vec<String> = (0..64).map(|i| format!("{:04x}{}", i * 977, "0".repeat(60))).collect();
        let mut tasks = Vec::new();
        for round in 0..8 {
            let (locks, mut ids) = (locks.clone(), ids.clone());
            if round % 2 == 1 {
                ids.reverse();
            }
            tasks.push(tokio::spawn(async move {
                let _guards = locks.lock_all(ids.iter().map(String::as_str)).await;
                tokio::task::yield_now().await;
            }));
        }
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        }
    }
}
