//! [`RedisStore`]: sessions and checkpoints in Redis, shared by every process that uses it.
//!
//! Plain Redis 6+ commands only (no modules), so it runs on Redis, Valkey, ElastiCache and
//! Memorystore; with the `redis-cluster` feature the same type runs on a Redis Cluster.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk_core::Result<()> {
//! use lgadk_core::{Interaction, NewSession, SessionStore};
//! use lgadk_session::RedisStore;
//!
//! let store = RedisStore::builder("redis://127.0.0.1:6391/").with_prefix("myapp").connect().await?;
//! let session = store.create(NewSession::default()).await?;
//! store.track_interaction(&session.id, Interaction::tokens(12, 30)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Key layout
//! `P` is the prefix (default `lgadk`). A session's keys share the hash tag `{<id>}`, so they
//! live in one cluster slot and one script can update them atomically.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:{<id>}:s` | hash | `c` created ms, `l` last active ms, `t` timeout ms (`-1` never), `u` user, `n` interactions, `ti`/`to` token totals, `rt` response time µs, `ix` the session's index member, `o` the last 16 operation ids applied (see below) |
//! | `P:{<id>}:m` | hash | metadata: one field per top-level key, the value as compact JSON |
//! | `P:{<id>}:cp` | hash | checkpoints: field `<version>` → JSON snapshot (with `log_len`), field `v` → latest version |
//! | `P:{<id>}:h` | list | the conversation log, one JSON message per element, appended with RPUSH |
//! | `P:u:{<user>}` | sorted set | the user index: members `<created>\|<id>` (created ms as 20 digits), all scored 0, paged with `ZREVRANGEBYLEX` |
//! | `P:x` | sorted set | the expiry index: members `<created>\|<id>\|<user>`, scored by deadline ms |
//!
//! Times are integer milliseconds (response time: microseconds); counters use HINCRBY and
//! saturate at `i64::MAX`.
//!
//! # Operation ids
//! `create`, `track_interaction` and checkpoint `put` take the [`OpId`] of their input (if
//! any). Their script records it in field `o` of the session hash, as `<32 hex>=<answer>;`
//! entries (the answer is empty, or `<version>,<log_len>` for a put), keeping the last
//! [`OP_ID_WINDOW`](lgadk_core::OP_ID_WINDOW) (16), and a call whose op id is already there
//! changes nothing and answers as the first time did. The field lives, expires and is deleted
//! with the session hash, so the memory it takes is bounded per session and goes with it.
//!
//! # Connection and failures
//! A single Redis is reached through one multiplexed RESP3 connection. When the server closes
//! it (its `timeout`, `CLIENT KILL`, a restart), the connection reports it at once and a new
//! one is opened in the background (retrying for about ten seconds while the server is down);
//! every script is loaded (one pipelined SCRIPT LOAD) on each new connection before it is
//! used, so no call meets NOSCRIPT after a restart. A call never goes out on a connection
//! known to be closed: it waits for the new one, within its response timeout.
//!
//! A failed call is `Error::Backend` with an [`Outcome`](lgadk_core::Outcome): `NotApplied`
//! when no connection could be had, when the server refused to run it (NOSCRIPT, LOADING,
//! READONLY, …), and for every read; `Unknown` when a write was sent and no answer came in
//! time, or the connection broke while it was in flight. A call whose connection broke under
//! it is sent once more on a new connection if that cannot apply it twice: reads, `touch`, and
//! writes with an op id. The store never repeats a write on its own after a timeout; the
//! `SessionManager` does, with the same op id.
//!
//! On a cluster, redis-rs' cluster client repeats a request itself after a timeout or a broken
//! connection (twice at most) and follows redirections. Writes with an op id still apply once;
//! `end`, `update_metadata` and `purge_expired` may then run twice, which leaves the same data
//! (a repeated `end` reports `false`).
//!
//! # Expiry
//! Expiry is decided by the store's [`Clock`]: every script receives the caller's `now` and
//! treats a session as gone once `now - last_active > timeout`. Writes to an expired session
//! fail with `SessionNotFound` and never bring it back; `create` with its id starts afresh.
//! Each write also sets `PEXPIRE` on the session's keys to the timeout plus
//! a grace period of 10 minutes, only as garbage collection, so memory is reclaimed even when
//! no purge runs.
//!
//! The expiry index is written at `create` with the first deadline and is *not* touched by
//! later writes (so a turn only touches its own session's slot). `purge_expired` takes the
//! entries whose indexed deadline has passed, in batches of 256, and for each one checks the
//! session itself: expired sessions are deleted with their user-index entry and counted;
//! sessions extended meanwhile are re-filed under their current deadline; entries whose
//! session is already gone are dropped without being counted. Its cost follows what came due,
//! never the number of sessions, and it never SCANs. A session removed by Redis' own TTL
//! before any purge ran is cleaned from the indexes but not counted.
//!
//! # Index growth without a reaper
//! When Redis drops a session's keys by TTL, its two index entries stay behind. Creates bound
//! that, so the indexes stay near the number of sessions still in Redis even if nothing
//! lists or purges: every 8th `create` through a store (counted per store and its clones)
//! also sweeps. It reads the 16 oldest entries of the new session's user index and the 16
//! expiry-index entries overdue by more than the 10-minute grace (two reads sent together,
//! one round trip), then, if either found any, checks them against their sessions (one
//! EVALSHA on a single Redis; one HMGET per entry in parallel on a cluster) and:
//! - drops user-index entries whose session is missing, expired, recreated or someone
//!   else's (listing would hide them anyway);
//! - drops expiry-index entries whose session is missing or recreated, with their
//!   user-index entry (so the index of a user who never comes back empties and disappears
//!   once their sessions, all with a timeout, are gone), and re-files those of sessions
//!   extended meanwhile, as purge would;
//! - never deletes a session: an expired one keeps its expiry entry (moved out of the sweep's
//!   window for a grace period), so `purge_expired` still deletes and counts it.
//!
//! The bound: a sweep checks up to 16 overdue expiry entries per 8 creates while those 8
//! creates add at most 8, so entries of sessions Redis dropped cannot pile up while sessions
//! are created, and nothing adds entries while they are not. In the test
//! `indexes_stay_bounded_without_a_reaper` (400 sessions of 201 users created over 2,000
//! simulated seconds, 122 still in Redis, no listing or purge) the expiry index ends with 128
//! entries instead of 400, the regular user's index with 4 instead of 200, and 64 one-time
//! users keep an index instead of 200. A user's index is checked from its oldest entry, so a
//! user with 16 or more old live sessions gets little from the user-index half; the expiry
//! half still removes the entries of their sessions that Redis dropped. Index keys carry no
//! TTL: a session is extended by writes that cannot name its user's index (a turn knows only
//! the session id), so an index TTL could expire under a live session and hide it from
//! listing.
//!
//! # Operating it
//! - **Run a reaper.** Sweeps bound growth, but only `purge_expired` deletes expired sessions
//!   promptly (instead of up to 10 minutes later through their TTL) and counts them. Run
//!   [`SessionManager::spawn_reaper`](crate::SessionManager::spawn_reaper) in one or a few
//!   processes of the fleet (purges from several processes are safe, each entry is handled
//!   once), every 10 to 60 seconds: well under the 10-minute grace, so sweeps find nothing to
//!   do. A tick with nothing due costs one ZRANGEBYSCORE; otherwise one ZRANGEBYSCORE and one
//!   EVALSHA per 256 due entries (on a cluster, one EVALSHA per entry, in parallel).
//! - **Persistence** decides what a Redis crash loses; lgadk acknowledges a write once Redis
//!   did. With `appendonly yes` and `appendfsync always`, Redis fsyncs the log before
//!   answering, so nothing acknowledged is lost (the `redis_faults` test kills the server
//!   with SIGKILL to check), at the cost of an fsync per write batch. With `appendfsync
//!   everysec` (the AOF default) Redis writes the log before answering but fsyncs it once a
//!   second: a crash of the Redis process normally loses nothing, a crash or power loss of
//!   the host loses up to about a second (two when the disk stalls) of acknowledged turns,
//!   metadata updates, checkpoints and creates. With `appendonly no`, RDB snapshots (`save`)
//!   lose everything since the last snapshot, typically minutes, and without `save`
//!   everything is lost. Replication is asynchronous: a failover to a replica can lose the
//!   last acknowledged writes whatever the setting. After such a loss the older state is
//!   back: a turn's checkpoint, log messages and counters are missing, and a session created
//!   in the lost window is unknown.
//!
//! # Round trips
//! Every script receives in KEYS every key it touches, as Redis' scripting contract requires
//! (servers, proxies and clusters that check or route by key depend on it; a test watches the
//! commands each script runs with MONITOR). A key named by data, such as a session named by
//! an index entry or the user index named by a session's owner, is therefore read by one call
//! and handed to the script by the next. Reads and writes of one session are one atomic round
//! trip: one EVALSHA (the scripts are loaded whenever a connection opens; one is loaded again
//! if a `SCRIPT FLUSH` left the server without it), or one plain command.
//!
//! | operation | single Redis | cluster |
//! |---|---|---|
//! | `create` | 1 EVALSHA (+1 ZREM when it replaces an expired session of another owner) | 2 (index ZADDs in parallel, then EVALSHA) |
//! | every 8th `create`, in addition ([sweep](#index-growth-without-a-reaper)) | ZRANGEBYLEX and ZRANGEBYSCORE sent together + 1 EVALSHA when they found entries | the two reads + one HMGET per entry found (in parallel) + index updates |
//! | `get`, `exists`, `touch`, `track_interaction`, `update_metadata` | 1 EVALSHA | 1 EVALSHA |
//! | `list_user_sessions` | ZREVRANGEBYLEX + 1 EVALSHA (again per further batch when dropped entries leave the page short) | ZREVRANGEBYLEX + one HMGET per entry (in parallel) + ZREM of dangling entries |
//! | `end` | 1 EVALSHA without an owner; 2 with one (the first answers with the owner, whose user index the second names) | 2 (EVALSHA, then index ZREMs in parallel) |
//! | `purge_expired` | ZRANGEBYSCORE + 1 EVALSHA per batch of 256 (ZRANGEBYSCORE alone when nothing is due) | per batch: ZRANGEBYSCORE + one EVALSHA per entry (in parallel) + index updates |
//! | `version`, `put`, `latest`, `checkpoint`, `list`, `messages` | 1 EVALSHA | 1 EVALSHA |
//! | checkpointer `delete` | 1 DEL | 1 DEL |
//!
//! Listing and purge re-check every entry inside their script (it may have changed since it
//! was read), so on a single Redis they stay atomic per batch.
//!
//! # Cluster
//! The user index and the expiry index live in other slots than the session, so on a cluster
//! the operations that touch both are not atomic. The rule that keeps them right:
//! - `create` writes the index entries *first*, then the session; `end` deletes the session
//!   first, then its entries; `purge_expired` deletes the session, then its entries. A failure
//!   in between leaves index entries that point at nothing, never a live session missing from
//!   its index.
//! - An index entry is valid only while the session's `ix` field equals it and (for the user
//!   index) the session belongs to that user. Listing checks every entry it reads: it returns
//!   only live, valid ones and removes the others; purge does the same for the expiry index.
//!   An entry whose session does not exist yet is left alone for 60 s (its `create` may be in
//!   flight) and removed after that.
//! - The expiry index is one key (`P:x`, in its own slot). Only `create`, `end`, sweeps and
//!   purge touch it, never a turn, so it is not a hot key.
//!
//! On a single Redis the scripts update the indexes themselves, so there is nothing to repair,
//! except the user-index entry of an expired session replaced by `create` for another owner
//! (removed right after, best effort; stale from that moment, so listing drops it if that
//! fails); listing still drops entries of sessions that Redis expired by TTL.
//!
//! # Damaged data
//! A field that lgadk did not write in its format (a counter that is not a non-negative
//! integer, an undecodable time, metadata value, checkpoint or logged message) makes the call
//! fail with `Error::Corrupt` naming the session and the field; writes check first and change
//! nothing. Listing a user whose index reaches such a session fails the same way; `end` still
//! removes it. Purge skips it (drops its expiry-index entry and leaves it to its TTL).

