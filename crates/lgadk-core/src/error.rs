//! The one public error type of lgadk, and the result alias every crate uses.

use std::fmt;

use crate::id::SessionId;

/// A boxed error cause, kept as the `source` of an [`Error`] so chains stay intact.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with lgadk's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in lgadk, for every crate and backend.
///
/// Callers match on this one type. Backend- or provider-specific detail is kept as the
/// [`source`](std::error::Error::source), so `{err:#}`-style reporters print the whole chain
/// and tests can `downcast_ref` the detail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session is unknown, was ended, or has expired.
    #[error("session `{0}` not found")]
    SessionNotFound(SessionId),
    /// A session with this id exists already.
    #[error("session `{0}` already exists")]
    AlreadyExists(SessionId),
    /// A session id failed validation; nothing was written.
    #[error("invalid session id: {reason}")]
    InvalidSessionId {
        /// Which rule the id broke.
        reason: &'static str,
    },
    /// A user id failed validation; nothing was written.
    #[error("invalid user id: {reason}")]
    InvalidUserId {
        /// Which rule the id broke.
        reason: &'static str,
    },
    /// Metadata would exceed the configured limit once serialized; nothing was written.
    #[error("metadata is {size} bytes; the limit is {limit}")]
    MetadataTooLarge {
        /// Serialized size the write would have produced, in bytes.
        size: usize,
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// A concurrent writer saved a newer checkpoint first; nothing was written.
    #[error("session `{id}` was written concurrently: expected checkpoint version {expected}, found {actual}")]
    Conflict {
        /// The contended session.
        id: SessionId,
        /// The version this writer based its change on.
        expected: u64,
        /// The version found in the store.
        actual: u64,
    },
    /// The storage backend failed (I/O, timeout, server error).
    ///
    /// `outcome` says what the failed call did to stored data: [`Outcome::NotApplied`] (it
    /// changed nothing, so trying again is safe) or [`Outcome::Unknown`] (a write was sent and
    /// no answer came: it may have been applied, or may still be).
    #[error("{backend} backend failed during {op} ({outcome})")]
    Backend {
        /// Backend name, as [`SessionStore::backend`](crate::SessionStore::backend) reports it.
        backend: &'static str,
        /// The operation that failed.
        op: &'static str,
        /// What the failed call did to stored data.
        outcome: Outcome,
        /// The backend's own error.
        #[source]
        source: BoxError,
    },
    /// Stored data for a session does not decode.
    #[error("stored data for session `{id}` does not decode")]
    Corrupt {
        /// The session whose data is damaged.
        id: SessionId,
        /// What failed to decode.
        #[source]
        source: BoxError,
    },
    /// A model provider failed.
    #[error("model `{model}` failed (status {}, retryable: {retryable})", DisplayStatus(*status))]
    Model {
        /// The model id, e.g. `openai/gpt-4o-mini`.
        model: String,
        /// The HTTP status, when the provider answered with one.
        status: Option<u16>,
        /// Whether trying again later may succeed (429, 5xx, connection errors).
        retryable: bool,
        /// The provider's own error.
        #[source]
        source: BoxError,
    },
    /// A configuration value or request is invalid (unknown model provider, bad URL, bad template).
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong, naming the offending value.
        reason: String,
    },
    /// Building or running a graph failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A node interrupted the run (human in the loop); its checkpoint is saved, and
    /// `resume(session_id, value)` continues from that node.
    #[error("run interrupted at node `{node}`")]
    Interrupted {
        /// The node that asked for input.
        node: String,
        /// The session to resume: filled in by the graph, also when the interrupted run
        /// created the session. `None` when a node returns the error (use
        /// [`Error::interrupt`]) or the run had no session.
        session_id: Option<SessionId>,
    },
}

struct DisplayStatus(Option<u16>);

impl fmt::Display for DisplayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(status) => write!(f, "{status}"),
            None => f.write_str("none"),
        }
    }
}

/// Why a graph could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// An edge, router mapping or entry point names a node that was never added.
    #[error("graph `{graph}`: unknown node `{node}`")]
    UnknownNode {
        /// The graph's name.
        graph: String,
        /// The missing node.
        node: String,
    },
    /// Two nodes were added under one name.
    #[error("graph `{graph}`: node `{node}` is defined twice")]
    DuplicateNode {
        /// The graph's name.
        graph: String,
        /// The repeated name.
        node: String,
    },
    /// The graph has no entry point.
    #[error("graph `{graph}` has no entry point")]
    NoEntryPoint {
        /// The graph's name.
        graph: String,
    },
    /// A node can never be reached from the entry point.
    #[error("graph `{graph}`: node `{node}` is unreachable from the entry point")]
    Unreachable {
        /// The graph's name.
        graph: String,
        /// The unreachable node.
        node: String,
    },
    /// A node has no outgoing edge, so a run would stop nowhere.
    #[error("graph `{graph}`: node `{node}` has no outgoing edge")]
    DeadEnd {
        /// The graph's name.
        graph: String,
        /// The node without a successor.
        node: String,
    },
    /// A router returned a key that its mapping does not know.
    #[error("graph `{graph}`: router after `{node}` returned `{key}`, which is not in its mapping")]
    UnknownRoute {
        /// The graph's name.
        graph: String,
        /// The node whose router answered.
        node: String,
        /// The unmapped key.
        key: String,
    },
    /// The run took more steps than allowed, usually a cycle that never ends.
    #[error("graph `{graph}` hit its recursion limit of {limit} steps")]
    RecursionLimit {
        /// The graph's name.
        graph: String,
        /// The configured limit.
        limit: usize,
    },
    /// A graph state did not serialize or deserialize.
    #[error("graph `{graph}`: state does not (de)serialize")]
    State {
        /// The graph's name.
        graph: String,
        /// The serde error.
        #[source]
        source: BoxError,
    },
    /// A node failed with an error of its own.
    #[error("graph `{graph}`: node `{node}` failed")]
    Node {
        /// The graph's name.
        graph: String,
        /// The failing node.
        node: String,
        /// The node's error.
        #[source]
        source: BoxError,
    },
    /// The caller cancelled the run (for example by dropping its event stream); nothing of the
    /// turn was saved.
    #[error("graph `{graph}`: the run was cancelled")]
    Cancelled {
        /// The graph's name.
        graph: String,
    },
    /// The task driving a streamed run stopped before it finished (it panicked or was aborted).
    #[error("graph `{graph}`: the run stopped before it finished")]
    Aborted {
        /// The graph's name.
        graph: String,
        /// Why the task stopped.
        #[source]
        source: BoxError,
    },
    /// Something else about the graph is misconfigured.
    #[error("graph `{graph}`: {reason}")]
    Invalid {
        /// The graph's name.
        graph: String,
        /// What is wrong.
        reason: String,
    },
}

