//! The prebuilt tool loop: a model node and a tool node wired model → tools → model until the
//! model answers without calling a tool.
//!
//! [`ToolLoop`] builds the graph. Each step is a graph node, so every step is checkpointed,
//! streamed ([`RunEvent::ToolStarted`](crate::RunEvent::ToolStarted) /
//! [`ToolFinished`](crate::RunEvent::ToolFinished) for each call) and interruptible:
//!
//! - **The model node** ([`ModelNode`]) adds the turn's input as the user's message at the
//!   start of a turn, sends the history with the tools' specs to the model, adds the usage to
//!   the turn and appends the reply. At most [`ToolLoopOptions::max_model_calls`] model calls run
//!   per turn; then, as [`ToolLoopOptions::on_step_limit`] says, the turn fails with
//!   [`Error::StepLimit`](lgadk_core::Error::StepLimit) or ends with an answer saying it
//!   stopped.
//! - **The router** ([`tools_condition`]) goes to the tool node when the reply calls tools and
//!   ends the turn otherwise.
//! - **The tool node** ([`ToolNode`]) runs every call of the reply concurrently (at most
//!   [`ToolLoopOptions::max_concurrency`] at once, each within
//!   [`ToolLoopOptions::tool_timeout`]) and appends the results in the order of the calls. An
//!   unknown tool, arguments that do not fit, a tool's error, a timeout or a panic becomes an
//!   error result the model reads — or, with [`ToolLoopOptions::fail_fast`], fails the turn with
//!   [`Error::Tool`](lgadk_core::Error::Tool).
//!
//! # Approvals
//! A tool that [`requires_approval`](lgadk_core::Tool::requires_approval) never runs without a
//! decision. When a model message calls such tools, the tool node runs the other calls, keeps
//! their results in the state's [`ToolBatch`], and interrupts with an
//! [`ApprovalRequest`](lgadk_core::ApprovalRequest) listing *every* waiting call; the turn is
//! saved. [`CompiledGraph::resume`](crate::CompiledGraph::resume) with
//! [`ApprovalDecisions`](lgadk_core::ApprovalDecisions) (approve, reject with a reason the
//! model reads, or edit the arguments — one decision per waiting call) runs only the waiting
//! calls, never one that already ran, in this process or in another one that loads the
//! session cold. A new message instead of a resume closes the batch: the waiting calls get a
//! "not run" result, so the history never has a call without its result.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk_core::Result<()> {
//! use std::sync::Arc;
//! use lgadk_core::{ChatState, FunctionTool, ToolSet};
//! use lgadk_graph::prebuilt::ToolLoop;
//! use lgadk_graph::RunRequest;
//! # use lgadk_core::{ChatModel, ChatRequest, ChatResponse, Message, Role, ToolCall, Usage};
//! # use lgadk_core::serde_json::json;
//! # /// Calls `add` once, then answers with the tool's result.
//! # #[derive(Debug)]
//! # struct Model;
//! # #[async_trait::async_trait]
//! # impl ChatModel for Model {
//! #     fn id(&self) -> &str { "doc/model" }
//! #     async fn chat(&self, request: ChatRequest) -> lgadk_core::Result<ChatResponse> {
//! #         let last = request.messages.last().cloned().unwrap_or_else(|| Message::user(""));
//! #         let message = if last.role == Role::Tool {
//! #             Message::assistant(format!("The sum is {}.", last.content))
//! #         } else {
//! #             let call = ToolCall { id: "call_1".into(), name: "add".into(), arguments: json!({"a": 2, "b": 40}) };
//! #             Message { tool_calls: vec![call], ..Message::assistant("") }
//! #         };
//! #         Ok(ChatResponse { message, usage: Usage::new(10, 5), finish_reason: None })
//! #     }
//! # }
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Add { a: i64, b: i64 }
//!
//! let add = FunctionTool::new("add", "Adds two integers.", |args: Add, _ctx| async move {
//!     Ok::<_, String>((args.a + args.b).to_string())
//! });
//! let graph = ToolLoop::new(Arc::new(Model))
//!     .with_tools(ToolSet::new().with(add)?)
//!     .graph::<ChatState>()
//!     .compile()?;
//!
//! let reply = graph.run(RunRequest::new("What is 2 + 40?")).await?;
//! assert_eq!(reply.output, "The sum is 42.");
//! // user, assistant (tool call), tool result, assistant: all in the session's history.
//! assert_eq!(reply.state.messages.len(), 4);
//! assert_eq!(reply.usage.prompt_tokens, 20);
//! # Ok(())
//! # }
//! ```

