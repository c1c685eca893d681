//! [`PostgresStore`]: sessions, checkpoints and the message log in PostgreSQL, shared by every
//! process that connects to the database.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk_core::Result<()> {
//! use lgadk_core::{Interaction, NewSession, SessionStore};
//! use lgadk_session::PostgresStore;
//!
//! let store = PostgresStore::builder("postgres://app@127.0.0.1:5433/app").with_schema("myapp").connect().await?;
//! let session = store.create(NewSession::default()).await?;
//! store.track_interaction(&session.id, Interaction::tokens(12, 30)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Schema
//! Everything lives in one schema (default `lgadk`, [`PostgresStoreBuilder::with_schema`]), so
//! several applications or tests can share a database, as Redis prefixes do. `connect` applies
//! the embedded migrations the schema lacks, once, under an advisory lock (see `schema.rs`):
//!
//! | table | holds |
//! |---|---|
//! | `sessions` | one row per session: times in ms, the timeout (`NULL`: never), the owner, metadata (`jsonb`) with the size of each key's field, the four counters, the latest checkpoint version and log length, the last 16 operation ids applied; indexed by `(user_id, created_ms, id)` for listing and by the filed deadline for purge |
//! | `checkpoints` | `(session_id, version)` → step, node, time, log length, state (`json`) |
//! | `messages` | `(session_id, pos)` → one logged message (`json`), append-only |
//! | `lgadk_migrations` | the migrations applied |
//!
//! Checkpoints and messages reference their session with `ON DELETE CASCADE`, so ending or
//! purging a session removes them in the same statement.
//!
//! # One round trip per operation
//! Every operation is one statement: a plain `SELECT`/`UPDATE`/`DELETE`, a statement with CTEs
//! (purge, checkpointer `delete`), or one `SELECT` of a PL/pgSQL function installed by the
//! migrations (`create`, `update_metadata`, checkpoint `put`, `commit_turn`), which runs as one
//! statement, atomically. The store's clock is bound as a parameter to every statement, so
//! expiry follows the same rule as in memory and Redis: live while `now - last_active <=
//! timeout`. Counters are `n = n + 1 … RETURNING` (saturating at `i64::MAX`); metadata is merged
//! with `jsonb ||` and its size checked in the same function, from per-key sizes counted as
//! serde_json counts them; checkpoint `put` is compare-and-set on the version inside the
//! function, appends the log and drops checkpoints past the retention in the same statement.
//! A graph turn is two statements, warm or cold: `begin_turn` (one `SELECT`: the session, its
//! version and, when the caller's cache is stale, the latest checkpoint with its log) and
//! `commit_turn`.
//!
//! No statement depends on state left by another one on the same connection (no `SET`, no
//! temporary tables, no session advisory locks; the migrations' lock is transaction-scoped), so
//! the store works through PgBouncer in transaction mode. Statements are prepared and cached
//! per connection by default (one round trip each once prepared). Through a pooler that does
//! not track prepared statements, turn the cache off with
//! [`PostgresStoreBuilder::with_statement_cache_capacity`]`(0)`: each statement then goes as
//! one simple query with its values written in as hex-encoded literals, still one round trip.
//! (sqlx's own unprepared path parses in one round trip and executes in the next, which a
//! transaction-mode pooler may send to two different server connections.)
//!
//! | operation | statements (round trips, statement prepared) |
//! |---|---|
//! | every `SessionStore`, `Checkpointer` and `TurnStore` call | 1 |
//! | `purge_expired` | 1 per 256 sessions come due (1 when none is) |
//! | `connect` | a few, in one transaction: lock, schema check, pending migrations |
//!
//! # Operation ids
//! `create`, `track_interaction`, checkpoint `put` and `commit_turn` take the [`OpId`] of their
//! input (if any) and record it in the session row (`<32 hex>` or, for a checkpoint,
//! `<32 hex>,<version>,<log_len>,<log_start>`), keeping the last [`OP_ID_WINDOW`](lgadk_core::OP_ID_WINDOW);
//! a call whose op id is there changes nothing and answers as the first one did.
//!
//! # Failures
//! A failed call is `Error::Backend` with an [`Outcome`]: `NotApplied` when no connection
//! could be had within the acquire timeout (nothing was sent), when the server answered with
//! an error that leaves the connection open (the statement, its own transaction, was rolled
//! back), and for every read; `Unknown` when a write was sent and no answer came within the
//! statement timeout, or the connection broke or was ended by the server while the write was
//! in flight (a server may end it after committing, before answering). A connection that
//! failed that way is closed, not returned to the pool, and so are the idle ones (a server
//! restart or `pg_terminate_backend` ends them all); so is a connection whose caller stopped
//! waiting mid-statement. A call whose connection broke is sent once more, on a new
//! connection, when that cannot apply it twice: reads, `touch`, `end`, checkpointer `delete`,
//! `purge_expired`, and writes with an op id; any call, when the server had closed the
//! connection for being idle (`idle_session_timeout`: the call never ran). A connection idle
//! for longer than the idle check
//! ([`PostgresStoreBuilder::with_idle_check`], 10 s) is pinged before it is used, so one that
//! a server or a firewall closed meanwhile costs a round trip, not a failed call. Stored data
//! that does not decode (a metadata value, a checkpoint, a logged message) is `Error::Corrupt`
//! naming the session.
//!
//! # Expiry and purge
//! Each session is filed for purge under its first deadline (`filed_deadline_ms`, indexed);
//! later writes do not move it, so a turn never updates an index. `purge_expired` takes up to
//! 256 sessions filed before `now` (`FOR UPDATE SKIP LOCKED`, so purges in several processes
//! share the work), deletes the expired ones and re-files the others under their current
//! deadline, in one statement per batch: its cost follows what came due.
//!
//! # Operating it
//! - **Run a reaper.** Expired sessions are absent at once, but only
//!   [`SessionManager::spawn_reaper`](crate::SessionManager::spawn_reaper) (`purge_expired`)
//!   deletes their rows; run it in one or a few processes (purges share the work through
//!   `SKIP LOCKED`).
//! - **Connections.** Each store opens up to its pool size (default 10) and keeps them; size the
//!   pools of the fleet under the server's `max_connections`, or put PgBouncer in front
//!   (transaction mode, statement cache 0). A call waits at most the acquire timeout for a
//!   connection, and a statement at most the statement timeout.
//! - **Migrations.** `connect` migrates by default; where the application's role may not run
//!   DDL, migrate once with the owner and connect with
//!   [`with_migrations(false)`](PostgresStoreBuilder::with_migrations).
//! - **Durability** is the server's: with `synchronous_commit = on` (the default) an
//!   acknowledged write survives a crash of the server (the `postgres_faults` test stops it
//!   with SIGQUIT, `fsync` on, and finds every acknowledged interaction); with it `off`, a crash
//!   can lose the last few hundred milliseconds of acknowledged writes, never part of one.
//!
//! # Limits
//! `jsonb` cannot hold the character U+0000: metadata containing it fails with
//! `Error::Backend` (`NotApplied`). Graph states and logged messages are stored as `json` text
//! and may contain it.

