//! The run types: what a caller asks of a turn, what it gets back, and the options.

use std::sync::Arc;
use std::time::Duration;

use lgadk_core::{LogRetention, Metadata, SessionId, Usage, UserId};

/// One turn to run: the user's message and the session it belongs to.
///
/// ```
/// use lgadk_core::{Metadata, UserId};
/// use lgadk_graph::RunRequest;
///
/// let mut metadata = Metadata::new();
/// metadata.insert("device".into(), "mobile".into());
/// let request = RunRequest::new("Hi there!").with_user(UserId::parse("bob")?).with_metadata(metadata);
/// assert!(request.session_id.is_none());
/// # Ok::<(), lgadk_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRequest {
    /// The user's message: the turn's input.
    pub message: String,
    /// The session to continue; `None` creates one when the run succeeds.
    pub session_id: Option<SessionId>,
    /// The user a new session belongs to. Ignored for an existing session, which keeps its owner.
    pub user_id: Option<UserId>,
    /// Metadata for a new session, or merged into an existing session's metadata before the run.
    pub metadata: Option<Metadata>,
    /// How much of its message log the session keeps from this turn on: saved with the turn,
    /// so every later turn, in any process, applies it until a request sets another. `None`
    /// keeps the session's (or, if it never set one, the graph's
    /// [`RunOptions::log_retention`]).
    pub log_retention: Option<LogRetention>,
}

impl RunRequest {
    /// A turn with `message` that creates a new session.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), ..Self::default() }
    }

    /// Continues session `id`.
    #[must_use]
    pub fn with_session(mut self, id: SessionId) -> Self {
        self.session_id = Some(id);
        self
    }

    /// Sets the user a new session belongs to.
    #[must_use]
    pub fn with_user(mut self, user: UserId) -> Self {
        self.user_id = Some(user);
        self
    }

    /// Sets the metadata of a new session, or the keys to merge into an existing one's.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets the session's [`log_retention`](Self::log_retention).
    #[must_use]
    pub fn with_log_retention(mut self, retention: LogRetention) -> Self {
        self.log_retention = Some(retention);
        self
    }
}

/// What a successful run returns.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunResponse<S> {
    /// The turn's answer ([`GraphState::output`](lgadk_core::GraphState::output)).
    pub output: String,
    /// The session the turn was saved to (new if the request named none).
    pub session_id: SessionId,
    /// The state after the turn, with the conversation history (what the session's log
    /// retention keeps of it). Shared with the
    /// graph's per-process cache, so returning it costs no copy of the history;
    /// `Arc::unwrap_or_clone(response.state)` gives an owned state.
    pub state: Arc<S>,
    /// Token usage the model calls of the turn reported.
    pub usage: Usage,
    /// Measured wall time of the run, from the call to the saved turn.
    pub response_time: Duration,
}

/// Per-run settings; [`CompiledGraph::with_options`](crate::CompiledGraph::with_options) sets a graph's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOptions {
    /// Track each turn on the session (an [`Interaction`](lgadk_core::Interaction) in the
    /// turn's commit, as [`SessionManager::record_interaction`](lgadk_session::SessionManager::record_interaction)
    /// would count it) with the usage the model reported and the measured wall time. Default `true`; turn it off when the caller
    /// tracks interactions itself.
    pub track_interactions: bool,
    /// When another process saved the session first ([`Error::Conflict`](lgadk_core::Error::Conflict)), reload its state and
    /// run the turn again, once. Default `false`: the conflict is returned.
    pub retry_on_conflict: bool,
    /// Overrides the graph's recursion limit for this run.
    pub recursion_limit: Option<usize>,
    /// How much of its message log a session keeps when it set no retention of its own
    /// ([`RunRequest::log_retention`]): applied after each turn, in the same atomic write as
    /// the turn. Default [`LogRetention::KeepAll`].
    pub log_retention: LogRetention,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            track_interactions: true,
            retry_on_conflict: false,
            recursion_limit: None,
            log_retention: LogRetention::KeepAll,
        }
    }
}

impl RunOptions {
    /// Sets [`track_interactions`](Self::track_interactions).
    #[must_use]
    pub fn with_tracking(mut self, track: bool) -> Self {
        self.track_interactions = track;
        self
    }

    /// Sets [`retry_on_conflict`](Self::retry_on_conflict).
    #[must_use]
    pub fn with_retry_on_conflict(mut self, retry: bool) -> Self {
        self.retry_on_conflict = retry;
        self
    }

    /// Sets [`log_retention`](Self::log_retention).
    #[must_use]
    pub fn with_log_retention(mut self, retention: LogRetention) -> Self {
        self.log_retention = retention;
        self
    }

    /// Sets [`recursion_limit`](Self::recursion_limit).
    #[must_use]
    pub fn with_recursion_limit(mut self, limit: usize) -> Self {
        self.recursion_limit = Some(limit);
        self
    }
}
