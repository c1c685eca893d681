//! lgadk: agents wired into graphs, run per user session.
//!
//! This facade re-exports the workspace crates so an application can depend on one crate.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk::Result<()> {
//! use lgadk::SessionManager;
//! let sessions = SessionManager::in_memory();
//! let id = sessions.create_session(None, Default::default()).await?;
//! assert!(sessions.session_exists(&id).await?);
//! # Ok(())
//! # }
//! ```

#[doc(inline)]
pub use lgadk_core as core;
#[doc(inline)]
pub use lgadk_core::{Error, Result};
#[doc(inline)]
pub use lgadk_graph as graph;
#[doc(inline)]
pub use lgadk_graph::{CompiledGraph, GraphBuilder, RunRequest, RunResponse, StateGraph};
#[doc(inline)]
pub use lgadk_session as session;
#[doc(inline)]
pub use lgadk_session::SessionManager;