mod builder;
mod checkpointer;
mod error;
pub mod memory;
mod pool;
mod schema;
mod session;
mod statements;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lgadk_core::{Clock, Error, Message, OpId, Outcome, Result};
use serde::Serialize;
use sqlx::Postgres;
use sqlx::postgres::{PgArguments, PgRow};

pub use builder::{
    DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_SCHEMA, DEFAULT_STATEMENT_TIMEOUT, PostgresStoreBuilder,
};
use error::PgFailure;
pub use memory::{PostgresMemoryStore, PostgresMemoryStoreBuilder};
pub use pool::DEFAULT_IDLE_CHECK;
use pool::{AcquireError, ConnPool};
use statements::Statements;

/// Longest stored timeout (2^53 - 1 ms, about 285,000 years), so `last_active + timeout`
/// never overflows.
const MAX_TIMEOUT_MS: u64 = (1 << 53) - 1;
/// Sessions handled per purge statement.
const PURGE_BATCH: i64 = 256;

/// Sessions and checkpoints in PostgreSQL, shared by every process that connects to it.
///
/// Implements [`SessionStore`](lgadk_core::SessionStore),
/// [`Checkpointer`](lgadk_core::Checkpointer) and [`TurnStore`](lgadk_core::TurnStore); every
/// operation is one statement, atomic against concurrent callers in any number of processes.
/// See the [module docs](self) for the schema, the failures and the cost of each operation.
/// Cloning is cheap: clones share one connection pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: ConnPool,
    schema: String,
    sql: Statements,
    clock: Arc<dyn Clock>,
    statement_timeout: Duration,
    /// Statements are prepared and cached per connection; otherwise sent as simple queries
    /// with their values inline (statement cache capacity 0).
    prepare: bool,
    metadata_limit: usize,
    checkpoint_retention: usize,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("idle_connections", &self.inner.pool.idle_count())
            .field("statement_timeout", &self.inner.statement_timeout)
            .field("metadata_limit", &self.inner.metadata_limit)
            .field("checkpoint_retention", &self.inner.checkpoint_retention)
            .finish_non_exhaustive()
    }
}

