//! Running a compiled graph per session: load, execute, save, track.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use lgadk_core::{
    ChatState, Checkpointer, Error, GraphError, GraphState, Interaction, Metadata, NewSession, OpId, Result,
    RunContext, SessionId, Usage, UserId,
};
use lgadk_session::SessionManager;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::cache::{Snapshot, StateCache};
use crate::checkpoint::{self, StateSnapshot};
use crate::exec::{Outcome, Start};
use crate::graph::Topology;
use crate::lock::SessionLocks;
use crate::stream::{ChannelSink, EventTx, RunEvent, RunStream};

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
}

/// What a successful run returns.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunResponse<S> {
    /// The turn's answer ([`GraphState::output`]).
    pub output: String,
    /// The session the turn was saved to (new if the request named none).
    pub session_id: SessionId,
    /// The state after the turn, with the whole conversation history. Shared with the
    /// graph's per-process cache, so returning it costs no copy of the history;
    /// `Arc::unwrap_or_clone(response.state)` gives an owned state.
    pub state: Arc<S>,
    /// Token usage the model calls of the turn reported.
    pub usage: Usage,
    /// Measured wall time of the run, from the call to the saved turn.
    pub response_time: Duration,
}

/// Per-run settings; [`CompiledGraph::with_options`] sets a graph's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOptions {
    /// Track each turn on the session ([`SessionManager::record_interaction`]) with the usage the
    /// model reported and the measured wall time. Default `true`; turn it off when the caller
    /// tracks interactions itself.
    pub track_interactions: bool,
    /// When another process saved the session first ([`Error::Conflict`]), reload its state and
    /// run the turn again, once. Default `false`: the conflict is returned.
    pub retry_on_conflict: bool,
    /// Overrides the graph's recursion limit for this run.
    pub recursion_limit: Option<usize>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { track_interactions: true, retry_on_conflict: false, recursion_limit: None }
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

    /// Sets [`recursion_limit`](Self::recursion_limit).
    #[must_use]
    pub fn with_recursion_limit(mut self, limit: usize) -> Self {
        self.recursion_limit = Some(limit);
        self
    }
}

/// A checked graph bound to a [`SessionManager`], ready to run turns.
///
/// Cloning is cheap and clones share everything: the per-session locks, the state cache and
/// the session manager. Build one per process and clone it into tasks.
///
/// # How a turn runs
/// 1. Runs on one session are serialized by a per-session async lock; other sessions are not
///    blocked.
/// 2. The session's latest state comes from a bounded per-process cache when its checkpoint
///    version is unchanged (one cheap call), otherwise from the latest checkpoint plus the
///    message log. A request without a session id starts from `S::default()`.
/// 3. Metadata in the request is merged into an existing session's metadata.
///    [`GraphState::begin_turn`] gets the message; a [`ChatState`] also gets the session id
///    and metadata.
/// 4. The nodes run from `START` until every branch reaches `END`.
/// 5. The checkpoint is saved compare-and-set on the version it was loaded at, with only the
///    messages the turn added; then the interaction is tracked (usage and wall time) unless
///    [`RunOptions::track_interactions`] is off. A new session is created just before its first
///    checkpoint, so a run without a session id that fails leaves no session behind.
///
/// A run that fails before step 5 (a node or model error, the recursion limit) writes nothing:
/// no checkpoint, no interaction, no new session. Only the metadata merge of step 3 stays.
/// Once the checkpoint is saved, the interaction is tracked even if the caller drops the `run`
/// future meanwhile (the tracking is then finished on the runtime); [`stream`](Self::stream)
/// runs on its own task and finishes the turn even if the caller stops listening.
pub struct CompiledGraph<S: GraphState> {
    inner: Arc<Inner<S>>,
    options: RunOptions,
}

struct Inner<S: GraphState> {
    topology: Topology<S>,
    sessions: SessionManager,
    cache: StateCache<S>,
    locks: SessionLocks,
}

impl<S: GraphState> Clone for CompiledGraph<S> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner), options: self.options }
    }
}

impl<S: GraphState> fmt::Debug for CompiledGraph<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledGraph")
            .field("topology", &self.inner.topology)
            .field("sessions", &self.inner.sessions)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What a turn does: start from a message, or continue an interrupted run.
#[derive(Debug, Clone)]
enum Turn {
    Message(String),
    Resume(serde_json::Value),
}