mod builder;
mod conn;
mod error;
mod keys;
mod reply;
mod scripts;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use lgadk_core::session::{check_metadata_depth, check_metadata_size, timestamp};
use lgadk_core::{
    Checkpoint, Checkpointer, Clock, Cursor, DEFAULT_SESSION_TIMEOUT, Error, Interaction, Message, Metadata,
    MetadataUpdate, NewCheckpoint, NewSession, OpId, Page, Result, Session, SessionId, SessionPage, SessionStats,
    SessionStore, UserId,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

pub use builder::{DEFAULT_CONNECTION_TIMEOUT, DEFAULT_PREFIX, DEFAULT_RESPONSE_TIMEOUT, RedisStoreBuilder};
use conn::{Caller, Effect};
use error::RedisFailure;
use keys::{Keys, SessionKeys};
use reply::{Reply, parse_field};
use scripts::status;

/// Garbage-collection slack added to a session's timeout for its keys' TTL.
const GC_GRACE_MS: i64 = 10 * 60 * 1000;
/// Expiry-index entries handled per purge round trip.
const PURGE_BATCH: usize = 256;
/// Cluster only: an index entry whose session does not exist is kept this long after the
/// session's creation time, because its `create` may still be in flight.
const REPAIR_GRACE_MS: i64 = 60 * 1000;
/// Every this many creates through one store, the create also sweeps the indexes.
const SWEEP_EVERY: u64 = 8;
/// Entries a sweep checks in each index (the user's, the expiry index).
const SWEEP_BATCH: usize = 16;
/// `end` script: the session has another owner than the call expected (see `lua/end.lua`).
const END_OTHER_OWNER: i64 = 2;
/// Longest stored timeout (2^53 - 1 ms, about 285,000 years): Lua numbers are doubles.
const MAX_TIMEOUT_MS: u64 = (1 << 53) - 1;

/// Sessions and checkpoints in Redis, shared by every process that connects to it.
///
/// Implements [`SessionStore`] and [`Checkpointer`]; every operation is atomic against
/// concurrent callers in any number of processes. See the [module docs](self) for the key
/// layout, expiry, the cost of each operation and the cluster rules. Cloning is cheap: clones
/// share one multiplexed connection, which reconnects in the background after a failure.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    caller: Caller,
    keys: Keys,
    clock: Arc<dyn Clock>,
    metadata_limit: usize,
    checkpoint_retention: usize,
    /// Creates through this store (and its clones), to pace index sweeps.
    creates: AtomicU64,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.keys.prefix())
            .field("cluster", &self.inner.caller.is_cluster())
            .field("metadata_limit", &self.inner.metadata_limit)
            .field("checkpoint_retention", &self.inner.checkpoint_retention)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A builder for a store on the Redis at `url` (`redis://[user:password@]host:port/[db]`,
    /// or `rediss://` with a TLS feature of redis-rs).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::single(url.into())
    }

    /// A builder for a store on the Redis Cluster reachable through `nodes` (URLs of any of
    /// its masters; the rest is discovered).
    #[cfg(feature = "redis-cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
    pub fn cluster_builder<N: Into<String>>(nodes: impl IntoIterator<Item = N>) -> RedisStoreBuilder {
        RedisStoreBuilder::cluster(nodes.into_iter().map(Into::into).collect())
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.inner.keys.prefix()
    }

    /// Whether the store runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.caller.is_cluster()
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn caller(&self) -> &Caller {
        &self.inner.caller
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    async fn run(&self, op: &'static str, effect: Effect, invocation: &redis::ScriptInvocation<'_>) -> Result<Reply> {
        Ok(Reply::new(op, self.caller().script(op, effect, invocation).await?))
    }

    /// Runs a script that takes a session's four keys and `now` first.
    async fn session_script(
        &self,
        op: &'static str,
        effect: Effect,
        script: &redis::Script,
        keys: &SessionKeys,
        args: &[&dyn ToArg],
    ) -> Result<Reply> {
        let mut invocation = script.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        invocation.arg(self.now());
        for arg in args {
            arg.add_to(&mut invocation);
        }
        self.run(op, effect, &invocation).await
    }

    fn json(op: &'static str, what: &'static str, value: &impl Serialize) -> Result<String> {
        lgadk_core::json::to_string(value).map_err(|err| {
            err.into_error(what, |source| Error::backend("redis", op, RedisFailure::BadJson { what, source }))
        })
    }
}

