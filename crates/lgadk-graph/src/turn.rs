//! How one turn of a [`CompiledGraph`] runs: lock the session, load or reuse its state, run
//! the nodes, save the checkpoint compare-and-set, track the interaction.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use lgadk_core::{
    Error, GraphError, GraphState, Interaction, Metadata, NewSession, OpId, Result, RunContext, SessionId, UserId,
};
use lgadk_session::SessionManager;
use tracing::Instrument as _;

use crate::cache::Snapshot;
use crate::checkpoint;
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
}

impl From<RunRequest> for TurnRequest {
    fn from(request: RunRequest) -> Self {
        let RunRequest { message, session_id, user_id, metadata } = request;
        Self { turn: Turn::Message(message), session_id, user_id, metadata }
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
    cancel: Option<Arc<AtomicBool>>,
    started: Instant,
}

/// Where an attempt starts: the session as stored (`None` for a new one), the checkpoint the
/// state came from, and the user and metadata the turn runs with.
struct Begun {
    session: Option<lgadk_core::Session>,
    /// The base checkpoint's version, log length, step and pending nodes.
    version: u64,
    log_len: u64,
    step: u64,
    next: Vec<String>,
    user_id: Option<UserId>,
    metadata: Metadata,
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
        cancel: Option<Arc<AtomicBool>>,
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

    /// Reads the session and the state to start from, and merges the request's metadata.
    async fn begin(&self, input: &TurnInput<'_, S>) -> Result<(Begun, Arc<S>)> {
        let (sessions, id, request) = (&self.inner.sessions, &input.id, &input.request);
        let (session, base) = if input.existing {
            let session = sessions.get_session(id).await?.ok_or_else(|| Error::SessionNotFound(id.clone()))?;
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
                sessions.update_session_metadata(id, update.clone(), true).await?
            }
            (Some(session), _) => session.metadata.clone(),
            (None, metadata) => metadata.clone().unwrap_or_default(),
        };
        let Snapshot { version, log_len, step, next, state } = base;
        Ok((Begun { session, version, log_len, step, next, user_id, metadata }, state))
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
        if let Some(flag) = &input.cancel {
            ctx = ctx.with_cancel_flag(Arc::clone(flag));
        }
        if let Turn::Resume(value) = &input.request.turn {
            ctx = ctx.with_resume_value(value.clone());
        }
        let ctx = Arc::new(ctx);
        let limit = input.options.recursion_limit.unwrap_or(topology.recursion_limit);
        let outcome = topology.execute(&mut state, start, &ctx, input.events, limit, first_step).await?;
        Ok(Ran { state, outcome, ctx })
    }

    /// Saves the turn: the new session, the checkpoint (compare-and-set on the version it
    /// started from), then the interaction; caches the saved state.
    async fn commit(&self, input: &TurnInput<'_, S>, begun: Begun, ran: Ran<S>) -> Result<RunResponse<S>> {
        let inner = &*self.inner;
        let id = &input.id;
        let Begun { session, version: base_version, log_len: base_log_len, user_id, metadata, .. } = begun;
        let Ran { mut state, outcome, ctx } = ran;
        let (next, node, step, interrupted) = match outcome {
            Outcome::Finished { step, node } => (Vec::new(), node, step, None),
            Outcome::Interrupted { node, frontier, step } => (frontier, Some(node.clone()), step, Some(node)),
        };
        // One op id for the checkpoint: a repeat after an unknown outcome saves it once.
        let op = OpId::new();
        let encode = |state: &mut S| {
            checkpoint::encode(&inner.topology.name, state, base_log_len, &next, step, node.clone())
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
        let checkpointer = inner.sessions.checkpointer();
        let mut saving = checkpointer.put(id, new_checkpoint, base_version).await;
        for _ in 0..inner.sessions.unknown_outcome_retries() {
            match &saving {
                Err(err) if err.outcome() == Some(lgadk_core::Outcome::Unknown) => {
                    tracing::debug!(error = %err, "checkpoint outcome unknown; saving it again with its op id");
                    saving = checkpointer.put(id, encode(&mut state)?, base_version).await;
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
        let response_time = input.started.elapsed();
        if input.options.track_interactions {
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
        let checkpointer = self.inner.sessions.checkpointer();
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

    use std::fmt;
    use std::ops::Range;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use lgadk_core::{
        ChatState, Checkpoint, Checkpointer, Message, MetadataUpdate, NewCheckpoint, Page, Session, SessionPage,
        SessionStats, SessionStore, Usage,
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

    impl lgadk_core::TurnStore for MockBackend {}

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