#[derive(Debug, Clone)]
struct TurnRequest {
    turn: Turn,
    session_id: Option<SessionId>,
    user_id: Option<UserId>,
    metadata: Option<Metadata>,
}

impl From<RunRequest> for TurnRequest {
    fn from(request: RunRequest) -> Self {
        let RunRequest { message, session_id, user_id, metadata } = request;
        Self { turn: Turn::Message(message), session_id, user_id, metadata }
    }
}

impl<S: GraphState> CompiledGraph<S> {
    pub(crate) fn new(topology: Topology<S>, sessions: SessionManager, cache_capacity: usize) -> Self {
        let inner = Inner { topology, sessions, cache: StateCache::new(cache_capacity), locks: SessionLocks::new() };
        Self { inner: Arc::new(inner), options: RunOptions::default() }
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

    /// Runs `state` through the graph once, without a session: nothing is loaded, saved or
    /// tracked.
    ///
    /// # Errors
    /// Node errors as the node returned them; [`Error::Graph`] with
    /// [`GraphError::RecursionLimit`] or [`GraphError::UnknownRoute`];
    /// [`Error::Interrupted`] when a node interrupts.
    pub async fn invoke(&self, mut state: S) -> Result<S> {
        let topology = &self.inner.topology;
        let span = tracing::info_span!("graph.run", graph = %topology.name, session.id = tracing::field::Empty, user.id = tracing::field::Empty);
        let limit = self.options.recursion_limit.unwrap_or(topology.recursion_limit);
        let ctx = Arc::new(RunContext::default());
        match topology.execute(&mut state, Start::Entry, &ctx, None, limit, 0).instrument(span).await? {
            Outcome::Finished { .. } => Ok(state),
            Outcome::Interrupted { node, .. } => Err(Error::Interrupted { node, session_id: None }),
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
    ///   [`GraphError::RecursionLimit`], [`GraphError::UnknownRoute`] or
    ///   [`GraphError::State`]; nothing of the turn is written.
    /// - `Backend`, `Corrupt` and `MetadataTooLarge` from the session manager.
    pub async fn run_with(&self, request: RunRequest, options: RunOptions) -> Result<RunResponse<S>> {
        self.turn(request.into(), options, None, None).await
    }

    /// Continues session `id` after a node interrupted it: the interrupted nodes run again with
    /// `value` as [`RunContext::resume_value`], then the run goes on as usual and the turn is
    /// saved and tracked like a [`run`](Self::run).
    ///
    /// # Errors
    /// [`GraphError::Invalid`] when the session has no interrupted run; otherwise as
    /// [`run_with`](Self::run_with).
    pub async fn resume(&self, id: &SessionId, value: serde_json::Value) -> Result<RunResponse<S>> {
        let request =
            TurnRequest { turn: Turn::Resume(value), session_id: Some(id.clone()), user_id: None, metadata: None };
        self.turn(request, self.options, None, None).await
    }

    /// Runs one turn like [`run`](Self::run) and streams its events: node started and finished,
    /// model token chunks, and last [`RunEvent::Finished`] with the response `run` would have
    /// returned (or one `Err`). The turn is saved and tracked the same way.
    ///
    /// # Panics
    /// Outside a Tokio runtime: the run is driven by a spawned task.
    pub fn stream(&self, request: RunRequest) -> RunStream<S> {
        self.stream_with(request, self.options)
    }

    /// [`stream`](Self::stream) with explicit [`RunOptions`].
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn stream_with(&self, request: RunRequest, options: RunOptions) -> RunStream<S> {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let graph = self.clone();
        let flag = Arc::clone(&cancel);
        let run = async move {
            let result = graph.turn(request.into(), options, Some(&tx), Some(flag)).await;
            // The caller may have stopped listening; the turn is saved all the same.
            let _ = tx.send(result.map(RunEvent::Finished));
        };
        let task = tokio::spawn(run.in_current_span());
        RunStream::new(rx, task, cancel, self.name().to_owned())
    }

    /// The latest saved state of session `id`, its conversation history included; `None`
    /// before the first checkpoint.
    ///
    /// # Errors
    /// `SessionNotFound`, `Backend`, `Corrupt`.
    pub async fn state(&self, id: &SessionId) -> Result<Option<S>> {
        let checkpointer: &dyn Checkpointer = &**self.inner.sessions.checkpointer();
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

    /// Up to `limit` saved checkpoints of session `id`, newest first, each with the history as
    /// it was then (stores keep the latest 20 per session by default).
    ///
    /// # Errors
    /// `SessionNotFound`, `Backend`, `Corrupt`.
    pub async fn history(&self, id: &SessionId, limit: usize) -> Result<Vec<StateSnapshot<S>>> {
        let checkpointer: &dyn Checkpointer = &**self.inner.sessions.checkpointer();
        checkpointer.version(id).await?;
        let mut snapshots = Vec::new();
        for saved in checkpointer.list(id, limit).await? {
            let (snapshot, node, created_at) = checkpoint::decode::<S>(checkpointer, id, saved).await?;
            snapshots.push(StateSnapshot::new(snapshot, node, created_at));
        }
        Ok(snapshots)
    }

    async fn turn(
        &self,
        request: TurnRequest,
        options: RunOptions,
        events: Option<&EventTx<S>>,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<RunResponse<S>> {
        let started = Instant::now();
        let (id, existing) = match &request.session_id {
            Some(id) => (id.clone(), true),
            None => (SessionId::new(), false),
        };
        let span =
            tracing::info_span!("graph.run", graph = %self.name(), session.id = %id, user.id = tracing::field::Empty);
        async {
            let _lock = self.inner.locks.lock(&id).await;
            let mut retried = false;
            loop {
                let attempt = self.attempt(&id, existing, &request, options, events, cancel.clone(), started).await;
                match attempt {
                    Err(Error::Conflict { .. }) if options.retry_on_conflict && existing && !retried => {
                        tracing::info!("another writer saved the session first; reloading and running again");
                        self.inner.cache.remove(&id);
                        retried = true;
                    }
                    other => return other,
                }
            }
        }
        .instrument(span)
        .await
    }

    #[expect(clippy::too_many_arguments, reason = "one internal call site; the arguments are the turn's parts")]
    async fn attempt(
        &self,
        id: &SessionId,
        existing: bool,
        request: &TurnRequest,
        options: RunOptions,
        events: Option<&EventTx<S>>,
        cancel: Option<Arc<AtomicBool>>,
        started: Instant,
    ) -> Result<RunResponse<S>> {
        let inner = &*self.inner;
        let topology = &inner.topology;

        // The session and the state to start from.
        let (session, base) = if existing {
            let session = inner.sessions.get_session(id).await?.ok_or_else(|| Error::SessionNotFound(id.clone()))?;
            let base = self.load(id, session.created_at).await?;
            (Some(session), base)
        } else {
            (None, Snapshot::empty())
        };
        let user_id = match &session {
            Some(session) => session.user_id.clone(),
            None => request.user_id.clone(),
        };
        if let Some(user) = &user_id {
            tracing::Span::current().record("user.id", tracing::field::display(user));
        }
        let metadata = match (&session, &request.metadata) {
            (Some(_), Some(update)) if !update.is_empty() => {
                inner.sessions.update_session_metadata(id, update.clone(), true).await?
            }
            (Some(session), _) => session.metadata.clone(),
            (None, metadata) => metadata.clone().unwrap_or_default(),
        };

        // Unique unless the caller still holds the previous turn's response: then one copy.
        let mut state = Arc::unwrap_or_clone(base.state);
        let (start, first_step) = match &request.turn {
            Turn::Message(message) => {
                state.begin_turn(message);
                (Start::Entry, 0)
            }
            Turn::Resume(_) if base.next.is_empty() => {
                let reason = format!("session `{id}` has no interrupted run to resume");
                return Err(GraphError::Invalid { graph: topology.name.clone(), reason }.into());
            }
            Turn::Resume(_) => (Start::Frontier(base.next.clone()), base.step),
        };
        bind_session(&mut state, id, &metadata);

        let mut ctx = RunContext::new(Some(id.clone()), user_id.clone());
        if let Some(tx) = events {
            ctx = ctx.with_events(Arc::new(ChannelSink(tx.clone())));
        }
        if let Some(flag) = cancel {
            ctx = ctx.with_cancel_flag(flag);
        }
        if let Turn::Resume(value) = &request.turn {
            ctx = ctx.with_resume_value(value.clone());
        }
        let ctx = Arc::new(ctx);
        let limit = options.recursion_limit.unwrap_or(topology.recursion_limit);
        let outcome = topology.execute(&mut state, start, &ctx, events, limit, first_step).await?;

        // Save the turn: the new session, the checkpoint, then the interaction.
        let (next, node, step, interrupted) = match outcome {
            Outcome::Finished { step, node } => (Vec::new(), node, step, None),
            Outcome::Interrupted { node, frontier, step } => (frontier, Some(node.clone()), step, Some(node)),
        };
        // One op id for the checkpoint: a repeat after an unknown outcome saves it once.
        let op = OpId::new();
        let encode = |state: &mut S| {
            checkpoint::encode(&topology.name, state, base.log_len, &next, step, node.clone())
                .map(|encoded| encoded.with_op_id(op))
        };
        let new_checkpoint = encode(&mut state)?;
        let created_at = match &session {
            Some(session) => session.created_at,
            None => {
                let new = NewSession { id: Some(id.clone()), user_id, metadata, ..NewSession::default() };
                inner.sessions.create_session_with(new).await?.created_at
            }
        };
        let checkpointer: &dyn Checkpointer = &**inner.sessions.checkpointer();
        let mut saving = checkpointer.put(id, new_checkpoint, base.version).await;
        for _ in 0..inner.sessions.unknown_outcome_retries() {
            match &saving {
                Err(err) if err.outcome() == Some(lgadk_core::Outcome::Unknown) => {
                    tracing::debug!(error = %err, "checkpoint outcome unknown; saving it again with its op id");
                    saving = checkpointer.put(id, encode(&mut state)?, base.version).await;
                }
                _ => break,
            }
        }
        let saved = match saving {
            Ok(saved) => saved,
            Err(err) => {
                if session.is_none() {
                    // Best effort: the error that matters is `err`.
                    let _ = inner.sessions.end_session(id).await;
                }
                return Err(err);
            }
        };
        let usage = ctx.usage();
        let response_time = started.elapsed();
        if options.track_interactions {
            // With an op id, so the guard below and the manager's repeats count it once.
            let turn = Interaction::tokens(usage.prompt_tokens, usage.completion_tokens)
                .with_response_time(response_time)
                .with_op_id(OpId::new());
            // If the caller drops this future while the interaction is on its way, the guard
            // finishes it on the runtime: a saved turn is always tracked.
            let pending = PendingInteraction::new(&inner.sessions, id, turn);
            let tracked = inner.sessions.record_interaction(id, turn).await;
            pending.disarm();
            tracked?;
        }
        let output = state.output();
        let state = Arc::new(state);
        let snapshot =
            Snapshot { version: saved.version, log_len: saved.log_len, step, next, state: Arc::clone(&state) };
        inner.cache.insert(id.clone(), created_at, snapshot);
        if let Some(node) = interrupted {
            return Err(Error::Interrupted { node, session_id: Some(id.clone()) });
        }
        Ok(RunResponse { output, session_id: id.clone(), state, usage, response_time })
    }

    /// The session's latest state: the cached one if its version is still the latest, else
    /// the latest checkpoint with its history.
    async fn load(&self, id: &SessionId, created_at: chrono::DateTime<chrono::Utc>) -> Result<Snapshot<S>> {
        let checkpointer: &dyn Checkpointer = &**self.inner.sessions.checkpointer();
        if let Some(cached) = self.inner.cache.take(id, created_at) {
            if checkpointer.version(id).await? == cached.version {
                return Ok(cached);
            }
            tracing::debug!(version = cached.version, "cached state is stale; loading the latest checkpoint");
        }
        match checkpointer.latest(id).await? {
            Some(saved) => Ok(checkpoint::decode(checkpointer, id, saved).await?.0),
            None => Ok(Snapshot::empty()),
        }
    }
}

/// Fills a [`ChatState`]'s session fields; other states are left alone.
fn bind_session<S: GraphState>(state: &mut S, id: &SessionId, metadata: &Metadata) {
    if let Some(chat) = (state as &mut dyn Any).downcast_mut::<ChatState>() {
        chat.session_id = Some(id.clone());
        chat.metadata.clone_from(metadata);
    }
}

/// Tracks a saved turn's interaction if the future that should have done it is dropped first.
struct PendingInteraction {
    armed: Option<(SessionManager, SessionId, Interaction)>,
}

impl PendingInteraction {
    fn new(sessions: &SessionManager, id: &SessionId, turn: Interaction) -> Self {
        Self { armed: Some((sessions.clone(), id.clone(), turn)) }
    }

    fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for PendingInteraction {
    fn drop(&mut self) {
        let Some((sessions, id, turn)) = self.armed.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(err) = sessions.record_interaction(&id, turn).await {
                        tracing::warn!(session.id = %id, error = %err, "could not track a turn whose run was dropped");
                    }
                });
            }
            Err(_) => tracing::warn!(session.id = %id, "a dropped run's interaction was not tracked: no runtime"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The call sequence between the runner and the stores, checked with mocks: a call the
    //! test did not expect fails it.

    use std::ops::Range;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use lgadk_core::{
        Checkpoint, Checkpointer, Message, MetadataUpdate, NewCheckpoint, Page, Session, SessionPage, SessionStats,
        SessionStore,
    };
    use mockall::{Sequence, predicate};

    use super::*;
    use crate::graph::StateGraph;

    mockall::mock! {
        Backend {}
        #[async_trait]
        impl SessionStore for Backend {
            fn backend(&self) -> &'static str;
            async fn create(&self, new: NewSession) -> Result<Session>;
            async fn get(&self, id: &SessionId) -> Result<Option<Session>>;
            async fn exists(&self, id: &SessionId) -> Result<bool>;
            async fn track_interaction(&self, id: &SessionId, turn: Interaction) -> Result<lgadk_core::SessionStats>;
            async fn touch(&self, id: &SessionId) -> Result<()>;
            async fn update_metadata(&self, id: &SessionId, update: MetadataUpdate) -> Result<Metadata>;
            async fn list_user_sessions(&self, user: &UserId, page: Page) -> Result<SessionPage>;
            async fn end(&self, id: &SessionId) -> Result<bool>;
            async fn purge_expired(&self) -> Result<usize>;
        }
        #[async_trait]
        impl Checkpointer for Backend {
            async fn version(&self, id: &SessionId) -> Result<u64>;
            async fn put(&self, id: &SessionId, checkpoint: NewCheckpoint, expected_version: u64) -> Result<Checkpoint>;
            async fn latest(&self, id: &SessionId) -> Result<Option<Checkpoint>>;
            async fn checkpoint(&self, id: &SessionId, version: u64) -> Result<Option<Checkpoint>>;
            async fn list(&self, id: &SessionId, limit: usize) -> Result<Vec<Checkpoint>>;
            async fn messages(&self, id: &SessionId, range: Range<u64>) -> Result<Vec<Message>>;
            async fn delete(&self, id: &SessionId) -> Result<bool>;
        }
    }

    impl fmt::Debug for MockBackend {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("MockBackend")
        }
    }

    fn created() -> DateTime<Utc> {
        lgadk_core::session::timestamp(1_700_000_000_000)
    }

    fn session(id: &SessionId) -> Session {
        Session {
            id: id.clone(),
            user_id: None,
            created_at: created(),
            last_active: created(),
            timeout: None,
            metadata: Metadata::new(),
            stats: SessionStats::default(),
        }
    }

    fn saved(version: u64, log_len: u64) -> Checkpoint {
        let mut state = ChatState::default();
        let envelope = checkpoint::encode("g", &mut state, 0, &[], 1, None).unwrap().state;
        Checkpoint { version, step: 1, node: Some("reply".into()), created_at: created(), log_len, state: envelope }
    }

    /// A mock whose `put` answers like a store: the next version, the log grown by the messages.
    fn answer_put(log_len: u64) -> impl Fn(&SessionId, NewCheckpoint, u64) -> Result<Checkpoint> + Send + 'static {
        move |_, new, expected| Ok(saved(expected + 1, log_len + new.messages.len() as u64))
    }

    fn backend() -> MockBackend {
        let mut mock = MockBackend::new();
        mock.expect_backend().return_const("mock");
        mock
    }

    fn graph(mock: MockBackend, fail: bool) -> CompiledGraph<ChatState> {
        StateGraph::<ChatState>::new("g")
            .add_node_fn("reply", move |mut state: ChatState, ctx| async move {
                if fail {
                    return Err(Error::InvalidConfig { reason: "node failed".into() });
                }
                state.messages.push(Message::user(state.input.clone()));
                state.messages.push(Message::assistant("ok"));
                ctx.add_usage(Usage::new(7, 3));
                Ok(state)
            })
            .set_entry_point("reply")
            .set_finish_point("reply")
            .with_sessions(SessionManager::new(mock))
            .compile()
            .unwrap()
    }

    #[tokio::test]
    async fn new_session_is_created_then_saved_then_tracked_and_a_warm_turn_only_checks_the_version() {
        let mut mock = backend();
        let mut seq = Sequence::new();
        let made = std::sync::Arc::new(std::sync::Mutex::new(None::<SessionId>));
        let remember = Arc::clone(&made);
        mock.expect_create().times(1).in_sequence(&mut seq).returning(move |new| {
            let id = new.id.unwrap();
            *remember.lock().unwrap() = Some(id.clone());
            Ok(session(&id))
        });
        mock.expect_put()
            .withf(|_, new, expected| *expected == 0 && new.messages.len() == 2)
            .times(1)
            .in_sequence(&mut seq)
            .returning(answer_put(0));
        mock.expect_track_interaction()
            .withf(|_, turn| (turn.tokens_in, turn.tokens_out) == (7, 3))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(SessionStats::default()));
        // The second, warm turn: the record, the version check, the save, the tracking.
        mock.expect_get().times(1).in_sequence(&mut seq).returning(|id| Ok(Some(session(id))));
        mock.expect_version().times(1).in_sequence(&mut seq).returning(|_| Ok(1));
        mock.expect_put()
            .withf(|_, new, expected| *expected == 1 && new.messages.len() == 2)
            .times(1)
            .in_sequence(&mut seq)
            .returning(answer_put(2));
        mock.expect_track_interaction().times(1).in_sequence(&mut seq).returning(|_, _| Ok(SessionStats::default()));

        let graph = graph(mock, false);
        let first = graph.run(RunRequest::new("one")).await.unwrap();
        assert_eq!(Some(first.session_id.clone()), *made.lock().unwrap());
        let second = graph.run(RunRequest::new("two").with_session(first.session_id)).await.unwrap();
        assert_eq!(second.state.messages.len(), 4);
    }

    #[tokio::test]
    async fn cold_turn_loads_the_latest_checkpoint_and_its_log_once() {
        let mut mock = backend();
        let mut seq = Sequence::new();
        mock.expect_get().times(1).in_sequence(&mut seq).returning(|id| Ok(Some(session(id))));
        mock.expect_latest().times(1).in_sequence(&mut seq).returning(|_| Ok(Some(saved(3, 2))));
        mock.expect_messages()
            .with(predicate::always(), predicate::eq(0..2))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(vec![Message::user("earlier"), Message::assistant("reply")]));
        mock.expect_put()
            .withf(|_, new, expected| *expected == 3 && new.messages.len() == 2 && new.messages[0].content == "now")
            .times(1)
            .in_sequence(&mut seq)
            .returning(answer_put(2));
        mock.expect_track_interaction().times(1).in_sequence(&mut seq).returning(|_, _| Ok(SessionStats::default()));

        let id = SessionId::parse("s1").unwrap();
        let response = graph(mock, false).run(RunRequest::new("now").with_session(id)).await.unwrap();
        assert_eq!(response.state.messages.len(), 4);
        assert_eq!(response.state.messages[0].content, "earlier");
    }

    #[tokio::test]
    async fn failed_node_writes_nothing() {
        let mut mock = backend();
        let mut seq = Sequence::new();
        mock.expect_get().times(1).in_sequence(&mut seq).returning(|id| Ok(Some(session(id))));
        mock.expect_latest().times(1).in_sequence(&mut seq).returning(|_| Ok(None));
        mock.expect_put().never();
        mock.expect_track_interaction().never();
        let id = SessionId::parse("s1").unwrap();
        let err = graph(mock, true).run(RunRequest::new("now").with_session(id)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn unknown_session_reads_once_and_writes_nothing() {
        let mut mock = backend();
        mock.expect_get().times(1).returning(|_| Ok(None));
        let id = SessionId::parse("gone").unwrap();
        let err = graph(mock, false).run(RunRequest::new("now").with_session(id)).await.unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
    }

    #[tokio::test]
    async fn conflict_with_retry_reloads_and_saves_on_the_new_version() {
        let mut mock = backend();
        let mut seq = Sequence::new();
        mock.expect_get().times(1).in_sequence(&mut seq).returning(|id| Ok(Some(session(id))));
        mock.expect_latest().times(1).in_sequence(&mut seq).returning(|_| Ok(None));
        mock.expect_put()
            .withf(|_, _, expected| *expected == 0)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|id, _, _| Err(Error::Conflict { id: id.clone(), expected: 0, actual: 1 }));
        mock.expect_get().times(1).in_sequence(&mut seq).returning(|id| Ok(Some(session(id))));
        mock.expect_latest().times(1).in_sequence(&mut seq).returning(|_| Ok(Some(saved(1, 2))));
        mock.expect_messages()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(vec![Message::user("theirs"), Message::assistant("reply")]));
        mock.expect_put()
            .withf(|_, _, expected| *expected == 1)
            .times(1)
            .in_sequence(&mut seq)
            .returning(answer_put(2));
        mock.expect_track_interaction().times(1).in_sequence(&mut seq).returning(|_, _| Ok(SessionStats::default()));

        let id = SessionId::parse("s1").unwrap();
        let graph = graph(mock, false).with_options(RunOptions::default().with_retry_on_conflict(true));
        let response = graph.run(RunRequest::new("mine").with_session(id)).await.unwrap();
        let contents: Vec<&str> = response.state.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["theirs", "reply", "mine", "ok"]);
    }

