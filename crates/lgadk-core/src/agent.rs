//! Agents (graph nodes), the state they work on, and the context of a run.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cancel::CancelToken;
use crate::context::ContextSummary;
use crate::error::Result;
use crate::id::{SessionId, UserId};
use crate::memory::MemoryStore;
use crate::message::Message;
use crate::model::Usage;
use crate::session::{AgentShare, Metadata};
use crate::tool::ToolBatch;

/// A state a graph can run on and checkpoint.
///
/// The conversation history, when a state has one, is exposed through
/// [`messages`](Self::messages) / [`messages_mut`](Self::messages_mut) so that checkpointers
/// store it as an append-only log and a turn writes only its new messages. States without
/// messages are snapshotted whole.
///
/// # Contract
/// - **History only grows.** Within a session, [`messages`](Self::messages) of a later state
///   starts with every message of an earlier one: nodes append, never remove or rewrite. The
///   checkpointer stores only what was added, and a turn whose history shrank fails with
///   [`GraphError::State`](crate::GraphError::State) before anything is written. Only the
///   graph removes messages, from the front, when a [`LogRetention`](crate::LogRetention) cuts
///   the session's log; it then calls [`history_cut`](Self::history_cut).
/// - **`merge` folds a parallel branch in.** Branches of one step each run on a clone of the
///   same state; afterwards the state [`merge`](Self::merge)s each branch's result in branch
///   order. `merge` must keep what every branch added (for the history: the messages past the
///   common prefix) and must not depend on anything but `self` and `other`; the default,
///   `*self = other`, is right only for graphs without parallel branches.
/// - **What a node leaves behind.** A node that fails leaves the state however it likes: the
///   turn is discarded and nothing of it is saved. A node that interrupts
///   ([`Error::interrupt`](crate::Error::interrupt)) runs again on resume, so it should
///   interrupt before changing the state (a lone node's changes up to the interrupt are
///   saved with the checkpoint; a parallel step's branches are discarded).
/// - **Serializable both ways.** Whatever a turn leaves must serialize and deserialize back to
///   an equal state within lgadk's JSON nesting limit ([`json`](crate::json)); a cold turn
///   starts from the deserialized state.
pub trait GraphState: Serialize + DeserializeOwned + Clone + Default + Send + Sync + 'static {
    /// The conversation history, if the state keeps one.
    fn messages(&self) -> &[Message] {
        &[]
    }

    /// Mutable access to the conversation history; `None` if the state keeps none.
    fn messages_mut(&mut self) -> Option<&mut Vec<Message>> {
        None
    }

    /// Prepares the state for a new turn started with `input` (the run's message).
    fn begin_turn(&mut self, input: &str) {
        let _ = input;
    }

    /// Binds the state to the session the turn runs in, before any node runs: `id` and the
    /// session's metadata (with the request's merged in). The default ignores them;
    /// [`ChatState`] records both.
    fn bind_session(&mut self, id: &SessionId, metadata: &Metadata) {
        let _ = (id, metadata);
    }

    /// The turn's answer, returned to the caller as the run's output.
    fn output(&self) -> String {
        String::new()
    }

    /// Folds the result of a parallel branch into this state. The default keeps `other`.
    fn merge(&mut self, other: Self) {
        *self = other;
    }

    /// How many messages at the start of the history a running summary in the state stands
    /// for, which [`LogRetention::AfterSummary`](crate::LogRetention::AfterSummary) drops. The
    /// default, 0, keeps everything; [`ChatState`] answers its
    /// [`ContextSummary::covers`](crate::ContextSummary::covers).
    fn summarized(&self) -> usize {
        0
    }

    /// The first `dropped` messages of the history were removed (the session's log was cut
    /// there): shift whatever the state keeps that counts or indexes messages of the history,
    /// so it counts from the new first message. Called by the graph right after it removed
    /// them. The default does nothing; [`ChatState`] shifts its summary's `covers` and its
    /// routing's `since`.
    fn history_cut(&mut self, dropped: usize) {
        let _ = dropped;
    }
}

