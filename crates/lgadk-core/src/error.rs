//! The one public error type of lgadk, and the result alias every crate uses.

use std::fmt;
use std::time::Duration;

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
    /// A memory namespace failed validation; nothing was written.
    #[error("invalid memory namespace: {reason}")]
    InvalidNamespace {
        /// Which rule the namespace broke.
        reason: &'static str,
    },
    /// A memory key failed validation; nothing was written.
    #[error("invalid memory key: {reason}")]
    InvalidMemoryKey {
        /// Which rule the key broke.
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
    /// A JSON value (metadata, a graph state, a message's tool arguments) nests as deep as
    /// serde_json's parser refuses to read, so storing it would make it unreadable; nothing
    /// was written. See [`json`](crate::json).
    #[error("{what} nests {limit} levels or deeper")]
    NestingTooDeep {
        /// What was too deep: `"metadata"`, `"a graph state"`, `"a message"`.
        what: &'static str,
        /// The limit, [`MAX_JSON_DEPTH`](crate::json::MAX_JSON_DEPTH).
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
    /// A stored memory item does not decode.
    #[error("stored memory item `{key}` in namespace `{namespace}` does not decode")]
    CorruptMemory {
        /// The item's namespace, as stored (segments joined by `/`).
        namespace: String,
        /// The item's key, as stored.
        key: String,
        /// What failed to decode.
        #[source]
        source: BoxError,
    },
    /// A model provider failed. Match on `kind` to react (shorten the conversation, back off,
    /// fix the key); [`Error::is_retryable`] follows from it.
    #[error("model `{model}` failed{}: {kind}", DisplayStatus(*status))]
    Model {
        /// The model id, e.g. `openai/gpt-4o-mini`.
        model: String,
        /// What went wrong.
        kind: ModelErrorKind,
        /// The HTTP status, when the provider answered with one.
        status: Option<u16>,
        /// The provider's own error.
        #[source]
        source: BoxError,
    },
    /// The call needs a Tokio runtime (it spawns a task, or waits on Tokio's timer and I/O)
    /// and was made outside one; nothing was done.
    #[error("`{op}` must be called inside a Tokio runtime")]
    NoRuntime {
        /// The call that needed it.
        op: &'static str,
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
        /// What the node asks the caller, if anything ([`Error::interrupt_with`]): the tool
        /// loop puts an [`ApprovalRequest`](crate::tool::ApprovalRequest) here.
        value: Option<serde_json::Value>,
    },
    /// A tool call failed and the tool loop runs fail-fast, so the run stopped; nothing of the
    /// turn was saved. (Without fail-fast the model reads the error instead.)
    #[error("tool `{tool}` (call `{call_id}`) failed: {source}")]
    Tool {
        /// The tool the model called.
        tool: String,
        /// The call's id.
        call_id: String,
        /// What went wrong.
        #[source]
        source: crate::tool::ToolError,
    },
    /// A team's agents handed the conversation over as often as one turn allows and tried
    /// again; nothing of the turn was saved. (The team can refuse the handoff instead.)
    #[error("agent `{agent}` tried a handoff past the turn's limit of {limit}")]
    HandoffLimit {
        /// The agent that tried.
        agent: String,
        /// The limit.
        limit: u32,
    },
    /// The tool loop's model made as many calls in one turn as it may and still asked for
    /// tools; nothing of the turn was saved. (The loop can answer instead; see its options.)
    #[error("node `{node}` reached its limit of {limit} model calls in one turn")]
    StepLimit {
        /// The loop's model node.
        node: String,
        /// The limit.
        limit: usize,
    },
}

struct DisplayStatus(Option<u16>);

impl fmt::Display for DisplayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(status) => write!(f, " with status {status}"),
            None => Ok(()),
        }
    }
}

/// Why a model call failed: the `kind` of an [`Error::Model`].
///
/// Providers map HTTP statuses, error codes and error messages onto these kinds, so a caller
/// can tell a timeout from a refused connection, or a context-window overflow from any other
/// bad request, without knowing the provider. New kinds may be added: a `match` needs a `_` arm.
///
/// ```
/// use lgadk_core::{Error, ModelErrorKind};
///
/// fn advice(err: &Error) -> &'static str {
///     match err {
///         Error::Model { kind: ModelErrorKind::ContextWindowExceeded, .. } => "shorten the conversation",
///         Error::Model { kind: ModelErrorKind::RateLimited { .. }, .. } => "slow down",
///         err if err.is_retryable() => "try again later",
///         _ => "give up",
///     }
/// }
///
/// let err = Error::model("openai/gpt-4o-mini", ModelErrorKind::ContextWindowExceeded, Some(400), "too long");
/// assert_eq!(advice(&err), "shorten the conversation");
/// assert!(!err.is_retryable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelErrorKind {
    /// No answer (for a stream: no next chunk) within the configured timeout, or the server
    /// answered 408.
    Timeout,
    /// No connection could be made (refused, DNS, TLS, connect timeout): the request was never
    /// sent.
    Connect,
    /// The request was sent and the connection broke before a complete answer arrived. The
    /// server may have processed the request (and billed it).
    ConnectionLost,
    /// Too many requests (429, `rate_limit_exceeded`).
    RateLimited {
        /// The wait the server asked for (`Retry-After`, `retry-after-ms`), if it named one.
        retry_after: Option<Duration>,
    },
    /// The credentials are missing, wrong or lack access (401, 403).
    Authentication,
    /// The account is out of quota or credit (`insufficient_quota`, 402): retrying does not help.
    Quota,
    /// The conversation plus the completion cap do not fit the model's context window.
    ContextWindowExceeded,
    /// The provider's content filter blocked the prompt or the completion.
    ContentFiltered,
    /// The server rejected the request (another 4xx: unknown model, bad parameter, …).
    InvalidRequest,
    /// The server failed or is overloaded (5xx, including 529).
    ServerError,
    /// The answer does not decode: not a completion, no choices, tool arguments that are not JSON.
    MalformedResponse,
    /// A stream broke off, or ended before the model finished.
    StreamCut,
    /// Anything else (the HTTP client could not be built, a scripted failure); see the source.
    Other,
}

