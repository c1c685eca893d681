//! Runs bound to sessions on the in-memory store, beyond the graph conformance suite
//! (`tests/conformance.rs`, which every backend runs): new sessions, metadata, dead sessions,
//! tracking off, interrupts naming the session, cancelled streams and runs, custom states and
//! JSON nested too deep.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code: a failure is a panic")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{EchoModel, TestAgent};
use futures_util::StreamExt as _;
use lgadk_core::{Agent, ChatState, Error, Message, Metadata, Result, RunContext, SessionId, Usage, UserId};
use lgadk_graph::{CompiledGraph, GraphBuilder, RunEvent, RunOptions, RunRequest, StateGraph};
use lgadk_session::SessionManager;

fn chat_graph(model: Arc<EchoModel>, sessions: SessionManager) -> CompiledGraph<ChatState> {
    GraphBuilder::new("chat")
        .add_agent(TestAgent::new("assistant", model))
        .configure_session_management(sessions)
        .build()
        .unwrap()
}

fn meta(pairs: &[(&str, &str)]) -> Metadata {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v))).collect()
}

#[tokio::test]
async fn run_without_session_creates_one_with_user_and_metadata() {
    let sessions = SessionManager::in_memory();
    let graph = chat_graph(Arc::new(EchoModel::default()), sessions.clone());
    let bob = UserId::parse("bob").unwrap();
    let request = RunRequest::new("hi").with_user(bob.clone()).with_metadata(meta(&[("device", "mobile")]));
    let response = graph.run(request).await.unwrap();

    assert_eq!(response.output, "echo #1: hi");
    assert_eq!(response.usage, EchoModel::usage_for(2, "echo #1: hi"));
    let session = sessions.get_session(&response.session_id).await.unwrap().unwrap();
    assert_eq!(session.user_id, Some(bob.clone()));
    assert_eq!(session.metadata, meta(&[("device", "mobile")]));
    assert_eq!(session.stats.interactions, 1);
    assert_eq!(session.stats.total_tokens_in, response.usage.prompt_tokens);
    assert_eq!(session.stats.total_tokens_out, response.usage.completion_tokens);
    assert!(session.stats.total_response_time > Duration::ZERO || response.response_time < Duration::from_millis(1));
    assert_eq!(sessions.get_user_sessions(&bob).await.unwrap(), vec![response.session_id.clone()]);
    assert_eq!(response.state.session_id.as_ref(), Some(&response.session_id));
    assert_eq!(response.state.metadata, meta(&[("device", "mobile")]));
}

#[tokio::test]
async fn run_with_metadata_on_existing_session_merges_it() {
    let sessions = SessionManager::in_memory();
    let graph = chat_graph(Arc::new(EchoModel::default()), sessions.clone());
    let id = sessions.create_session(None, meta(&[("device", "laptop"), ("lang", "en")])).await.unwrap();
    let response =
        graph.run(RunRequest::new("hi").with_session(id.clone()).with_metadata(meta(&[("lang", "fr")]))).await.unwrap();
    assert_eq!(response.state.metadata, meta(&[("device", "laptop"), ("lang", "fr")]));
    assert_eq!(sessions.get_session(&id).await.unwrap().unwrap().metadata, response.state.metadata);
}

#[tokio::test]
async fn run_on_unknown_or_ended_session_fails_and_writes_nothing() {
    let sessions = SessionManager::in_memory();
    let model = Arc::new(EchoModel::default());
    let graph = chat_graph(Arc::clone(&model), sessions.clone());
    let unknown = SessionId::parse("never-created").unwrap();
    let err = graph.run(RunRequest::new("hi").with_session(unknown.clone())).await.unwrap_err();
    assert!(matches!(&err, Error::SessionNotFound(id) if *id == unknown), "{err:?}");
    assert!(!sessions.session_exists(&unknown).await.unwrap());

    let id = sessions.create_session(None, Metadata::new()).await.unwrap();
    graph.run(RunRequest::new("hi").with_session(id.clone())).await.unwrap();
    sessions.end_session(&id).await.unwrap();
    let err = graph.run(RunRequest::new("again").with_session(id.clone())).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(model.calls(), 1, "no model call for a dead session");
    assert!(!sessions.session_exists(&id).await.unwrap());
}

