//! [`OfflineModel`]: a deterministic model without network, for demos, CI and tests.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use lgadk_core::{
    ChatChunk, ChatModel, ChatRequest, ChatResponse, ChatStream, Error, Message, ModelErrorKind, Result, ToolCall,
    Usage,
};
use tracing::field;

use crate::tokens;

mod responder;

use responder::compose_reply;

/// The label every conversational reply starts with, so nobody mistakes it for a real model.
pub const OFFLINE_LABEL: &str = "[offline model]";

/// One reply of a scripted [`OfflineModel`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ScriptedReply {
    /// An assistant message with this text.
    Text(String),
    /// An assistant message asking for these tool calls (an empty `id` gets `call_<n>`).
    ToolCalls(Vec<ToolCall>),
    /// An [`Error::Model`] of this kind and status.
    Failure {
        /// What the error reports went wrong (it also decides whether a retry may help).
        kind: ModelErrorKind,
        /// The HTTP status to report, if any.
        status: Option<u16>,
    },
}

impl ScriptedReply {
    /// A text reply.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }

    /// A reply that calls one tool with `arguments`.
    pub fn tool_call(name: impl Into<String>, arguments: serde_json::Value) -> Self {
        Self::ToolCalls(vec![ToolCall { id: String::new(), name: name.into(), arguments }])
    }

    /// A provider failure, e.g. `failure(ModelErrorKind::ServerError, Some(503))`.
    pub fn failure(kind: ModelErrorKind, status: Option<u16>) -> Self {
        Self::Failure { kind, status }
    }
}

impl From<&str> for ScriptedReply {
    fn from(text: &str) -> Self {
        Self::text(text)
    }
}

impl From<String> for ScriptedReply {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

/// Why the offline model failed; kept as the `source` of [`Error::Model`].
#[derive(Debug, thiserror::Error)]
enum OfflineFailure {
    #[error("the script has no reply left after {served} replies")]
    ScriptExhausted { served: usize },
    #[error("scripted failure number {index}")]
    Scripted { index: usize },
}

#[derive(Debug, Default)]
struct Script {
    queue: VecDeque<ScriptedReply>,
    served: usize,
    requests: Vec<ChatRequest>,
}

/// A chat model that needs no network, no key and no weights, and always answers the same way.
///
/// **Conversational** ([`OfflineModel::new`]): replies start with `[offline model]`, answer the
/// latest user message from a small built-in glossary (machine learning, neural networks, …),
/// say honestly what they cannot know offline (today's weather), and recall the earlier
/// questions of the conversation, so a multi-turn demo reads sensibly. The same conversation
/// always gets the same reply: no randomness, no clock.
///
/// **Scripted** ([`OfflineModel::scripted`]): returns queued [`ScriptedReply`]s in order (text,
/// tool calls, failures) and records each request for inspection; an empty queue is an
/// [`Error::Model`] of kind [`Other`](ModelErrorKind::Other), not a panic.
///
/// Both modes report [`Usage`] counted with the `o200k_base` tokenizer ([`tokens`]) and stream
/// word by word, with usage on the final chunk.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lgadk_core::Result<()> {
/// use lgadk_core::{ChatModel, ChatRequest, Message};
/// use lgadk_llm::OfflineModel;
///
/// let model = OfflineModel::new();
/// let reply = model.chat(ChatRequest::new(vec![Message::user("Can you tell me about machine learning?")])).await?;
/// assert!(reply.message.content.starts_with("[offline model]"));
/// assert!(reply.message.content.contains("machine learning"));
/// assert!(reply.usage.prompt_tokens > 0 && reply.usage.completion_tokens > 0);
/// # Ok(())
/// # }
/// ```
pub struct OfflineModel {
    id: String,
    script: Option<Mutex<Script>>,
}

impl fmt::Debug for OfflineModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("OfflineModel");
        s.field("id", &self.id);
        if let Some(script) = &self.script {
            let script = script.lock().unwrap_or_else(PoisonError::into_inner);
            s.field("remaining", &script.queue.len()).field("served", &script.served);
        }
        s.finish()
    }
}

impl Default for OfflineModel {
    fn default() -> Self {
        Self::new()
    }
}

impl OfflineModel {
    /// The conversational offline model, with id `offline`.
    ///
    /// Loads the tokenizer that counts its usage now (once per process), so the first turn
    /// is not the one that pays for it.
    pub fn new() -> Self {
        crate::tokens::warm_up();
        Self { id: "offline".to_owned(), script: None }
    }

