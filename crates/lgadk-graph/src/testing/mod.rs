//! The graph-level conformance suite every session backend runs (feature `testing`; not
//! semver-stable).
//!
//! `lgadk_core::testing` checks a backend's `SessionStore`/`Checkpointer` contract call by call;
//! this suite checks what a [`CompiledGraph`] built on the backend does with it: history across
//! runs and across separately built graphs, two writers (serialized in a process, `Conflict`
//! across processes), a failed run writes nothing, interrupt then resume from a cold graph,
//! `stream` ends in the same state as `run`, retention, bounded logs, `state` and `history`.
//!
//! Each scenario is an async function taking a fresh [`GraphFixture`]: a factory of
//! [`SessionManager`]s that share one empty backend, each with its own connection. A second
//! manager and a graph built on it stand for a second process: its own connection, state cache
//! and per-session locks. A backend's test file writes one fixture function and expands the
//! whole suite with [`graph_conformance!`](crate::graph_conformance):
//!
//! ```
//! async fn fixture() -> Option<lgadk_graph::testing::GraphFixture> {
//!     let store = lgadk_session::InMemoryStore::builder().with_checkpoint_retention(3).build();
//!     Some(lgadk_graph::testing::GraphFixture::new(3, (), move || {
//!         let store = store.clone();
//!         async move { Ok(lgadk_session::SessionManager::new(store)) }
//!     }))
//! }
//! lgadk_graph::graph_conformance!(fixture);
//! ```
//!
//! The models and agents here are written against [`ChatModel`] alone (this crate never
//! depends on a model provider): an echo model that counts its calls, can fail on chosen calls
//! and streams word by word, and a gate that holds one call until the scenario releases it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use futures_util::StreamExt as _;
use lgadk_core::{
    Agent, ChatChunk, ChatModel, ChatRequest, ChatResponse, ChatState, ChatStream, Error, GraphError, Message,
    Metadata, ModelErrorKind, Result, Role, RunContext, SessionId, Usage, UserId,
};
use lgadk_session::SessionManager;
use tokio::sync::Notify;

use crate::{CompiledGraph, GraphBuilder, RunEvent, RunOptions, RunRequest, StateGraph};

mod retention;
mod runs;
mod team;
mod tools;
pub use retention::*;
pub use runs::*;
pub use team::*;
pub use tools::*;

type Connect = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<SessionManager>> + Send>> + Send + Sync>;

/// A fresh, empty backend for one scenario, and a way to open managers on it.
pub struct GraphFixture {
    connect: Connect,
    /// How many checkpoints per session the backend keeps (e.g. 3; at least 1).
    pub checkpoint_retention: usize,
    _keep_alive: Box<dyn Any + Send + Sync>,
}

impl GraphFixture {
    /// A fixture whose backend keeps `checkpoint_retention` checkpoints per session.
    /// `connect` opens a new [`SessionManager`] on the one backend every time it is called,
    /// with its own connection (what another process would have); `keep_alive` (a server
    /// guard) lives as long as the fixture.
    pub fn new<F, Fut>(checkpoint_retention: usize, keep_alive: impl Any + Send + Sync, connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SessionManager>> + Send + 'static,
    {
        Self { connect: Box::new(move || Box::pin(connect())), checkpoint_retention, _keep_alive: Box::new(keep_alive) }
    }

    /// A new manager on the fixture's backend: another "process".
    ///
    /// # Panics
    /// When the backend cannot be reached: the scenario fails.
    pub async fn manager(&self) -> SessionManager {
        match (self.connect)().await {
            Ok(manager) => manager,
            Err(err) => panic!("the fixture could not open a session manager: {err}"),
        }
    }
}

impl fmt::Debug for GraphFixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphFixture").field("checkpoint_retention", &self.checkpoint_retention).finish_non_exhaustive()
    }
}

