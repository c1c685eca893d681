//! One connection type for a single Redis and a Redis Cluster, and the call wrapper that
//! bounds every call by the response timeout.

use std::future::Future;
use std::time::Duration;

use lgadk_core::{Error, Result};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, ScriptInvocation, Value};

use super::error::RedisFailure;

/// A multiplexed connection: cheap to clone, one per call.
#[derive(Clone)]
pub(crate) enum Connection {
    /// A single Redis (or Valkey, ElastiCache, Memorystore) behind a reconnecting manager.
    Single(ConnectionManager),
    /// A Redis Cluster; routes each command by its key's slot.
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Connection {
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

    async fn bounded<T>(&self, op: &'static str, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T> {
        match tokio::time::timeout(self.deadline, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(Error::backend("redis", op, RedisFailure::Command(err))),
            Err(_elapsed) => Err(Error::backend("redis", op, RedisFailure::Timeout(self.deadline))),
        }
    }

    /// Runs a prepared script (EVALSHA, reloading it on NOSCRIPT).
    pub(crate) async fn script(&self, op: &'static str, invocation: &ScriptInvocation<'_>) -> Result<Vec<Value>> {
        let mut conn = self.conn.clone();
        self.bounded(op, invocation.invoke_async::<Vec<Value>>(&mut conn)).await
    }

    /// Runs one plain command.
    pub(crate) async fn command<T: redis::FromRedisValue>(&self, op: &'static str, cmd: &Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        self.bounded(op, cmd.query_async::<T>(&mut conn)).await
    }
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