    #[tokio::test]
    async fn conflict_without_retry_is_returned_and_not_tracked() {
        let mut mock = backend();
        mock.expect_get().times(1).returning(|id| Ok(Some(session(id))));
        mock.expect_latest().times(1).returning(|_| Ok(None));
        mock.expect_put()
            .times(1)
            .returning(|id, _, _| Err(Error::Conflict { id: id.clone(), expected: 0, actual: 1 }));
        mock.expect_track_interaction().never();
        let id = SessionId::parse("s1").unwrap();
        let err = graph(mock, false).run(RunRequest::new("mine").with_session(id)).await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn tracking_off_saves_without_tracking() {
        let mut mock = backend();
        mock.expect_create().times(1).returning(|new| Ok(session(&new.id.unwrap())));
        mock.expect_put().times(1).returning(answer_put(0));
        mock.expect_track_interaction().never();
        let graph = graph(mock, false).with_options(RunOptions::default().with_tracking(false));
        graph.run(RunRequest::new("hi")).await.unwrap();
    }

    #[tokio::test]
    async fn failed_save_of_a_new_session_ends_it() {
        let mut mock = backend();
        let mut seq = Sequence::new();
        mock.expect_create().times(1).in_sequence(&mut seq).returning(|new| Ok(session(&new.id.unwrap())));
        mock.expect_put()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Err(Error::backend("mock", "put", std::io::Error::other("down"))));
        mock.expect_end().times(1).in_sequence(&mut seq).returning(|_| Ok(true));
        mock.expect_track_interaction().never();
        let err = graph(mock, false).run(RunRequest::new("hi")).await.unwrap_err();
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    }