/// Expands the whole graph conformance suite into one `#[tokio::test]` per scenario.
///
/// `$fixture` is an `async fn() -> Option<GraphFixture>`; `None` means the backend's service
/// is unavailable here, and the fixture itself must have said so loudly (and failed under CI).
/// The calling crate needs `tokio` (macros, multi-thread runtime) as a dev-dependency.
///
/// Every module-level `pub async fn` of [`testing`](crate::testing) is a scenario and must be
/// in the macro's list; a unit test compares the two, so a scenario cannot be left out.
#[macro_export]
macro_rules! graph_conformance {
    ($fixture:path) => {
        $crate::__graph_scenarios!(tests $fixture);
    };
}

/// The one list of scenarios, handed to `__graph_conformance!` with a mode: `tests <fixture>`
/// expands the tests, `names` the list of names (for the completeness check).
#[doc(hidden)]
#[macro_export]
macro_rules! __graph_scenarios {
    ($($mode:tt)+) => {
        $crate::__graph_conformance! { $($mode)+;
            history_continues_across_runs,
            history_continues_across_separately_built_graphs,
            concurrent_runs_in_one_process_take_turns,
            racing_processes_commit_or_conflict_and_lose_nothing,
            racing_processes_with_retry_lose_nothing,
            conflict_writes_nothing_and_a_retry_commits,
            failed_run_writes_nothing,
            interrupt_then_resume_from_a_cold_graph,
            stream_ends_in_the_same_state_as_run,
            history_keeps_only_the_latest_checkpoints,
            state_and_history_read_newest_first,
            update_state_saves_a_checkpoint_the_next_turn_continues,
            tool_loop_trace_is_seen_by_the_next_turn_in_another_process,
            tool_approvals_resume_in_another_process_and_never_rerun_a_call,
            team_next_turn_starts_with_the_agent_that_holds_the_conversation,
            the_receiving_agent_answers_in_the_same_turn_and_keeps_the_conversation,
            other_calls_of_a_handoff_message_run_and_keep_their_results,
            handoffs_per_turn_are_capped_with_an_answer_or_an_error,
            a_handoff_view_limits_what_the_receiving_agent_sees,
            a_supervisor_routes_each_step_and_reads_the_workers_answers,
            round_robin_runs_to_the_round_limit_and_continues_next_turn,
            a_condition_on_the_last_answer_ends_the_turn_and_one_participant_may_speak_twice,
            a_model_picks_the_speaker_and_an_unknown_name_falls_back_to_round_robin,
            a_session_log_keeps_its_window_in_every_process,
            a_log_window_keeps_a_call_awaiting_approval_and_its_question,
            history_says_where_the_log_was_cut,
            after_summary_keeps_what_follows_the_summary,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __graph_conformance {
    (tests $fixture:path; $($name:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(fixture) = $fixture().await else { return };
            $crate::testing::$name(fixture).await
        }
    )+};
    (names; $($name:ident),+ $(,)?) => {
        [$(stringify!($name)),+]
    };
}

// ---------------------------------------------------------------------------------------------
// Models, agents and graphs the scenarios run.

/// Answers `echo #<n>: <last user message>` (n counts its calls from 1), reports usage of
/// (prompt messages × 10, words of the answer), streams word by word, and fails the calls in
/// `failing` with a server error. Each call yields to the runtime first, like a network call.
#[derive(Debug, Default)]
struct EchoModel {
    calls: AtomicUsize,
    failing: Range<usize>,
}

impl EchoModel {
    fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Fails the calls numbered in `calls` (1-based).
    fn failing(calls: Range<usize>) -> Arc<Self> {
        Arc::new(Self { calls: AtomicUsize::new(0), failing: calls })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn usage_for(prompt_messages: usize, answer: &str) -> Usage {
        Usage::new(prompt_messages as u64 * 10, answer.split_whitespace().count() as u64)
    }
}

#[async_trait]
impl ChatModel for EchoModel {
    fn id(&self) -> &str {
        "conformance/echo"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        // Give other tasks a chance to run, as a network call would: concurrent turns overlap
        // even on a backend that never waits.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        if self.failing.contains(&n) {
            return Err(Error::model(self.id(), ModelErrorKind::ServerError, Some(500), "scripted failure"));
        }
        let last = request.messages.iter().rev().find(|m| m.role == Role::User).map_or("", |m| m.content.as_str());
        let answer = format!("echo #{n}: {last}");
        let usage = Self::usage_for(request.messages.len(), &answer);
        Ok(ChatResponse { message: Message::assistant(answer), usage, finish_reason: Some("stop".into()) })
    }

    async fn stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let whole = self.chat(request).await?;
        let words: Vec<String> = whole.message.content.split_inclusive(' ').map(str::to_owned).collect();
        let last = words.len().saturating_sub(1);
        let chunks: Vec<Result<ChatChunk>> = words
            .into_iter()
            .enumerate()
            .map(|(i, delta)| {
                Ok(ChatChunk { delta, usage: (i == last).then_some(whole.usage), ..ChatChunk::default() })
            })
            .collect();
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }
}

/// Holds the next model call once armed: it says it has `entered`, then waits for `release`.
#[derive(Debug, Default)]
struct Gate {
    armed: AtomicBool,
    entered: Notify,
    release: Notify,
}

/// An [`EchoModel`] behind a [`Gate`].
#[derive(Debug)]
struct GatedModel {
    gate: Arc<Gate>,
    inner: Arc<EchoModel>,
}

#[async_trait]
impl ChatModel for GatedModel {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        if self.gate.armed.swap(false, Ordering::SeqCst) {
            self.gate.entered.notify_one();
            self.gate.release.notified().await;
        }
        self.inner.chat(request).await
    }
}

