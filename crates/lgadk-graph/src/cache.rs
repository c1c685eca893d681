//! The per-process cache of each session's latest state, so a warm turn skips loading history.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use lgadk_core::SessionId;

/// Sessions whose latest state a compiled graph keeps in memory unless configured otherwise.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// A session's state as of one checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot<S> {
    /// The checkpoint version this state is (0: no checkpoint yet).
    pub(crate) version: u64,
    /// Length of the session's message log at that version.
    pub(crate) log_len: u64,
    /// Steps the turn had taken.
    pub(crate) step: u64,
    /// Nodes waiting to run: non-empty after an interrupt.
    pub(crate) next: Vec<String>,
    /// The state, its conversation history included; shared with the [`RunResponse`] of the
    /// turn that produced it, so keeping it cached costs no copy.
    ///
    /// [`RunResponse`]: crate::RunResponse
    pub(crate) state: Arc<S>,
}

impl<S: Default> Snapshot<S> {
    /// The state of a session without checkpoints.
    pub(crate) fn empty() -> Self {
        Self { version: 0, log_len: 0, step: 0, next: Vec::new(), state: Arc::new(S::default()) }
    }
}

struct Entry<S> {
    used: u64,
    /// Creation time of the session the entry belongs to: a session ended and created again
    /// under the same id starts over at version 0 and must not match an old entry.
    created_at: DateTime<Utc>,
    snapshot: Snapshot<S>,
}

/// A map from session to its latest [`Snapshot`], holding at most `capacity` sessions. When
/// full, inserting evicts the least recently used entry (a scan of the map: cheap at the
/// default capacity, and done only on insert).
///
/// A turn *takes* its session's entry out and puts the new state back only once the turn is
/// saved, so a failed turn never leaves an entry behind and no state is cloned on the way in.
pub(crate) struct StateCache<S> {
    capacity: usize,
    inner: Mutex<Inner<S>>,
}

struct Inner<S> {
    tick: u64,
    entries: HashMap<SessionId, Entry<S>>,
}

impl<S: Clone> StateCache<S> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, inner: Mutex::new(Inner { tick: 0, entries: HashMap::new() }) }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner<S>) -> R) -> R {
        // The critical sections below cannot panic half-way, so a poisoned map is still consistent.
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Removes and returns the entry of session `id` if it belongs to the session created at
    /// `created_at`.
    pub(crate) fn take(&self, id: &SessionId, created_at: DateTime<Utc>) -> Option<Snapshot<S>> {
        self.with(|inner| {
            let entry = inner.entries.remove(id)?;
            (entry.created_at == created_at).then_some(entry.snapshot)
        })
    }

    /// Stores the latest state of session `id`, evicting the least recently used entry if full.
    pub(crate) fn insert(&self, id: SessionId, created_at: DateTime<Utc>, snapshot: Snapshot<S>) {
        if self.capacity == 0 {
            return;
        }
        self.with(|inner| {
            inner.tick += 1;
            let used = inner.tick;
            if inner.entries.len() >= self.capacity && !inner.entries.contains_key(&id) {
                let oldest = inner.entries.iter().min_by_key(|(_, entry)| entry.used).map(|(id, _)| id.clone());
                if let Some(oldest) = oldest {
                    inner.entries.remove(&oldest);
                }
            }
            inner.entries.insert(id, Entry { used, created_at, snapshot });
        });
    }

    /// Forgets session `id`.
    pub(crate) fn remove(&self, id: &SessionId) {
        self.with(|inner| inner.entries.remove(id));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.with(|inner| inner.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(version: u64) -> Snapshot<u32> {
        Snapshot { version, ..Snapshot::empty() }
    }

    #[test]
    fn full_cache_evicts_the_least_recently_used() {
        let cache = StateCache::new(2);
        let at = Utc::now();
        let ids: Vec<SessionId> = (0..3).map(|i| SessionId::parse(&format!("s{i}")).unwrap()).collect();
        cache.insert(ids[0].clone(), at, snapshot(1));
        cache.insert(ids[1].clone(), at, snapshot(1));
        cache.insert(ids[0].clone(), at, snapshot(2));
        cache.insert(ids[2].clone(), at, snapshot(1));
        assert_eq!(cache.len(), 2);
        assert!(cache.take(&ids[1], at).is_none());
        assert_eq!(cache.take(&ids[0], at).map(|s| s.version), Some(2));
        assert_eq!(cache.len(), 1, "take removes the entry");
    }

    #[test]
    fn entry_of_an_older_session_with_the_same_id_is_not_returned() {
        let cache = StateCache::new(4);
        let id = SessionId::parse("s").unwrap();
        let at = Utc::now();
        cache.insert(id.clone(), at, snapshot(3));
        assert!(cache.take(&id, at + chrono::Duration::milliseconds(1)).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = StateCache::new(0);
        cache.insert(SessionId::new(), Utc::now(), snapshot(1));
        assert_eq!(cache.len(), 0);
    }
}