/// Script arguments of mixed types.
trait ToArg: Sync {
    fn add_to(&self, invocation: &mut redis::ScriptInvocation<'_>);
}

impl<T: redis::ToRedisArgs + Sync> ToArg for T {
    fn add_to(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        invocation.arg(self);
    }
}

/// How a write with this op id may be sent: a repeat of it applies once.
fn writes(op: Option<OpId>) -> Effect {
    if op.is_some() { Effect::Repeatable } else { Effect::Write }
}

/// An operation id as scripts take it: 32 hex digits, or `""` for none.
fn op_arg(op: Option<OpId>) -> String {
    op.map(|op| op.to_string()).unwrap_or_default()
}

fn clamp_i64(value: u128) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn corrupt_json(id: &SessionId, what: &'static str, source: serde_json::Error) -> Error {
    Error::corrupt(id, RedisFailure::BadJson { what, source })
}

fn decode_metadata(id: &SessionId, pairs: &[String]) -> Result<Metadata> {
    let mut metadata = Metadata::new();
    for pair in pairs.chunks_exact(2) {
        if let [key, raw] = pair {
            let value = serde_json::from_str(raw).map_err(|source| corrupt_json(id, "a metadata value", source))?;
            metadata.insert(key.clone(), value);
        }
    }
    Ok(metadata)
}

fn decode_stats(id: &SessionId, fields: [Option<&str>; 4]) -> Result<SessionStats> {
    let [n, tokens_in, tokens_out, response_us] = fields;
    Ok(SessionStats {
        interactions: parse_field(id, "interactions", n)?,
        total_tokens_in: parse_field(id, "total_tokens_in", tokens_in)?,
        total_tokens_out: parse_field(id, "total_tokens_out", tokens_out)?,
        total_response_time: Duration::from_micros(parse_field(id, "total_response_time", response_us)?),
    })
}

/// What a checkpoint looks like in the `cp` hash. The script prepends `version` and `log_len`
/// to the JSON of [`StoredBody`].
#[derive(Deserialize)]
struct StoredCheckpoint {
    version: u64,
    log_len: u64,
    step: u64,
    node: Option<String>,
    at: i64,
    state: serde_json::Value,
}

#[derive(Serialize)]
struct StoredBody<'a> {
    step: u64,
    node: Option<&'a str>,
    at: i64,
    state: &'a serde_json::Value,
}

fn decode_checkpoint(id: &SessionId, blob: &str) -> Result<Checkpoint> {
    let stored: StoredCheckpoint =
        serde_json::from_str(blob).map_err(|source| corrupt_json(id, "a checkpoint", source))?;
    Ok(Checkpoint {
        version: stored.version,
        step: stored.step,
        node: stored.node,
        created_at: timestamp(stored.at),
        log_len: stored.log_len,
        state: stored.state,
    })
}

/// How listing judges one user-index entry on a cluster.
enum EntryState {
    Live,
    /// Remove it from the index.
    Dangling,
    /// Leave it: its session may be being created.
    Pending,
    Corrupt(Error),
}

#[async_trait]
impl SessionStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn create(&self, new: NewSession) -> Result<Session> {
        let mut new = new;
        new.metadata = check_metadata_depth(std::mem::take(&mut new.metadata))?;
        check_metadata_size(&new.metadata, self.inner.metadata_limit)?;
        let now = self.now();
        let id = new.id.unwrap_or_default();
        let timeout_ms = match new.timeout.resolve(Some(DEFAULT_SESSION_TIMEOUT)) {
            Some(timeout) => clamp_i64(timeout.as_millis().min(u128::from(MAX_TIMEOUT_MS))),
            None => -1,
        };
        let member = keys::member(now, &id);
        let user = new.user_id.as_ref().map(UserId::as_str);
        let session_keys = self.keys().session(&id);
        let cluster = self.is_cluster();
        let user_key = new.user_id.as_ref().map(|user| self.keys().user(user));
        let expiry_entry = keys::expiry_entry(&member, user);

        let mut invocation = scripts::CREATE.prepare_invoke();
        for key in session_keys.all() {
            invocation.key(key);
        }
        if !cluster {
            invocation.key(user_key.as_deref().unwrap_or(self.keys().expiry())).key(self.keys().expiry());
        }
        invocation.arg(now).arg(GC_GRACE_MS).arg(&member).arg(user.unwrap_or("")).arg(timeout_ms).arg(self.prefix());
        invocation.arg(op_arg(new.op));
        for (key, value) in &new.metadata {
            invocation.arg(key).arg(Self::json("create", "metadata", value)?);
        }

