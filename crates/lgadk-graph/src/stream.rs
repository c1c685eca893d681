//! Streamed runs: the events a run reports while it goes, and the stream that carries them.

use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use lgadk_core::{AgentEvent, CancelToken, EventSink, GraphError, GraphState, Result};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::run::RunResponse;

/// Something that happened during a streamed run, in the order it happened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RunEvent<S> {
    /// A node started.
    NodeStarted {
        /// The node's name.
        node: String,
        /// The step it runs in (1 for the first node of a turn).
        step: u64,
    },
    /// A node finished without error.
    NodeFinished {
        /// The node's name.
        node: String,
        /// The step it ran in.
        step: u64,
    },
    /// A piece of model output, as a node streamed it.
    Token {
        /// The node that emitted it.
        node: String,
        /// The new text.
        text: String,
    },
    /// A node-defined event.
    Custom {
        /// The node that emitted it.
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
        /// The call's id, as the model gave it.
        call_id: String,
        /// The tool.
        name: String,
        /// The arguments it runs with.
        arguments: serde_json::Value,
    },
    /// A tool call finished.
    ToolFinished {
        /// The node running the tool.
        node: String,
        /// The call's id.
        call_id: String,
        /// The tool.
        name: String,
        /// The result the model reads (an error's text when `error`).
        content: String,
        /// Whether the call failed.
        error: bool,
        /// How long the call took.
        duration: Duration,
    },
    /// The run finished and its turn is saved: the same response [`run`](crate::CompiledGraph::run)
    /// returns. Always the last event of a successful run.
    Finished(RunResponse<S>),
}

pub(crate) type EventTx<S> = mpsc::UnboundedSender<Result<RunEvent<S>>>;

/// Turns the [`AgentEvent`]s nodes emit through their [`RunContext`](lgadk_core::RunContext)
/// into [`RunEvent`]s on the run's channel.
pub(crate) struct ChannelSink<S>(pub(crate) EventTx<S>);

impl<S: GraphState> EventSink for ChannelSink<S> {
    fn emit(&self, event: AgentEvent) {
        let event = match event {
            AgentEvent::Token { node, text } => RunEvent::Token { node, text },
            AgentEvent::Custom { node, name, data } => RunEvent::Custom { node, name, data },
            AgentEvent::ToolStarted { node, call_id, name, arguments } => {
                RunEvent::ToolStarted { node, call_id, name, arguments }
            }
            AgentEvent::ToolFinished { node, call_id, name, content, error, duration } => {
                RunEvent::ToolFinished { node, call_id, name, content, error, duration }
            }
            _ => return,
        };
        // A closed channel means the caller stopped listening; the run goes on or was cancelled.
        let _ = self.0.send(Ok(event));
    }
}

/// The events of a streamed run, from [`CompiledGraph::stream`](crate::CompiledGraph::stream).
///
/// It yields `Ok` events in order and ends after [`RunEvent::Finished`], or after one `Err`
/// when the run fails (the error `run` would have returned). The run is driven by a spawned
/// task, so the stream is `Send + 'static`. Dropping the stream cancels the run: it stops
/// before its next step and saves nothing.
pub struct RunStream<S> {
    events: mpsc::UnboundedReceiver<Result<RunEvent<S>>>,
    task: Option<JoinHandle<()>>,
    cancel: CancelToken,
    graph: String,
}

impl<S> fmt::Debug for RunStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunStream")
            .field("graph", &self.graph)
            .field("running", &self.task.is_some())
            .finish_non_exhaustive()
    }
}

impl<S> RunStream<S> {
    pub(crate) fn new(
        events: mpsc::UnboundedReceiver<Result<RunEvent<S>>>,
        task: Option<JoinHandle<()>>,
        cancel: CancelToken,
        graph: String,
    ) -> Self {
        Self { events, task, cancel, graph }
    }

    /// Asks the run to stop before its next step; it then saves nothing and the stream ends
    /// with [`GraphError::Cancelled`].
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl<S> Drop for RunStream<S> {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl<S> Stream for RunStream<S> {
    type Item = Result<RunEvent<S>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.events.poll_recv(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Pending => Poll::Pending,
            // Every sender is gone, so the task has ended. One that ended without its last event
            // panicked or was aborted: say so rather than end quietly.
            Poll::Ready(None) => {
                let Some(task) = this.task.as_mut() else { return Poll::Ready(None) };
                let Poll::Ready(joined) = Pin::new(task).poll(cx) else { return Poll::Pending };
                this.task = None;
                match joined {
                    Ok(()) => Poll::Ready(None),
                    Err(err) => {
                        let graph = this.graph.clone();
                        Poll::Ready(Some(Err(GraphError::Aborted { graph, source: err.into() }.into())))
                    }
                }
            }
        }
    }
}