/// What a statement does to stored data: decides its [`Outcome`] on failure and whether it
/// may be sent again after its connection broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Changes nothing: always `NotApplied`, re-sent freely.
    Read,
    /// A write that a second delivery cannot apply twice (it carries an operation id, or sets
    /// a value to what it already is): `Unknown` when unanswered, re-sent after a broken
    /// connection.
    Repeatable,
    /// Any other write: `Unknown` when unanswered, never sent twice.
    Write,
}

/// How a write with this op id may be sent.
fn writes(op: Option<OpId>) -> Effect {
    if op.is_some() { Effect::Repeatable } else { Effect::Write }
}

/// An operation id as statements take it: 32 hex digits, or `""` for none.
fn op_arg(op: Option<OpId>) -> String {
    op.map(|op| op.to_string()).unwrap_or_default()
}

fn clamp_i64(value: u128) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One of the store's statements with its parameters, sent either prepared (parameters bound)
/// or, without the statement cache, as one simple query with the parameters written in as
/// literals (see [`Statement::inline`]).
#[derive(Clone)]
struct Statement<'q> {
    sql: Arc<str>,
    params: Vec<Param<'q>>,
}

/// A statement's parameter.
#[derive(Clone, Copy)]
enum Param<'q> {
    Text(Option<&'q str>),
    Int(Option<i64>),
    Bool(bool),
    Texts(&'q [String]),
}

/// What can be bound to a [`Statement`].
trait IntoParam<'q> {
    fn into_param(self) -> Param<'q>;
}

impl<'q> IntoParam<'q> for &'q str {
    fn into_param(self) -> Param<'q> {
        Param::Text(Some(self))
    }
}

impl<'q> IntoParam<'q> for Option<&'q str> {
    fn into_param(self) -> Param<'q> {
        Param::Text(self)
    }
}

impl<'q> IntoParam<'q> for i64 {
    fn into_param(self) -> Param<'q> {
        Param::Int(Some(self))
    }
}

impl<'q> IntoParam<'q> for Option<i64> {
    fn into_param(self) -> Param<'q> {
        Param::Int(self)
    }
}

impl<'q> IntoParam<'q> for bool {
    fn into_param(self) -> Param<'q> {
        Param::Bool(self)
    }
}

impl<'q> IntoParam<'q> for &'q Vec<String> {
    fn into_param(self) -> Param<'q> {
        Param::Texts(self)
    }
}

/// A statement of the store (shared text, nothing copied), to bind parameters to.
fn query<'q>(text: &Arc<str>) -> Statement<'q> {
    Statement { sql: Arc::clone(text), params: Vec::new() }
}

impl<'q> Statement<'q> {
    /// Binds the next parameter (`$1`, `$2`, … in order).
    fn bind(mut self, value: impl IntoParam<'q>) -> Self {
        self.params.push(value.into_param());
        self
    }