/// The default state: one conversation turn after another.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatState {
    /// The current turn's user input.
    pub input: String,
    /// The current turn's answer.
    pub output: String,
    /// The conversation history.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Intermediate notes of the current turn (reasoning, tool results).
    #[serde(default)]
    pub scratchpad: String,
    /// The session this state belongs to.
    #[serde(default)]
    pub session_id: Option<SessionId>,
    /// The session's metadata, read-only for nodes (write through the session manager).
    #[serde(default)]
    pub metadata: Metadata,
    /// Custom keys.
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The tool calls of the last model message that have not all finished, while the tool
    /// loop waits for approvals (see [`ToolBatch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_batch: Option<ToolBatch>,
    /// Which agent of a team holds the conversation (see [`AgentRouting`]).
    #[serde(default, skip_serializing_if = "AgentRouting::is_default")]
    pub routing: AgentRouting,
    /// The running summary of the messages that left the model's context window (see
    /// [`ContextWindow`](crate::ContextWindow)); `None` until one is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_summary: Option<ContextSummary>,
}

/// Which agent of a team holds the conversation, kept in the state so that the next turn — in
/// this process or another — starts with it, and what that agent sees of the history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentRouting {
    /// The agent that holds the conversation; `None` means the team's first agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// Where in the history the active agent took over (an index into the state's history,
    /// shifted when the log is cut).
    #[serde(default)]
    pub since: usize,
    /// What the active agent sees of the history before `since`.
    #[serde(default)]
    pub view: HistoryView,
    /// The task the handing-off agent gave, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Handoffs taken in the current turn.
    #[serde(default)]
    pub handoffs_this_turn: u32,
}

impl AgentRouting {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// What an agent that received the conversation sees of the history from before the handoff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "n")]
#[non_exhaustive]
pub enum HistoryView {
    /// Everything (the default).
    #[default]
    All,
    /// The last `n` messages before the handoff (never starting inside a tool call's results).
    Last(usize),
    /// Only the task it was given, as a user message.
    TaskOnly,
}

impl GraphState for ChatState {
    fn messages(&self) -> &[Message] {
        &self.messages
    }

    fn messages_mut(&mut self) -> Option<&mut Vec<Message>> {
        Some(&mut self.messages)
    }

    fn begin_turn(&mut self, input: &str) {
        self.input = input.to_owned();
        self.output.clear();
        self.scratchpad.clear();
    }

    fn bind_session(&mut self, id: &SessionId, metadata: &Metadata) {
        self.session_id = Some(id.clone());
        self.metadata.clone_from(metadata);
    }

    fn output(&self) -> String {
        self.output.clone()
    }

    fn merge(&mut self, other: Self) {
        let Self {
            input,
            output,
            messages,
            scratchpad,
            session_id,
            metadata,
            extra,
            tool_batch,
            routing,
            context_summary,
        } = other;
        self.input = input;
        if !output.is_empty() {
            self.output = output;
        }
        if messages.len() > self.messages.len() {
            self.messages.extend(messages.into_iter().skip(self.messages.len()));
        }
        if !scratchpad.is_empty() {
            self.scratchpad = scratchpad;
        }
        self.session_id = session_id.or(self.session_id.take());
        self.metadata.extend(metadata);
        self.extra.extend(extra);
        if tool_batch.is_some() {
            self.tool_batch = tool_batch;
        }
        if !routing.is_default() {
            self.routing = routing;
        }
        if let Some(summary) = context_summary
            && self.context_summary.as_ref().is_none_or(|mine| summary.covers > mine.covers)
        {
            self.context_summary = Some(summary);
        }
    }

    fn summarized(&self) -> usize {
        self.context_summary.as_ref().map_or(0, |summary| summary.covers)
    }

