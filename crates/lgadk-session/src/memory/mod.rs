//! [`InMemoryStore`]: sessions and checkpoints in this process's memory.
//!
//! # Layout
//! Sessions live in a fixed number of shards, chosen by a hash of the session id; each shard is
//! one `RwLock` over a hash table of records and that shard's expiry index. An operation on a
//! session locks only its shard, so there is no global lock on any path, and the id is hashed
//! once per call (the same hash picks the shard and probes the table).
//!
//! The expiry index maps one-second buckets of deadlines to session ids. Writes that extend a
//! sliding timeout do not touch it: when [`purge_expired`](SessionStore::purge_expired) reaches
//! a bucket whose time has come, it re-files every session that was extended meanwhile and
//! removes the rest. Purge therefore costs in proportion to the sessions whose deadline came
//! up, never to the number of sessions stored.
//!
//! Each record also remembers the operation ids of its last [`OP_ID_WINDOW`] writes that
//! carried one (a small ring, allocated on the first such write and dropped with the record),
//! so a repeated write with the same [`OpId`] applies once.
//!
//! The user index (user → sessions ordered newest first) is sharded by user. A session's entry
//! is added and removed while its session shard is locked (lock order: session shard, then
//! user shard), so the two indexes never disagree for longer than one operation.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use hashbrown::hash_table::Entry as TableEntry;
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use lgadk_core::session::{check_metadata_depth, check_metadata_size, json_size, metadata_size, timestamp};
use lgadk_core::{
    Checkpoint, Clock, Cursor, DEFAULT_CHECKPOINT_RETENTION, DEFAULT_METADATA_LIMIT, DEFAULT_SESSION_TIMEOUT, Error,
    Interaction, Message, Metadata, MetadataUpdate, NewSession, OP_ID_WINDOW, OpId, Page, Result, Session, SessionId,
    SessionPage, SessionStats, SessionStore, SystemClock, UserId,
};

mod checkpoint;

/// Number of session shards (a power of two).
const SHARDS: usize = 64;
/// Which bits of an id's hash pick its shard: above the bits any shard's table probes with,
/// below the 7 it tags slots with.
const SHARD_SHIFT: u32 = 32;
/// Width of an expiry bucket: deadlines are filed by `ms >> BUCKET_SHIFT` (about one second).
const BUCKET_SHIFT: u32 = 10;
/// Stored in place of a timeout for sessions that never expire.
const NEVER: u64 = u64::MAX;

/// Sessions and checkpoints in process memory: the default backend.
///
/// Concurrent and sharded (see the module docs); cloning is cheap and clones share the data.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lgadk_core::Result<()> {
/// use lgadk_core::{Interaction, NewSession, SessionStore};
/// use lgadk_session::InMemoryStore;
///
/// let store = InMemoryStore::new();
/// let session = store.create(NewSession::default()).await?;
/// let stats = store.track_interaction(&session.id, Interaction::tokens(12, 30)).await?;
/// assert_eq!(stats.total_tokens_out, 30);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct InMemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[RwLock<Shard>]>,
    users: Box<[RwLock<HashMap<UserId, UserSessions>>]>,
    hasher: DefaultHashBuilder,
    clock: Arc<dyn Clock>,
    metadata_limit: usize,
    checkpoint_retention: usize,
}

/// A user's sessions, iterated newest first: `(created_ms, id)` descending.
type UserSessions = BTreeSet<(Reverse<i64>, Reverse<IdKey>)>;

/// A session id in the user index. It orders exactly as the id, but keeps the id's first 8
/// bytes inline, so comparing the keys of sessions created in the same millisecond rarely has
/// to read either id's string (which costs a cache miss per comparison in a large index).
#[derive(Clone, PartialEq, Eq)]
struct IdKey {
    /// The first 8 bytes, zero-padded, big-endian: ids never contain a zero byte, so this
    /// orders as the strings' first 8 bytes do.
    prefix: u64,
    id: SessionId,
}

impl IdKey {
    fn new(id: &SessionId) -> Self {
        let raw = id.as_str().as_bytes();
        let mut head = [0u8; 8];
        let n = raw.len().min(head.len());
        head[..n].copy_from_slice(&raw[..n]);
        Self { prefix: u64::from_be_bytes(head), id: id.clone() }
    }
}

impl Ord for IdKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.prefix.cmp(&other.prefix).then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for IdKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Default)]
struct Shard {
    sessions: HashTable<Record>,
    /// Deadline bucket → sessions whose deadline was in that bucket when last filed.
    expiry: BTreeMap<i64, Vec<SessionId>>,
}

