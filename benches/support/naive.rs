//! The naive baseline: a store of the LG-ADK kind, one `Mutex<HashMap<SessionId, _>>` holding
//! whole `Session` records, behind the same traits as lgadk's stores. Listing a user's sessions
//! and purging scan every session, as LG-ADK does.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lgadk::core::session::check_metadata_size;
use lgadk::core::{
    Checkpoint, Checkpointer, Clock, Cursor, DEFAULT_CHECKPOINT_RETENTION, DEFAULT_METADATA_LIMIT,
    DEFAULT_SESSION_TIMEOUT, Error, Interaction, Message, Metadata, MetadataUpdate, NewCheckpoint, NewSession, Page,
    Result, Session, SessionId, SessionPage, SessionStats, SessionStore, SystemClock, UserId,
};

/// `Mutex<HashMap<SessionId, Session>>` behind [`SessionStore`] and [`Checkpointer`].
#[derive(Debug)]
pub(crate) struct NaiveStore {
    sessions: Mutex<HashMap<SessionId, Entry>>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug)]
struct Entry {
    session: Session,
    version: u64,
    checkpoints: VecDeque<Checkpoint>,
    log: Vec<Message>,
}

fn is_live(session: &Session, now: DateTime<Utc>) -> bool {
    session.expires_at().is_none_or(|deadline| now <= deadline)
}

impl NaiveStore {
    pub(crate) fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    pub(crate) fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self { sessions: Mutex::new(HashMap::new()), clock }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Entry>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the live entry of `id` under the lock.
    fn with_live<T>(&self, id: &SessionId, f: impl FnOnce(&mut Entry, DateTime<Utc>) -> Result<T>) -> Result<T> {
        let mut sessions = self.lock();
        let now = self.clock.now();
        match sessions.get_mut(id) {
            Some(entry) if is_live(&entry.session, now) => f(entry, now),
            _ => Err(Error::SessionNotFound(id.clone())),
        }
    }

    fn read_live<T>(&self, id: &SessionId, f: impl FnOnce(&Entry) -> T) -> Option<T> {
        let sessions = self.lock();
        let now = self.clock.now();
        sessions.get(id).filter(|entry| is_live(&entry.session, now)).map(f)
    }
}

#[async_trait]
impl SessionStore for NaiveStore {
    fn backend(&self) -> &'static str {
        "naive"
    }

    async fn create(&self, new: NewSession) -> Result<Session> {
        check_metadata_size(&new.metadata, DEFAULT_METADATA_LIMIT)?;
        let id = new.id.unwrap_or_default();
        let mut sessions = self.lock();
        let now = self.clock.now();
        if sessions.get(&id).is_some_and(|entry| is_live(&entry.session, now)) {
            return Err(Error::AlreadyExists(id));
        }
        let session = Session {
            id: id.clone(),
            user_id: new.user_id,
            created_at: now,
            last_active: now,
            timeout: new.timeout.resolve(Some(DEFAULT_SESSION_TIMEOUT)),
            metadata: new.metadata,
            stats: SessionStats::default(),
        };
        let entry = Entry { session: session.clone(), version: 0, checkpoints: VecDeque::new(), log: Vec::new() };
        sessions.insert(id, entry);
        Ok(session)
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        Ok(self.read_live(id, |entry| entry.session.clone()))
    }

    async fn track_interaction(&self, id: &SessionId, turn: Interaction) -> Result<SessionStats> {
        self.with_live(id, |entry, now| {
            entry.session.stats.record(&turn);
            entry.session.last_active = entry.session.last_active.max(now);
            Ok(entry.session.stats.clone())
        })
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.with_live(id, |entry, now| {
            entry.session.last_active = entry.session.last_active.max(now);
            Ok(())
        })
    }

    async fn update_metadata(&self, id: &SessionId, update: MetadataUpdate) -> Result<Metadata> {
        self.with_live(id, |entry, now| {
            let mut updated = entry.session.metadata.clone();
            update.apply_to(&mut updated);
            check_metadata_size(&updated, DEFAULT_METADATA_LIMIT)?;
            entry.session.metadata = updated.clone();
            entry.session.last_active = entry.session.last_active.max(now);
            Ok(updated)
        })
    }

    async fn list_user_sessions(&self, user: &UserId, page: Page) -> Result<SessionPage> {
        let limit = page.effective_limit();
        let mut found: Vec<(i64, SessionId)> = {
            let sessions = self.lock();
            let now = self.clock.now();
            sessions
                .values()
                .map(|entry| &entry.session)
                .filter(|s| s.user_id.as_ref() == Some(user) && is_live(s, now))
                .map(|s| (s.created_at.timestamp_millis(), s.id.clone()))
                .collect()
        };
        found.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(cursor) = &page.cursor {
            let after = (cursor.created_ms(), cursor.id().clone());
            found.retain(|key| *key < after);
        }
        let next = (found.len() > limit).then(|| {
            let (ms, id) = &found[limit - 1];
            Cursor::new(*ms, id.clone())
        });
        found.truncate(limit);
        Ok(SessionPage { ids: found.into_iter().map(|(_, id)| id).collect(), next })
    }

    async fn end(&self, id: &SessionId) -> Result<bool> {
        let removed = self.lock().remove(id);
        Ok(removed.is_some_and(|entry| is_live(&entry.session, self.clock.now())))
    }

    async fn purge_expired(&self) -> Result<usize> {
        let mut sessions = self.lock();
        let now = self.clock.now();
        let before = sessions.len();
        sessions.retain(|_, entry| is_live(&entry.session, now));
        Ok(before - sessions.len())
    }
}