    fn history_cut(&mut self, dropped: usize) {
        if let Some(summary) = &mut self.context_summary {
            summary.covers = summary.covers.saturating_sub(dropped);
        }
        self.routing.since = self.routing.since.saturating_sub(dropped);
    }
}

/// A graph node that works on state `S`.
///
/// `S` is a trait parameter so that `Arc<dyn Agent<S>>` stays possible.
///
/// # Contract
/// - `call` may run many times for one session (every turn, again on resume after an
///   interrupt, again after a [`Conflict`](crate::Error::Conflict) retry) and concurrently for
///   different sessions: keep per-conversation data in the state, not in the agent.
/// - It reads and updates only `state` and reports through `ctx`: usage with
///   [`RunContext::add_usage`] (the session's analytics count it), progress with
///   [`RunContext::emit`]. Side effects outside the state are not undone when the turn fails.
/// - It appends to the history, never removes from it (see [`GraphState`]'s contract).
/// - It returns errors instead of panicking; an error fails the turn and nothing of it is
///   saved. [`Error::interrupt`](crate::Error::interrupt) pauses the turn instead.
/// - It should notice [`RunContext::is_cancelled`] in long work: a cancelled run saves
///   nothing.
#[async_trait]
pub trait Agent<S: GraphState>: Send + Sync + 'static {
    /// The node's name in the graph.
    fn name(&self) -> &str;

    /// Runs the node: reads and updates `state`.
    ///
    /// # Errors
    /// Any [`Error`](crate::Error); a failed node fails the run and nothing of the turn is saved.
    /// Return [`Error::interrupt`](crate::Error::interrupt) to pause for human input.
    async fn call(&self, state: &mut S, ctx: &RunContext) -> Result<()>;
}

#[async_trait]
impl<S: GraphState, T: Agent<S> + ?Sized> Agent<S> for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn call(&self, state: &mut S, ctx: &RunContext) -> Result<()> {
        (**self).call(state, ctx).await
    }
}

/// Something a node reports while it runs, delivered to streaming callers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AgentEvent {
    /// A piece of model output.
    Token {
        /// The emitting node.
        node: String,
        /// The new text.
        text: String,
    },
    /// A node-defined event.
    Custom {
        /// The emitting node.
        node: String,
        /// Event name.
        name: String,
        /// Event data.
        data: serde_json::Value,
    },
    /// A tool call started.
    ToolStarted {
        /// The node running the tool.
        node: String,
        /// The call's id.
        call_id: String,
        /// The tool.
        name: String,
        /// The arguments it runs with.
        arguments: serde_json::Value,
    },
    /// A tool call finished, with an output or an error.
    ToolFinished {
        /// The node running the tool.
        node: String,
        /// The call's id.
        call_id: String,
        /// The tool.
        name: String,
        /// The result the model reads.
        content: String,
        /// Whether the call failed (an error result).
        error: bool,
        /// How long the call took.
        duration: Duration,
    },
}

/// Receives [`AgentEvent`]s during a streamed run.
pub trait EventSink: Send + Sync + 'static {
    /// Delivers one event; must not block.
    fn emit(&self, event: AgentEvent);
}

/// What a node knows about the run it is part of: its session and user, the session's
/// metadata, the long-term [`memory`](Self::memory) store when the graph has one, the usage so
/// far, the cancellation and where events go.
pub struct RunContext {
    session_id: Option<SessionId>,
    user_id: Option<UserId>,
    metadata: Arc<Metadata>,
    memory: Option<Arc<dyn MemoryStore>>,
    usage: Mutex<Usage>,
    agents: Mutex<Vec<AgentShare>>,
    cancel: CancelToken,
    events: Option<Arc<dyn EventSink>>,
    resume: Option<serde_json::Value>,
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .field("memory", &self.memory.as_ref().map(|store| store.backend()))
            .field("usage", &self.usage())
            .field("cancelled", &self.is_cancelled())
            .field("streaming", &self.is_streaming())
            .field("resume", &self.resume)
            .finish()
    }
}

impl Default for RunContext {
    fn default() -> Self {
        Self::new(None, None)
    }
}