/// A chat agent: appends the user's message, asks the model with a system prompt, appends the
/// answer. Streams when someone listens.
struct EchoAgent {
    name: String,
    model: Arc<dyn ChatModel>,
}

#[async_trait]
impl Agent<ChatState> for EchoAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn call(&self, state: &mut ChatState, ctx: &RunContext) -> Result<()> {
        state.messages.push(Message::user(state.input.clone()));
        let mut prompt = vec![Message::system("You are a test.")];
        prompt.extend(state.messages.iter().cloned());
        let request = ChatRequest::new(prompt);
        let (answer, usage) = if ctx.is_streaming() {
            let mut stream = self.model.stream(request).await?;
            let (mut text, mut usage) = (String::new(), Usage::default());
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                ctx.emit(lgadk_core::AgentEvent::Token { node: self.name.clone(), text: chunk.delta.clone() });
                text.push_str(&chunk.delta);
                usage += chunk.usage.unwrap_or_default();
            }
            (text, usage)
        } else {
            let reply = self.model.chat(request).await?;
            (reply.message.content, reply.usage)
        };
        ctx.add_usage(usage);
        state.output.clone_from(&answer);
        state.messages.push(Message::assistant(answer));
        Ok(())
    }
}

fn agent(name: &str, model: Arc<dyn ChatModel>) -> EchoAgent {
    EchoAgent { name: name.to_owned(), model }
}

/// One `assistant` node over `model`.
fn chat_graph(model: Arc<dyn ChatModel>, sessions: &SessionManager) -> CompiledGraph<ChatState> {
    GraphBuilder::new("chat")
        .add_agent(agent("assistant", model))
        .configure_session_management(sessions.clone())
        .build()
        .unwrap()
}

/// `first` → `second`, both over `model`: a turn makes two model calls.
fn two_step_graph(model: Arc<dyn ChatModel>, sessions: &SessionManager) -> CompiledGraph<ChatState> {
    StateGraph::<ChatState>::new("two-step")
        .add_node("first", agent("first", Arc::clone(&model)))
        .add_node("second", agent("second", model))
        .set_entry_point("first")
        .add_edge("first", "second")
        .set_finish_point("second")
        .with_sessions(sessions.clone())
        .compile()
        .unwrap()
}