pub mod group;
mod memory;
mod model_node;
pub mod team;
mod tool_node;

use std::sync::Arc;
use std::time::Duration;

use lgadk_core::{
    AgentRouting, ChatModel, ChatState, ContextSummary, ContextWindow, GraphState, Message, Result, Role, ToolBatch,
    ToolChoice, ToolSet,
};

use crate::graph::{END, START, StateGraph};

pub use group::{DEFAULT_MAX_ROUNDS, GroupChat, SpeakerSelection};
pub use memory::{
    DEFAULT_MEMORY_SECTION, DEFAULT_RECALL_LIMIT, MEMORY_TOOLS_PROMPT, MemoryTools, RECALL_TOOL, REMEMBER_TOOL,
};
pub use model_node::ModelNode;
pub use team::{DEFAULT_MAX_HANDOFFS, Handoff, HandoffLimitPolicy, Team};
pub use tool_node::ToolNode;

/// What a state must offer the tool loop, besides a message history
/// ([`GraphState::messages_mut`] returning `Some`).
pub trait ToolLoopState: GraphState {
    /// The turn's input: the model node adds it as the user's message when a turn starts.
    fn input(&self) -> &str;

    /// Records the model's final answer as the turn's output.
    fn set_output(&mut self, output: &str);

    /// The unfinished tool batch, kept while the loop waits for approvals.
    fn tool_batch(&self) -> Option<&ToolBatch>;

    /// Mutable access to the unfinished tool batch.
    fn tool_batch_mut(&mut self) -> &mut Option<ToolBatch>;

    /// Which agent of a [`Team`] holds the conversation; `None` for states that cannot run
    /// in a team (the default).
    fn routing(&self) -> Option<&AgentRouting> {
        None
    }

    /// Mutable access to the routing; `None` for states that cannot run in a team.
    fn routing_mut(&mut self) -> Option<&mut AgentRouting> {
        None
    }

    /// The running summary of what left the model's context window (see
    /// [`ToolLoop::with_context_window`]); `None` for states that keep none (the default).
    fn context_summary(&self) -> Option<&ContextSummary> {
        None
    }

    /// Where the state keeps the running summary; `None` for states that keep none (the
    /// default), which then cannot use a summarizing context window.
    fn context_summary_mut(&mut self) -> Option<&mut Option<ContextSummary>> {
        None
    }
}

impl ToolLoopState for ChatState {
    fn input(&self) -> &str {
        &self.input
    }

    fn set_output(&mut self, output: &str) {
        output.clone_into(&mut self.output);
    }

    fn tool_batch(&self) -> Option<&ToolBatch> {
        self.tool_batch.as_ref()
    }

    fn tool_batch_mut(&mut self) -> &mut Option<ToolBatch> {
        &mut self.tool_batch
    }

    fn routing(&self) -> Option<&AgentRouting> {
        Some(&self.routing)
    }

    fn routing_mut(&mut self) -> Option<&mut AgentRouting> {
        Some(&mut self.routing)
    }

    fn context_summary(&self) -> Option<&ContextSummary> {
        self.context_summary.as_ref()
    }

    fn context_summary_mut(&mut self) -> Option<&mut Option<ContextSummary>> {
        Some(&mut self.context_summary)
    }
}

/// What the model node does when the model still calls tools after its last allowed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StepLimitPolicy {
    /// End the turn with an answer saying the agent stopped (the default): the turn, its tool
    /// calls and their results are saved.
    #[default]
    Answer,
    /// Fail the turn with [`Error::StepLimit`](lgadk_core::Error::StepLimit); nothing is saved.
    Fail,
}

/// Default number of tool calls that run at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;
/// Default model calls per turn.
pub const DEFAULT_MAX_MODEL_CALLS: usize = 10;
/// Default time a tool call may take.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// How the tool loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolLoopOptions {
    /// Tool calls of one model message that run at once (default [`DEFAULT_MAX_CONCURRENCY`];
    /// at least 1).
    pub max_concurrency: usize,
    /// Time each tool call may take (default [`DEFAULT_TOOL_TIMEOUT`]); a call that takes
    /// longer is dropped and becomes an error result. Needs Tokio's timer
    /// (`enable_time`/`enable_all` on the runtime).
    pub tool_timeout: Duration,
    /// Fail the turn on the first failed tool call instead of showing the model the error
    /// (default `false`).
    pub fail_fast: bool,
    /// Model calls per turn (default [`DEFAULT_MAX_MODEL_CALLS`]; at least 1).
    pub max_model_calls: usize,
    /// What happens when the model still calls tools after its last allowed call.
    pub on_step_limit: StepLimitPolicy,
}

