//! [`CompiledGraph`]: a checked graph bound to a session manager, and its public API. How a
//! turn loads, runs and saves is in [`turn`](crate::turn).

use std::fmt;
use std::sync::Arc;

use lgadk_core::memory::MemoryStore;
use lgadk_core::{CancelToken, Error, GraphState, Result, RunContext, SessionId};
use lgadk_session::SessionManager;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::cache::StateCache;
use crate::checkpoint::{self, StateSnapshot};
use crate::exec::{Outcome, Start};
use crate::graph::Topology;
use crate::lock::SessionLocks;
use crate::run::{RunOptions, RunRequest, RunResponse};
use crate::stream::{RunEvent, RunStream};
use crate::turn::{Turn, TurnRequest};

/// A checked graph bound to a [`SessionManager`], ready to run turns.
///
/// Cloning is cheap and clones share everything: the per-session locks, the state cache and
/// the session manager. Build one per process and clone it into tasks.
///
/// # How a turn runs
/// 1. Runs on one session are serialized by a per-session async lock; other sessions are not
///    blocked.
/// 2. One read ([`TurnStore::begin_turn`](lgadk_core::TurnStore::begin_turn)) returns the
///    session record and its latest checkpoint version, and, unless the bounded per-process
///    cache holds the state at that version, the latest checkpoint with its message log. A
///    request without a session id starts from `S::default()` and reads nothing.
/// 3. Metadata in the request is merged into the session's metadata for the nodes (it is
///    written in step 5). [`GraphState::begin_turn`] gets the message; a
///    [`ChatState`](lgadk_core::ChatState) also gets the session id and metadata.
/// 4. The nodes run from `START` until every branch reaches `END`.
/// 5. One commit ([`TurnStore::commit_turn`](lgadk_core::TurnStore::commit_turn)) saves the
///    checkpoint compare-and-set on the version it was loaded at, with only the messages the
///    turn added, together with the interaction (usage and wall time, unless
///    [`RunOptions::track_interactions`] is off) and the metadata merge. A new session is
///    created just before its first commit, so a run without a session id that fails leaves
///    no session behind. Before the commit, the session's
///    [`LogRetention`](lgadk_core::LogRetention) (the request's, the one saved with the
///    session, else [`RunOptions::log_retention`]) may drop messages from the front of the
///    history; the commit cuts the stored log at the same point. On a store that overrides both
///    calls, a turn on an existing session is two store calls, warm or cold (a new session adds
///    its creation).
///
/// A run that fails before step 5 (a node or model error, the recursion limit) writes nothing:
/// no checkpoint, no interaction, no metadata, no new session. With a store that commits
/// atomically (the in-memory and Redis stores do) the commit is all or nothing, so a caller
/// that drops the `run` future never leaves a saved turn untracked; stores on the default
/// [`TurnStore`](lgadk_core::TurnStore) methods save in several calls.
/// [`stream`](Self::stream) runs on its own task and finishes the turn even if the caller
/// stops listening.
pub struct CompiledGraph<S: GraphState> {
    pub(crate) inner: Arc<Inner<S>>,
    pub(crate) options: RunOptions,
    /// The long-term memory store handed to every run's context.
    pub(crate) memory: Option<Arc<dyn MemoryStore>>,
}

/// What clones of a graph share.
pub(crate) struct Inner<S: GraphState> {
    pub(crate) topology: Topology<S>,
    pub(crate) sessions: SessionManager,
    pub(crate) cache: StateCache<S>,
    pub(crate) locks: SessionLocks,
}

impl<S: GraphState> Clone for CompiledGraph<S> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner), options: self.options, memory: self.memory.clone() }
    }
}

impl<S: GraphState> fmt::Debug for CompiledGraph<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledGraph")
            .field("topology", &self.inner.topology)
            .field("sessions", &self.inner.sessions)
            .field("options", &self.options)
            .field("memory", &self.memory.as_ref().map(|store| store.backend()))
            .finish_non_exhaustive()
    }
}

impl<S: GraphState> CompiledGraph<S> {
    pub(crate) fn new(topology: Topology<S>, sessions: SessionManager, cache_capacity: usize) -> Self {
        let inner = Inner { topology, sessions, cache: StateCache::new(cache_capacity), locks: SessionLocks::new() };
        Self { inner: Arc::new(inner), options: RunOptions::default(), memory: None }
    }

    /// The graph's name.
    pub fn name(&self) -> &str {
        &self.inner.topology.name
    }

    /// The session manager the graph saves to.
    pub fn sessions(&self) -> &SessionManager {
        &self.inner.sessions
    }

    /// The options [`run`](Self::run), [`stream`](Self::stream) and [`resume`](Self::resume) use.
    pub fn options(&self) -> RunOptions {
        self.options
    }

