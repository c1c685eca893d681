//! lgadk: agents wired into graphs, run per user session.
//!
//! This facade re-exports the workspace crates so an application can depend on one crate:
//! [`core`] (contracts and the one [`Error`]), [`session`] ([`SessionManager`] over memory or
//! Redis), [`graph`] ([`StateGraph`], [`GraphBuilder`]) and [`llm`] (models and [`ChatAgent`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk::Result<()> {
//! use std::sync::Arc;
//! use lgadk::{ChatAgent, GraphBuilder, OfflineModel, RunRequest, SessionManager};
//!
//! let sessions = SessionManager::in_memory();
//! let agent = ChatAgent::new("assistant", Arc::new(OfflineModel::new())).with_system_prompt("Be concise.");
//! let graph = GraphBuilder::new("demo").add_agent(agent).configure_session_management(sessions.clone()).build()?;
//!
//! let first = graph.run(RunRequest::new("Hello! What is machine learning?")).await?;
//! let again = graph.run(RunRequest::new("And neural networks?").with_session(first.session_id.clone())).await?;
//! assert_eq!(again.state.messages.len(), 4, "the second turn continued the first");
//! assert_eq!(sessions.get_session_summary(&first.session_id).await?.map(|s| s.interactions), Some(2));
//! # Ok(())
//! # }
//! ```
//!
//! The session API takes ids as text or as typed ids, and metadata from [`metadata!`]; a
//! session that is unknown, ended or expired reads as `None` and fails writes with
//! `SessionNotFound`:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk::Result<()> {
//! use lgadk::{SessionManager, metadata};
//!
//! let sessions = SessionManager::in_memory();
//! let id = sessions.create_session("alice", metadata! {"plan" => "pro", "seats" => 3}).await?;
//! let view = sessions.get_session_metadata(&id).await?.expect("just created");
//! assert_eq!(view["seats"], 3);
//! assert_eq!(sessions.get_user_sessions("alice").await?, [id.clone()]);
//! sessions.end_session(&id).await?;
//! assert!(sessions.get_session_metadata(&id).await?.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//! | feature | default | adds |
//! |---|---|---|
//! | `openai` | yes | `OpenAiModel`: OpenAI and any OpenAI-compatible server |
//! | `redis` | yes | `RedisStore` and `SessionManager::redis` |
//! | `redis-cluster` | no | `RedisStore::cluster_builder`: the same store on a Redis Cluster |
//! | `postgres` | no | `PostgresStore` and `SessionManager::postgres` |
//! | `postgres-tls` | no | TLS to PostgreSQL (rustls), chosen with `sslmode` in the URL |

#[doc(inline)]
pub use lgadk_core as core;
/// `serde_json`, re-exported: session metadata is a `serde_json` map.
pub use lgadk_core::serde_json;
#[doc(inline)]
pub use lgadk_core::{Error, Metadata, ModelErrorKind, Result, SessionId, UserId, metadata};
#[doc(inline)]
pub use lgadk_graph as graph;
#[doc(inline)]
pub use lgadk_graph::{CompiledGraph, GraphBuilder, RunRequest, RunResponse, StateGraph};
#[doc(inline)]
pub use lgadk_llm as llm;
#[doc(inline)]
pub use lgadk_llm::{ChatAgent, OfflineModel, get_model};
#[doc(inline)]
pub use lgadk_session as session;
#[doc(inline)]
pub use lgadk_session::SessionManager;