impl RunContext {
    /// A context for a run on `session_id` by `user_id`.
    pub fn new(session_id: Option<SessionId>, user_id: Option<UserId>) -> Self {
        Self {
            session_id,
            user_id,
            metadata: Arc::default(),
            memory: None,
            usage: Mutex::new(Usage::default()),
            agents: Mutex::new(Vec::new()),
            cancel: CancelToken::new(),
            events: None,
            resume: None,
        }
    }

    /// Delivers node events to `sink` (streamed runs).
    #[must_use]
    pub fn with_events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = Some(sink);
        self
    }

    /// Shares a cancellation: cancelling `token` asks nodes to stop early and drops running
    /// tools.
    #[must_use]
    pub fn with_cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = token;
        self
    }

    /// The session's metadata (with the run request's merged in), for nodes and tools.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Arc::new(metadata);
        self
    }

    /// Gives nodes and tools the long-term memory `store` (the graph passes the one it was
    /// given with `CompiledGraph::with_memory`). What a node reads or writes there is scoped
    /// by the node itself, usually to [`user_id`](Self::user_id).
    #[must_use]
    pub fn with_memory(mut self, store: Arc<dyn MemoryStore>) -> Self {
        self.memory = Some(store);
        self
    }

    /// The value a resumed run hands to the node that interrupted.
    #[must_use]
    pub fn with_resume_value(mut self, value: serde_json::Value) -> Self {
        self.resume = Some(value);
        self
    }

    /// The run's session.
    pub fn session_id(&self) -> Option<&SessionId> {
        self.session_id.as_ref()
    }

    /// The run's user.
    pub fn user_id(&self) -> Option<&UserId> {
        self.user_id.as_ref()
    }

    /// The session's metadata, as the run sees it.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The long-term memory store, when the run has one. It holds every user's items: scope
    /// reads and writes to [`user_id`](Self::user_id)'s namespace.
    pub fn memory(&self) -> Option<&Arc<dyn MemoryStore>> {
        self.memory.as_ref()
    }

    pub(crate) fn shared_metadata(&self) -> Arc<Metadata> {
        Arc::clone(&self.metadata)
    }

    pub(crate) fn event_sink(&self) -> Option<Arc<dyn EventSink>> {
        self.events.clone()
    }

    /// The run's cancellation, to await or hand to tools.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Adds a model call's usage to the run's total (model helpers do this for you).
    pub fn add_usage(&self, usage: Usage) {
        let mut total = self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *total += usage;
    }

    /// Records what agent `agent` did: its model call's `usage` (added to the run's total as
    /// [`add_usage`](Self::add_usage) does) and `time` spent. The turn's interaction then
    /// carries the breakdown by agent ([`SessionStats::agents`](crate::SessionStats::agents)).
    pub fn add_agent_usage(&self, agent: &str, usage: Usage, time: Duration) {
        self.add_usage(usage);
        let mut agents = self.agents.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let share = match agents.iter_mut().find(|share| share.agent == agent) {
            Some(share) => share,
            None => {
                agents.push(AgentShare { agent: agent.to_owned(), tokens_in: 0, tokens_out: 0, time: Duration::ZERO });
                let last = agents.len() - 1;
                &mut agents[last]
            }
        };
        share.tokens_in = share.tokens_in.saturating_add(usage.prompt_tokens);
        share.tokens_out = share.tokens_out.saturating_add(usage.completion_tokens);
        share.time = share.time.saturating_add(time);
    }

    /// The run's breakdown by agent so far, each agent once, in the order they first worked.
    pub fn agent_shares(&self) -> Vec<AgentShare> {
        self.agents.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Usage accumulated so far in this run.
    pub fn usage(&self) -> Usage {
        *self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the caller asked the run to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Whether someone listens to events (a streamed run): agents then stream model output.
    pub fn is_streaming(&self) -> bool {
        self.events.is_some()
    }

    /// Sends an event to the streaming caller, if any.
    pub fn emit(&self, event: AgentEvent) {
        if let Some(sink) = &self.events {
            sink.emit(event);
        }
    }

    /// The value passed to `resume`, when this run continues an interrupted one.
    pub fn resume_value(&self) -> Option<&serde_json::Value> {
        self.resume.as_ref()
    }
}
