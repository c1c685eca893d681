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
//! | `P:{<id>}:cp` | hash | checkpoints: field `<version>` → JSON snapshot (with `log_len` and `log_start`), field `v` → latest version, field `s` → the log's first position once a cut moved it |
//! | `P:{<id>}:h` | list | the conversation log from position `s`, one JSON message per element, appended with RPUSH, cut with LTRIM in the script that saves the checkpoint |
//! | `P:u:{<user>}` | sorted set | the user index: members `<created>\|<id>` (created ms as 20 digits), all scored 0, paged with `ZREVRANGEBYLEX` |
//! | `P:x` | sorted set | the expiry index: members `<created>\|<id>\|<user>`, scored by deadline ms |
//!
//! Times are integer milliseconds (response time: microseconds); counters use HINCRBY and
//! saturate at `i64::MAX`.
//!
//! # Operation ids
//! `create`, `track_interaction`, checkpoint `put` and `commit_turn` take the [`OpId`] of
//! their input (if any; a commit records its checkpoint's op id with the put's answer, and its
//! interaction's). Their script records it in field `o` of the session hash, as `<32 hex>=<answer>;`
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
//! | `begin_turn` (with the latest checkpoint and its log when the cache is stale), `commit_turn` | 1 EVALSHA | 1 EVALSHA |
//! | checkpointer `delete` | 1 DEL | 1 DEL |
//!
//! A graph turn on an existing session is therefore two round trips, whether its state is
//! cached or not: `begin_turn`, then `commit_turn` (checkpoint compare-and-set, log append,
//! interaction and metadata merge, atomically). A turn that creates its session adds the
//! `create`. Before these two calls a warm turn took 4 (get, checkpoint version, put, track)
//! and a cold one 5 (get, latest, messages, put, track).
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
mod checkpointer;
mod cluster;
mod conn;
mod decode;
mod error;
mod index;
mod keys;
mod replies;
mod reply;
mod scripts;
mod session;
mod sweep;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use lgadk_core::{Clock, Error, OpId, Result, SessionId};
use serde::Serialize;

pub use builder::{DEFAULT_CONNECTION_TIMEOUT, DEFAULT_PREFIX, DEFAULT_RESPONSE_TIMEOUT, RedisStoreBuilder};
pub(crate) use conn::{Caller, Effect};
pub(crate) use error::RedisFailure;
use keys::Keys;
use reply::{FromScriptReply, Reply};

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
/// Longest stored timeout (2^53 - 1 ms, about 285,000 years): Lua numbers are doubles.
const MAX_TIMEOUT_MS: u64 = (1 << 53) - 1;

/// Sessions and checkpoints in Redis, shared by every process that connects to it.
///
/// Implements [`SessionStore`](lgadk_core::SessionStore),
/// [`Checkpointer`](lgadk_core::Checkpointer) and [`TurnStore`](lgadk_core::TurnStore); every operation is atomic against concurrent
/// callers in any number of processes. See the [module docs](self) for the key layout, expiry,
/// the cost of each operation and the cluster rules. Cloning is cheap: clones share one
/// multiplexed connection, which reconnects in the background after a failure.
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

    /// What a [`RedisMemoryStore`](crate::memory_store::redis::RedisMemoryStore) built on
    /// this store shares with it: the connection, the key prefix and the clock.
    pub(crate) fn shared_parts(&self) -> (Caller, String, Arc<dyn Clock>) {
        (self.inner.caller.clone(), self.inner.keys.prefix().to_owned(), Arc::clone(&self.inner.clock))
    }

    fn caller(&self) -> &Caller {
        &self.inner.caller
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Runs a script for `op` and decodes its reply into `T`, the script's own reply type.
    async fn run<T: FromScriptReply>(
        &self,
        op: &'static str,
        effect: Effect,
        invocation: &redis::ScriptInvocation<'_>,
        context: &T::Context,
    ) -> Result<T> {
        Reply::new(op, self.caller().script(op, effect, invocation).await?).decode(context)
    }

    /// Runs a script that takes session `id`'s four keys and `now` first.
    async fn session_script<T: FromScriptReply<Context = SessionId>>(
        &self,
        op: &'static str,
        effect: Effect,
        script: &redis::Script,
        id: &SessionId,
        args: &[&dyn ToArg],
    ) -> Result<T> {
        let mut invocation = script.prepare_invoke();
        for key in self.keys().session(id).all() {
            invocation.key(key);
        }
        invocation.arg(self.now());
        for arg in args {
            arg.add_to(&mut invocation);
        }
        self.run(op, effect, &invocation, id).await
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