    /// A save whose outcome is unknown is repeated once with the same op id (the store applies
    /// it once); the turn's interaction carries an op id too.
    #[tokio::test]
    async fn save_with_unknown_outcome_is_repeated_with_its_op_id() {
        let mut mock = backend();
        let mut seq = Sequence::new();
        let ops = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (first, second) = (Arc::clone(&ops), Arc::clone(&ops));
        mock.expect_create().times(1).in_sequence(&mut seq).returning(|new| Ok(session(&new.id.unwrap())));
        mock.expect_put().times(1).in_sequence(&mut seq).returning(move |_, new, _| {
            first.lock().unwrap().push(new.op);
            Err(Error::backend_unknown("mock", "put", std::io::Error::other("no answer")))
        });
        mock.expect_put().times(1).in_sequence(&mut seq).returning(move |id, new, expected| {
            second.lock().unwrap().push(new.op);
            answer_put(0)(id, new, expected)
        });
        mock.expect_track_interaction()
            .withf(|_, turn| turn.op.is_some())
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(SessionStats::default()));
        graph(mock, false).run(RunRequest::new("hi")).await.unwrap();
        let ops = ops.lock().unwrap();
        assert_eq!(ops.len(), 2);
        assert!(ops[0].is_some() && ops[0] == ops[1], "{ops:?}");
    }
}
