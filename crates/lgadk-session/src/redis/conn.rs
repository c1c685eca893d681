//! One connection type for a single Redis and a Redis Cluster, and the call wrapper that
//! bounds every call by the response timeout and says what a failed call did.
//!
//! # A single Redis: [`Link`]
//! One multiplexed connection (RESP3), replaced when it is lost. The connection's driver tells
//! the link the moment it sees the server close the socket (a `Disconnection` push: server
//! `timeout`, `CLIENT KILL`, a restart), before any further command is written to it. The link
//! then opens a new connection in the background, retrying for a while if the server is down,
//! and loads every script on it before handing it out. A call therefore never writes to a
//! connection known to be closed; it waits (within its deadline) for the new one.
//!
//! # What a failed call did
//! - It could not get a connection (refused, connect timeout): nothing was sent, so
//!   [`Outcome::NotApplied`].
//! - The server answered with an error that means it did not run the command (`NOSCRIPT`,
//!   `LOADING`, `READONLY`, `MASTERDOWN`, `NOPERM`, cluster redirections): `NotApplied`.
//! - It was sent and no answer came (timeout), or the connection broke while it was in flight:
//!   [`Outcome::Unknown`] for a write, `NotApplied` for a read (which changes nothing).
//!
//! A call whose connection broke while it was in flight is sent once more, on a new connection,
//! when sending it twice cannot apply it twice ([`Effect::Read`], [`Effect::Repeatable`]).
//! Other writes return `Unknown`: the caller decides, and the writes that matter carry an
//! operation id so that the caller can repeat them safely.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use lgadk_core::{Error, Outcome, Result};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, PushInfo, PushKind, RedisError, RedisFuture,
    ScriptInvocation, ServerErrorKind, Value,
};
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::RedisFailure;
use super::scripts;

/// What a call does to stored data; decides its [`Outcome`] on failure and whether it may be
/// sent again after its connection broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Changes nothing (or only repairs, idempotently): always `NotApplied`, re-sent freely.
    Read,
    /// A write that a second delivery cannot apply twice (it carries an operation id, or sets a
    /// value to what it already is): `Unknown` when unanswered, re-sent after a broken
    /// connection.
    Repeatable,
    /// Any other write: `Unknown` when unanswered, never sent twice.
    Write,
}

/// A multiplexed connection: cheap to clone, one per call.
#[derive(Clone)]
pub(crate) enum Connection {
    /// A single Redis (or Valkey, ElastiCache, Memorystore) behind a reconnecting [`Link`].
    Single(Arc<Link>),
    /// A Redis Cluster; routes each command by its key's slot.
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("Single"),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(_) => f.write_str("Cluster"),
        }
    }
}

/// The connection a call runs on.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// How often the link tries to reconnect on its own after losing its connection, and the
/// pause between tries (doubling up to the cap): about ten seconds in all. Calls made after
/// that try again themselves.
const BACKGROUND_ATTEMPTS: u32 = 40;
const BACKGROUND_MIN_DELAY: Duration = Duration::from_millis(25);
const BACKGROUND_MAX_DELAY: Duration = Duration::from_millis(250);

/// The connection of a single Redis, replaced when lost (see the module docs).
pub(crate) struct Link {
    client: Client,
    config: AsyncConnectionConfig,
    connection_timeout: Duration,
    state: watch::Sender<State>,
}

#[derive(Clone)]
enum State {
    /// A connection with every script loaded. `lost` is set once its driver saw it close.
    Ready { conn: MultiplexedConnection, lost: Arc<AtomicBool> },
    /// A new connection is being opened.
    Connecting,
    /// The last attempt failed with this error.
    Down(RedisError),
}

impl Link {
    /// Opens the first connection and loads every script on it.
    pub(crate) async fn connect(
        client: Client,
        config: AsyncConnectionConfig,
        connection_timeout: Duration,
    ) -> redis::RedisResult<Arc<Self>> {
        let link = Arc::new(Self { client, config, connection_timeout, state: watch::Sender::new(State::Connecting) });
        let ready = link.open().await?;
        link.state.send_replace(ready);
        Ok(link)
    }

