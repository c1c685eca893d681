//! Per-session async locks: runs on one session take turns, other sessions are not blocked.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};

use lgadk_core::SessionId;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

const SHARDS: usize = 16;

type Slot = Arc<AsyncMutex<()>>;

/// A map from session to its async lock, split into shards so that taking a lock never contends
/// on one global mutex. An entry lives only while some run holds or waits for its lock.
pub(crate) struct SessionLocks {
    hasher: RandomState,
    shards: [Mutex<HashMap<SessionId, Slot>>; SHARDS],
}

/// Holds a session's lock. Releasing it removes the session's entry when nobody else waits.
pub(crate) struct SessionGuard<'a> {
    // Fields drop in order: the lock is released before the entry is considered for removal.
    _guard: OwnedMutexGuard<()>,
    _slot: SlotRef<'a>,
}

/// One run's reference to a session's lock, held while it waits and while it holds the lock;
/// dropping it (also when a waiting run is cancelled) removes the entry if it was the last.
struct SlotRef<'a> {
    locks: &'a SessionLocks,
    id: SessionId,
    slot: Slot,
}

impl SessionLocks {
    pub(crate) fn new() -> Self {
        Self { hasher: RandomState::new(), shards: std::array::from_fn(|_| Mutex::new(HashMap::new())) }
    }

    fn shard(&self, id: &SessionId) -> &Mutex<HashMap<SessionId, Slot>> {
        // The modulo keeps the value below SHARDS, so the cast cannot truncate.
        #[expect(clippy::cast_possible_truncation, reason = "reduced modulo SHARDS first")]
        let at = (self.hasher.hash_one(id) % SHARDS as u64) as usize;
        &self.shards[at]
    }

    /// Waits for the lock of session `id`.
    pub(crate) async fn lock(&self, id: &SessionId) -> SessionGuard<'_> {
        let slot = {
            let mut shard = self.shard(id).lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(shard.entry(id.clone()).or_default())
        };
        let slot = SlotRef { locks: self, id: id.clone(), slot };
        let guard = Arc::clone(&slot.slot).lock_owned().await;
        SessionGuard { _guard: guard, _slot: slot }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }
}

impl Drop for SlotRef<'_> {
    fn drop(&mut self) {
        let mut shard = self.locks.shard(&self.id).lock().unwrap_or_else(PoisonError::into_inner);
        // Clones are only made under the shard lock, so two references (the map's and ours)
        // mean that no other run holds or waits for this lock.
        if Arc::strong_count(&self.slot) == 2 && shard.get(&self.id).is_some_and(|s| Arc::ptr_eq(s, &self.slot)) {
            shard.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_session_waits_and_others_do_not() {
        let locks = SessionLocks::new();
        let (a, b) = (SessionId::parse("a").unwrap(), SessionId::parse("b").unwrap());
        let held = locks.lock(&a).await;
        assert!(tokio::time::timeout(Duration::from_millis(20), locks.lock(&a)).await.is_err());
        let other = tokio::time::timeout(Duration::from_millis(20), locks.lock(&b)).await.unwrap();
        assert_eq!(locks.len(), 2);
        drop(other);
        assert_eq!(locks.len(), 1, "an idle entry is removed");
        drop(held);
        assert_eq!(locks.len(), 0, "a cancelled waiter leaves nothing behind");
        let _again = locks.lock(&a).await;
        assert_eq!(locks.len(), 1);
    }
}
