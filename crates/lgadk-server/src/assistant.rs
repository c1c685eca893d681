//! Assistants: compiled graphs of any state type behind one object-safe interface, and the
//! conversational graph the binary serves by default.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures_core::Stream;
use futures_util::StreamExt as _;
use lgadk_core::{
    CancelToken, ChatModel, ChatState, Error, GraphError, GraphState, Message, Metadata, Result, Role, SessionId, Usage,
};
use lgadk_graph::{CompiledGraph, GraphBuilder, RunEvent, RunRequest, RunStream, StateSnapshot};
use lgadk_session::SessionManager;

use crate::wire::{self, ValuesUpdate};

/// The system prompt of the conversational assistant (the seed example's).
pub const CONVERSATIONAL_PROMPT: &str = "You are a helpful assistant that provides concise, accurate responses.";

/// The conversational assistant the binary serves by default: one
/// [`ChatAgent`](lgadk_llm::ChatAgent) node named `assistant` answering with `model`, with the
/// seed example's system prompt, saving to `sessions`.
///
/// # Errors
/// As [`GraphBuilder::build`].
pub fn conversational_graph(model: Arc<dyn ChatModel>, sessions: SessionManager) -> Result<CompiledGraph<ChatState>> {
    let agent = lgadk_llm::ChatAgent::new("assistant", model).with_system_prompt(CONVERSATIONAL_PROMPT);
    GraphBuilder::new("agent").add_agent(agent).configure_session_management(sessions).build()
}

/// The deterministic offline model ([`OfflineModel`](lgadk_llm::OfflineModel)): no network, no key.
pub fn offline_model() -> Arc<dyn ChatModel> {
    Arc::new(lgadk_llm::OfflineModel::new())
}

/// What a run does on its thread.
#[derive(Debug, Clone)]
pub(crate) enum TurnInput {
    /// A new turn with the user's text; metadata is merged into the thread's.
    Message { text: String, thread: SessionId, metadata: Option<Metadata> },
    /// Continue an interrupted run with `value`.
    Resume { thread: SessionId, value: serde_json::Value },
}

/// What a run reports, with states already turned into LangGraph values.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    NodeFinished { node: String },
    Token { node: String, text: String },
    Custom { node: String, name: String, data: serde_json::Value },
    Finished(Box<Finished>),
}

/// A finished turn: the thread's values and what the turn added.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub(crate) values: serde_json::Value,
    /// The turn's messages (from its user message on) as LangChain dicts, the last AI one
    /// with the turn's usage.
    pub(crate) new_messages: Vec<serde_json::Value>,
    pub(crate) usage: Usage,
}

/// A run's steps; ends after `Finished` or one error.
pub(crate) type Steps = Pin<Box<dyn Stream<Item = Result<Step>> + Send>>;

/// A saved state of a thread.
#[derive(Debug, Clone)]
pub(crate) struct Saved {
    pub(crate) version: u64,
    pub(crate) step: u64,
    pub(crate) node: Option<String>,
    pub(crate) created_at: chrono::DateTime<chrono::Utc>,
    pub(crate) next: Vec<String>,
    pub(crate) values: serde_json::Value,
}

/// A compiled graph, whatever its state type.
#[async_trait]
pub(crate) trait Assistant: Send + Sync + 'static {
    fn sessions(&self) -> &SessionManager;
    /// Starts a run; it stops before its next step once `cancel` fires, saving nothing.
    fn start(&self, input: TurnInput, cancel: CancelToken) -> Steps;
    /// Up to `limit` saved states of `thread`, newest first.
    async fn history(&self, thread: &SessionId, limit: usize) -> Result<Vec<Saved>>;
    /// Saves `update` applied to `thread`'s latest state as a new checkpoint made by
    /// `as_node`, and returns it.
    async fn update(&self, thread: &SessionId, update: ValuesUpdate, as_node: Option<&str>) -> Result<Saved>;
}

pub(crate) struct GraphAssistant<S: GraphState> {
    name: String,
    graph: CompiledGraph<S>,
}

impl<S: GraphState> GraphAssistant<S> {
    pub(crate) fn new(name: String, graph: CompiledGraph<S>) -> Self {
        Self { name, graph }
    }
}

/// The turn's messages: from the last user message on.
fn turn_messages(thread: &SessionId, messages: &[Message], usage: Usage) -> Vec<serde_json::Value> {
    let from = messages.iter().rposition(|m| m.role == Role::User).unwrap_or(0);
    let last_ai = messages.iter().rposition(|m| m.role == Role::Assistant);
    messages
        .iter()
        .enumerate()
        .skip(from)
        .map(|(index, message)| {
            let usage = (Some(index) == last_ai).then_some(usage);
            wire::message_to_langchain(message, &wire::message_id(thread, index), usage)
        })
        .collect()
}