    /// The statement for the extended protocol, prepared and cached per connection.
    fn prepared(&self) -> PgQuery<'q> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(Arc::clone(&self.sql)));
        for param in &self.params {
            query = match *param {
                Param::Text(text) => query.bind(text),
                Param::Int(int) => query.bind(int),
                Param::Bool(flag) => query.bind(flag),
                Param::Texts(texts) => query.bind(texts),
            };
        }
        query
    }

    /// The statement as one simple query, each `$n` replaced by its value as a literal of
    /// the type it is bound as: text as `convert_from(E'\\x<hex>'::bytea, 'UTF8')` (hex digits
    /// only, so nothing a value holds can end the literal, whatever the server's string
    /// settings), integers in decimal, `NULL`s typed. One round trip, nothing prepared:
    /// what a pooler in transaction mode (PgBouncer) passes through unchanged.
    fn inline(&self) -> String {
        fn text(out: &mut String, value: &str) {
            out.push_str("convert_from(E'\\\\x");
            for byte in value.bytes() {
                out.push_str(&format!("{byte:02x}"));
            }
            out.push_str("'::bytea, 'UTF8')");
        }
        let mut out = String::with_capacity(self.sql.len() + 64);
        let mut rest = &*self.sql;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
            let index: Option<usize> = rest[at + 1..at + 1 + digits].parse().ok();
            match index.and_then(|n| n.checked_sub(1)).and_then(|n| self.params.get(n)) {
                Some(Param::Text(Some(value))) => text(&mut out, value),
                Some(Param::Text(None)) => out.push_str("NULL::text"),
                Some(Param::Int(Some(value))) => out.push_str(&format!("CAST({value} AS bigint)")),
                Some(Param::Int(None)) => out.push_str("NULL::bigint"),
                Some(Param::Bool(value)) => out.push_str(if *value { "true" } else { "false" }),
                Some(Param::Texts(values)) => {
                    out.push_str("CAST(ARRAY[");
                    for (i, value) in values.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        text(&mut out, value);
                    }
                    out.push_str("]::text[] AS text[])");
                }
                // Not a parameter (no statement has one): kept as written.
                None => out.push_str(&rest[at..at + 1 + digits]),
            }
            rest = &rest[at + 1 + digits..];
        }
        out.push_str(rest);
        out
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

impl PostgresStore {
    /// A builder for a store on the database at `url`
    /// (`postgres://user[:password]@host[:port]/database[?sslmode=…]`).
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder::new(url.into())
    }

    /// The schema the store's tables live in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Closes the idle connections and makes every later call fail with `Error::Backend`
    /// (`NotApplied`); calls in flight finish first. For a clean shutdown.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn sql(&self) -> &Statements {
        &self.inner.sql
    }

    /// Runs the statement `build` makes on a pooled connection and returns its rows.
    ///
    /// `NotApplied` when no connection could be had or the server refused the statement;
    /// for a write, `Unknown` when no answer came within the statement timeout or the
    /// connection broke under it. Reads and repeatable writes whose connection broke are sent
    /// once more on a new connection.
    async fn rows<'q>(
        &self,
        op: &'static str,
        effect: Effect,
        build: impl Fn() -> Statement<'q>,
    ) -> Result<Vec<PgRow>> {
        let pool = &self.inner.pool;
        let statement = build();
        let inline = (!self.inner.prepare).then(|| statement.inline());
        let mut fresh = false;
        loop {
            let mut pooled =
                pool.acquire(fresh).await.map_err(|err| Error::backend("postgres", op, PgFailure::Acquire(err)))?;
            let Some(conn) = pooled.conn() else {
                return Err(Error::backend("postgres", op, PgFailure::Acquire(AcquireError::Closed)));
            };
            // Dropped mid-statement (a timeout here, or the caller's), `pooled` closes the
            // connection instead of returning it to the pool.
            let fetch = async {
                match &inline {
                    Some(sql) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.as_str())).fetch_all(conn).await,
                    None => statement.prepared().fetch_all(conn).await,
                }
            };
            let sent = tokio::time::timeout(self.inner.statement_timeout, fetch).await;
            let err = match sent {
                Ok(Ok(rows)) => {
                    pooled.reuse();
                    return Ok(rows);
                }
                Ok(Err(err)) => err,
                Err(_) => {
                    let failure = PgFailure::Timeout(self.inner.statement_timeout);
                    return Err(failed(op, effect, Outcome::Unknown, failure));
                }
            };
            if is_server_error(&err) && !is_connection_fatal(&err) {
                // The server ran the statement (its own transaction) and rolled it back; the
                // connection is fine.
                pooled.reuse();
                return Err(Error::backend("postgres", op, PgFailure::Statement(err)));
            }
            // The connection is gone, and the idle ones most likely with it. A server that
            // ends a connection (shutdown, `pg_terminate_backend`) may do so after committing
            // the statement, before its answer: a write's outcome is unknown either way, unless
            // the server ended it for being idle (then the statement never ran).
            drop(pooled);
            pool.discard_idle();
            let never_ran = is_idle_termination(&err);
            if !fresh && (never_ran || (effect != Effect::Write && (is_server_error(&err) || is_connection_lost(&err))))
            {
                tracing::debug!(op, error = %err, "connection lost; sending once more on a new one");
                fresh = true;
                continue;
            }
            let outcome = if never_ran { Outcome::NotApplied } else { Outcome::Unknown };
            return Err(failed(op, effect, outcome, PgFailure::Statement(err)));
        }
    }

    fn json(op: &'static str, what: &'static str, value: &impl Serialize) -> Result<String> {
        lgadk_core::json::to_string(value).map_err(|err| {
            err.into_error(what, |source| Error::backend("postgres", op, PgFailure::BadJson { what, source }))
        })
    }
}