        if cluster {
            // Index first: a failure after this leaves entries that listing and purge repair,
            // never a live session missing from its indexes.
            self.index_new(user_key.as_deref(), &member, (timeout_ms >= 0).then(|| now + timeout_ms), &expiry_entry)
                .await?;
        }
        let reply = self.run("create", writes(new.op), &invocation).await?;
        match reply.status()? {
            status::OK if reply.len() >= 5 => {
                // The same creation, repeated (same op id): the session it created.
                if cluster && reply.text(2)? != member {
                    // Best effort: the entries this repeat added point at nothing.
                    self.unindex(user_key.as_deref(), &member, &expiry_entry).await.ok();
                }
                let created = parse_field(&id, "created_at", reply.opt_text(3)?.as_deref())?;
                let last = parse_field(&id, "last_active", reply.opt_text(4)?.as_deref())?;
                return Ok(Session {
                    id,
                    user_id: new.user_id,
                    created_at: timestamp(created),
                    last_active: timestamp(last),
                    timeout: u64::try_from(timeout_ms).ok().map(Duration::from_millis),
                    metadata: new.metadata,
                    stats: SessionStats::default(),
                });
            }
            status::OK => {}
            status::EXISTS => {
                let same_entries = reply.text(2)? == member && reply.text(1)? == user.unwrap_or("");
                if cluster && !same_entries {
                    // Our entries point at a session that is not ours; drop them now rather
                    // than leave them to listing and purge (best effort).
                    self.unindex(user_key.as_deref(), &member, &expiry_entry).await.ok();
                }
                return Err(Error::AlreadyExists(id));
            }
            status::CORRUPT => return Err(reply.corrupt(&id, 1)),
            _ => return Err(reply.bad("unknown status")),
        }
        // The script replaced an expired session with this id: clean its entries. On a single
        // Redis the script did, except for another owner's user index, which it could not name.
        let (old_user, old_member) = (reply.text(1)?, reply.text(2)?);
        if !old_member.is_empty() && old_member != member {
            let old_owner = (!old_user.is_empty()).then_some(old_user.as_str());
            let old_key = old_owner.map(|user| self.keys().user_raw(user));
            if cluster {
                self.unindex(old_key.as_deref(), &old_member, &keys::expiry_entry(&old_member, old_owner)).await.ok();
            } else if let Some(old_key) = old_key.filter(|_| old_owner != user) {
                // Best effort: the entry is stale already, and listing drops stale entries.
                self.caller()
                    .command::<()>("create", Effect::Repeatable, redis::cmd("ZREM").arg(old_key).arg(&old_member))
                    .await
                    .ok();
            }
        }
        if self.inner.creates.fetch_add(1, Ordering::Relaxed).is_multiple_of(SWEEP_EVERY)
            && let Err(err) = self.sweep(new.user_id.as_ref(), &member).await
        {
            // The session is created; the next sweep, listing or purge does this work.
            tracing::debug!(error = %err, "index sweep after create failed");
        }
        Ok(Session {
            id,
            user_id: new.user_id,
            created_at: timestamp(now),
            last_active: timestamp(now),
            timeout: u64::try_from(timeout_ms).ok().map(Duration::from_millis),
            metadata: new.metadata,
            stats: SessionStats::default(),
        })
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        let keys = self.keys().session(id);
        let mut invocation = scripts::GET.prepare_invoke();
        invocation.key(&keys.record).key(&keys.metadata).arg(self.now());
        let reply = self.run("get", Effect::Read, &invocation).await?;
        match reply.check(id) {
            Ok(status::OK) => {}
            Ok(_) => return Err(reply.bad("unknown status")),
            Err(Error::SessionNotFound(_)) => return Ok(None),
            Err(err) => return Err(err),
        }
        if reply.len() < 9 || (reply.len() - 9) % 2 != 0 {
            return Err(reply.bad("wrong number of fields"));
        }
        let field = |index: usize| reply.opt_text(index);
        let (last, timeout, created, user) = (field(1)?, field(2)?, field(3)?, field(4)?);
        let timeout_ms: i64 = parse_field(id, "timeout", timeout.as_deref())?;
        let user_id = match user {
            Some(raw) => Some(UserId::parse(&raw).map_err(|err| Error::corrupt(id, err))?),
            None => None,
        };
        let counters = [field(5)?, field(6)?, field(7)?, field(8)?];
        let stats = decode_stats(id, counters.each_ref().map(Option::as_deref))?;
        Ok(Some(Session {
            id: id.clone(),
            user_id,
            created_at: timestamp(parse_field(id, "created_at", created.as_deref())?),
            last_active: timestamp(parse_field(id, "last_active", last.as_deref())?),
            timeout: u64::try_from(timeout_ms).ok().map(Duration::from_millis),
            metadata: decode_metadata(id, &reply.texts_from(9)?)?,
            stats,
        }))
    }

    async fn exists(&self, id: &SessionId) -> Result<bool> {
        let keys = self.keys().session(id);
        let mut invocation = scripts::EXISTS.prepare_invoke();
        invocation.key(&keys.record).arg(self.now());
        let reply = self.run("exists", Effect::Read, &invocation).await?;
        match reply.check(id) {
            Ok(_) => Ok(true),
            Err(Error::SessionNotFound(_)) => Ok(false),
            Err(err) => Err(err),
        }
    }

    async fn track_interaction(&self, id: &SessionId, turn: Interaction) -> Result<SessionStats> {
        let keys = self.keys().session(id);
        let tokens_in = clamp_i64(turn.tokens_in.into());
        let tokens_out = clamp_i64(turn.tokens_out.into());
        let response_us = clamp_i64(turn.response_time.as_micros());
        let reply = self
            .session_script(
                "track_interaction",
                writes(turn.op),
                &scripts::TRACK,
                &keys,
                &[&GC_GRACE_MS, &tokens_in, &tokens_out, &response_us, &op_arg(turn.op)],
            )
            .await?;
        reply.check(id)?;
        let counters = [reply.opt_text(1)?, reply.opt_text(2)?, reply.opt_text(3)?, reply.opt_text(4)?];
        decode_stats(id, counters.each_ref().map(Option::as_deref))
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        let keys = self.keys().session(id);
        let reply = self.session_script("touch", Effect::Repeatable, &scripts::TOUCH, &keys, &[&GC_GRACE_MS]).await?;
        reply.check(id)?;
        Ok(())
    }

    async fn update_metadata(&self, id: &SessionId, update: MetadataUpdate) -> Result<Metadata> {
        let limit = self.inner.metadata_limit;
        let update = update.check_depth()?;
        // The result is never smaller than the update itself, so this saves a round trip.
        check_metadata_size(update.map(), limit)?;
        let (mode, map) = match &update {
            MetadataUpdate::Merge(map) => ("merge", map),
            MetadataUpdate::Replace(map) => ("replace", map),
            _ => return Err(Error::InvalidConfig { reason: "unsupported metadata update".into() }),
        };
        let keys = self.keys().session(id);
        let mut invocation = scripts::METADATA.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        invocation.arg(self.now()).arg(GC_GRACE_MS).arg(limit).arg(mode);
        for (key, value) in map {
            invocation.arg(key).arg(Self::json("update_metadata", "metadata", value)?);
        }
        let reply = self.run("update_metadata", Effect::Write, &invocation).await?;
        match reply.check(id)? {
            status::OK => decode_metadata(id, &reply.texts_from(1)?),
            status::TOO_LARGE => {
                let size = usize::try_from(reply.int(1)?).map_err(|_| reply.bad("negative size"))?;
                Err(Error::MetadataTooLarge { size, limit })
            }
            _ => Err(reply.bad("unknown status")),
        }
    }

    async fn list_user_sessions(&self, user: &UserId, page: Page) -> Result<SessionPage> {
        let limit = page.effective_limit();
        let bound = page.cursor.as_ref().map_or_else(|| "+".to_owned(), keys::bound_after);
        let (members, more) = self.list_entries(user, limit, bound).await?;
        let mut ids = Vec::with_capacity(members.len());
        let mut last = None;
        for member in &members {
            let (created_ms, id) = keys::parse_member(member).ok_or_else(|| {
                Error::backend(
                    "redis",
                    "list_user_sessions",
                    RedisFailure::BadReply { script: "list_user_sessions", detail: "malformed index member" },
                )
            })?;
            ids.push(id.clone());
            last = Some(Cursor::new(created_ms, id));
        }
        Ok(SessionPage { ids, next: if more { last } else { None } })
    }

    async fn end(&self, id: &SessionId) -> Result<bool> {
        let keys = self.keys().session(id);
        let cluster = self.is_cluster();
        // On a single Redis the script removes the index entries too, but it may only touch the
        // owner's user index if it receives it in KEYS: the first call assumes no owner and
        // answers with the owner when there is one, the second names that owner's index. Only
        // a session recreated for another owner in between needs a third, unchecked, call.
        let mut owner: Option<String> = None;
        for attempt in 0..3 {
            let unchecked = cluster || attempt == 2;
            let mut invocation = scripts::END.prepare_invoke();
            for key in keys.all() {
                invocation.key(key);
            }
            if !cluster {
                invocation.key(self.keys().expiry());
                if let Some(owner) = owner.as_deref().filter(|_| !unchecked) {
                    invocation.key(self.keys().user_raw(owner));
                }
            }
            let expected = if unchecked { "*" } else { owner.as_deref().unwrap_or("") };
            invocation.arg(self.now()).arg(expected);
            let reply = self.run("end", Effect::Write, &invocation).await?;
            let (user, member) = (reply.text(1)?, reply.text(2)?);
            if reply.status()? == END_OTHER_OWNER {
                owner = (!user.is_empty()).then_some(user);
                continue;
            }
            if unchecked && !member.is_empty() {
                // Best effort: an entry left behind is removed by the next listing or purge.
                let user = (!user.is_empty()).then_some(user.as_str());
                let user_key = user.map(|user| self.keys().user_raw(user));
                let expiry_entry = keys::expiry_entry(&member, user);
                if cluster {
                    self.unindex(user_key.as_deref(), &member, &expiry_entry).await.ok();
                } else if let Some(user_key) = user_key {
                    self.caller()
                        .command::<()>("end", Effect::Repeatable, redis::cmd("ZREM").arg(user_key).arg(&member))
                        .await
                        .ok();
                }
            }
            return Ok(reply.status()? == 1);
        }
        Err(Error::backend("redis", "end", RedisFailure::BadReply { script: "end", detail: "no final answer" }))
    }

    async fn purge_expired(&self) -> Result<usize> {
        let mut removed = 0;
        loop {
            let (gone, seen) =
                if self.is_cluster() { self.purge_batch_cluster().await? } else { self.purge_batch_single().await? };
            removed += gone;
            if seen < PURGE_BATCH {
                return Ok(removed);
            }
        }
    }
}