/// What a failed backend call did to stored data, as [`Error::Backend`] reports it.
///
/// A retry is safe after [`NotApplied`](Self::NotApplied). After [`Unknown`](Self::Unknown) it
/// is safe only for a write that carries an [`OpId`](crate::OpId) and is repeated with the same
/// one: the store applies each operation id at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Nothing was changed: the call was refused, failed before its command was written, or
    /// was a read.
    NotApplied,
    /// A write was sent and no answer came (a timeout, or the connection broke while waiting):
    /// it may have been applied, or may still be.
    Unknown,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotApplied => "not applied",
            Self::Unknown => "outcome unknown",
        })
    }
}

impl Error {
    /// A [`Error::Backend`] for `backend` failing during `op` without changing anything
    /// ([`Outcome::NotApplied`]), keeping `cause` as the source.
    pub fn backend(backend: &'static str, op: &'static str, cause: impl Into<BoxError>) -> Self {
        Self::Backend { backend, op, outcome: Outcome::NotApplied, source: cause.into() }
    }

    /// A [`Error::Backend`] for a write of `backend` during `op` that was sent but got no answer
    /// ([`Outcome::Unknown`]), keeping `cause` as the source.
    pub fn backend_unknown(backend: &'static str, op: &'static str, cause: impl Into<BoxError>) -> Self {
        Self::Backend { backend, op, outcome: Outcome::Unknown, source: cause.into() }
    }

    /// What the failed call did to stored data: `Some` for [`Error::Backend`], `None` for every
    /// other error (those change nothing).
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Self::Backend { outcome, .. } => Some(*outcome),
            _ => None,
        }
    }

    /// A [`Error::Corrupt`] for session `id`, keeping `cause` as the source.
    pub fn corrupt(id: &SessionId, cause: impl Into<BoxError>) -> Self {
        Self::Corrupt { id: id.clone(), source: cause.into() }
    }

    /// The error a node returns to pause the run for human input; the graph saves the
    /// checkpoint and adds the session id.
    pub fn interrupt(node: impl Into<String>) -> Self {
        Self::Interrupted { node: node.into(), session_id: None }
    }

    /// Whether the session was unknown, ended or expired.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::SessionNotFound(_))
    }

    /// Whether trying the same call again later may succeed without applying anything twice:
    /// a retryable model error, a backend failure that applied nothing
    /// ([`Outcome::NotApplied`]), or a checkpoint conflict (after reloading). A backend failure
    /// with [`Outcome::Unknown`] is not: repeat such a write only with the same
    /// [`OpId`](crate::OpId).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Model { retryable, .. } => *retryable,
            Self::Backend { outcome, .. } => *outcome == Outcome::NotApplied,
            Self::Conflict { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn display_never_repeats_the_source() {
        let err = Error::backend("redis", "get", std::io::Error::other("connection refused"));
        assert_eq!(err.to_string(), "redis backend failed during get (not applied)");
        assert_eq!(err.source().map(ToString::to_string).as_deref(), Some("connection refused"));
    }

    #[test]
    fn only_backend_failures_that_applied_nothing_are_retryable() {
        let refused = Error::backend("redis", "track_interaction", std::io::Error::other("refused"));
        assert_eq!(refused.outcome(), Some(Outcome::NotApplied));
        assert!(refused.is_retryable());
        let unknown = Error::backend_unknown("redis", "track_interaction", std::io::Error::other("timed out"));
        assert!(matches!(unknown, Error::Backend { outcome: Outcome::Unknown, .. }));
        assert_eq!(unknown.to_string(), "redis backend failed during track_interaction (outcome unknown)");
        assert!(!unknown.is_retryable());
        assert_eq!(Error::SessionNotFound(SessionId::parse("s").unwrap()).outcome(), None);
    }

    #[test]
    fn model_error_prints_status_and_retryability() {
        let err = Error::Model {
            model: "openai/gpt-4o-mini".into(),
            status: Some(429),
            retryable: true,
            source: "rate limited".into(),
        };
        assert_eq!(err.to_string(), "model `openai/gpt-4o-mini` failed (status 429, retryable: true)");
        assert!(err.is_retryable());
    }
}
