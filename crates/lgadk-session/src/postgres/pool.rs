//! The store's own connection pool: at most N connections, reused newest first, each used by
//! one call at a time.
//!
//! sqlx's `Pool` tests every connection on its way back with a round trip of its own (a `Sync`
//! after each query), which doubles the round trips of a store whose every operation is one
//! statement. Here a connection goes back to the pool untested when its statement completed;
//! one whose statement failed with the connection, timed out, or whose caller went away
//! mid-statement is dropped (closing its socket) instead. A connection that died while idle
//! (server restart, `pg_terminate_backend`) fails its next statement, which then drops every
//! idle connection, since they most likely died with it. A connection that sat idle for the
//! idle check or longer (default [`DEFAULT_IDLE_CHECK`]: long enough that a server's
//! `idle_session_timeout`, a pooler or a firewall may have closed it) is pinged before it is
//! lent, one round trip spent only after a quiet spell; one that fails the ping is dropped and
//! the next one tried.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcquireError {
    /// Every connection stayed busy, or connecting took, past the acquire timeout.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// Opening a connection failed.
    #[error("could not connect")]
    Connect(#[source] sqlx::Error),
    /// The store was closed.
    #[error("the store was closed")]
    Closed,
}

/// Idle this long or longer, a connection is pinged before it is lent, unless configured
/// otherwise.
pub const DEFAULT_IDLE_CHECK: Duration = Duration::from_secs(10);

/// An idle connection and when it was returned.
struct Idle {
    conn: PgConnection,
    since: Instant,
}

pub(crate) struct ConnPool {
    options: PgConnectOptions,
    idle: Mutex<Vec<Idle>>,
    permits: Semaphore,
    acquire_timeout: Duration,
    idle_check: Duration,
}

impl ConnPool {
    pub(crate) fn new(options: PgConnectOptions, max: u32, acquire_timeout: Duration, idle_check: Duration) -> Self {
        Self {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(usize::try_from(max).unwrap_or(usize::MAX).max(1)),
            acquire_timeout,
            idle_check,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections open and idle right now.
    pub(crate) fn idle_count(&self) -> usize {
        self.idle().len()
    }

    /// A connection: an idle one unless `fresh`, else a new one, within the acquire timeout.
    pub(crate) async fn acquire(&self, fresh: bool) -> Result<Pooled<'_>, AcquireError> {
        let get = async {
            let permit = self.permits.acquire().await.map_err(|_| AcquireError::Closed)?;
            let mut reused = None;
            loop {
                // The lock is released before any await.
                let next = if fresh { None } else { self.idle().pop() };
                let Some(Idle { mut conn, since }) = next else { break };
                if since.elapsed() < self.idle_check || sqlx::Connection::ping(&mut conn).await.is_ok() {
                    reused = Some(conn);
                    break;
                }
            }
            let conn = match reused {
                Some(conn) => conn,
                None => <PgConnection as sqlx::Connection>::connect_with(&self.options)
                    .await
                    .map_err(AcquireError::Connect)?,
            };
            Ok(Pooled { conn: Some(conn), pool: self, _permit: permit, reusable: false })
        };
        match tokio::time::timeout(self.acquire_timeout, get).await {
            Ok(result) => result,
            Err(_) => Err(AcquireError::Timeout(self.acquire_timeout)),
        }
    }

    /// Drops every idle connection (they are likely dead: one of them just was).
    pub(crate) fn discard_idle(&self) {
        let dropped = std::mem::take(&mut *self.idle());
        drop(dropped);
    }

    /// Closes the idle connections politely and refuses new calls.
    pub(crate) async fn close(&self) {
        self.permits.close();
        let idle = std::mem::take(&mut *self.idle());
        for Idle { conn, .. } in idle {
            let _ = sqlx::Connection::close(conn).await;
        }
    }
}

/// A connection lent to one call. It goes back to the pool only if [`Pooled::reuse`] was
/// called (its statement completed); otherwise it is dropped, closing its socket.
pub(crate) struct Pooled<'a> {
    conn: Option<PgConnection>,
    pool: &'a ConnPool,
    _permit: SemaphorePermit<'a>,
    reusable: bool,
}

impl Pooled<'_> {
    pub(crate) fn conn(&mut self) -> Option<&mut PgConnection> {
        self.conn.as_mut()
    }

    /// The statement completed: the connection is fit for the next call.
    pub(crate) fn reuse(&mut self) {
        self.reusable = true;
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reusable
        {
            self.pool.idle().push(Idle { conn, since: Instant::now() });
        }
    }
}
