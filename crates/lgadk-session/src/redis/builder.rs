//! [`RedisStoreBuilder`]: settings, validation and connecting.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use lgadk_core::{Clock, DEFAULT_CHECKPOINT_RETENTION, DEFAULT_METADATA_LIMIT, Error, Result, SystemClock};
use redis::{AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion};

use super::conn::{Caller, Connection, Link};
use super::error::RedisFailure;
use super::keys::Keys;
#[cfg(feature = "redis-cluster")]
use super::scripts;
use super::{Inner, RedisStore};

/// Key prefix used unless [`RedisStoreBuilder::with_prefix`] says otherwise.
pub const DEFAULT_PREFIX: &str = "lgadk";
/// Connection timeout used unless configured otherwise.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// Response timeout used unless configured otherwise (redis-rs' own default).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Pause before the cluster client's second connection attempt, in the connect budget.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(200);

enum Target {
    Single(String),
    #[cfg(feature = "redis-cluster")]
    Cluster(Vec<String>),
}

/// Configures and connects a [`RedisStore`]. Created by [`RedisStore::builder`] (or
/// [`RedisStore::cluster_builder`] with the `redis-cluster` feature).
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lgadk_core::Result<()> {
/// use std::time::Duration;
/// use lgadk_session::RedisStore;
///
/// let store = RedisStore::builder("redis://127.0.0.1:6391/")
///     .with_prefix("myapp") // keys myapp:{<id>}:s, myapp:u:{<user>} …
///     .with_response_timeout(Duration::from_millis(300))
///     .connect()
///     .await?;
/// # drop(store);
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct RedisStoreBuilder {
    target: Target,
    prefix: String,
    connection_timeout: Duration,
    response_timeout: Duration,
    metadata_limit: usize,
    checkpoint_retention: usize,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password, so it is not printed.
        let mode = match self.target {
            Target::Single(_) => "single",
            #[cfg(feature = "redis-cluster")]
            Target::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStoreBuilder")
            .field("mode", &mode)
            .field("prefix", &self.prefix)
            .field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("metadata_limit", &self.metadata_limit)
            .field("checkpoint_retention", &self.checkpoint_retention)
            .field("clock", &self.clock)
            .finish()
    }
}

impl RedisStoreBuilder {
    fn new(target: Target) -> Self {
        Self {
            target,
            prefix: DEFAULT_PREFIX.to_owned(),
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            metadata_limit: DEFAULT_METADATA_LIMIT,
            checkpoint_retention: DEFAULT_CHECKPOINT_RETENTION,
            clock: Arc::new(SystemClock),
        }
    }

    pub(super) fn single(url: String) -> Self {
        Self::new(Target::Single(url))
    }

    #[cfg(feature = "redis-cluster")]
    pub(super) fn cluster(nodes: Vec<String>) -> Self {
        Self::new(Target::Cluster(nodes))
    }

    /// Prefix of every key (default `lgadk`), so several applications can share one Redis:
    /// 1–64 bytes of ASCII letters, digits, `.`, `_`, `:` or `-` (checked by
    /// [`connect`](Self::connect)).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long to wait for a TCP connection (default 1 s).
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How long any call may take before it fails with `Error::Backend` (default 500 ms).
    /// This bounds every call, including one that waits for a reconnect or is sent a second
    /// time on a new connection. A write that got no answer within it fails with
    /// [`Outcome::Unknown`](lgadk_core::Outcome::Unknown).
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
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

    /// Decides expiry and timestamps with `clock` (default: the system clock). Every client of
    /// one Redis should use a synchronized clock: expiry follows the caller's time.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Validates the settings and connects.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a malformed URL or prefix (nothing is sent);
    /// [`Error::Backend`] when Redis cannot be reached within the connection timeout.
    pub async fn connect(self) -> Result<RedisStore> {
        let keys = Keys::new(&self.prefix)?;
        // Reaching the server may take one attempt per retry plus the backoff between them.
        let budget = self.connection_timeout * 2 + RECONNECT_MAX_DELAY + self.response_timeout;
        let conn = match &self.target {
            Target::Single(url) => {
                let invalid =
                    |err: redis::RedisError| Error::InvalidConfig { reason: format!("invalid redis URL: {err}") };
                // RESP3, so the connection reports its own end (a `Disconnection` push) and is
                // replaced before the next command: see `conn.rs`.
                let info = url.as_str().into_connection_info().map_err(invalid)?;
                let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
                let client = redis::Client::open(info.set_redis_settings(settings)).map_err(invalid)?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connection_timeout))
                    .set_response_timeout(Some(self.response_timeout));
                Connection::Single(connecting(budget, Link::connect(client, config, self.connection_timeout)).await?)
            }
            #[cfg(feature = "redis-cluster")]
            Target::Cluster(nodes) => {
                let client = redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(self.connection_timeout)
                    .response_timeout(self.response_timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()
                    .map_err(|err| Error::InvalidConfig { reason: format!("invalid redis cluster nodes: {err}") })?;
                let connect = async {
                    let mut conn = client.get_async_connection().await?;
                    // SCRIPT LOAD goes to every master. redis-rs reconnects to nodes on its
                    // own, unseen; a node that lost its scripts reloads one on NOSCRIPT.
                    for source in scripts::ALL {
                        redis::cmd("SCRIPT").arg("LOAD").arg(*source).query_async::<()>(&mut conn).await?;
                    }
                    Ok(conn)
                };
                Connection::Cluster(connecting(budget, connect).await?)
            }
        };
        Ok(RedisStore {
            inner: Arc::new(Inner {
                caller: Caller::new(conn, self.response_timeout),
                keys,
                clock: self.clock,
                metadata_limit: self.metadata_limit,
                checkpoint_retention: self.checkpoint_retention,
                creates: AtomicU64::new(0),
            }),
        })
    }
}

async fn connecting<T>(budget: Duration, connect: impl Future<Output = redis::RedisResult<T>>) -> Result<T> {
    match tokio::time::timeout(budget, connect).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(err)) => Err(Error::backend("redis", "connect", RedisFailure::Command(err))),
        Err(_) => Err(Error::backend("redis", "connect", RedisFailure::Timeout(budget))),
    }
}
