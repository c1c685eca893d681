//! How one turn of a [`CompiledGraph`] runs: lock the session, read it with its state (or
//! reuse the cached state) in one call, run the nodes, commit the checkpoint compare-and-set
//! with the interaction and the metadata merge in one call.

use std::sync::Arc;
use std::time::Instant;

use lgadk_core::session::{check_metadata_depth, check_metadata_size};
use lgadk_core::{
    CancelToken, Error, GraphError, GraphState, Interaction, LatestCheckpoint, LogRetention, Metadata, MetadataUpdate,
    NewSession, OpId, Result, RunContext, Session, SessionId, TurnCommit, UserId,
};
use tracing::Instrument as _;

use crate::cache::Snapshot;
use crate::checkpoint::{self, LogSpan};
use crate::compiled::CompiledGraph;
use crate::exec::{Outcome, Start};
use crate::run::{RunOptions, RunRequest, RunResponse};
use crate::stream::{ChannelSink, EventTx};

/// What a turn does: start from a message, or continue an interrupted run.
#[derive(Debug, Clone)]
pub(crate) enum Turn {
    Message(String),
    Resume(serde_json::Value),
}

/// A turn as the runner sees it: a message or a resume, and the session it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct TurnRequest {
    pub(crate) turn: Turn,
    pub(crate) session_id: Option<SessionId>,
    pub(crate) user_id: Option<UserId>,
    pub(crate) metadata: Option<Metadata>,
    /// The session's own log retention, saved with this turn for the turns that follow.
    pub(crate) log_retention: Option<LogRetention>,
}

impl From<RunRequest> for TurnRequest {
    fn from(request: RunRequest) -> Self {
        let RunRequest { message, session_id, user_id, metadata, log_retention } = request;
        Self { turn: Turn::Message(message), session_id, user_id, metadata, log_retention }
    }
}

/// One turn's inputs, shared by its attempts (a second one follows a conflict).
struct TurnInput<'a, S: GraphState> {
    id: SessionId,
    /// Whether the session exists already (the request named it).
    existing: bool,
    request: TurnRequest,
    options: RunOptions,
    events: Option<&'a EventTx<S>>,
    cancel: Option<CancelToken>,
    started: Instant,
}

/// Where an attempt starts: the session as stored (`None` for a new one), the checkpoint the
/// state came from, and the user and metadata the turn runs with.
struct Begun {
    session: Option<lgadk_core::Session>,
    /// The base checkpoint's version, log span, step and pending nodes.
    version: u64,
    log_len: u64,
    log_start: u64,
    /// The session's own log retention, as saved with the base checkpoint.
    retention: Option<LogRetention>,
    step: u64,
    next: Vec<String>,
    user_id: Option<UserId>,
    /// The session's metadata with the request's merged in, as the nodes see it.
    metadata: Metadata,
    /// The request's metadata, merged into the stored metadata by the commit.
    merge_metadata: Option<Metadata>,
}

/// The nodes' work, not yet saved.
struct Ran<S> {
    state: S,
    outcome: Outcome,
    ctx: Arc<RunContext>,
}