/// The single-Redis halves of listing and purge: read the index, then one script that names
/// every key it touches.
impl RedisStore {
    /// Up to `limit` live entries of `user`'s index after `bound`, newest first, and whether
    /// another live one follows.
    async fn list_entries(&self, user: &UserId, limit: usize, mut bound: String) -> Result<(Vec<String>, bool)> {
        if self.is_cluster() {
            return self.list_cluster(user, limit, bound).await;
        }
        const OP: &str = "list_user_sessions";
        let key = self.keys().user(user);
        let now = self.now();
        let mut found = Vec::new();
        loop {
            let want = limit + 1 - found.len();
            let cmd = redis::cmd("ZREVRANGEBYLEX").arg(&key).arg(&bound).arg("-").arg("LIMIT").arg(0).arg(want).clone();
            let entries: Vec<String> = self.caller().command(OP, Effect::Read, &cmd).await?;
            let Some(last) = entries.last() else { return Ok((found, false)) };
            bound = format!("({last}");
            let mut invocation = scripts::LIST.prepare_invoke();
            invocation.key(&key);
            let mut checked = Vec::new();
            let mut dropped = Vec::new();
            for entry in &entries {
                match keys::parse_member(entry) {
                    Some((_, id)) => {
                        invocation.key(self.keys().session(&id).record);
                        checked.push(entry);
                    }
                    None => dropped.push(entry),
                }
            }
            invocation.arg(now).arg(user.as_str()).arg(checked.len());
            for entry in checked.iter().chain(&dropped) {
                invocation.arg(*entry);
            }
            let reply = self.run(OP, Effect::Read, &invocation).await?;
            match reply.status()? {
                status::OK => {}
                status::CORRUPT => {
                    let id = SessionId::parse(&reply.text(1)?).map_err(|_| reply.bad("bad session id"))?;
                    return Err(reply.corrupt(&id, 2));
                }
                _ => return Err(reply.bad("unknown status")),
            }
            for entry in reply.texts_from(1)? {
                if found.len() == limit {
                    return Ok((found, true));
                }
                found.push(entry);
            }
            if entries.len() < want {
                return Ok((found, false));
            }
        }
    }

    /// One purge batch on a single Redis: `(removed, entries seen)`.
    async fn purge_batch_single(&self) -> Result<(usize, usize)> {
        const OP: &str = "purge_expired";
        let now = self.now();
        let expiry = self.keys().expiry();
        let cmd = redis::cmd("ZRANGEBYSCORE")
            .arg(expiry)
            .arg("-inf")
            .arg(format!("({now}"))
            .arg("LIMIT")
            .arg(0)
            .arg(PURGE_BATCH)
            .clone();
        let due: Vec<String> = self.caller().command(OP, Effect::Read, &cmd).await?;
        if due.is_empty() {
            return Ok((0, 0));
        }
        let mut invocation = scripts::PURGE.prepare_invoke();
        invocation.key(expiry);
        let mut checked = Vec::new();
        let mut dropped = Vec::new();
        for entry in &due {
            let parsed = keys::parse_expiry_entry(entry)
                .and_then(|(member, user)| keys::parse_member(member).map(|(_, id)| (id, user)));
            let Some((id, user)) = parsed else {
                dropped.push(entry);
                continue;
            };
            for key in self.keys().session(&id).all() {
                invocation.key(key);
            }
            invocation.key(user.map_or_else(|| expiry.to_owned(), |user| self.keys().user_raw(user)));
            checked.push(entry);
        }
        invocation.arg(now).arg(checked.len());
        for entry in checked.iter().chain(&dropped) {
            invocation.arg(*entry);
        }
        let reply = self.run(OP, Effect::Write, &invocation).await?;
        let removed = usize::try_from(reply.int(0)?).map_err(|_| reply.bad("negative count"))?;
        Ok((removed, due.len()))
    }
}