    /// A live connection: the current one, or a new one once it is open. Fails with the
    /// error of the attempt it waited for.
    async fn acquire(self: &Arc<Self>) -> redis::RedisResult<(MultiplexedConnection, Arc<AtomicBool>)> {
        let mut changes = self.state.subscribe();
        let mut waited = false;
        loop {
            let mut found = None;
            let mut start = false;
            self.state.send_if_modified(|state| match state {
                State::Ready { conn, lost } if !lost.load(Ordering::SeqCst) => {
                    found = Some(Ok((conn.clone(), Arc::clone(lost))));
                    false
                }
                State::Connecting => false,
                State::Down(err) if waited => {
                    found = Some(Err(err.clone()));
                    false
                }
                _ => {
                    *state = State::Connecting;
                    start = true;
                    true
                }
            });
            if let Some(found) = found {
                return found;
            }
            if start {
                self.spawn_reconnect(1);
            }
            waited = true;
            // The sender lives in `self`, so this only returns once the state changed.
            let _ = changes.changed().await;
        }
    }

    /// Marks `lost` and, if it is the current connection, starts replacing it in the
    /// background.
    fn lose(self: &Arc<Self>, lost: &AtomicBool) {
        lost.store(true, Ordering::SeqCst);
        let mut start = false;
        self.state.send_if_modified(|state| match state {
            State::Ready { lost, .. } if lost.load(Ordering::SeqCst) => {
                *state = State::Connecting;
                start = true;
                true
            }
            _ => false,
        });
        if start {
            self.spawn_reconnect(BACKGROUND_ATTEMPTS);
        }
    }

    /// Opens a new connection on a task of its own (it finishes even when the call that
    /// started it gives up), trying up to `attempts` times while no call started another.
    fn spawn_reconnect(self: &Arc<Self>, attempts: u32) {
        let link = Arc::clone(self);
        let task = async move {
            let mut delay = BACKGROUND_MIN_DELAY;
            for attempt in 1..=attempts {
                let next = match link.open().await {
                    Ok(ready) => ready,
                    Err(err) => State::Down(err),
                };
                let failed = matches!(next, State::Down(_));
                link.state.send_replace(next);
                if !failed || attempt == attempts {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKGROUND_MAX_DELAY);
                // Go on only if nothing else happened meanwhile (a call may have reconnected).
                if !link.state.send_if_modified(|state| {
                    let down = matches!(state, State::Down(_));
                    if down {
                        *state = State::Connecting;
                    }
                    down
                }) {
                    return;
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(task)),
            Err(_) => {
                let err = RedisError::from((ErrorKind::Client, "no tokio runtime to reconnect on"));
                self.state.send_replace(State::Down(err));
            }
        }
    }

    /// A new connection whose driver reports its own end, with every script loaded.
    async fn open(self: &Arc<Self>) -> redis::RedisResult<State> {
        let lost = Arc::new(AtomicBool::new(false));
        let (flag, link) = (Arc::clone(&lost), Arc::downgrade(self));
        let config = self.config.clone().set_push_sender(move |info: PushInfo| -> std::result::Result<(), ()> {
            if info.kind == PushKind::Disconnection {
                on_disconnect(&link, &flag);
            }
            Ok(())
        });
        let connecting = self.client.get_multiplexed_async_connection_with_config(&config);
        let mut conn = match tokio::time::timeout(self.connection_timeout, connecting).await {
            Ok(conn) => conn?,
            Err(_) => return Err(RedisError::from((ErrorKind::Io, "connection timed out"))),
        };
        let mut load = redis::pipe();
        for source in scripts::ALL {
            load.cmd("SCRIPT").arg("LOAD").arg(*source);
        }
        load.query_async::<Vec<String>>(&mut conn).await?;
        Ok(State::Ready { conn, lost })
    }
}

fn on_disconnect(link: &Weak<Link>, lost: &AtomicBool) {
    match link.upgrade() {
        Some(link) => link.lose(lost),
        None => lost.store(true, Ordering::SeqCst),
    }
}

/// Sends calls with a deadline: the client's own response timeout plus a small margin, so a
/// call waiting on a reconnect (which the response timeout does not cover) cannot hang.
#[derive(Clone)]
pub(crate) struct Caller {
    conn: Connection,
    deadline: Duration,
}

/// Added to the response timeout for the outer deadline, so the client's own (more specific)
/// timeout error normally wins.
const DEADLINE_MARGIN: Duration = Duration::from_millis(25);

impl Caller {
    pub(crate) fn new(conn: Connection, response_timeout: Duration) -> Self {
        Self { conn, deadline: response_timeout + DEADLINE_MARGIN }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        !matches!(self.conn, Connection::Single(_))
    }

