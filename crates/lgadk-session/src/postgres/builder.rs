//! [`PostgresStoreBuilder`]: settings, validation and connecting.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use lgadk_core::{Clock, DEFAULT_CHECKPOINT_RETENTION, DEFAULT_METADATA_LIMIT, Error, Result, SystemClock};
use sqlx::postgres::PgConnectOptions;

use super::error::PgFailure;
use super::pool::{AcquireError, ConnPool, DEFAULT_IDLE_CHECK};
use super::schema;
use super::statements::Statements;
use super::{Inner, PostgresStore};

/// Schema used unless [`PostgresStoreBuilder::with_schema`] says otherwise.
pub const DEFAULT_SCHEMA: &str = "lgadk";
/// Pool size used unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// How long a call waits for a pooled connection (or to open one) unless configured otherwise.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a statement may run before the call fails, unless configured otherwise.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Configures and connects a [`PostgresStore`]. Created by [`PostgresStore::builder`].
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lgadk_core::Result<()> {
/// use std::time::Duration;
/// use lgadk_session::PostgresStore;
///
/// let store = PostgresStore::builder("postgres://app@127.0.0.1:5433/app")
///     .with_schema("myapp") // tables myapp.sessions, myapp.checkpoints, myapp.messages
///     .with_max_connections(20)
///     .with_statement_timeout(Duration::from_secs(2))
///     .connect()
///     .await?;
/// # drop(store);
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct PostgresStoreBuilder {
    url: String,
    schema: String,
    max_connections: u32,
    acquire_timeout: Duration,
    statement_timeout: Duration,
    statement_cache_capacity: Option<usize>,
    idle_check: Duration,
    migrate: bool,
    metadata_limit: usize,
    checkpoint_retention: usize,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password, so it is not printed.
        f.debug_struct("PostgresStoreBuilder")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("statement_cache_capacity", &self.statement_cache_capacity)
            .field("idle_check", &self.idle_check)
            .field("migrate", &self.migrate)
            .field("metadata_limit", &self.metadata_limit)
            .field("checkpoint_retention", &self.checkpoint_retention)
            .field("clock", &self.clock)
            .finish()
    }
}