struct Record {
    id: SessionId,
    user_id: Option<UserId>,
    created_ms: i64,
    last_active_ms: i64,
    /// Idle timeout in ms, or [`NEVER`].
    timeout_ms: u64,
    metadata: Metadata,
    stats: SessionStats,
    history: Option<Box<History>>,
    /// The operation ids of the latest writes that carried one; allocated on the first.
    ops: Option<Box<RecentOps>>,
}

/// What a remembered operation did, to answer its repeat the same way.
#[derive(Clone, Copy)]
enum Applied {
    /// A creation or an interaction: the repeat answers with the record as it is now.
    Write,
    /// A checkpoint put: the version, log length and log start it saved.
    Checkpoint { version: u64, log_len: u64, log_start: u64 },
}

/// The last [`OP_ID_WINDOW`] operation ids applied to one session, oldest first.
#[derive(Default)]
struct RecentOps(VecDeque<(OpId, Applied)>);

impl RecentOps {
    fn find(ops: Option<&Self>, op: Option<OpId>) -> Option<Applied> {
        let (ops, op) = (ops?, op?);
        ops.0.iter().rev().find(|(seen, _)| *seen == op).map(|(_, applied)| *applied)
    }

    fn remember(slot: &mut Option<Box<Self>>, op: Option<OpId>, applied: Applied) {
        let Some(op) = op else { return };
        let ops = &mut slot.get_or_insert_with(Box::default).0;
        if ops.len() == OP_ID_WINDOW {
            ops.pop_front();
        }
        ops.push_back((op, applied));
    }
}

#[derive(Default)]
struct History {
    version: u64,
    /// Retained checkpoints, oldest first.
    checkpoints: VecDeque<Checkpoint>,
    /// The log from position `log_start` on (what a cut left).
    log: VecDeque<Message>,
    log_start: u64,
}

impl History {
    /// One past the log's last position.
    fn log_len(&self) -> u64 {
        self.log_start + self.log.len() as u64
    }

    /// The messages at positions `range`, clamped to what the log holds.
    fn slice(&self, range: std::ops::Range<u64>) -> Vec<Message> {
        let at =
            |pos: u64| usize::try_from(pos.saturating_sub(self.log_start)).unwrap_or(usize::MAX).min(self.log.len());
        let (start, end) = (at(range.start), at(range.end));
        if start >= end { Vec::new() } else { self.log.range(start..end).cloned().collect() }
    }
}

impl Record {
    fn deadline_ms(&self) -> Option<i64> {
        (self.timeout_ms != NEVER).then(|| self.last_active_ms.saturating_add_unsigned(self.timeout_ms))
    }

    fn is_live(&self, now_ms: i64) -> bool {
        self.deadline_ms().is_none_or(|deadline| now_ms <= deadline)
    }