#[async_trait]
impl Checkpointer for NaiveStore {
    async fn version(&self, id: &SessionId) -> Result<u64> {
        self.read_live(id, |entry| entry.version).ok_or_else(|| Error::SessionNotFound(id.clone()))
    }

    async fn put(&self, id: &SessionId, checkpoint: NewCheckpoint, expected_version: u64) -> Result<Checkpoint> {
        self.with_live(id, |entry, now| {
            if entry.version != expected_version {
                return Err(Error::Conflict { id: id.clone(), expected: expected_version, actual: entry.version });
            }
            entry.log.extend(checkpoint.messages);
            entry.version += 1;
            let saved = Checkpoint {
                version: entry.version,
                step: checkpoint.step,
                node: checkpoint.node,
                created_at: now,
                log_len: entry.log.len() as u64,
                log_start: 0,
                state: checkpoint.state,
            };
            entry.checkpoints.push_back(saved.clone());
            if entry.checkpoints.len() > DEFAULT_CHECKPOINT_RETENTION {
                entry.checkpoints.pop_front();
            }
            Ok(saved)
        })
    }

    async fn latest(&self, id: &SessionId) -> Result<Option<Checkpoint>> {
        Ok(self.read_live(id, |entry| entry.checkpoints.back().cloned()).flatten())
    }

    async fn checkpoint(&self, id: &SessionId, version: u64) -> Result<Option<Checkpoint>> {
        let found = self.read_live(id, |entry| entry.checkpoints.iter().find(|cp| cp.version == version).cloned());
        Ok(found.flatten())
    }

    async fn list(&self, id: &SessionId, limit: usize) -> Result<Vec<Checkpoint>> {
        let found = self.read_live(id, |entry| entry.checkpoints.iter().rev().take(limit).cloned().collect());
        Ok(found.unwrap_or_default())
    }

    async fn messages(&self, id: &SessionId, range: Range<u64>) -> Result<Vec<Message>> {
        let found = self.read_live(id, |entry| {
            let end = usize::try_from(range.end).unwrap_or(usize::MAX).min(entry.log.len());
            let start = usize::try_from(range.start).unwrap_or(usize::MAX).min(end);
            entry.log[start..end].to_vec()
        });
        Ok(found.unwrap_or_default())
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        let deleted = self.with_live(id, |entry, _| {
            let had = entry.version > 0;
            entry.checkpoints.clear();
            entry.log.clear();
            entry.version = 0;
            Ok(had)
        });
        match deleted {
            Err(Error::SessionNotFound(_)) => Ok(false),
            other => other,
        }
    }
}

impl lgadk_core::TurnStore for NaiveStore {}