/// `Unknown` only for a write; a read never changes anything.
fn failed(op: &'static str, effect: Effect, outcome: Outcome, failure: PgFailure) -> Error {
    match (effect, outcome) {
        (Effect::Read, _) | (_, Outcome::NotApplied) => Error::backend("postgres", op, failure),
        _ => Error::backend_unknown("postgres", op, failure),
    }
}

/// The server answered with an error: the statement did not apply.
fn is_server_error(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(_))
}

/// A server error that also ends the connection (shutdown, terminated backend).
fn is_connection_fatal(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code.starts_with("57P") || code.starts_with("08"))
}

/// The server closed the connection because it sat idle (`idle_session_timeout`): whatever was
/// sent on it afterwards never ran.
fn is_idle_termination(err: &sqlx::Error) -> bool {
    err.as_database_error().and_then(|db| db.code()).is_some_and(|code| code == "57P05")
}

/// The connection broke (rather than the statement failing).
fn is_connection_lost(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed)
}

/// Column readers: a value of the wrong shape is a bad reply, not bad stored data.
mod decode {
    use lgadk_core::session::timestamp;
    use lgadk_core::{Checkpoint, Error, Metadata, Result, Session, SessionId, SessionStats, UserId};
    use sqlx::Row;
    use sqlx::postgres::PgRow;

    use super::{Effect, Message, PgFailure, failed};