impl<S: GraphState> CompiledGraph<S> {
    pub(crate) async fn turn(
        &self,
        request: TurnRequest,
        options: RunOptions,
        events: Option<&EventTx<S>>,
        cancel: Option<CancelToken>,
    ) -> Result<RunResponse<S>> {
        let started = Instant::now();
        let (id, existing) = match &request.session_id {
            Some(id) => (id.clone(), true),
            None => (SessionId::new(), false),
        };
        let span =
            tracing::info_span!("graph.run", graph = %self.name(), session.id = %id, user.id = tracing::field::Empty);
        let input = TurnInput { id, existing, request, options, events, cancel, started };
        async {
            let _lock = self.inner.locks.lock(&input.id).await;
            let mut retried = false;
            loop {
                match self.attempt(&input).await {
                    Err(Error::Conflict { .. }) if options.retry_on_conflict && existing && !retried => {
                        tracing::info!("another writer saved the session first; reloading and running again");
                        self.inner.cache.remove(&input.id);
                        retried = true;
                    }
                    other => return other,
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn attempt(&self, input: &TurnInput<'_, S>) -> Result<RunResponse<S>> {
        let (begun, base_state) = self.begin(input).await?;
        let ran = self.execute(input, &begun, base_state).await?;
        self.commit(input, begun, ran).await
    }

    /// Reads the session and the state to start from in one call, and merges the request's
    /// metadata into the session's for the nodes (the commit writes the merge).
    async fn begin(&self, input: &TurnInput<'_, S>) -> Result<(Begun, Arc<S>)> {
        let (sessions, id, request) = (&self.inner.sessions, &input.id, &input.request);
        let (session, base) = if input.existing {
            let (session, base) = self.load(id).await?;
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
        let (metadata, merge_metadata) = match (&session, &request.metadata) {
            (Some(session), Some(update)) if !update.is_empty() => {
                // Checked as `update_session_metadata` checks it, before any node runs; the
                // store checks the merged size when the turn is committed.
                let update = check_metadata_depth(update.clone())?;
                check_metadata_size(&update, sessions.metadata_limit())?;
                let mut merged = session.metadata.clone();
                MetadataUpdate::Merge(update.clone()).apply_to(&mut merged);
                (merged, Some(update))
            }
            (Some(session), _) => (session.metadata.clone(), None),
            (None, metadata) => (metadata.clone().unwrap_or_default(), None),
        };
        let Snapshot { version, log_len, log_start, retention, step, next, state } = base;
        let begun =
            Begun { session, version, log_len, log_start, retention, step, next, user_id, metadata, merge_metadata };
        Ok((begun, state))
    }

    /// Runs the nodes on a copy of the base state; nothing is written.
    async fn execute(&self, input: &TurnInput<'_, S>, begun: &Begun, base_state: Arc<S>) -> Result<Ran<S>> {
        let topology = &self.inner.topology;
        let id = &input.id;
        // Unique unless the caller still holds the previous turn's response: then one copy.
        let mut state = Arc::unwrap_or_clone(base_state);
        let (start, first_step) = match &input.request.turn {
            Turn::Message(message) => {
                state.begin_turn(message);
                (Start::Entry, 0)
            }
            Turn::Resume(_) if begun.next.is_empty() => {
                let reason = format!("session `{id}` has no interrupted run to resume");
                return Err(GraphError::Invalid { graph: topology.name.clone(), reason }.into());
            }
            Turn::Resume(_) => (Start::Frontier(begun.next.clone()), begun.step),
        };
        state.bind_session(id, &begun.metadata);

        let mut ctx = RunContext::new(Some(id.clone()), begun.user_id.clone());
        if let Some(tx) = input.events {
            ctx = ctx.with_events(Arc::new(ChannelSink(tx.clone())));
        }
        if let Some(token) = &input.cancel {
            ctx = ctx.with_cancel_token(token.clone());
        }
        ctx = ctx.with_metadata(begun.metadata.clone());
        if let Some(store) = &self.memory {
            ctx = ctx.with_memory(Arc::clone(store));
        }
        if let Turn::Resume(value) = &input.request.turn {
            ctx = ctx.with_resume_value(value.clone());
        }
        let ctx = Arc::new(ctx);
        let limit = input.options.recursion_limit.unwrap_or(topology.recursion_limit);
        let outcome = topology.execute(&mut state, start, &ctx, input.events, limit, first_step).await?;
        Ok(Ran { state, outcome, ctx })
    }

    /// Saves the turn: the new session, then one commit with the checkpoint (compare-and-set
    /// on the version it started from), the interaction and the metadata merge; caches the
    /// saved state.
    async fn commit(&self, input: &TurnInput<'_, S>, begun: Begun, ran: Ran<S>) -> Result<RunResponse<S>> {
        let inner = &*self.inner;
        let id = &input.id;
        let Begun {
            session,
            version: base_version,
            log_len: base_log_len,
            log_start: base_log_start,
            retention,
            user_id,
            metadata,
            merge_metadata,
            ..
        } = begun;
        let Ran { mut state, outcome, ctx } = ran;
        // The session's own retention (the request's, else the one saved with it) is saved
        // again with this turn; without one, the graph's applies.
        let retention = input.request.log_retention.or(retention);
        let dropped = checkpoint::apply_retention(&mut state, retention.unwrap_or(input.options.log_retention));
        let log = LogSpan { start: base_log_start + dropped as u64, len: base_log_len };
        if dropped > 0 {
            tracing::debug!(dropped, log_start = log.start, "log retention cuts the session's log");
        }
        let (next, node, step, interrupted) = match outcome {
            Outcome::Finished { step, node } => (Vec::new(), node, step, None),
            Outcome::Interrupted { node, frontier, step, value } => {
                (frontier, Some(node.clone()), step, Some((node, value)))
            }
        };
        let usage = ctx.usage();
        let response_time = input.started.elapsed();
        // One op id for the checkpoint and one for the interaction: a repeat after an unknown
        // outcome applies the commit once.
        let op = OpId::new();
        let interaction = input.options.track_interactions.then(|| {
            Interaction::tokens(usage.prompt_tokens, usage.completion_tokens)
                .with_response_time(response_time)
                .with_op_id(OpId::new())
                .with_agents(ctx.agent_shares())
        });
        let commit = |state: &mut S| -> Result<TurnCommit> {
            let checkpoint =
                checkpoint::encode(&inner.topology.name, state, log, retention, &next, step, node.clone())?;
            Ok(TurnCommit {
                checkpoint: checkpoint.with_op_id(op),
                expected_version: base_version,
                interaction: interaction.clone(),
                merge_metadata: merge_metadata.clone(),
            })
        };
        let first = commit(&mut state)?;
        let created_at = match &session {
            Some(session) => session.created_at,
            None => {
                let new = NewSession { id: Some(id.clone()), user_id, metadata, ..NewSession::default() };
                inner.sessions.create_session_with(new).await?.created_at
            }
        };
        let turns = inner.sessions.turns();
        let span = tracing::debug_span!("session.commit_turn", backend = turns.backend(), session.id = %id);
        let mut saving = turns.commit_turn(id, first).instrument(span.clone()).await;
        for _ in 0..inner.sessions.unknown_outcome_retries() {
            match &saving {
                Err(err) if err.outcome() == Some(lgadk_core::Outcome::Unknown) => {
                    tracing::debug!(error = %err, "turn commit outcome unknown; committing it again with its op ids");
                    saving = turns.commit_turn(id, commit(&mut state)?).instrument(span.clone()).await;
                }
                _ => break,
            }
        }
        let saved = match saving {
            Ok(saved) => saved.checkpoint,
            Err(err) => {
                if session.is_none() {
                    // Best effort: the error that matters is `err`.
                    let _ = inner.sessions.end_session(id).await;
                }
                return Err(err);
            }
        };
        let output = state.output();
        let state = Arc::new(state);
        let snapshot = Snapshot {
            version: saved.version,
            log_len: saved.log_len,
            log_start: saved.log_start,
            retention,
            step,
            next,
            state: Arc::clone(&state),
        };
        inner.cache.insert(id.clone(), created_at, snapshot);
        if let Some((node, value)) = interrupted {
            return Err(Error::Interrupted { node, session_id: Some(id.clone()), value });
        }
        Ok(RunResponse { output, session_id: id.clone(), state, usage, response_time })
    }

    /// Saves `update` applied to session `id`'s latest state as a new checkpoint, as if node
    /// `as_node` had made it: under the session's lock, one read and one commit, with no
    /// interaction tracked. See [`CompiledGraph::update_state`].
    pub(crate) async fn update(
        &self,
        id: &SessionId,
        as_node: Option<String>,
        update: impl FnOnce(&mut S) -> Result<()> + Send,
    ) -> Result<()> {
        let request = TurnRequest {
            turn: Turn::Message(String::new()),
            session_id: Some(id.clone()),
            user_id: None,
            metadata: None,
            log_retention: None,
        };
        let options = RunOptions { track_interactions: false, ..self.options };
        let input = TurnInput {
            id: id.clone(),
            existing: true,
            request,
            options,
            events: None,
            cancel: None,
            started: Instant::now(),
        };
        let span = tracing::info_span!("graph.update_state", graph = %self.name(), session.id = %id);
        async {
            let _lock = self.inner.locks.lock(id).await;
            let (begun, base) = self.begin(&input).await?;
            if !begun.next.is_empty() {
                let reason = format!("session `{id}` has an interrupted run: resume it before updating its state");
                return Err(GraphError::Invalid { graph: self.name().to_owned(), reason }.into());
            }
            let mut state = Arc::unwrap_or_clone(base);
            update(&mut state)?;
            let ctx = Arc::new(RunContext::new(Some(id.clone()), begun.user_id.clone()));
            let outcome = Outcome::Finished { step: begun.step, node: as_node };
            self.commit(&input, begun, Ran { state, outcome, ctx }).await.map(drop)
        }
        .instrument(span)
        .await
    }

    /// The session and its latest state, in one call: the cached state if its version is
    /// still the latest, else the latest checkpoint with its history.
    async fn load(&self, id: &SessionId) -> Result<(Session, Snapshot<S>)> {
        let turns = self.inner.sessions.turns();
        let span = tracing::debug_span!("session.begin_turn", backend = turns.backend(), session.id = %id);
        let cached = self.inner.cache.take_entry(id);
        let start = turns.begin_turn(id, cached.as_ref().map(|(_, snapshot)| snapshot.version));
        let mut start = start.instrument(span.clone()).await?.ok_or_else(|| Error::SessionNotFound(id.clone()))?;
        if let Some((created_at, cached)) = cached {
            let current = created_at == start.session.created_at && cached.version == start.version;
            if start.latest.is_none() && current {
                return Ok((start.session, cached));
            }
            if start.latest.is_none() && start.version > 0 {
                // The entry was of an older session under this id, at the same version.
                tracing::debug!("cached state belongs to an ended session; loading the latest checkpoint");
                start = turns
                    .begin_turn(id, None)
                    .instrument(span)
                    .await?
                    .ok_or_else(|| Error::SessionNotFound(id.clone()))?;
            } else {
                tracing::debug!(version = cached.version, "cached state is stale; using the latest checkpoint");
            }
        }
        let base = match start.latest {
            Some(LatestCheckpoint { checkpoint, messages }) => checkpoint::decode_with_log(id, checkpoint, messages)?,
            None => Snapshot::empty(),
        };
        Ok((start.session, base))
    }
}

#[cfg(test)]
mod tests {
    //! The call sequence between the runner and the stores, checked with mocks: a call the
    //! test did not expect fails it.

    use std::fmt;
    use std::ops::Range;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use lgadk_core::{
        ChatState, Checkpoint, Checkpointer, Message, NewCheckpoint, Page, SessionPage, SessionStats, SessionStore,
        TurnSaved, TurnStart, TurnStore, Usage,
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
        #[async_trait]
        impl TurnStore for Backend {
            async fn begin_turn(&self, id: &SessionId, cached_version: Option<u64>) -> Result<Option<TurnStart>>;
            async fn commit_turn(&self, id: &SessionId, commit: TurnCommit) -> Result<TurnSaved>;
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
        let log = LogSpan { start: 0, len: 0 };
        let envelope = checkpoint::encode("g", &mut state, log, None, &[], 1, None).unwrap().state;
        Checkpoint {
            version,
            step: 1,
            node: Some("reply".into()),
            created_at: created(),
            log_len,
            log_start: 0,
            state: envelope,
        }
    }

    /// A mock whose `commit_turn` answers like a store: the next version, the log grown by the
    /// messages, totals when it tracked an interaction.
    fn answer_commit(log_len: u64) -> impl Fn(&SessionId, TurnCommit) -> Result<TurnSaved> + Send + 'static {
        move |_, commit| {
            let checkpoint = saved(commit.expected_version + 1, log_len + commit.checkpoint.messages.len() as u64);
            Ok(TurnSaved { checkpoint, stats: commit.interaction.map(|_| SessionStats::default()), metadata: None })
        }
    }

    /// `begin_turn`'s answer: the session at `version`, with the latest checkpoint if given.
    fn start(id: &SessionId, version: u64, latest: Option<(Checkpoint, Vec<Message>)>) -> Option<TurnStart> {
        let latest = latest.map(|(checkpoint, messages)| LatestCheckpoint { checkpoint, messages });
        Some(TurnStart { session: session(id), version, latest })
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
            .with_sessions(lgadk_session::SessionManager::new(mock))
            .compile()
            .unwrap()
    }

    #[tokio::test]
    async fn new_session_is_created_then_committed_and_a_warm_turn_is_one_read_and_one_commit() {
        let mut mock = backend();
        let mut seq = Sequence::new();
        let made = std::sync::Arc::new(std::sync::Mutex::new(None::<SessionId>));
        let remember = Arc::clone(&made);
        mock.expect_create().times(1).in_sequence(&mut seq).returning(move |new| {
            let id = new.id.unwrap();
            *remember.lock().unwrap() = Some(id.clone());
            Ok(session(&id))
        });
        mock.expect_commit_turn()
            .withf(|_, commit| {
                let turn = commit.interaction.as_ref().unwrap();
                commit.expected_version == 0
                    && commit.checkpoint.messages.len() == 2
                    && commit.checkpoint.op.is_some()
                    && (turn.tokens_in, turn.tokens_out) == (7, 3)
                    && turn.op.is_some()
                    && commit.merge_metadata.is_none()
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(answer_commit(0));
        // The second, warm turn: one read that finds the cache current, one commit.
        mock.expect_begin_turn()
            .with(predicate::always(), predicate::eq(Some(1)))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|id, _| Ok(start(id, 1, None)));
        mock.expect_commit_turn()
            .withf(|_, commit| commit.expected_version == 1 && commit.checkpoint.messages.len() == 2)
            .times(1)
            .in_sequence(&mut seq)
            .returning(answer_commit(2));

        let graph = graph(mock, false);
        let first = graph.run(RunRequest::new("one")).await.unwrap();
        assert_eq!(Some(first.session_id.clone()), *made.lock().unwrap());
        let second = graph.run(RunRequest::new("two").with_session(first.session_id)).await.unwrap();
        assert_eq!(second.state.messages.len(), 4);
    }

    #[tokio::test]
    async fn cold_turn_reads_the_latest_checkpoint_and_its_log_in_the_same_call() {
        let mut mock = backend();
        let mut seq = Sequence::new();
        mock.expect_begin_turn()
            .with(predicate::always(), predicate::eq(None))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|id, _| {
                Ok(start(id, 3, Some((saved(3, 2), vec![Message::user("earlier"), Message::assistant("reply")]))))
            });
        mock.expect_commit_turn()
            .withf(|_, commit| {
                let messages = &commit.checkpoint.messages;
                commit.expected_version == 3 && messages.len() == 2 && messages[0].content == "now"
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(answer_commit(2));

        let id = SessionId::parse("s1").unwrap();
        let response = graph(mock, false).run(RunRequest::new("now").with_session(id)).await.unwrap();
        assert_eq!(response.state.messages.len(), 4);
        assert_eq!(response.state.messages[0].content, "earlier");
    }

    /// The request's metadata reaches the nodes merged into the session's, and is written by
    /// the commit, not before the nodes run.
    #[tokio::test]
    async fn request_metadata_is_merged_for_the_nodes_and_written_by_the_commit() {
        let mut mock = backend();
        mock.expect_begin_turn().times(1).returning(|id, _| {
            let mut start = start(id, 0, None).unwrap();
            start.session.metadata = serde_json::from_value(serde_json::json!({"a": 1, "b": 1})).unwrap();
            Ok(Some(start))
        });
        mock.expect_update_metadata().never();
        mock.expect_commit_turn()
            .withf(|_, commit| commit.merge_metadata == serde_json::from_value(serde_json::json!({"b": 2})).ok())
            .times(1)
            .returning(answer_commit(0));
        let id = SessionId::parse("s1").unwrap();
        let update: Metadata = serde_json::from_value(serde_json::json!({"b": 2})).unwrap();
        let request = RunRequest::new("now").with_session(id).with_metadata(update);
        let response = graph(mock, false).run(request).await.unwrap();
        let seen: Metadata = serde_json::from_value(serde_json::json!({"a": 1, "b": 2})).unwrap();
        assert_eq!(response.state.metadata, seen);
    }

    /// A cached state whose checkpoints were deleted since (the store is back at version 0)
    /// is dropped: the turn starts from the empty state on version 0.
    #[tokio::test]
    async fn cached_state_of_deleted_checkpoints_is_not_used() {
        let mut mock = backend();
        let mut seq = Sequence::new();
        mock.expect_begin_turn().times(1).in_sequence(&mut seq).returning(|id, _| Ok(start(id, 0, None)));
        mock.expect_commit_turn().times(1).in_sequence(&mut seq).returning(answer_commit(0));
        mock.expect_begin_turn()
            .with(predicate::always(), predicate::eq(Some(1)))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|id, _| Ok(start(id, 0, None)));
        mock.expect_commit_turn()
            .withf(|_, commit| commit.expected_version == 0 && commit.checkpoint.messages.len() == 2)
            .times(1)
            .in_sequence(&mut seq)
            .returning(answer_commit(0));
        let id = SessionId::parse("s1").unwrap();
        let graph = graph(mock, false);
        graph.run(RunRequest::new("one").with_session(id.clone())).await.unwrap();
        let second = graph.run(RunRequest::new("two").with_session(id)).await.unwrap();
        assert_eq!(second.state.messages.len(), 2, "started over from the empty state");
    }

    /// A run whose node fails writes nothing: no checkpoint, no interaction, no metadata.
    #[tokio::test]
    async fn failed_node_writes_nothing() {
        let mut mock = backend();
        mock.expect_begin_turn().times(1).returning(|id, _| Ok(start(id, 0, None)));
        mock.expect_commit_turn().never();
        mock.expect_update_metadata().never();
        let id = SessionId::parse("s1").unwrap();
        let update: Metadata = serde_json::from_value(serde_json::json!({"b": 2})).unwrap();
        let request = RunRequest::new("now").with_session(id).with_metadata(update);
        let err = graph(mock, true).run(request).await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn unknown_session_reads_once_and_writes_nothing() {
        let mut mock = backend();
        mock.expect_begin_turn().times(1).returning(|_, _| Ok(None));
        let id = SessionId::parse("gone").unwrap();
        let err = graph(mock, false).run(RunRequest::new("now").with_session(id)).await.unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
    }

    #[tokio::test]
    async fn conflict_with_retry_reloads_and_saves_on_the_new_version() {
        let mut mock = backend();
        let mut seq = Sequence::new();
        mock.expect_begin_turn().times(1).in_sequence(&mut seq).returning(|id, _| Ok(start(id, 0, None)));
        mock.expect_commit_turn()
            .withf(|_, commit| commit.expected_version == 0)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|id, _| Err(Error::Conflict { id: id.clone(), expected: 0, actual: 1 }));
        mock.expect_begin_turn()
            .with(predicate::always(), predicate::eq(None))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|id, _| {
                Ok(start(id, 1, Some((saved(1, 2), vec![Message::user("theirs"), Message::assistant("reply")]))))
            });
        mock.expect_commit_turn()
            .withf(|_, commit| commit.expected_version == 1)
            .times(1)
            .in_sequence(&mut seq)
            .returning(answer_commit(2));

        let id = SessionId::parse("s1").unwrap();
        let graph = graph(mock, false).with_options(RunOptions::default().with_retry_on_conflict(true));
        let response = graph.run(RunRequest::new("mine").with_session(id)).await.unwrap();
        let contents: Vec<&str> = response.state.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["theirs", "reply", "mine", "ok"]);
    }

    #[tokio::test]
    async fn conflict_without_retry_is_returned() {
        let mut mock = backend();
        mock.expect_begin_turn().times(1).returning(|id, _| Ok(start(id, 0, None)));
        mock.expect_commit_turn()
            .times(1)
            .returning(|id, _| Err(Error::Conflict { id: id.clone(), expected: 0, actual: 1 }));
        let id = SessionId::parse("s1").unwrap();
        let err = graph(mock, false).run(RunRequest::new("mine").with_session(id)).await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn tracking_off_commits_without_an_interaction() {
        let mut mock = backend();
        mock.expect_create().times(1).returning(|new| Ok(session(&new.id.unwrap())));
        mock.expect_commit_turn().withf(|_, commit| commit.interaction.is_none()).times(1).returning(answer_commit(0));
        let graph = graph(mock, false).with_options(RunOptions::default().with_tracking(false));
        graph.run(RunRequest::new("hi")).await.unwrap();
    }

    #[tokio::test]
    async fn failed_save_of_a_new_session_ends_it() {
        let mut mock = backend();
        let mut seq = Sequence::new();
        mock.expect_create().times(1).in_sequence(&mut seq).returning(|new| Ok(session(&new.id.unwrap())));
        mock.expect_commit_turn()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Err(Error::backend("mock", "commit", std::io::Error::other("down"))));
        mock.expect_end().times(1).in_sequence(&mut seq).returning(|_| Ok(true));
        let err = graph(mock, false).run(RunRequest::new("hi")).await.unwrap_err();
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    }

    /// A commit whose outcome is unknown is repeated once with the same op ids, for the
    /// checkpoint and for the interaction (the store applies it once).
    #[tokio::test]
    async fn commit_with_unknown_outcome_is_repeated_with_its_op_ids() {
        let mut mock = backend();
        let mut seq = Sequence::new();
        let ops = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (first, second) = (Arc::clone(&ops), Arc::clone(&ops));
        mock.expect_create().times(1).in_sequence(&mut seq).returning(|new| Ok(session(&new.id.unwrap())));
        mock.expect_commit_turn().times(1).in_sequence(&mut seq).returning(move |_, commit| {
            first.lock().unwrap().push((commit.checkpoint.op, commit.interaction.and_then(|turn| turn.op)));
            Err(Error::backend_unknown("mock", "commit", std::io::Error::other("no answer")))
        });
        mock.expect_commit_turn().times(1).in_sequence(&mut seq).returning(move |id, commit| {
            second.lock().unwrap().push((commit.checkpoint.op, commit.interaction.as_ref().and_then(|turn| turn.op)));
            answer_commit(0)(id, commit)
        });
        graph(mock, false).run(RunRequest::new("hi")).await.unwrap();
        let ops = ops.lock().unwrap();
        assert_eq!(ops.len(), 2);
        assert!(ops[0].0.is_some() && ops[0].1.is_some() && ops[0] == ops[1], "{ops:?}");
    }
}