    /// Runs `call` within the deadline, once more on a new connection if the first one broke
    /// under it and `effect` allows (see the module docs).
    async fn bounded<T, F>(&self, op: &'static str, effect: Effect, call: impl Fn(Conn) -> F) -> Result<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        // Tokio's timer and sockets would panic without one; say so instead.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime { op });
        }
        let deadline = Instant::now() + self.deadline;
        // Whether this call was already sent once, on a connection that broke under it: from
        // then on, its outcome is unknown whatever happens to the second sending.
        let mut sent_again = false;
        loop {
            let unsent = if sent_again { Outcome::Unknown } else { Outcome::NotApplied };
            let (conn, link) = match &self.conn {
                Connection::Single(link) => match tokio::time::timeout_at(deadline, link.acquire()).await {
                    Ok(Ok((conn, lost))) => (Conn::Single(conn), Some((link, lost))),
                    // Nothing was sent this time.
                    Ok(Err(err)) => return Err(failure(op, effect, unsent, RedisFailure::Command(err))),
                    Err(_) => return Err(failure(op, effect, unsent, RedisFailure::NoConnection(self.deadline))),
                },
                #[cfg(feature = "redis-cluster")]
                Connection::Cluster(conn) => (Conn::Cluster(conn.clone()), None),
            };
            let err = match tokio::time::timeout_at(deadline, call(conn)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(err)) => err,
                Err(_) => return Err(failure(op, effect, Outcome::Unknown, RedisFailure::Timeout(self.deadline))),
            };
            let broken = err.is_unrecoverable_error();
            if broken && let Some((link, lost)) = link {
                link.lose(&lost);
            }
            if broken && !sent_again && effect != Effect::Write {
                tracing::debug!(error = %err, op, "connection broke under the call; sending it again on a new one");
                sent_again = true;
                continue;
            }
            let outcome = if sent_again { Outcome::Unknown } else { outcome_of(&err) };
            return Err(failure(op, effect, outcome, RedisFailure::Command(err)));
        }
    }

    /// Runs a prepared script (EVALSHA, reloading it on NOSCRIPT).
    pub(crate) async fn script(
        &self,
        op: &'static str,
        effect: Effect,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<Vec<Value>> {
        self.bounded(op, effect, |mut conn| async move { invocation.invoke_async::<Vec<Value>>(&mut conn).await }).await
    }

    /// Runs one plain command.
    pub(crate) async fn command<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        effect: Effect,
        cmd: &Cmd,
    ) -> Result<T> {
        self.bounded(op, effect, |mut conn| async move { cmd.query_async::<T>(&mut conn).await }).await
    }
}

/// The error of a failed call: a read never changed anything, whatever happened.
fn failure(op: &'static str, effect: Effect, outcome: Outcome, cause: RedisFailure) -> Error {
    match (effect, outcome) {
        (Effect::Read, _) | (_, Outcome::NotApplied) => Error::backend("redis", op, cause),
        _ => Error::backend_unknown("redis", op, cause),
    }
}

/// What a write that failed with `err` did: nothing when the server refused to run it or it
/// was never sent; unknown when it may have run.
fn outcome_of(err: &RedisError) -> Outcome {
    if err.is_connection_refusal() {
        return Outcome::NotApplied;
    }
    match err.kind() {
        ErrorKind::Server(
            ServerErrorKind::NoScript
            | ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::CrossSlot
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::NoPerm,
        )
        | ErrorKind::Client
        | ErrorKind::InvalidClientConfig
        | ErrorKind::AuthenticationFailed => Outcome::NotApplied,
        _ => Outcome::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_applied_nothing_and_lost_answers_are_unknown() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(outcome_of(&refused), Outcome::NotApplied);
        let broken = RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(outcome_of(&broken), Outcome::Unknown);
        let timed_out = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(outcome_of(&timed_out), Outcome::Unknown);
        let cause = || RedisFailure::Timeout(Duration::from_millis(1));
        assert!(matches!(
            failure("get", Effect::Read, Outcome::Unknown, cause()),
            Error::Backend { outcome: Outcome::NotApplied, .. }
        ));
        assert!(matches!(
            failure("end", Effect::Write, Outcome::Unknown, cause()),
            Error::Backend { outcome: Outcome::Unknown, .. }
        ));
    }
}