fn finished<S: GraphState>(thread: &SessionId, state: &S, usage: Usage) -> Step {
    Step::Finished(Box::new(Finished {
        values: wire::state_values(thread, state),
        new_messages: turn_messages(thread, state.messages(), usage),
        usage,
    }))
}

#[async_trait]
impl<S: GraphState> Assistant for GraphAssistant<S> {
    fn sessions(&self) -> &SessionManager {
        self.graph.sessions()
    }

    fn start(&self, input: TurnInput, cancel: CancelToken) -> Steps {
        match input {
            TurnInput::Message { text, thread, metadata } => {
                let mut request = RunRequest::new(text).with_session(thread.clone());
                request.metadata = metadata;
                let stream = self.graph.stream(request);
                Box::pin(GraphSteps { stream, cancelled: cancel.cancelled(), asked: false, thread })
            }
            TurnInput::Resume { thread, value } => {
                let graph = self.graph.clone();
                let name = self.name.clone();
                let run = async move {
                    // The nodes that run again, for the `updates` of the run: a resumed turn
                    // reports no node events of its own.
                    let nodes = match graph.history(&thread, 1).await {
                        Ok(saved) => saved.into_iter().next().map(|s| s.next).unwrap_or_default(),
                        Err(err) => return vec![Err(err)],
                    };
                    let resume = graph.resume(&thread, value);
                    let result = tokio::select! {
                        result = resume => result,
                        () = cancel.cancelled() => return vec![Err(GraphError::Cancelled { graph: name }.into())],
                    };
                    match result {
                        Ok(response) => {
                            let mut steps: Vec<Result<Step>> =
                                nodes.into_iter().map(|node| Ok(Step::NodeFinished { node })).collect();
                            steps.push(Ok(finished(&thread, &*response.state, response.usage)));
                            steps
                        }
                        Err(err) => vec![Err(err)],
                    }
                };
                Box::pin(futures_util::stream::once(run).flat_map(futures_util::stream::iter))
            }
        }
    }

    async fn history(&self, thread: &SessionId, limit: usize) -> Result<Vec<Saved>> {
        let snapshots = self.graph.history(thread, limit).await?;
        Ok(snapshots.into_iter().map(|s| saved(thread, s)).collect())
    }

    async fn update(&self, thread: &SessionId, update: ValuesUpdate, as_node: Option<&str>) -> Result<Saved> {
        let snapshot = self.graph.update_state(thread, as_node, |state| update.apply(state)).await?;
        Ok(saved(thread, snapshot))
    }
}

fn saved<S: GraphState>(thread: &SessionId, s: StateSnapshot<S>) -> Saved {
    Saved {
        version: s.version,
        step: s.step,
        node: s.node,
        created_at: s.created_at,
        next: s.next,
        values: wire::state_values(thread, &s.state),
    }
}

/// A [`RunStream`] as [`Step`]s, cancelled when the token fires.
struct GraphSteps<S: GraphState> {
    stream: RunStream<S>,
    cancelled: lgadk_core::cancel::Cancelled,
    asked: bool,
    thread: SessionId,
}

impl<S: GraphState> Stream for GraphSteps<S> {
    type Item = Result<Step>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.asked && Pin::new(&mut this.cancelled).poll(cx).is_ready() {
            this.asked = true;
            this.stream.cancel();
        }
        loop {
            let event = match Pin::new(&mut this.stream).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => event,
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            let step = match event {
                RunEvent::NodeFinished { node, .. } => Step::NodeFinished { node },
                RunEvent::Token { node, text } => Step::Token { node, text },
                RunEvent::Custom { node, name, data } => Step::Custom { node, name, data },
                RunEvent::ToolStarted { node, call_id, name, arguments } => Step::Custom {
                    node,
                    name: "tool_started".to_owned(),
                    data: serde_json::json!({"call_id": call_id, "name": name, "arguments": arguments}),
                },
                RunEvent::ToolFinished { node, call_id, name, content, error, duration } => Step::Custom {
                    node,
                    name: "tool_finished".to_owned(),
                    data: serde_json::json!({
                        "call_id": call_id, "name": name, "content": content, "error": error,
                        "duration_ms": u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                    }),
                },
                RunEvent::Finished(response) => finished(&this.thread, &*response.state, response.usage),
                // Events added to lgadk-graph later are not part of the API yet.
                _ => continue,
            };
            return Poll::Ready(Some(Ok(step)));
        }
    }
}

/// Whether an error means the run was cancelled.
pub(crate) fn is_cancelled(err: &Error) -> bool {
    matches!(err, Error::Graph(GraphError::Cancelled { .. }))
}
