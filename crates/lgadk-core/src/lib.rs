//! The contracts of lgadk: traits and plain data shared by every other crate.
//!
//! `lgadk-core` defines what a session store, a checkpointer, a long-term memory store, a chat
//! model, an embedder and an agent must do, the records they exchange, and the one [`Error`]
//! type every crate returns. It does no I/O and starts no runtime, so a backend or provider crate depends on it
//! without pulling anything else in. Applications usually use the `SessionManager` of
//! `lgadk-session` rather than these traits directly.
//!
//! ```
//! use std::time::Duration;
//! use lgadk_core::{Interaction, NewSession, SessionId, SessionStats, Timeout, UserId};
//!
//! let new = NewSession::for_user(UserId::parse("alice")?)
//!     .with_id(SessionId::parse("alice-support-1")?)
//!     .with_timeout(Timeout::After(Duration::from_secs(30 * 60)));
//! assert_eq!(new.user_id.as_ref().map(|u| u.as_str()), Some("alice"));
//!
//! let mut stats = SessionStats::default();
//! stats.record(&Interaction::tokens(12, 40).with_response_time(Duration::from_millis(250)));
//! assert_eq!((stats.interactions, stats.total_tokens_out), (1, 40));
//! # Ok::<(), lgadk_core::Error>(())
//! ```
//!
//! # Feature flags
//! | feature | default | adds |
//! |---|---|---|
//! | `testing` | no | [`testing`] and [`memory::testing`]: the conformance suites every session and memory backend runs (not semver-stable) |

pub mod agent;
pub mod cancel;
pub mod checkpoint;
pub mod clock;
pub mod context;
pub mod error;
pub mod id;
pub mod json;
pub mod memory;
pub mod message;
pub mod model;
pub mod op;
pub mod retention;
pub mod session;
pub mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod tool;
pub mod turn;

/// `serde_json`, re-exported: [`Metadata`] is a `serde_json` map, so applications can build
/// and read it (`serde_json::json!`, `Value`) without a dependency of their own.
pub use serde_json;

#[doc(inline)]
pub use agent::{Agent, AgentEvent, AgentRouting, ChatState, EventSink, GraphState, HistoryView, RunContext};
#[doc(inline)]
pub use cancel::CancelToken;
#[doc(inline)]
pub use checkpoint::{Checkpoint, Checkpointer, DEFAULT_CHECKPOINT_RETENTION, NewCheckpoint};
#[doc(inline)]
pub use clock::{Clock, ManualClock, SystemClock};
#[doc(inline)]
pub use context::{
    ContextSummary, ContextWindow, EstimatedTokens, HistoryMap, SummaryDue, TokenCounter, Window, window,
};
#[doc(inline)]
pub use error::{BoxError, Error, GraphError, ModelErrorKind, Outcome, Result};
#[doc(inline)]
pub use id::{IntoOptionalUserId, IntoSessionId, IntoUserId, SessionId, UserId};
#[doc(inline)]
pub use memory::{Embedder, MemoryItem, MemoryKey, MemoryStore, Namespace};
#[doc(inline)]
pub use message::{Message, Role, ToolCall};
#[doc(inline)]
pub use model::{
    ChatChunk, ChatModel, ChatRequest, ChatResponse, ChatStream, StreamedReply, ToolChoice, ToolSpec, Usage,
    collect_stream,
};
#[doc(inline)]
pub use op::{OP_ID_WINDOW, OpId};
#[doc(inline)]
pub use retention::LogRetention;
#[doc(inline)]
pub use session::{
    AgentShare, AgentStats, Cursor, DEFAULT_METADATA_LIMIT, DEFAULT_SESSION_TIMEOUT, Interaction, Metadata,
    MetadataUpdate, NewSession, Page, Session, SessionPage, SessionStats, Timeout,
};
#[doc(inline)]
pub use store::SessionStore;
#[doc(inline)]
pub use tool::{
    ApprovalDecision, ApprovalDecisions, ApprovalRequest, FunctionTool, PendingApproval, Tool, ToolBatch, ToolContext,
    ToolError, ToolOutput, ToolSet,
};
#[doc(inline)]
pub use turn::{LatestCheckpoint, TurnCommit, TurnSaved, TurnStart, TurnStore};