    /// The reader of one statement's rows.
    pub(crate) struct Rows<'a> {
        pub(crate) op: &'static str,
        pub(crate) effect: Effect,
        pub(crate) id: &'a SessionId,
    }

    impl Rows<'_> {
        fn bad(&self, detail: String) -> Error {
            failed(self.op, self.effect, lgadk_core::Outcome::Unknown, PgFailure::BadReply { op: self.op, detail })
        }

        pub(crate) fn get<'r, T>(&self, row: &'r PgRow, index: usize) -> Result<T>
        where
            T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
        {
            row.try_get(index).map_err(|err| self.bad(format!("column {index}: {err}")))
        }

        /// A stored count (never negative as lgadk writes it).
        pub(crate) fn count(&self, row: &PgRow, index: usize, column: &'static str) -> Result<u64> {
            let value: i64 = self.get(row, index)?;
            u64::try_from(value).map_err(|_| Error::corrupt(self.id, PgFailure::OutOfRange { column, value }))
        }

        pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, text: &str, what: &'static str) -> Result<T> {
            serde_json::from_str(text).map_err(|source| Error::corrupt(self.id, PgFailure::BadJson { what, source }))
        }

        /// The four counters at `first..first + 4`, then the analytics per agent (`agents`,
        /// `{agent: [interactions, tokens in, tokens out, µs]}`) at `first + 4`.
        pub(crate) fn stats(&self, row: &PgRow, first: usize) -> Result<SessionStats> {
            let agents: String = self.get(row, first + 4)?;
            let agents: std::collections::BTreeMap<String, [u64; 4]> = self.json(&agents, "agents")?;
            Ok(SessionStats {
                interactions: self.count(row, first, "interactions")?,
                total_tokens_in: self.count(row, first + 1, "tokens_in")?,
                total_tokens_out: self.count(row, first + 2, "tokens_out")?,
                total_response_time: std::time::Duration::from_micros(self.count(row, first + 3, "response_us")?),
                agents: agents
                    .into_iter()
                    .map(|(agent, [interactions, tokens_in, tokens_out, us])| {
                        let time = std::time::Duration::from_micros(us);
                        (agent, lgadk_core::AgentStats { interactions, tokens_in, tokens_out, time })
                    })
                    .collect(),
            })
        }

        pub(crate) fn metadata(&self, text: &str) -> Result<Metadata> {
            self.json(text, "metadata")
        }

        /// A session from the columns `statements::SESSION_COLUMNS` lists, at `0..10`.
        pub(crate) fn session(&self, row: &PgRow) -> Result<Session> {
            let user: Option<String> = self.get(row, 0)?;
            let user_id = match user {
                Some(user) => Some(UserId::parse(&user).map_err(|err| Error::corrupt(self.id, err))?),
                None => None,
            };
            let timeout: Option<i64> = self.get(row, 3)?;
            let timeout = match timeout {
                Some(ms) => Some(std::time::Duration::from_millis(u64::try_from(ms).map_err(|_| {
                    Error::corrupt(self.id, PgFailure::OutOfRange { column: "timeout_ms", value: ms })
                })?)),
                None => None,
            };
            let metadata: String = self.get(row, 4)?;
            Ok(Session {
                id: self.id.clone(),
                user_id,
                created_at: timestamp(self.get(row, 1)?),
                last_active: timestamp(self.get(row, 2)?),
                timeout,
                metadata: self.metadata(&metadata)?,
                stats: self.stats(row, 5)?,
            })
        }

        /// A checkpoint from the columns `statements::CHECKPOINT_COLUMNS` lists, at
        /// `first..first + 7`; `None` when the version is `NULL` (an outer join found none).
        pub(crate) fn checkpoint(&self, row: &PgRow, first: usize) -> Result<Option<Checkpoint>> {
            let version: Option<i64> = self.get(row, first)?;
            if version.is_none() {
                return Ok(None);
            }
            let state: String = self.get(row, first + 5)?;
            Ok(Some(Checkpoint {
                version: self.count(row, first, "version")?,
                step: self.count(row, first + 1, "step")?,
                node: self.get(row, first + 2)?,
                created_at: timestamp(self.get(row, first + 3)?),
                log_len: self.count(row, first + 4, "log_len")?,
                log_start: self.count(row, first + 6, "log_start")?,
                state: self.json(&state, "a checkpoint")?,
            }))
        }

        pub(crate) fn messages(&self, bodies: &[String]) -> Result<Vec<Message>> {
            bodies.iter().map(|body| self.json(body, "a logged message")).collect()
        }
    }
}

/// A turn's breakdown by agent as `lgadk_add_agents` takes it: JSON
/// `[[agent, tokens in, tokens out, µs], ...]` (`[]` for none).
pub(crate) fn agent_shares(agents: &[lgadk_core::AgentShare]) -> String {
    let rows: Vec<(&str, u64, u64, u64)> = agents
        .iter()
        .map(|a| (a.agent.as_str(), a.tokens_in, a.tokens_out, u64::try_from(a.time.as_micros()).unwrap_or(u64::MAX)))
        .collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_values_are_hex_literals_of_their_type() {
        let texts = vec!["a".to_owned(), "'); DROP TABLE t; --".to_owned()];
        let sql: Arc<str> = "SELECT $1, $2, $3, $4, $5, $6, $10, $1".into();
        let statement =
            query(&sql).bind("it's").bind(None::<&str>).bind(-7i64).bind(None::<i64>).bind(true).bind(&texts);
        let inline = statement.inline();
        assert_eq!(
            inline,
            "SELECT convert_from(E'\\\\x69742773'::bytea, 'UTF8'), NULL::text, CAST(-7 AS bigint), NULL::bigint, true, \
             CAST(ARRAY[convert_from(E'\\\\x61'::bytea, 'UTF8'),convert_from(E'\\\\x27293b2044524f50205441424c4520743b202d2d'::bytea, 'UTF8')]::text[] AS text[]), \
             $10, convert_from(E'\\\\x69742773'::bytea, 'UTF8')"
        );
        assert!(!inline.contains("DROP"), "values never appear as text");
    }
}
