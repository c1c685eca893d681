//! The per-process cache of each session's latest state, so a warm turn skips loading history.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use lgadk_core::{LogRetention, SessionId};

/// Sessions whose latest state a compiled graph keeps in memory unless configured otherwise.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// A session's state as of one checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot<S> {
    /// The checkpoint version this state is (0: no checkpoint yet).
    pub(crate) version: u64,
    /// Length of the session's message log at that version.
    pub(crate) log_len: u64,
    /// Log position of the state's first message: what a cut left starts there.
    pub(crate) log_start: u64,
    /// The session's own log retention, saved with its checkpoints; `None` follows the graph's.
    pub(crate) retention: Option<LogRetention>,
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
        Self {
            version: 0,
            log_len: 0,
            log_start: 0,
            retention: None,
            step: 0,
            next: Vec::new(),
            state: Arc::new(S::default()),
        }
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
/// full, inserting evicts the least recently used entry, found through a recency index in
/// O(log capacity).
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
    /// `Entry::used` → session, oldest first.
    recency: BTreeMap<u64, SessionId>,
}

impl<S> Inner<S> {
    fn remove(&mut self, id: &SessionId) -> Option<Entry<S>> {
        let entry = self.entries.remove(id)?;
        self.recency.remove(&entry.used);
        Some(entry)
    }
}

impl<S: Clone> StateCache<S> {
    pub(crate) fn new(capacity: usize) -> Self {
        let inner = Inner { tick: 0, entries: HashMap::new(), recency: BTreeMap::new() };
        Self { capacity, inner: Mutex::new(inner) }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner<S>) -> R) -> R {
        // The critical sections below cannot panic half-way, so a poisoned map is still consistent.
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Removes and returns the entry of session `id` if it belongs to the session created at
    /// `created_at`.
    #[cfg(test)]
    pub(crate) fn take(&self, id: &SessionId, created_at: DateTime<Utc>) -> Option<Snapshot<S>> {
        self.with(|inner| {
            let entry = inner.remove(id)?;
            (entry.created_at == created_at).then_some(entry.snapshot)
        })
    }

    /// Removes and returns the entry of session `id` with the creation time of the session it
    /// belongs to, for the caller to compare with the session it reads.
    pub(crate) fn take_entry(&self, id: &SessionId) -> Option<(DateTime<Utc>, Snapshot<S>)> {
        self.with(|inner| inner.remove(id).map(|entry| (entry.created_at, entry.snapshot)))
    }

    /// Stores the latest state of session `id`, evicting the least recently used entry if full.
    pub(crate) fn insert(&self, id: SessionId, created_at: DateTime<Utc>, snapshot: Snapshot<S>) {
        if self.capacity == 0 {
            return;
        }
        self.with(|inner| {
            inner.tick += 1;
            let used = inner.tick;
            if inner.remove(&id).is_none()
                && inner.entries.len() >= self.capacity
                && let Some((_, oldest)) = inner.recency.pop_first()
            {
                inner.entries.remove(&oldest);
            }
            inner.recency.insert(used, id.clone());
            inner.entries.insert(id, Entry { used, created_at, snapshot });
        });
    }

    /// Forgets session `id`.
    pub(crate) fn remove(&self, id: &SessionId) {
        self.with(|inner| inner.remove(id));
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
    fn eviction_order_follows_reinsertion() {
        let cache = StateCache::new(3);
        let at = Utc::now();
        let ids: Vec<SessionId> = (0..5).map(|i| SessionId::parse(&format!("s{i}")).unwrap()).collect();
        for id in &ids[..3] {
            cache.insert(id.clone(), at, snapshot(1));
        }
        let taken = cache.take(&ids[0], at).unwrap();
        cache.insert(ids[0].clone(), at, taken);
        cache.insert(ids[3].clone(), at, snapshot(1));
        cache.insert(ids[4].clone(), at, snapshot(1));
        assert_eq!(cache.len(), 3);
        assert!(cache.take(&ids[1], at).is_none(), "s1 was the oldest");
        assert!(cache.take(&ids[2], at).is_none(), "then s2");
        assert!(cache.take(&ids[0], at).is_some(), "s0 was used again, so it stayed");
        cache.with(|inner| assert_eq!(inner.recency.len(), inner.entries.len()));
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