/// Index sweeps: bounded work, paced by creates, that drops index entries pointing at nothing
/// when no reaper runs (see the module docs).
impl RedisStore {
    /// Checks the oldest [`SWEEP_BATCH`] entries of `user`'s index (other than `created`, the
    /// entry just written) and as many expiry-index entries overdue by more than the garbage
    /// collection grace: entries of sessions Redis already dropped go, sessions extended
    /// meanwhile are re-filed, and expired sessions are left for purge to delete and count.
    async fn sweep(&self, user: Option<&UserId>, created: &str) -> Result<()> {
        const OP: &str = "create";
        let now = self.now();
        let expiry = self.keys().expiry();
        let user_key = user.map(|user| self.keys().user(user));
        let user_read = async {
            match &user_key {
                Some(key) => {
                    let cmd = redis::cmd("ZRANGEBYLEX")
                        .arg(key)
                        .arg("-")
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(SWEEP_BATCH)
                        .clone();
                    self.caller().command::<Vec<String>>(OP, Effect::Read, &cmd).await
                }
                None => Ok(Vec::new()),
            }
        };
        let overdue_cmd = redis::cmd("ZRANGEBYSCORE")
            .arg(expiry)
            .arg("-inf")
            .arg(format!("({}", now.saturating_sub(GC_GRACE_MS)))
            .arg("LIMIT")
            .arg(0)
            .arg(SWEEP_BATCH)
            .clone();
        let (user_entries, overdue) =
            tokio::join!(user_read, self.caller().command::<Vec<String>>(OP, Effect::Read, &overdue_cmd));
        let user_entries: Vec<(String, SessionId)> = user_entries?
            .into_iter()
            .filter(|entry| entry != created)
            .filter_map(|entry| keys::parse_member(&entry).map(|(_, id)| (entry, id)))
            .collect();
        let overdue: Vec<(String, SessionId, Option<String>)> = overdue?
            .into_iter()
            .filter_map(|entry| {
                let (member, owner) = keys::parse_expiry_entry(&entry)?;
                let (_, id) = keys::parse_member(member)?;
                let owner = owner.map(str::to_owned);
                Some((entry, id, owner))
            })
            .collect();
        if user_entries.is_empty() && overdue.is_empty() {
            return Ok(());
        }
        if self.is_cluster() {
            return self.sweep_cluster(user, user_entries, overdue, now).await;
        }
        let mut invocation = scripts::SWEEP.prepare_invoke();
        invocation.key(expiry).key(user_key.as_deref().unwrap_or(expiry));
        for (_, id) in &user_entries {
            invocation.key(self.keys().session(id).record);
        }
        for (_, id, owner) in &overdue {
            invocation.key(self.keys().session(id).record);
            invocation.key(owner.as_deref().map_or_else(|| expiry.to_owned(), |owner| self.keys().user_raw(owner)));
        }
        invocation.arg(now).arg(user.map_or("", UserId::as_str)).arg(user_entries.len());
        for (entry, _) in &user_entries {
            invocation.arg(entry);
        }
        for (entry, _, _) in &overdue {
            invocation.arg(entry);
        }
        self.run(OP, Effect::Repeatable, &invocation).await?;
        Ok(())
    }

