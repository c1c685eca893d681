//! Sessions for lgadk: a [`SessionManager`] over an in-memory store (the default) or Redis.
//!
//! A session belongs to a user, remembers what each conversation cost (interactions, tokens,
//! response time), carries the user's metadata, and expires after an idle timeout. The same
//! [`SessionManager`] API runs over every backend, so moving from one process to a fleet
//! behind Redis changes one constructor and nothing else. Every backend passes the shared
//! conformance suite of `lgadk-core` (feature `testing`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk_core::Result<()> {
//! use std::time::Duration;
//! use lgadk_core::{Metadata, UserId};
//! use lgadk_session::SessionManager;
//!
//! let sessions = SessionManager::in_memory();
//! let mut metadata = Metadata::new();
//! metadata.insert("device".into(), "laptop".into());
//! let id = sessions.create_session(Some(UserId::parse("alice")?), metadata).await?;
//!
//! sessions.track_interaction(&id, 42, 128, Duration::from_millis(850)).await?;
//! let mut update = Metadata::new();
//! update.insert("plan".into(), "premium".into());
//! let merged = sessions.update_session_metadata(&id, update, true).await?;
//! assert_eq!(merged.len(), 2);
//!
//! let summary = sessions.summary(&id).await?;
//! assert_eq!((summary.interactions, summary.total_tokens_out), (1, 128));
//! sessions.end_session(&id).await?;
//! assert!(!sessions.session_exists(&id).await?);
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//! | feature | default | adds |
//! |---|---|---|
//! | `redis` | no | `RedisStore` and `SessionManager::redis`: sessions shared by a fleet through plain Redis 6+ / Valkey |
//! | `redis-cluster` | no | the same `RedisStore` on a Redis Cluster |
//! | `testing` | no | test support: a harness that runs its own `redis-server` on a free loopback port |

mod manager;
mod memory;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "testing")]
pub mod testing;

pub use manager::{
    DEFAULT_UNKNOWN_OUTCOME_RETRIES, ReaperHandle, SessionManager, SessionManagerBuilder, SessionMetadata,
    SessionSummary, SynchronizedSessionManager,
};
pub use memory::{InMemoryStore, InMemoryStoreBuilder};
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreBuilder};