impl Default for ToolLoopOptions {
    fn default() -> Self {
        Self {
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            tool_timeout: DEFAULT_TOOL_TIMEOUT,
            fail_fast: false,
            max_model_calls: DEFAULT_MAX_MODEL_CALLS,
            on_step_limit: StepLimitPolicy::Answer,
        }
    }
}

impl ToolLoopOptions {
    /// Sets [`max_concurrency`](Self::max_concurrency) (0 counts as 1).
    #[must_use]
    pub fn with_max_concurrency(mut self, calls: usize) -> Self {
        self.max_concurrency = calls.max(1);
        self
    }

    /// Sets [`tool_timeout`](Self::tool_timeout).
    #[must_use]
    pub fn with_tool_timeout(mut self, timeout: Duration) -> Self {
        self.tool_timeout = timeout;
        self
    }

    /// Sets [`fail_fast`](Self::fail_fast).
    #[must_use]
    pub fn with_fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// Sets [`max_model_calls`](Self::max_model_calls) (0 counts as 1).
    #[must_use]
    pub fn with_max_model_calls(mut self, calls: usize) -> Self {
        self.max_model_calls = calls.max(1);
        self
    }

    /// Sets [`on_step_limit`](Self::on_step_limit).
    #[must_use]
    pub fn with_step_limit_policy(mut self, policy: StepLimitPolicy) -> Self {
        self.on_step_limit = policy;
        self
    }
}

/// Builds the tool loop: a model, its tools, a system prompt and [`ToolLoopOptions`]. See the
/// [module docs](self).
#[derive(Debug, Clone)]
#[must_use]
pub struct ToolLoop {
    model_node: String,
    tool_node: String,
    model: Arc<dyn ChatModel>,
    tools: ToolSet,
    system_prompt: Option<String>,
    tool_choice: Option<ToolChoice>,
    parallel_tool_calls: Option<bool>,
    options: ToolLoopOptions,
    context_window: Option<ContextWindow>,
}

impl ToolLoop {
    /// A loop over `model` with no tools yet; its nodes are `agent` and `tools`.
    pub fn new(model: Arc<dyn ChatModel>) -> Self {
        Self {
            model_node: "agent".to_owned(),
            tool_node: "tools".to_owned(),
            model,
            tools: ToolSet::new(),
            system_prompt: None,
            tool_choice: None,
            parallel_tool_calls: None,
            options: ToolLoopOptions::default(),
            context_window: None,
        }
    }