impl PostgresStoreBuilder {
    pub(super) fn new(url: String) -> Self {
        Self {
            url,
            schema: DEFAULT_SCHEMA.to_owned(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            statement_cache_capacity: None,
            idle_check: DEFAULT_IDLE_CHECK,
            migrate: true,
            metadata_limit: DEFAULT_METADATA_LIMIT,
            checkpoint_retention: DEFAULT_CHECKPOINT_RETENTION,
            clock: Arc::new(SystemClock),
        }
    }

    /// The schema of the store's tables (default `lgadk`), created if missing, so several
    /// applications can share a database: 1–63 characters of lowercase ASCII letters, digits
    /// and `_`, not starting with a digit (checked by [`connect`](Self::connect)).
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Most connections the pool opens (default 10, at least 1).
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long a call waits for a pooled connection, including opening a new one (default
    /// 3 s). A call that gets none fails with `Error::Backend` and
    /// [`Outcome::NotApplied`](lgadk_core::Outcome::NotApplied): nothing was sent.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How long a statement may take once sent (default 5 s). A write that got no answer
    /// within it fails with [`Outcome::Unknown`](lgadk_core::Outcome::Unknown), and its
    /// connection is closed.
    pub fn with_statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How many prepared statements each connection keeps (sqlx's default, 100, unless set:
    /// more than the store's statements). `0` prepares nothing: each statement is sent as one simple query
    /// with its values written in as literals (hex-encoded text, so no value can break out of
    /// its literal), still one round trip per operation. Use `0` through a pooler in
    /// transaction mode that does not track prepared statements (PgBouncer before 1.21, or
    /// with `max_prepared_statements = 0`): there, a statement prepared in one transaction is
    /// missing, or another client's, in the next.
    pub fn with_statement_cache_capacity(mut self, capacity: usize) -> Self {
        self.statement_cache_capacity = Some(capacity);
        self
    }

    /// How long a pooled connection may sit idle before it is pinged (one round trip) ahead of
    /// its next call (default 10 s). Set it below the shortest idle limit on the way to the
    /// server (`idle_session_timeout`, a pooler's `server_idle_timeout`, a firewall): a write
    /// sent on a connection closed meanwhile fails with `Outcome::Unknown` unless it carries
    /// an op id. `Duration::MAX` never pings.
    pub fn with_idle_check(mut self, idle: Duration) -> Self {
        self.idle_check = idle;
        self
    }

    /// Whether [`connect`](Self::connect) applies the migrations the schema lacks (default:
    /// yes). Off, it only checks that the schema is at the version this lgadk needs and fails
    /// otherwise, so an application role without DDL rights can connect to a schema that a
    /// deploy step (a connect with migrations on, by its owner) migrated.
    pub fn with_migrations(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Largest serialized metadata per session, in bytes (default 64 KiB).
    pub fn with_metadata_limit(mut self, bytes: usize) -> Self {
        self.metadata_limit = bytes;
        self
    }

    /// How many checkpoints to keep per session (default 20, at least 1). Older ones are
    /// deleted by the statement that saves a new one; the message log is never trimmed.
    pub fn with_checkpoint_retention(mut self, keep: usize) -> Self {
        self.checkpoint_retention = keep.max(1);
        self
    }

    /// Decides expiry and timestamps with `clock` (default: the system clock). Every client of
    /// one database should use a synchronized clock: expiry follows the caller's time, never
    /// the server's.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Validates the settings, connects, and applies the migrations the schema lacks.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a malformed URL or schema name (nothing is sent);
    /// [`Error::Backend`] when the database cannot be reached within the acquire timeout, or a
    /// migration fails (then none of the pending ones is applied), or, with migrations off, the
    /// schema is not at the version this lgadk needs.
    pub async fn connect(self) -> Result<PostgresStore> {
        check_schema(&self.schema)?;
        let mut options = PgConnectOptions::from_str(&self.url)
            .map_err(|err| Error::InvalidConfig { reason: format!("invalid postgres URL: {err}") })?;
        if options.get_application_name().is_none() {
            options = options.application_name("lgadk");
        }
        if let Some(capacity) = self.statement_cache_capacity {
            options = options.statement_cache_capacity(capacity);
        }
        let pool = ConnPool::new(options, self.max_connections, self.acquire_timeout, self.idle_check);
        let migrate = async {
            let mut pooled = pool
                .acquire(false)
                .await
                .map_err(|err| Error::backend("postgres", "connect", PgFailure::Acquire(err)))?;
            let Some(conn) = pooled.conn() else {
                return Err(Error::backend("postgres", "connect", PgFailure::Acquire(AcquireError::Closed)));
            };
            if self.migrate {
                schema::migrate(conn, &self.schema).await?;
            } else {
                schema::check(conn, &self.schema).await?;
            }
            pooled.reuse();
            Ok(())
        };
        // Migrating may wait for another process's migration (the advisory lock): bounded by
        // both timeouts together.
        match tokio::time::timeout(self.acquire_timeout + self.statement_timeout, migrate).await {
            Ok(result) => result?,
            Err(_) => {
                let waited = self.acquire_timeout + self.statement_timeout;
                return Err(Error::backend("postgres", "connect", PgFailure::Timeout(waited)));
            }
        }
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                sql: Statements::new(&self.schema),
                schema: self.schema,
                clock: self.clock,
                statement_timeout: self.statement_timeout,
                prepare: self.statement_cache_capacity != Some(0),
                metadata_limit: self.metadata_limit,
                checkpoint_retention: self.checkpoint_retention,
            }),
        })
    }
}

/// `[a-z_][a-z0-9_]{0,62}`: a name PostgreSQL neither folds nor truncates, safe to write into
/// statements unquoted.
fn check_schema(schema: &str) -> Result<()> {
    let mut bytes = schema.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if first_ok && rest_ok && schema.len() <= 63 {
        return Ok(());
    }
    Err(Error::InvalidConfig {
        reason: format!(
            "postgres schema `{schema}` must be 1-63 lowercase ASCII letters, digits or `_`, not starting with a digit"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        for good in ["lgadk", "_x", "app_2", &"a".repeat(63)] {
            assert!(check_schema(good).is_ok(), "{good}");
        }
        for bad in ["", "2app", "App", "a-b", "a b", "a;drop", "é", &"a".repeat(64)] {
            assert!(matches!(check_schema(bad), Err(Error::InvalidConfig { .. })), "{bad}");
        }
    }
}