    /// A model that returns `replies` in order, then fails with [`Error::Model`].
    ///
    /// Tool calls without an id get `call_1`, `call_2`, … in script order.
    pub fn scripted<I>(replies: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<ScriptedReply>,
    {
        let mut next_id = 0_u32;
        let queue = replies
            .into_iter()
            .map(|reply| match reply.into() {
                ScriptedReply::ToolCalls(calls) => ScriptedReply::ToolCalls(
                    calls
                        .into_iter()
                        .map(|mut call| {
                            next_id += 1;
                            if call.id.is_empty() {
                                call.id = format!("call_{next_id}");
                            }
                            call
                        })
                        .collect(),
                ),
                other => other,
            })
            .collect();
        Self { id: "offline/scripted".to_owned(), script: Some(Mutex::new(Script { queue, ..Script::default() })) }
    }

    /// Sets the id reported by [`ChatModel::id`] and on spans and errors.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The requests a scripted model received, oldest first (always empty when conversational).
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.script
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).requests.clone())
            .unwrap_or_default()
    }

    /// Scripted replies not yet served (0 when conversational).
    pub fn remaining(&self) -> usize {
        self.script.as_ref().map_or(0, |s| s.lock().unwrap_or_else(PoisonError::into_inner).queue.len())
    }

    fn failure(&self, kind: ModelErrorKind, status: Option<u16>, source: OfflineFailure) -> Error {
        Error::model(self.id.clone(), kind, status, source)
    }

    fn answer(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let message = match &self.script {
            None => Message::assistant(compose_reply(&request.messages)),
            Some(script) => {
                let mut script = script.lock().unwrap_or_else(PoisonError::into_inner);
                script.requests.push(request.clone());
                let Some(next) = script.queue.pop_front() else {
                    return Err(self.failure(
                        ModelErrorKind::Other,
                        None,
                        OfflineFailure::ScriptExhausted { served: script.served },
                    ));
                };
                script.served += 1;
                match next {
                    ScriptedReply::Text(text) => Message::assistant(text),
                    ScriptedReply::ToolCalls(calls) => Message { tool_calls: calls, ..Message::assistant("") },
                    ScriptedReply::Failure { kind, status } => {
                        return Err(self.failure(kind, status, OfflineFailure::Scripted { index: script.served }));
                    }
                }
            }
        };
        let usage = tokens::count_usage(request, &message);
        let finish_reason = if message.tool_calls.is_empty() { "stop" } else { "tool_calls" };
        Ok(ChatResponse { message, usage, finish_reason: Some(finish_reason.to_owned()) })
    }

    fn answer_traced(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let span = tracing::info_span!(
            "model.chat",
            model = %self.id,
            tokens_in = field::Empty,
            tokens_out = field::Empty,
            latency_ms = field::Empty,
        );
        let started = Instant::now();
        let result = span.in_scope(|| self.answer(request));
        if let Ok(reply) = &result {
            record_usage(&span, reply.usage);
        }
        span.record("latency_ms", u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        result
    }
}

fn record_usage(span: &tracing::Span, usage: Usage) {
    span.record("tokens_in", usage.prompt_tokens);
    span.record("tokens_out", usage.completion_tokens);
}

/// Splits `text` into word-sized pieces whose concatenation is `text`.
fn word_pieces(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_whitespace() && !current.trim().is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

#[async_trait]
impl ChatModel for OfflineModel {
    fn id(&self) -> &str {
        &self.id
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        self.answer_traced(&request)
    }

    async fn stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let whole = self.answer_traced(&request)?;
        let mut chunks: Vec<ChatChunk> = word_pieces(&whole.message.content)
            .into_iter()
            .map(|delta| ChatChunk { delta, ..ChatChunk::default() })
            .collect();
        chunks.push(ChatChunk {
            delta: String::new(),
            tool_calls: whole.message.tool_calls,
            usage: Some(whole.usage),
            finish_reason: whole.finish_reason,
        });
        Ok(Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok))))
    }
}

// ---- the conversational responder -------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_rebuild_the_text() {
        let text = "Hello  there, world!\nNext line";
        assert_eq!(word_pieces(text).concat(), text);
        assert!(word_pieces("").is_empty());
    }
}