    /// Names the nodes `name` (the model) and `<name>_tools`, so several loops fit in one graph.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.model_node = name.into();
        self.tool_node = format!("{}_tools", self.model_node);
        self
    }

    /// The tools the model may call.
    pub fn with_tools(mut self, tools: ToolSet) -> Self {
        self.tools = tools;
        self
    }

    /// Adds the memory tools `remember` and `recall` ([`MemoryTools`]) to the loop's tools
    /// (call it after [`with_tools`](Self::with_tools), which replaces them). They work on
    /// the store the graph is given with
    /// [`CompiledGraph::with_memory`](crate::CompiledGraph::with_memory), in the namespace of
    /// the run's user; [`MEMORY_TOOLS_PROMPT`] tells a model how to use them.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](lgadk_core::Error::InvalidConfig) when the loop has a tool
    /// named `remember` or `recall` already.
    pub fn with_memory_tools(mut self, memory: &MemoryTools) -> Result<Self> {
        self.tools = memory.add_to(std::mem::take(&mut self.tools))?;
        Ok(self)
    }

    /// A system prompt sent first with every model call (never stored in the history).
    pub fn with_system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }

    /// Whether and which tools the model must call ([`ToolChoice`]); the provider's default
    /// otherwise.
    pub fn with_tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = Some(choice);
        self
    }

    /// Whether the model may call several tools in one message.
    pub fn with_parallel_tool_calls(mut self, parallel: bool) -> Self {
        self.parallel_tool_calls = Some(parallel);
        self
    }

    /// How the loop runs.
    pub fn with_options(mut self, options: ToolLoopOptions) -> Self {
        self.options = options;
        self
    }

    /// Sends the model a window of the history instead of all of it (see
    /// [`lgadk_core::context`]): the policy is applied each time a request is built, after a
    /// team's [`HistoryView`](lgadk_core::HistoryView), and never changes what is stored. With a
    /// summarizer, the running summary is kept in the state
    /// ([`ToolLoopState::context_summary_mut`]) and its model calls count for the turn.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> lgadk_core::Result<()> {
    /// use std::sync::Arc;
    /// use lgadk_core::{ChatState, ContextWindow, Message};
    /// use lgadk_graph::prebuilt::ToolLoop;
    /// # use lgadk_core::{ChatModel, ChatRequest, ChatResponse, Usage};
    /// # /// Answers with how many messages it was sent.
    /// # #[derive(Debug)]
    /// # struct Model;
    /// # #[async_trait::async_trait]
    /// # impl ChatModel for Model {
    /// #     fn id(&self) -> &str { "doc/model" }
    /// #     async fn chat(&self, request: ChatRequest) -> lgadk_core::Result<ChatResponse> {
    /// #         let message = Message::assistant(request.messages.len().to_string());
    /// #         Ok(ChatResponse { message, usage: Usage::new(1, 1), finish_reason: None })
    /// #     }
    /// # }
    ///
    /// let graph = ToolLoop::new(Arc::new(Model))
    ///     .with_system_prompt("Be brief.")
    ///     .with_context_window(ContextWindow::last_messages(3))
    ///     .graph::<ChatState>()
    ///     .compile()?;
    ///
    /// // A long history: 40 stored messages and a new question.
    /// let mut state = ChatState { input: "And now?".into(), ..ChatState::default() };
    /// for i in 0..20 {
    ///     state.messages.push(Message::user(format!("question {i}")));
    ///     state.messages.push(Message::assistant(format!("answer {i}")));
    /// }
    /// let state = graph.invoke(state).await?;
    /// // The model saw the system prompt and the last 3 messages; the history keeps all 42.
    /// assert_eq!(state.output, "4");
    /// assert_eq!(state.messages.len(), 42);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_context_window(mut self, policy: ContextWindow) -> Self {
        self.context_window = Some(policy);
        self
    }

    /// The model node's name.
    pub fn model_node_name(&self) -> &str {
        &self.model_node
    }

    /// The tool node's name.
    pub fn tool_node_name(&self) -> &str {
        &self.tool_node
    }

    /// The model node, to wire by hand.
    pub fn model_node(&self) -> ModelNode {
        ModelNode {
            name: self.model_node.clone(),
            model: Arc::clone(&self.model),
            tools: self.tools.specs(),
            system_prompt: self.system_prompt.clone(),
            tool_choice: self.tool_choice.clone(),
            parallel_tool_calls: self.parallel_tool_calls,
            options: self.options,
            team: None,
            context_window: self.context_window.clone(),
        }
    }

    /// The tool node, to wire by hand.
    pub fn tool_node(&self) -> ToolNode {
        ToolNode {
            name: self.tool_node.clone(),
            tools: self.tools.clone(),
            options: self.options,
            team: None,
            agent: self.model_node.clone(),
        }
    }

    /// Adds both nodes to `graph`, wired model → tools (when the reply calls tools) → model,
    /// and the model to `END` otherwise. The caller adds the edge into the model node.
    pub fn add_to<S: ToolLoopState>(self, graph: StateGraph<S>) -> StateGraph<S> {
        let (model, tools) = (self.model_node(), self.tool_node());
        let Self { model_node: model_name, tool_node: tool_name, .. } = self;
        graph
            .add_node(model_name.clone(), model)
            .add_node(tool_name.clone(), tools)
            .add_conditional_edges(model_name.clone(), tools_condition, [("tools", tool_name.as_str()), ("end", END)])
            .add_edge(tool_name, model_name)
    }

    /// The loop as a graph of its own, named after the model node: `START` → model ⇄ tools →
    /// `END`, with a recursion limit that fits [`ToolLoopOptions::max_model_calls`] (a model
    /// step and a tool step per call, plus the last answer).
    pub fn graph<S: ToolLoopState>(self) -> StateGraph<S> {
        let limit = self.options.max_model_calls.saturating_mul(2).saturating_add(2);
        let entry = self.model_node.clone();
        self.add_to(StateGraph::new(entry.clone())).add_edge(START, entry).with_recursion_limit(limit)
    }
}

/// The loop's router: `"tools"` when the last message is the model's and calls tools, `"end"`
/// otherwise.
pub fn tools_condition<S: GraphState>(state: &S) -> &'static str {
    match state.messages().last() {
        Some(Message { role: Role::Assistant, tool_calls, .. }) if !tool_calls.is_empty() => "tools",
        _ => "end",
    }
}