    /// The same sweep on a cluster: one call per session, then the index updates.
    async fn sweep_cluster(
        &self,
        user: Option<&UserId>,
        user_entries: Vec<(String, SessionId)>,
        overdue: Vec<(String, SessionId, Option<String>)>,
        now: i64,
    ) -> Result<()> {
        const OP: &str = "create";
        if let Some(user) = user {
            let owner = user.as_str().to_owned();
            let entries: Vec<String> = user_entries.into_iter().map(|(entry, _)| entry).collect();
            let states = self
                .each(OP, entries.clone(), move |store, entry| {
                    let owner = owner.clone();
                    async move { store.judge_entry(&entry, &owner, now).await }
                })
                .await?;
            let dangling: Vec<&String> = entries
                .iter()
                .zip(states)
                .filter_map(|(entry, state)| matches!(state, Ok(EntryState::Dangling)).then_some(entry))
                .collect();
            if !dangling.is_empty() {
                self.caller()
                    .command::<()>(
                        OP,
                        Effect::Repeatable,
                        redis::cmd("ZREM").arg(self.keys().user(user)).arg(&dangling),
                    )
                    .await?;
            }
        }
        let fields = self
            .each(OP, overdue.iter().map(|(_, id, _)| id.clone()).collect(), |store, id| async move {
                let cmd = redis::cmd("HMGET").arg(store.keys().session(&id).record).arg(&["ix", "l", "t"]).clone();
                store.caller().command::<Vec<Option<String>>>(OP, Effect::Read, &cmd).await
            })
            .await?;
        let expiry = self.keys().expiry();
        for ((entry, _, owner), fields) in overdue.iter().zip(fields) {
            let Some((member, _)) = keys::parse_expiry_entry(entry) else { continue };
            let (ix, last, timeout) = match fields?.as_slice() {
                [ix, last, timeout] => (ix.clone(), last.clone(), timeout.clone()),
                _ => return Err(Error::backend("redis", OP, "HMGET answered with the wrong arity")),
            };
            let created_ms = keys::parse_member(member).map_or(0, |(created, _)| created);
            let last = last.and_then(|last| last.parse::<i64>().ok());
            let timeout = timeout.and_then(|timeout| timeout.parse::<i64>().ok());
            // As `lua/sweep.lua` decides, plus the cluster's grace for a create in flight.
            let refile = match (ix.as_deref() == Some(member), last, timeout) {
                _ if ix.is_none() && now.saturating_sub(created_ms) < REPAIR_GRACE_MS => continue,
                (true, Some(last), Some(timeout)) if timeout >= 0 && now.saturating_sub(last) <= timeout => {
                    Some(last.saturating_add(timeout))
                }
                (true, Some(_), Some(timeout)) if timeout >= 0 => Some(now - 1),
                _ => None,
            };
            if let Some(at) = refile {
                self.caller()
                    .command::<()>(OP, Effect::Repeatable, redis::cmd("ZADD").arg(expiry).arg(at).arg(entry))
                    .await?;
                continue;
            }
            self.caller().command::<()>(OP, Effect::Repeatable, redis::cmd("ZREM").arg(expiry).arg(entry)).await?;
            let gone = ix.as_deref() != Some(member);
            if let Some(owner) = owner.as_deref().filter(|_| gone) {
                self.caller()
                    .command::<()>(
                        OP,
                        Effect::Repeatable,
                        redis::cmd("ZREM").arg(self.keys().user_raw(owner)).arg(member),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

/// The cluster halves of `create`, `end`, listing and purge: several slots, several calls.
impl RedisStore {
    async fn index_new(
        &self,
        user_key: Option<&str>,
        member: &str,
        deadline: Option<i64>,
        expiry_entry: &str,
    ) -> Result<()> {
        let user_add = async {
            match user_key {
                Some(key) => {
                    self.caller()
                        .command::<()>("create", Effect::Repeatable, redis::cmd("ZADD").arg(key).arg(0).arg(member))
                        .await
                }
                None => Ok(()),
            }
        };
        let expiry_add = async {
            match deadline {
                Some(at) => {
                    let cmd = redis::cmd("ZADD").arg(self.keys().expiry()).arg(at).arg(expiry_entry).clone();
                    self.caller().command::<()>("create", Effect::Repeatable, &cmd).await
                }
                None => Ok(()),
            }
        };
        let (user_added, expiry_added) = tokio::join!(user_add, expiry_add);
        user_added.and(expiry_added)
    }

    async fn unindex(&self, user_key: Option<&str>, member: &str, expiry_entry: &str) -> Result<()> {
        let user_rem = async {
            match user_key {
                Some(key) => {
                    self.caller()
                        .command::<()>("end", Effect::Repeatable, redis::cmd("ZREM").arg(key).arg(member))
                        .await
                }
                None => Ok(()),
            }
        };
        let expiry_cmd = redis::cmd("ZREM").arg(self.keys().expiry()).arg(expiry_entry).clone();
        let expiry_rem = self.caller().command::<()>("end", Effect::Repeatable, &expiry_cmd);
        let (user_removed, expiry_removed) = tokio::join!(user_rem, expiry_rem);
        user_removed.and(expiry_removed)
    }

    /// Runs `op` for every item concurrently (each on its own slot) and returns the results in
    /// order.
    async fn each<I, T, F, Fut>(&self, op: &'static str, items: Vec<I>, mut f: F) -> Result<Vec<T>>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: FnMut(Self, I) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let mut tasks = JoinSet::new();
        let count = items.len();
        for (index, item) in items.into_iter().enumerate() {
            let task = f(self.clone(), item);
            tasks.spawn(async move { (index, task.await) });
        }
        let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            let (index, value) = joined.map_err(|err| Error::backend("redis", op, err))?;
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(value);
            }
        }
        results
            .into_iter()
            .map(|value| value.ok_or_else(|| Error::backend("redis", op, "a task went missing")))
            .collect()
    }

    async fn list_cluster(&self, user: &UserId, limit: usize, mut bound: String) -> Result<(Vec<String>, bool)> {
        const OP: &str = "list_user_sessions";
        let key = self.keys().user(user);
        let now = self.now();
        let mut found = Vec::new();
        let mut more = false;
        loop {
            let want = limit + 1 - found.len();
            let cmd = redis::cmd("ZREVRANGEBYLEX").arg(&key).arg(&bound).arg("-").arg("LIMIT").arg(0).arg(want).clone();
            let entries: Vec<String> = self.caller().command(OP, Effect::Read, &cmd).await?;
            let owner = user.as_str().to_owned();
            let states = self
                .each(OP, entries.clone(), move |store, entry| {
                    let owner = owner.clone();
                    async move { store.judge_entry(&entry, &owner, now).await }
                })
                .await?;
            let mut dangling = Vec::new();
            for (entry, state) in entries.iter().zip(states) {
                bound = format!("({entry}");
                match state? {
                    EntryState::Live if found.len() == limit => {
                        more = true;
                        break;
                    }
                    EntryState::Live => found.push(entry.clone()),
                    EntryState::Dangling => dangling.push(entry.clone()),
                    EntryState::Pending => {}
                    EntryState::Corrupt(err) => return Err(err),
                }
            }
            if !dangling.is_empty() {
                self.caller()
                    .command::<()>(OP, Effect::Repeatable, redis::cmd("ZREM").arg(&key).arg(&dangling))
                    .await?;
            }
            if more || entries.len() < want {
                return Ok((found, more));
            }
        }
    }

    async fn judge_entry(&self, entry: &str, owner: &str, now: i64) -> Result<EntryState> {
        let Some((created_ms, id)) = keys::parse_member(entry) else { return Ok(EntryState::Dangling) };
        let keys = self.keys().session(&id);
        let cmd = redis::cmd("HMGET").arg(&keys.record).arg(&["ix", "u", "l", "t"]).clone();
        let fields: Vec<Option<String>> = self.caller().command("list_user_sessions", Effect::Read, &cmd).await?;
        let [ix, user, last, timeout] = fields.as_slice() else {
            return Err(Error::backend("redis", "list_user_sessions", "HMGET answered with the wrong arity"));
        };
        let Some(ix) = ix else {
            let recent = now.saturating_sub(created_ms) < REPAIR_GRACE_MS;
            return Ok(if recent { EntryState::Pending } else { EntryState::Dangling });
        };
        if ix != entry || user.as_deref() != Some(owner) {
            return Ok(EntryState::Dangling);
        }
        let last: i64 = match parse_field(&id, "last_active", last.as_deref()) {
            Ok(last) => last,
            Err(err) => return Ok(EntryState::Corrupt(err)),
        };
        let timeout: i64 = match parse_field(&id, "timeout", timeout.as_deref()) {
            Ok(timeout) => timeout,
            Err(err) => return Ok(EntryState::Corrupt(err)),
        };
        let live = timeout < 0 || now.saturating_sub(last) <= timeout;
        Ok(if live { EntryState::Live } else { EntryState::Dangling })
    }

    /// One purge batch on a cluster: `(removed, entries seen)`.
    async fn purge_batch_cluster(&self) -> Result<(usize, usize)> {
        const OP: &str = "purge_expired";
        let now = self.now();
        let expiry = self.keys().expiry().to_owned();
        let cmd = redis::cmd("ZRANGEBYSCORE")
            .arg(&expiry)
            .arg("-inf")
            .arg(format!("({now}"))
            .arg("LIMIT")
            .arg(0)
            .arg(PURGE_BATCH)
            .clone();
        let due: Vec<String> = self.caller().command(OP, Effect::Read, &cmd).await?;
        let outcomes =
            self.each(OP, due.clone(), move |store, entry| async move { store.purge_one(&entry, now).await }).await?;
        let mut removed = 0;
        let mut drop_entries = Vec::new();
        let mut refile = Vec::new();
        let mut user_entries: Vec<(String, String)> = Vec::new();
        for (entry, outcome) in due.iter().zip(outcomes) {
            let parsed = keys::parse_expiry_entry(entry);
            match (outcome?, parsed) {
                (PurgeOutcome::Refile(at), _) => refile.push((at, entry.clone())),
                (PurgeOutcome::Corrupt, _) | (_, None) => drop_entries.push(entry.clone()),
                (outcome, Some((member, user))) => {
                    if matches!(outcome, PurgeOutcome::Removed) {
                        removed += 1;
                    }
                    drop_entries.push(entry.clone());
                    if let Some(user) = user {
                        user_entries.push((self.keys().user_raw(user), member.to_owned()));
                    }
                }
            }
        }
        if !drop_entries.is_empty() {
            self.caller()
                .command::<()>(OP, Effect::Repeatable, redis::cmd("ZREM").arg(&expiry).arg(&drop_entries))
                .await?;
        }
        if !refile.is_empty() {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&expiry);
            for (at, entry) in &refile {
                cmd.arg(*at).arg(entry);
            }
            self.caller().command::<()>(OP, Effect::Repeatable, &cmd).await?;
        }
        let cleanups = self
            .each(OP, user_entries, |store, (key, member)| async move {
                store.caller().command::<()>(OP, Effect::Repeatable, redis::cmd("ZREM").arg(key).arg(member)).await
            })
            .await?;
        cleanups.into_iter().collect::<Result<()>>()?;
        Ok((removed, due.len()))
    }

    async fn purge_one(&self, entry: &str, now: i64) -> Result<PurgeOutcome> {
        let Some((member, _)) = keys::parse_expiry_entry(entry) else { return Ok(PurgeOutcome::Gone) };
        let Some((created_ms, id)) = keys::parse_member(member) else { return Ok(PurgeOutcome::Gone) };
        let keys = self.keys().session(&id);
        let reply = self.session_script("purge_expired", Effect::Write, &scripts::PURGE_ONE, &keys, &[&member]).await?;
        Ok(match reply.status()? {
            0 if now.saturating_sub(created_ms) < REPAIR_GRACE_MS => {
                PurgeOutcome::Refile(created_ms.saturating_add(REPAIR_GRACE_MS))
            }
            1 => PurgeOutcome::Removed,
            2 => PurgeOutcome::Refile(reply.int(1)?),
            3 => PurgeOutcome::Corrupt,
            _ => PurgeOutcome::Gone,
        })
    }
}

enum PurgeOutcome {
    Removed,
    Refile(i64),
    Corrupt,
    /// Missing or stale: drop the entry and its user-index entry.
    Gone,
}

#[async_trait]
impl Checkpointer for RedisStore {
    async fn version(&self, id: &SessionId) -> Result<u64> {
        let keys = self.keys().session(id);
        let mut invocation = scripts::CP_VERSION.prepare_invoke();
        invocation.key(&keys.record).key(&keys.checkpoints).arg(self.now());
        let reply = self.run("checkpoint_version", Effect::Read, &invocation).await?;
        reply.check(id)?;
        parse_field(id, "checkpoint version", reply.opt_text(1)?.as_deref())
    }

    async fn put(&self, id: &SessionId, checkpoint: NewCheckpoint, expected_version: u64) -> Result<Checkpoint> {
        const OP: &str = "checkpoint_put";
        let checkpoint = checkpoint.check_depth()?;
        let now = self.now();
        let body =
            StoredBody { step: checkpoint.step, node: checkpoint.node.as_deref(), at: now, state: &checkpoint.state };
        let keys = self.keys().session(id);
        let mut invocation = scripts::CP_PUT.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        invocation.arg(now).arg(expected_version).arg(self.inner.checkpoint_retention).arg(Self::json(
            OP,
            "a checkpoint",
            &body,
        )?);
        invocation.arg(op_arg(checkpoint.op));
        for message in &checkpoint.messages {
            invocation.arg(Self::json(OP, "a message", message)?);
        }
        let reply = self.run(OP, writes(checkpoint.op), &invocation).await?;
        match reply.check(id)? {
            status::OK => {}
            status::CONFLICT => {
                let actual = parse_field(id, "checkpoint version", reply.opt_text(1)?.as_deref())?;
                return Err(Error::Conflict { id: id.clone(), expected: expected_version, actual });
            }
            _ => return Err(reply.bad("unknown status")),
        }
        Ok(Checkpoint {
            version: parse_field(id, "checkpoint version", reply.opt_text(1)?.as_deref())?,
            step: checkpoint.step,
            node: checkpoint.node,
            created_at: timestamp(now),
            log_len: parse_field(id, "log length", reply.opt_text(2)?.as_deref())?,
            state: checkpoint.state,
        })
    }

    async fn latest(&self, id: &SessionId) -> Result<Option<Checkpoint>> {
        Ok(self.read_checkpoints(id, "list", 1).await?.into_iter().next())
    }

    async fn checkpoint(&self, id: &SessionId, version: u64) -> Result<Option<Checkpoint>> {
        if version == 0 {
            return Ok(None);
        }
        Ok(self.read_checkpoints(id, "one", version).await?.into_iter().next())
    }

    async fn list(&self, id: &SessionId, limit: usize) -> Result<Vec<Checkpoint>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.read_checkpoints(id, "list", u64::try_from(limit).unwrap_or(u64::MAX)).await
    }

    async fn messages(&self, id: &SessionId, range: Range<u64>) -> Result<Vec<Message>> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let first = clamp_i64(range.start.into());
        let last = clamp_i64((range.end - 1).into());
        let keys = self.keys().session(id);
        let mut invocation = scripts::CP_MESSAGES.prepare_invoke();
        invocation.key(&keys.record).key(&keys.log).arg(self.now()).arg(first).arg(last);
        let reply = self.run("checkpoint_messages", Effect::Read, &invocation).await?;
        match reply.check(id) {
            Ok(_) => {}
            Err(Error::SessionNotFound(_)) => return Ok(Vec::new()),
            Err(err) => return Err(err),
        }
        reply
            .texts_from(1)?
            .iter()
            .map(|raw| serde_json::from_str(raw).map_err(|source| corrupt_json(id, "a logged message", source)))
            .collect()
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        let keys = self.keys().session(id);
        let cmd = redis::cmd("DEL").arg(&keys.checkpoints).arg(&keys.log).clone();
        let deleted: i64 = self.caller().command("checkpoint_delete", Effect::Write, &cmd).await?;
        Ok(deleted > 0)
    }
}

impl RedisStore {
    async fn read_checkpoints(&self, id: &SessionId, mode: &str, n: u64) -> Result<Vec<Checkpoint>> {
        let keys = self.keys().session(id);
        let mut invocation = scripts::CP_READ.prepare_invoke();
        invocation.key(&keys.record).key(&keys.checkpoints).arg(self.now()).arg(mode).arg(n);
        let reply = self.run("checkpoint_read", Effect::Read, &invocation).await?;
        match reply.check(id) {
            Ok(_) => {}
            Err(Error::SessionNotFound(_)) => return Ok(Vec::new()),
            Err(err) => return Err(err),
        }
        let mut checkpoints = Vec::new();
        for index in 1..reply.len() {
            if let Some(blob) = reply.opt_text(index)? {
                checkpoints.push(decode_checkpoint(id, &blob)?);
            }
        }
        Ok(checkpoints)
    }
}