/// Asks for approval once; on resume, records the answer.
struct Approval;

#[async_trait]
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

/// `draft` → `approval` (interrupts until resumed) → `publish`.
fn approval_graph(model: Arc<dyn ChatModel>, sessions: &SessionManager) -> CompiledGraph<ChatState> {
    StateGraph::<ChatState>::new("approval")
        .add_node("draft", agent("draft", model))
        .add_node("approval", Approval)
        .add_node_fn("publish", |mut state: ChatState, _| async move {
            state.output = format!("published after {} messages", state.messages.len());
            Ok(state)
        })
        .set_entry_point("draft")
        .add_edge("draft", "approval")
        .add_edge("approval", "publish")
        .set_finish_point("publish")
        .with_sessions(sessions.clone())
        .compile()
        .unwrap()
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn request(message: &str, id: &SessionId) -> RunRequest {
    RunRequest::new(message).with_session(id.clone())
}

fn user_messages(state: &ChatState) -> Vec<String> {
    state.messages.iter().filter(|m| m.role == Role::User).map(|m| m.content.clone()).collect()
}

fn contents(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.content.as_str()).collect()
}

async fn new_session(sessions: &SessionManager) -> SessionId {
    sessions.create_session(None, Metadata::new()).await.unwrap()
}

async fn interactions(sessions: &SessionManager, id: &SessionId) -> u64 {
    sessions.get_session_summary(id).await.unwrap().expect("the session is live").interactions
}

/// Asserts every turn of `state` is a user message followed by its answer (no interleaving).
fn assert_whole_turns(state: &ChatState) {
    assert_eq!(state.messages.len() % 2, 0, "{:?}", contents(&state.messages));
    for pair in state.messages.chunks(2) {
        assert_eq!((pair[0].role, pair[1].role), (Role::User, Role::Assistant), "turns interleaved");
        let answered = pair[1].content.split_once(": ").map(|(_, asked)| asked);
        assert_eq!(answered, Some(pair[0].content.as_str()), "an answer follows its own question");
    }
}

/// Everything a turn could write to a session, read back.
#[derive(Debug, PartialEq)]
struct Written {
    stats: lgadk_core::SessionStats,
    version: u64,
    checkpoints: Vec<lgadk_core::Checkpoint>,
    log: Vec<Message>,
}

impl Written {
    async fn of(sessions: &SessionManager, id: &SessionId) -> Self {
        let checkpointer = sessions.checkpointer();
        Self {
            stats: sessions.get_session(id).await.unwrap().expect("the session is live").stats,
            version: checkpointer.version(id).await.unwrap(),
            checkpoints: checkpointer.list(id, 100).await.unwrap(),
            log: checkpointer.messages(id, 0..10_000).await.unwrap(),
        }
    }
}

#[cfg(test)]
mod completeness {
    /// Fails when a scenario of this module is missing from `graph_conformance!` (or the macro
    /// names one that is not a `pub async fn` here).
    #[test]
    fn the_macro_lists_every_scenario() {
        let mut listed = crate::__graph_scenarios!(names).to_vec();
        let mut defined = lgadk_core::testing::scenario_names(include_str!("runs.rs"));
        defined.extend(lgadk_core::testing::scenario_names(include_str!("tools.rs")));
        defined.extend(lgadk_core::testing::scenario_names(include_str!("team.rs")));
        defined.extend(lgadk_core::testing::scenario_names(include_str!("retention.rs")));
        assert!(defined.len() >= 9, "the parser found the scenarios: {defined:?}");
        listed.sort_unstable();
        defined.sort_unstable();
        assert_eq!(listed, defined, "graph_conformance! must list every scenario of lgadk_graph::testing");
    }
}