#[tokio::test]
async fn tracking_turned_off_saves_the_turn_without_an_interaction() {
    let sessions = SessionManager::in_memory();
    let graph = chat_graph(Arc::new(EchoModel::default()), sessions.clone())
        .with_options(RunOptions::default().with_tracking(false));
    let response = graph.run(RunRequest::new("hi")).await.unwrap();
    let session = sessions.get_session(&response.session_id).await.unwrap().unwrap();
    assert_eq!(session.stats.interactions, 0);
    assert_eq!(graph.state(&response.session_id).await.unwrap().unwrap().messages.len(), 2);
}

/// Asks for approval once; on resume, records the answer.
struct Approval;

#[async_trait::async_trait]
impl Agent<ChatState> for Approval {
    fn name(&self) -> &str {
        "approval"
    }

    async fn call(&self, state: &mut ChatState, ctx: &RunContext) -> Result<()> {
        match ctx.resume_value() {
            None => Err(Error::interrupt("approval")),
            Some(answer) => {
                state.messages.push(Message::user(format!("approved: {answer}")));
                Ok(())
            }
        }
    }
}

/// Regression: a run that created its session and then interrupted must say which session to
/// resume, or the caller could never continue it.
#[tokio::test]
async fn interrupt_of_a_run_that_created_its_session_names_the_session() {
    let sessions = SessionManager::in_memory();
    let graph = StateGraph::<ChatState>::new("hitl")
        .add_node("approval", Approval)
        .set_entry_point("approval")
        .set_finish_point("approval")
        .with_sessions(sessions.clone())
        .compile()
        .unwrap();
    let err = graph.run(RunRequest::new("please approve")).await.unwrap_err();
    let Error::Interrupted { session_id: Some(id), .. } = err else { panic!("{err:?}") };
    assert!(sessions.session_exists(&id).await.unwrap());
    let resumed = graph.resume(&id, serde_json::json!("ok")).await.unwrap();
    assert_eq!(resumed.session_id, id);
    assert!(resumed.state.messages.iter().any(|m| m.content == "approved: \"ok\""));
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_run_before_its_next_step_and_saves_nothing() {
    let sessions = SessionManager::in_memory();
    let graph = StateGraph::<ChatState>::new("slow")
        .add_node_fn("first", |state: ChatState, _| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(state)
        })
        .add_node_fn("second", |mut state: ChatState, _| async move {
            state.output = "should not run".into();
            Ok(state)
        })
        .set_entry_point("first")
        .add_edge("first", "second")
        .set_finish_point("second")
        .with_sessions(sessions.clone())
        .compile()
        .unwrap();
    let id = sessions.create_session(None, Metadata::new()).await.unwrap();
    let mut stream = graph.stream(RunRequest::new("hi").with_session(id.clone()));
    assert!(matches!(stream.next().await, Some(Ok(RunEvent::NodeStarted { step: 1, .. }))));
    drop(stream);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(graph.state(&id).await.unwrap().is_none());
    assert_eq!(sessions.get_session(&id).await.unwrap().unwrap().stats.interactions, 0);
}

/// A custom typed state without messages: snapshotted whole.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Tally {
    inputs: Vec<String>,
    total: usize,
}

impl lgadk_core::GraphState for Tally {
    fn begin_turn(&mut self, input: &str) {
        self.inputs.push(input.to_owned());
    }

    fn output(&self) -> String {
        self.total.to_string()
    }
}