    /// This graph with other default options; it shares sessions, locks and cache with `self`.
    #[must_use]
    pub fn with_options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// This graph with a long-term memory store: every run's [`RunContext::memory`] (and each
    /// tool call's [`ToolContext::memory`](lgadk_core::ToolContext::memory)) is `store`, next
    /// to the run's user ([`RunContext::user_id`]: the session's owner). The memory tools of
    /// [`prebuilt::MemoryTools`](crate::prebuilt::MemoryTools) use it, scoped to that user.
    /// Shares sessions, locks and cache with `self`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> lgadk_core::Result<()> {
    /// use std::sync::Arc;
    /// use lgadk_core::memory::{MemoryKey, MemoryStore, Namespace};
    /// use lgadk_core::{ChatState, UserId};
    /// use lgadk_graph::{END, RunRequest, START, StateGraph};
    /// use lgadk_session::InMemoryMemoryStore;
    ///
    /// // A node that keeps its user's latest message in long-term memory.
    /// let graph = StateGraph::<ChatState>::new("journal")
    ///     .add_node_fn("note", |state: ChatState, ctx| async move {
    ///         if let (Some(memory), Some(user)) = (ctx.memory(), ctx.user_id()) {
    ///             let namespace = Namespace::new(["users", user.as_str(), "journal"])?;
    ///             memory.put(&namespace, &MemoryKey::parse("last")?, state.input.clone().into(), None).await?;
    ///         }
    ///         Ok(state)
    ///     })
    ///     .add_edge(START, "note")
    ///     .add_edge("note", END)
    ///     .compile()?
    ///     .with_memory(Arc::new(InMemoryMemoryStore::new()));
    ///
    /// graph.run(RunRequest::new("bought tulips").with_user(UserId::parse("ada")?)).await?;
    /// let namespace = Namespace::new(["users", "ada", "journal"])?;
    /// let memory = graph.memory().expect("given above");
    /// let item = memory.get(&namespace, &MemoryKey::parse("last")?).await?.expect("written by the node");
    /// assert_eq!(item.value, "bought tulips");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_memory(mut self, store: Arc<dyn MemoryStore>) -> Self {
        self.memory = Some(store);
        self
    }

    /// The long-term memory store runs get, if any.
    pub fn memory(&self) -> Option<&Arc<dyn MemoryStore>> {
        self.memory.as_ref()
    }

    /// Runs `state` through the graph once, without a session: nothing is loaded, saved or
    /// tracked.
    ///
    /// # Errors
    /// Node errors as the node returned them; [`Error::Graph`] with
    /// [`GraphError::RecursionLimit`](lgadk_core::GraphError::RecursionLimit) or [`GraphError::UnknownRoute`](lgadk_core::GraphError::UnknownRoute);
    /// [`Error::Interrupted`] when a node interrupts.
    pub async fn invoke(&self, mut state: S) -> Result<S> {
        let topology = &self.inner.topology;
        let span = tracing::info_span!("graph.run", graph = %topology.name, session.id = tracing::field::Empty, user.id = tracing::field::Empty);
        let limit = self.options.recursion_limit.unwrap_or(topology.recursion_limit);
        let mut ctx = RunContext::default();
        if let Some(store) = &self.memory {
            ctx = ctx.with_memory(Arc::clone(store));
        }
        let ctx = Arc::new(ctx);
        match topology.execute(&mut state, Start::Entry, &ctx, None, limit, 0).instrument(span).await? {
            Outcome::Finished { .. } => Ok(state),
            Outcome::Interrupted { node, value, .. } => Err(Error::Interrupted { node, session_id: None, value }),
        }
    }

    /// Runs one turn with the graph's default [`RunOptions`]: see [`run_with`](Self::run_with).
    ///
    /// # Errors
    /// As [`run_with`](Self::run_with).
    pub async fn run(&self, request: RunRequest) -> Result<RunResponse<S>> {
        self.run_with(request, self.options).await
    }

    /// Runs one turn of the session named in `request` (or of a new session), saves it and
    /// tracks it: see [How a turn runs](Self#how-a-turn-runs).
    ///
    /// # Errors
    /// - [`Error::SessionNotFound`] for an unknown, ended or expired session; nothing is written.
    /// - [`Error::Conflict`] when another process saved the session since its state was loaded
    ///   (after one retry if [`RunOptions::retry_on_conflict`] is on); nothing is written.
    /// - [`Error::Interrupted`] when a node interrupts: the checkpoint is saved and
    ///   [`resume`](Self::resume) continues from that node of the session the error names
    ///   (also when this run created it).
    /// - Node and model errors as the node returned them; [`Error::Graph`] with
    ///   [`GraphError::RecursionLimit`](lgadk_core::GraphError::RecursionLimit), [`GraphError::UnknownRoute`](lgadk_core::GraphError::UnknownRoute) or
    ///   [`GraphError::State`](lgadk_core::GraphError::State); nothing of the turn is written.
    /// - `Backend`, `Corrupt` and `MetadataTooLarge` from the session manager.
    pub async fn run_with(&self, request: RunRequest, options: RunOptions) -> Result<RunResponse<S>> {
        self.turn(request.into(), options, None, None).await
    }

    /// Continues session `id` after a node interrupted it: the interrupted nodes run again with
    /// `value` as [`RunContext::resume_value`], then the run goes on as usual and the turn is
    /// saved and tracked like a [`run`](Self::run).
    ///
    /// # Errors
    /// [`GraphError::Invalid`](lgadk_core::GraphError::Invalid) when the session has no interrupted run; otherwise as
    /// [`run_with`](Self::run_with).
    pub async fn resume(&self, id: &SessionId, value: serde_json::Value) -> Result<RunResponse<S>> {
        let request = TurnRequest {
            turn: Turn::Resume(value),
            session_id: Some(id.clone()),
            user_id: None,
            metadata: None,
            log_retention: None,
        };
        self.turn(request, self.options, None, None).await
    }

    /// Runs one turn like [`run`](Self::run) and streams its events: node started and finished,
    /// model token chunks, and last [`RunEvent::Finished`] with the response `run` would have
    /// returned (or one `Err`). The turn is saved and tracked the same way. The run is driven
    /// by a task of its own; outside a Tokio runtime the stream yields one
    /// [`Error::NoRuntime`] and runs nothing.
    pub fn stream(&self, request: RunRequest) -> RunStream<S> {
        self.stream_with(request, self.options)
    }

    /// [`stream`](Self::stream) with explicit [`RunOptions`].
    pub fn stream_with(&self, request: RunRequest, options: RunOptions) -> RunStream<S> {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancelToken::new();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // An unbounded channel takes the error without waiting; the stream then ends.
            let _ = tx.send(Err(Error::NoRuntime { op: "CompiledGraph::stream" }));
            return RunStream::new(rx, None, cancel, self.name().to_owned());
        };
        let graph = self.clone();
        let flag = cancel.clone();
        let run = async move {
            let result = graph.turn(request.into(), options, Some(&tx), Some(flag)).await;
            // The caller may have stopped listening; the turn is saved all the same.
            let _ = tx.send(result.map(RunEvent::Finished));
        };
        let task = runtime.spawn(run.in_current_span());
        RunStream::new(rx, Some(task), cancel, self.name().to_owned())
    }

    /// The latest saved state of session `id`, its conversation history included (what the
    /// session's log retention kept of it); `None` before the first checkpoint.
    ///
    /// # Errors
    /// `SessionNotFound`, `Backend`, `Corrupt`.
    pub async fn state(&self, id: &SessionId) -> Result<Option<S>> {
        let checkpointer = self.inner.sessions.checkpointer();
        if checkpointer.version(id).await? == 0 {
            return Ok(None);
        }
        match checkpointer.latest(id).await? {
            Some(saved) => {
                Ok(Some(Arc::unwrap_or_clone(checkpoint::decode::<S>(checkpointer, id, saved).await?.0.state)))
            }
            None => Ok(None),
        }
    }

    /// Changes session `id`'s latest state from outside a turn and saves it as a new
    /// checkpoint, as if node `as_node` had made the change (`None`: no node): what
    /// LangGraph's `update_state` does, for a person correcting a conversation or a tool
    /// writing into it. Returns the state as saved.
    ///
    /// `update` works on the state like a node would, under the same rules: the history only
    /// grows (append messages, never remove or rewrite them), so the checkpoint writes only
    /// what was added. No interaction is tracked, and a session whose run is interrupted must
    /// be resumed first.
    ///
    /// # Errors
    /// - [`Error::SessionNotFound`]; [`GraphError::Invalid`](lgadk_core::GraphError::Invalid)
    ///   when a run is interrupted; whatever `update` returns, or
    ///   [`GraphError::State`](lgadk_core::GraphError::State) when the history shrank; nothing
    ///   is written in any of these cases.
    /// - [`Error::Conflict`] when another process saved the session since it was read.
    /// - `Backend`, `Corrupt` from the session manager.
    pub async fn update_state(
        &self,
        id: &SessionId,
        as_node: Option<&str>,
        update: impl FnOnce(&mut S) -> Result<()> + Send,
    ) -> Result<StateSnapshot<S>> {
        self.update(id, as_node.map(str::to_owned), update).await?;
        let latest = self.history(id, 1).await?.into_iter().next();
        latest.ok_or_else(|| Error::SessionNotFound(id.clone()))
    }

    /// Up to `limit` saved checkpoints of session `id`, newest first, each with the history as
    /// it was then (stores keep the latest 20 per session by default), from where the log
    /// starts now: [`StateSnapshot::log_start`] says where the log was cut.
    ///
    /// # Errors
    /// `SessionNotFound`, `Backend`, `Corrupt`.
    pub async fn history(&self, id: &SessionId, limit: usize) -> Result<Vec<StateSnapshot<S>>> {
        let checkpointer = self.inner.sessions.checkpointer();
        checkpointer.version(id).await?;
        let mut snapshots = Vec::new();
        for saved in checkpointer.list(id, limit).await? {
            let (snapshot, node, created_at) = checkpoint::decode::<S>(checkpointer, id, saved).await?;
            snapshots.push(StateSnapshot::new(snapshot, node, created_at));
        }
        Ok(snapshots)
    }
}