    fn to_session(&self) -> Session {
        Session {
            id: self.id.clone(),
            user_id: self.user_id.clone(),
            created_at: timestamp(self.created_ms),
            last_active: timestamp(self.last_active_ms),
            timeout: (self.timeout_ms != NEVER).then(|| Duration::from_millis(self.timeout_ms)),
            metadata: self.metadata.clone(),
            stats: self.stats.clone(),
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn bucket(deadline_ms: i64) -> i64 {
    deadline_ms >> BUCKET_SHIFT
}

fn user_key(created_ms: i64, id: &SessionId) -> (Reverse<i64>, Reverse<IdKey>) {
    (Reverse(created_ms), Reverse(IdKey::new(id)))
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for InMemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryStore")
            .field("shards", &self.inner.shards.len())
            .field("clock", &self.inner.clock)
            .field("metadata_limit", &self.inner.metadata_limit)
            .field("checkpoint_retention", &self.inner.checkpoint_retention)
            .finish_non_exhaustive()
    }
}

/// Configures an [`InMemoryStore`].
#[derive(Debug)]
#[must_use]
pub struct InMemoryStoreBuilder {
    clock: Arc<dyn Clock>,
    metadata_limit: usize,
    checkpoint_retention: usize,
}

impl InMemoryStoreBuilder {
    /// Decides expiry and timestamps with `clock` (default: the system clock).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Largest serialized metadata per session, in bytes (default 64 KiB).
    pub fn with_metadata_limit(mut self, bytes: usize) -> Self {
        self.metadata_limit = bytes;
        self
    }

    /// How many checkpoints to keep per session (default 20, at least 1).
    pub fn with_checkpoint_retention(mut self, keep: usize) -> Self {
        self.checkpoint_retention = keep.max(1);
        self
    }

    /// Builds the store.
    pub fn build(self) -> InMemoryStore {
        let shards = (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect();
        let users = (0..SHARDS).map(|_| RwLock::new(HashMap::default())).collect();
        InMemoryStore {
            inner: Arc::new(Inner {
                shards,
                users,
                hasher: DefaultHashBuilder::default(),
                clock: self.clock,
                metadata_limit: self.metadata_limit,
                checkpoint_retention: self.checkpoint_retention,
            }),
        }
    }
}

impl InMemoryStore {
    /// An empty store with the system clock and default limits.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a store with a custom clock or limits.
    pub fn builder() -> InMemoryStoreBuilder {
        InMemoryStoreBuilder {
            clock: Arc::new(SystemClock),
            metadata_limit: DEFAULT_METADATA_LIMIT,
            checkpoint_retention: DEFAULT_CHECKPOINT_RETENTION,
        }
    }

    /// The store's metadata limit in bytes.
    pub fn metadata_limit(&self) -> usize {
        self.inner.metadata_limit
    }
}

impl Inner {
    fn hash(&self, id: &SessionId) -> u64 {
        self.hasher.hash_one(id.as_str())
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        // The table uses the low bits (probe position) and the top 7 bits (the tag it matches
        // before comparing ids), so the shard takes bits from the middle. Taking the top bits
        // left every record of a shard with nearly the same tag: each lookup then compared the
        // id of about half the occupied slots it probed.
        &self.shards[(hash >> SHARD_SHIFT) as usize % SHARDS]
    }

    fn user_shard(&self, user: &UserId) -> &RwLock<HashMap<UserId, UserSessions>> {
        let hash = self.hasher.hash_one(user.as_str());
        &self.users[(hash >> SHARD_SHIFT) as usize % SHARDS]
    }

    fn rehash(&self) -> impl Fn(&Record) -> u64 + '_ {
        |record| self.hash(&record.id)
    }

    /// Runs `f` on the live record of `id` under its shard's write lock.
    ///
    /// The clock is read before the lock is taken, to keep the critical section short (a hot
    /// session's lock is contended); writes keep `last_active` monotonic with `max`.
    fn with_live<T>(&self, id: &SessionId, f: impl FnOnce(&mut Record, i64) -> Result<T>) -> Result<T> {
        let hash = self.hash(id);
        let now = self.clock.now_ms();
        let mut shard = write(self.shard(hash));
        match shard.sessions.find_mut(hash, |r| r.id == *id) {
            Some(record) if record.is_live(now) => f(record, now),
            _ => Err(Error::SessionNotFound(id.clone())),
        }
    }

    /// Runs `f` on the live record of `id` under its shard's read lock.
    fn read_live<T>(&self, id: &SessionId, f: impl FnOnce(&Record) -> T) -> Option<T> {
        let hash = self.hash(id);
        let now = self.clock.now_ms();
        let shard = read(self.shard(hash));
        shard.sessions.find(hash, |r| r.id == *id).filter(|r| r.is_live(now)).map(f)
    }

    fn index_user(&self, record: &Record) {
        if let Some(user) = &record.user_id {
            let mut users = write(self.user_shard(user));
            users.entry(user.clone()).or_default().insert(user_key(record.created_ms, &record.id));
        }
    }

    fn unindex_user(&self, record: &Record) {
        if let Some(user) = &record.user_id {
            let mut users = write(self.user_shard(user));
            if let Some(sessions) = users.get_mut(user) {
                sessions.remove(&user_key(record.created_ms, &record.id));
                if sessions.is_empty() {
                    users.remove(user);
                }
            }
        }
    }

    /// Up to `n` user-index entries after `after`, copied out so no lock is held afterwards.
    fn user_entries(&self, user: &UserId, after: Option<&Cursor>, n: usize) -> Vec<(i64, SessionId)> {
        let users = read(self.user_shard(user));
        let Some(sessions) = users.get(user) else { return Vec::new() };
        let start = match after {
            Some(cursor) => Bound::Excluded(user_key(cursor.created_ms(), cursor.id())),
            None => Bound::Unbounded,
        };
        sessions
            .range((start, Bound::Unbounded))
            .take(n)
            .map(|(Reverse(ms), Reverse(key))| (*ms, key.id.clone()))
            .collect()
    }
}

#[async_trait]
impl SessionStore for InMemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn create(&self, new: NewSession) -> Result<Session> {
        let inner = &*self.inner;
        let mut new = new;
        new.metadata = check_metadata_depth(std::mem::take(&mut new.metadata))?;
        check_metadata_size(&new.metadata, inner.metadata_limit)?;
        let id = new.id.unwrap_or_default();
        let timeout_ms = match new.timeout.resolve(Some(DEFAULT_SESSION_TIMEOUT)) {
            Some(timeout) => u64::try_from(timeout.as_millis()).unwrap_or(NEVER - 1).min(NEVER - 1),
            None => NEVER,
        };
        let hash = inner.hash(&id);
        let mut shard = write(inner.shard(hash));
        let now = inner.clock.now_ms();
        let op = new.op;
        let mut record = Record {
            id: id.clone(),
            user_id: new.user_id,
            created_ms: now,
            last_active_ms: now,
            timeout_ms,
            metadata: new.metadata,
            stats: SessionStats::default(),
            history: None,
            ops: None,
        };
        RecentOps::remember(&mut record.ops, op, Applied::Write);
        let shard = &mut *shard;
        let slot = match shard.sessions.entry(hash, |r| r.id == id, inner.rehash()) {
            TableEntry::Occupied(mut taken) => {
                if taken.get().is_live(now) {
                    // The same creation, repeated: answer as the first time.
                    if RecentOps::find(taken.get().ops.as_deref(), op).is_some() {
                        return Ok(taken.get().to_session());
                    }
                    return Err(Error::AlreadyExists(id));
                }
                // An expired session not yet purged: it gives way to the new one.
                let stale = std::mem::replace(taken.get_mut(), record);
                inner.unindex_user(&stale);
                taken.into_mut()
            }
            TableEntry::Vacant(vacant) => vacant.insert(record).into_mut(),
        };
        if let Some(deadline) = slot.deadline_ms() {
            shard.expiry.entry(bucket(deadline)).or_default().push(id);
        }
        inner.index_user(slot);
        Ok(slot.to_session())
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        Ok(self.inner.read_live(id, Record::to_session))
    }

    async fn exists(&self, id: &SessionId) -> Result<bool> {
        Ok(self.inner.read_live(id, |_| ()).is_some())
    }

    async fn track_interaction(&self, id: &SessionId, turn: Interaction) -> Result<SessionStats> {
        self.inner.with_live(id, |record, now| {
            if RecentOps::find(record.ops.as_deref(), turn.op).is_none() {
                record.stats.record(&turn);
                record.last_active_ms = record.last_active_ms.max(now);
                RecentOps::remember(&mut record.ops, turn.op, Applied::Write);
            }
            Ok(record.stats.clone())
        })
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.inner.with_live(id, |record, now| {
            record.last_active_ms = record.last_active_ms.max(now);
            Ok(())
        })
    }

    async fn update_metadata(&self, id: &SessionId, update: MetadataUpdate) -> Result<Metadata> {
        let limit = self.inner.metadata_limit;
        let update = update.check_depth()?;
        self.inner.with_live(id, |record, now| {
            let size = match &update {
                MetadataUpdate::Replace(map) => metadata_size(map),
                MetadataUpdate::Merge(map) => merged_size(&record.metadata, map),
                other => {
                    let mut updated = record.metadata.clone();
                    other.clone().apply_to(&mut updated);
                    metadata_size(&updated)
                }
            };
            if size > limit {
                return Err(Error::MetadataTooLarge { size, limit });
            }
            update.apply_to(&mut record.metadata);
            record.last_active_ms = record.last_active_ms.max(now);
            Ok(record.metadata.clone())
        })
    }

    async fn list_user_sessions(&self, user: &UserId, page: Page) -> Result<SessionPage> {
        let inner = &*self.inner;
        let limit = page.effective_limit();
        let mut found: Vec<(i64, SessionId)> = Vec::with_capacity(limit.min(64));
        let mut after = page.cursor;
        loop {
            // One more than needed, to learn whether another page exists; entries of expired
            // sessions not yet purged are skipped and more are fetched.
            let want = limit - found.len() + 1;
            let batch = inner.user_entries(user, after.as_ref(), want);
            let exhausted = batch.len() < want;
            for (created_ms, id) in batch {
                after = Some(Cursor::new(created_ms, id.clone()));
                if inner.read_live(&id, |_| ()).is_none() {
                    continue;
                }
                if found.len() == limit {
                    let next = found.last().map(|(ms, id)| Cursor::new(*ms, id.clone()));
                    return Ok(SessionPage { ids: found.into_iter().map(|(_, id)| id).collect(), next });
                }
                found.push((created_ms, id));
            }
            if exhausted {
                return Ok(SessionPage { ids: found.into_iter().map(|(_, id)| id).collect(), next: None });
            }
        }
    }

    async fn end(&self, id: &SessionId) -> Result<bool> {
        let inner = &*self.inner;
        let hash = inner.hash(id);
        let mut shard = write(inner.shard(hash));
        let now = inner.clock.now_ms();
        let Ok(found) = shard.sessions.find_entry(hash, |r| r.id == *id) else { return Ok(false) };
        let (record, _) = found.remove();
        inner.unindex_user(&record);
        Ok(record.is_live(now))
    }

    async fn purge_expired(&self) -> Result<usize> {
        let inner = &*self.inner;
        let now = inner.clock.now_ms();
        let mut removed = 0;
        for lock in &inner.shards {
            let mut shard = write(lock);
            let shard = &mut *shard;
            // Buckets that started before `now` may hold expired sessions.
            let later = shard.expiry.split_off(&(bucket(now) + 1));
            let due = std::mem::replace(&mut shard.expiry, later);
            for id in due.into_values().flatten() {
                let hash = inner.hash(&id);
                let Ok(found) = shard.sessions.find_entry(hash, |r| r.id == id) else { continue };
                match found.get().deadline_ms() {
                    Some(deadline) if deadline < now => {
                        let (record, _) = found.remove();
                        inner.unindex_user(&record);
                        removed += 1;
                    }
                    Some(deadline) => shard.expiry.entry(bucket(deadline)).or_default().push(id),
                    None => {}
                }
            }
        }
        Ok(removed)
    }
}

/// Serialized size of `stored` merged with `update`, without building the merged map or
/// copying any key or value.
fn merged_size(stored: &Metadata, update: &Metadata) -> usize {
    // `"key":value`: serde_json escapes a map key exactly as it escapes a string.
    let field = |key: &String, value: &serde_json::Value| json_size(key) + 1 + json_size(value);
    let mut fields = 0usize;
    let mut size = 0usize;
    for (key, value) in stored {
        if !update.contains_key(key) {
            size += field(key, value);
            fields += 1;
        }
    }
    for (key, value) in update {
        size += field(key, value);
        fields += 1;
    }
    2 + size + fields.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use lgadk_core::ManualClock;
    use serde_json::json;

    use super::*;

    #[test]
    fn merged_size_equals_the_size_of_the_merged_map() {
        let stored: Metadata = serde_json::from_value(json!({"a": 1, "b": "two", "c": [1, 2]})).unwrap();
        let update: Metadata =
            serde_json::from_value(json!({"b": {"x": "é"}, "d": null, "q\"\n\u{1}é": "\t"})).unwrap();
        let mut merged = stored.clone();
        merged.extend(update.clone());
        assert_eq!(merged_size(&stored, &update), metadata_size(&merged));
        assert_eq!(merged_size(&Metadata::new(), &Metadata::new()), metadata_size(&Metadata::new()));
    }

    #[test]
    fn id_keys_order_as_the_ids() {
        let raw = ["a", "ab", "abcdefgh", "abcdefgh0", "abcdefgi", "abcdefg", "B", "a-b", "zz:9", "abcdefghz", "0"];
        let ids: Vec<SessionId> = raw.iter().map(|r| SessionId::parse(r).unwrap()).collect();
        for a in &ids {
            for b in &ids {
                assert_eq!(IdKey::new(a).cmp(&IdKey::new(b)), a.cmp(b), "{a} vs {b}");
                assert_eq!(IdKey::new(a) == IdKey::new(b), a == b);
            }
        }
    }

    #[tokio::test]
    async fn purge_refiles_sessions_extended_after_filing() {
        let clock = ManualClock::new(1_000_000);
        let store = InMemoryStore::builder().with_clock(clock.clone()).build();
        let new = NewSession::default().with_timeout(lgadk_core::Timeout::After(Duration::from_secs(5)));
        let id = store.create(new).await.unwrap().id;
        clock.advance(Duration::from_secs(4));
        store.touch(&id).await.unwrap();
        clock.advance(Duration::from_secs(4));
        assert_eq!(store.purge_expired().await.unwrap(), 0);
        let shard = read(store.inner.shard(store.inner.hash(&id)));
        let filed: Vec<_> = shard.expiry.values().flatten().collect();
        assert_eq!(filed, [&id], "re-filed under its new deadline");
    }
}