#[tokio::test]
async fn custom_state_is_saved_and_continued_like_chat_state() {
    let sessions = SessionManager::in_memory();
    let build = || {
        StateGraph::<Tally>::new("tally")
            .add_node_fn("add", |mut state: Tally, ctx: Arc<RunContext>| async move {
                state.total += state.inputs.last().map_or(0, String::len);
                ctx.add_usage(Usage::new(1, 1));
                Ok(state)
            })
            .set_entry_point("add")
            .set_finish_point("add")
            .with_sessions(sessions.clone())
            .compile()
            .unwrap()
    };
    let first = build().run(RunRequest::new("abc")).await.unwrap();
    let second = build().run(RunRequest::new("de").with_session(first.session_id.clone())).await.unwrap();
    assert_eq!(second.output, "5");
    assert_eq!(second.state.inputs, ["abc", "de"]);
    assert_eq!(sessions.get_session_summary(&first.session_id).await.unwrap().unwrap().interactions, 2);
}

/// An in-memory store whose turn commit takes a while, like a slow network.
#[derive(Debug, Clone)]
struct SlowCommit(lgadk_session::InMemoryStore);

#[async_trait::async_trait]
impl lgadk_core::SessionStore for SlowCommit {
    fn backend(&self) -> &'static str {
        "slow-commit"
    }
    async fn create(&self, new: lgadk_core::NewSession) -> Result<lgadk_core::Session> {
        self.0.create(new).await
    }
    async fn get(&self, id: &SessionId) -> Result<Option<lgadk_core::Session>> {
        self.0.get(id).await
    }
    async fn track_interaction(
        &self,
        id: &SessionId,
        turn: lgadk_core::Interaction,
    ) -> Result<lgadk_core::SessionStats> {
        self.0.track_interaction(id, turn).await
    }
    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.0.touch(id).await
    }
    async fn update_metadata(&self, id: &SessionId, update: lgadk_core::MetadataUpdate) -> Result<Metadata> {
        self.0.update_metadata(id, update).await
    }
    async fn list_user_sessions(&self, user: &UserId, page: lgadk_core::Page) -> Result<lgadk_core::SessionPage> {
        self.0.list_user_sessions(user, page).await
    }
    async fn end(&self, id: &SessionId) -> Result<bool> {
        self.0.end(id).await
    }
    async fn purge_expired(&self) -> Result<usize> {
        self.0.purge_expired().await
    }
}

#[async_trait::async_trait]
impl lgadk_core::Checkpointer for SlowCommit {
    async fn version(&self, id: &SessionId) -> Result<u64> {
        self.0.version(id).await
    }
    async fn put(
        &self,
        id: &SessionId,
        checkpoint: lgadk_core::NewCheckpoint,
        expected_version: u64,
    ) -> Result<lgadk_core::Checkpoint> {
        self.0.put(id, checkpoint, expected_version).await
    }
    async fn latest(&self, id: &SessionId) -> Result<Option<lgadk_core::Checkpoint>> {
        self.0.latest(id).await
    }
    async fn checkpoint(&self, id: &SessionId, version: u64) -> Result<Option<lgadk_core::Checkpoint>> {
        self.0.checkpoint(id, version).await
    }
    async fn list(&self, id: &SessionId, limit: usize) -> Result<Vec<lgadk_core::Checkpoint>> {
        self.0.list(id, limit).await
    }
    async fn messages(&self, id: &SessionId, range: std::ops::Range<u64>) -> Result<Vec<Message>> {
        self.0.messages(id, range).await
    }
    async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.0.delete(id).await
    }
}

/// Regression: a caller that gives up on `run` (a timeout, a closed connection) must never
/// leave a saved turn that was not tracked. The checkpoint and the interaction are one atomic
/// commit, so a dropped run saved either both or neither.
#[tokio::test]
async fn dropping_run_during_the_commit_saves_the_turn_whole_or_not_at_all() {
    let sessions = SessionManager::new(SlowCommit(lgadk_session::InMemoryStore::new()));
    let graph = chat_graph(Arc::new(EchoModel::default()), sessions.clone());
    let id = sessions.create_session(None, Metadata::new()).await.unwrap();
    let run = graph.run(RunRequest::new("hello").with_session(id.clone()));
    let gave_up = tokio::time::timeout(Duration::from_millis(100), run).await;
    assert!(gave_up.is_err(), "the run was still committing when the caller gave up");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sessions.checkpointer().version(&id).await.unwrap(), 0, "nothing of the turn was saved");
    assert_eq!(sessions.get_session(&id).await.unwrap().unwrap().stats.interactions, 0);

    graph.run(RunRequest::new("hello").with_session(id.clone())).await.unwrap();
    assert_eq!(sessions.checkpointer().version(&id).await.unwrap(), 1);
    let stats = sessions.get_session(&id).await.unwrap().unwrap().stats;
    assert_eq!(stats.interactions, 1, "saved and tracked together");
    assert_eq!(stats.total_tokens_out, EchoModel::usage_for(2, "echo #1: hello").completion_tokens);
}