impl ModelErrorKind {
    /// Whether the same call may succeed later: timeouts, connection failures (before or after
    /// sending), rate limits, server errors and cut streams. A quota, credentials, an invalid
    /// request, a context-window overflow, filtered content or a malformed answer stay as they
    /// are until something changes.
    ///
    /// This says nothing about whether retrying is *safe*: after [`ConnectionLost`](Self::ConnectionLost)
    /// or a [`StreamCut`](Self::StreamCut) the first request may have been processed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout
                | Self::Connect
                | Self::ConnectionLost
                | Self::RateLimited { .. }
                | Self::ServerError
                | Self::StreamCut
        )
    }

    /// The wait the server asked for, when it named one with a rate limit.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

impl fmt::Display for ModelErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out"),
            Self::Connect => f.write_str("could not connect"),
            Self::ConnectionLost => f.write_str("connection lost after the request was sent"),
            Self::RateLimited { retry_after: Some(wait) } => write!(f, "rate limited, retry after {wait:?}"),
            Self::RateLimited { retry_after: None } => f.write_str("rate limited"),
            Self::Authentication => f.write_str("authentication failed"),
            Self::Quota => f.write_str("quota exhausted"),
            Self::ContextWindowExceeded => f.write_str("context window exceeded"),
            Self::ContentFiltered => f.write_str("content filtered"),
            Self::InvalidRequest => f.write_str("invalid request"),
            Self::ServerError => f.write_str("server error"),
            Self::MalformedResponse => f.write_str("malformed response"),
            Self::StreamCut => f.write_str("stream cut off"),
            Self::Other => f.write_str("unclassified error"),
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
        Self::Interrupted { node: node.into(), session_id: None, value: None }
    }

    /// [`Error::interrupt`] with a value for the caller: what the node asks, which the caller
    /// reads from the error before it resumes.
    pub fn interrupt_with(node: impl Into<String>, value: serde_json::Value) -> Self {
        Self::Interrupted { node: node.into(), session_id: None, value: Some(value) }
    }

    /// A [`Error::Model`] for model `model` failing with `kind`, keeping `cause` as the source.
    pub fn model(
        model: impl Into<String>,
        kind: ModelErrorKind,
        status: Option<u16>,
        cause: impl Into<BoxError>,
    ) -> Self {
        Self::Model { model: model.into(), kind, status, source: cause.into() }
    }

    /// Whether the session was unknown, ended or expired.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::SessionNotFound(_))
    }

    /// Whether trying the same call again later may succeed without applying anything twice:
    /// a model error whose kind [is retryable](ModelErrorKind::is_retryable), a backend failure
    /// that applied nothing ([`Outcome::NotApplied`]), or a checkpoint conflict (after
    /// reloading). A backend failure with [`Outcome::Unknown`] is not: repeat such a write only
    /// with the same [`OpId`](crate::OpId).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Model { kind, .. } => kind.is_retryable(),
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
    fn model_error_prints_status_and_kind() {
        let kind = ModelErrorKind::RateLimited { retry_after: Some(Duration::from_secs(2)) };
        let err = Error::model("openai/gpt-4o-mini", kind, Some(429), "slow down");
        assert_eq!(err.to_string(), "model `openai/gpt-4o-mini` failed with status 429: rate limited, retry after 2s");
        assert!(err.is_retryable());
        assert_eq!(err.source().map(ToString::to_string).as_deref(), Some("slow down"));

        let err = Error::model("local/llama3", ModelErrorKind::Timeout, None, "no answer within 30s");
        assert_eq!(err.to_string(), "model `local/llama3` failed: timed out");
    }

    #[test]
    fn retryability_follows_the_kind() {
        use ModelErrorKind as K;
        let retryable = [
            K::Timeout,
            K::Connect,
            K::ConnectionLost,
            K::RateLimited { retry_after: None },
            K::ServerError,
            K::StreamCut,
        ];
        let final_ = [
            K::Authentication,
            K::Quota,
            K::ContextWindowExceeded,
            K::ContentFiltered,
            K::InvalidRequest,
            K::MalformedResponse,
            K::Other,
        ];
        for kind in retryable {
            assert!(kind.is_retryable(), "{kind:?}");
            assert!(Error::model("m", kind, None, "x").is_retryable());
        }
        for kind in final_ {
            assert!(!kind.is_retryable(), "{kind:?}");
            assert!(!Error::model("m", kind, None, "x").is_retryable());
        }
        assert_eq!(
            K::RateLimited { retry_after: Some(Duration::from_millis(150)) }.retry_after(),
            Some(Duration::from_millis(150))
        );
        assert_eq!(K::ServerError.retry_after(), None);
    }
}
