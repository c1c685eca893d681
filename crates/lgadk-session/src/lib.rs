//! Sessions for lgadk: a [`SessionManager`] over an in-memory store (the default), Redis or
//! PostgreSQL.
//!
//! A session belongs to a user, remembers what each conversation cost (interactions, tokens,
//! response time), carries the user's metadata, and expires after an idle timeout. The same
//! [`SessionManager`] API runs over every backend, so moving from one process to a fleet
//! behind Redis changes one constructor and nothing else. Every backend passes the shared
//! conformance suite of `lgadk-core` (feature `testing`).
//!
//! The crate also holds the backends of long-term memory ([`memory_store`]): an
//! [`InMemoryMemoryStore`], and with the features below a `RedisMemoryStore` and a
//! `PostgresMemoryStore` built on the session store's connection.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk_core::Result<()> {
//! use std::time::Duration;
//! use lgadk_session::{SessionManager, metadata};
//!
//! let sessions = SessionManager::in_memory();
//! let id = sessions.create_session("alice", metadata! {"device" => "laptop"}).await?;
//!
//! sessions.track_interaction(&id, 42, 128, Duration::from_millis(850)).await?;
//! let merged = sessions.update_session_metadata(&id, metadata! {"plan" => "premium"}, true).await?;
//! assert_eq!(merged.len(), 2);
//!
//! let summary = sessions.get_session_summary(&id).await?.expect("the session is live");
//! assert_eq!((summary.interactions, summary.total_tokens_out), (1, 128));
//! sessions.end_session(&id).await?;
//! // Readers answer `None` (or `false`) for a session that is unknown, ended or expired;
//! // writers fail with `Error::SessionNotFound`.
//! assert!(!sessions.session_exists(&id).await?);
//! assert!(sessions.get_session_summary(&id).await?.is_none());
//! assert!(sessions.update_session(&id).await.is_err());
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//! | feature | default | adds |
//! |---|---|---|
//! | `redis` | no | `RedisStore` and `SessionManager::redis`: sessions shared by a fleet through plain Redis 6+ / Valkey |
//! | `redis-cluster` | no | the same `RedisStore` on a Redis Cluster |
//! | `postgres` | no | `PostgresStore` and `SessionManager::postgres`: sessions, checkpoints and the message log in PostgreSQL (sqlx, plain TCP) |
//! | `postgres-tls` | no | TLS to PostgreSQL (rustls), chosen with `sslmode` in the URL |
//! | `testing` | no | test support: harnesses that run their own `redis-server` (and, with `postgres`, PostgreSQL and PgBouncer) on free loopback ports |

mod manager;
mod memory;
pub mod memory_store;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "testing")]
pub mod testing;

/// `serde_json`, re-exported from `lgadk-core`: metadata is a `serde_json` map.
pub use lgadk_core::serde_json;
#[doc(inline)]
pub use lgadk_core::{IntoOptionalUserId, IntoSessionId, IntoUserId, Metadata, metadata};
pub use manager::{
    DEFAULT_UNKNOWN_OUTCOME_RETRIES, ReaperHandle, SessionManager, SessionManagerBuilder, SessionMetadata,
    SessionSummary, SynchronizedSessionManager,
};
pub use memory::{InMemoryStore, InMemoryStoreBuilder};
#[cfg(feature = "redis")]
pub use memory_store::redis::{RedisMemoryStore, RedisMemoryStoreBuilder};
pub use memory_store::{InMemoryMemoryStore, InMemoryMemoryStoreBuilder};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresMemoryStore, PostgresMemoryStoreBuilder, PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreBuilder};