fn nested(levels: usize) -> serde_json::Value {
    (0..levels).fold(serde_json::Value::Null, |inner, _| serde_json::json!([inner]))
}

/// A graph whose one node answers and leaves `extra["deep"]` nested `extra_levels` deep, and
/// a tool call whose arguments nest `argument_levels` deep.
fn deep_graph(sessions: &SessionManager, extra_levels: usize, argument_levels: usize) -> CompiledGraph<ChatState> {
    GraphBuilder::new("deep")
        .add_node_fn("deep", move |mut state: ChatState, _| async move {
            state.messages.push(Message::user(state.input.clone()));
            let mut call = Message::assistant("");
            call.tool_calls.push(lgadk_core::ToolCall {
                id: "c".into(),
                name: "t".into(),
                arguments: nested(argument_levels),
            });
            state.messages.push(call);
            state.extra.insert("deep".into(), nested(extra_levels));
            Ok(state)
        })
        .configure_session_management(sessions.clone())
        .build()
        .unwrap()
}

#[tokio::test]
async fn state_or_message_nested_too_deep_fails_the_run_and_writes_nothing() {
    let sessions = SessionManager::in_memory();
    let id = sessions.create_session(None, Metadata::new()).await.unwrap();
    let fine = deep_graph(&sessions, 100, 100).run(RunRequest::new("one").with_session(id.clone())).await.unwrap();
    let stats_before = sessions.get_session(&id).await.unwrap().unwrap().stats;

    for (extra, arguments, what) in [(1_000, 1, "a graph state"), (1, lgadk_core::json::MAX_JSON_DEPTH, "a message")] {
        let graph = deep_graph(&sessions, extra, arguments);
        let err = graph.run(RunRequest::new("two").with_session(id.clone())).await.unwrap_err();
        assert!(matches!(err, Error::NestingTooDeep { what: w, .. } if w == what), "{err:?}");
        assert_eq!(graph.state(&id).await.unwrap().unwrap().messages, fine.state.messages);
        assert_eq!(graph.history(&id, 10).await.unwrap().len(), 1);
        assert_eq!(sessions.get_session(&id).await.unwrap().unwrap().stats, stats_before);
    }
}

#[test]
fn stream_outside_a_runtime_yields_a_typed_error_instead_of_panicking() {
    let sessions = SessionManager::in_memory();
    let graph = chat_graph(Arc::new(EchoModel::default()), sessions);
    let mut stream = graph.stream(RunRequest::new("hi"));
    // Polled by a runtime later, the stream says what went wrong and ends.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let events: Vec<_> = runtime.block_on(async { (&mut stream).collect::<Vec<_>>().await });
    assert_eq!(events.len(), 1);
    assert!(matches!(events[0], Err(Error::NoRuntime { op: "CompiledGraph::stream" })), "{:?}", events[0]);
}

#[async_trait::async_trait]
impl lgadk_core::TurnStore for SlowCommit {
    async fn begin_turn(&self, id: &SessionId, cached: Option<u64>) -> Result<Option<lgadk_core::TurnStart>> {
        self.0.begin_turn(id, cached).await
    }
    async fn commit_turn(&self, id: &SessionId, commit: lgadk_core::TurnCommit) -> Result<lgadk_core::TurnSaved> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.0.commit_turn(id, commit).await
    }
}
