//! [`OfflineModel`]: a deterministic model without network, for demos, CI and tests.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
#[cfg(doc)]
use lgadk_core::ToolChoice;
use lgadk_core::{
    ChatChunk, ChatModel, ChatRequest, ChatResponse, ChatStream, Error, Message, ModelErrorKind, Result, ToolCall,
    Usage,
};
use tracing::field;

use crate::tokens;

mod embedder;
mod responder;
mod tools;

pub use embedder::{DEFAULT_LEXICAL_DIMENSIONS, LEXICAL_EMBEDDER_ID, LexicalEmbedder};

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
/// word by word, then each tool call on a chunk of its own, with the finish reason and usage on
/// the final chunk. Both refuse, with [`Error::InvalidConfig`] as `OpenAiModel` does, a
/// [`ToolChoice`] no model can honour: `Required` without tools, or a named tool the request
/// does not offer.
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
///
/// # Tools
///
/// The conversational model uses the tools a request offers by a fixed rule, so tool-using
/// agents, examples and docs run with no key and always take the same path:
///
/// 1. **When it calls.** Only when the request offers tools and the conversation's last
///    message is the user's. After tool results it answers (rule 4), whatever `tool_choice`
///    says, so a tool loop always ends.
/// 2. **Which tools.** Every offered tool whose name (with `_` and `-` read as spaces) or one
///    of whose [`keywords`](lgadk_core::ToolSpec::keywords) appears in the user's message as
///    whole words (ASCII case-insensitive, a trailing plural `s` allowed), in the order the
///    tools are offered. [`tool_choice`](ChatRequest::tool_choice): `None` → no call (it
///    answers in text); `Auto` or unset → the matching tools; `Required` → the matching tools,
///    or the first offered tool if none matched; `Tool(name)` → exactly that tool.
///    `parallel_tool_calls: Some(false)` keeps only the first of them. No tool to call: it
///    answers in text as without tools.
/// 3. **Arguments**, from the parameters' JSON Schema (an object schema; anything else gets
///    `{}`). Every required property is sent, and an optional one only when the message
///    supplies its value:
///    - a string gets the text after the tool's earliest matching word, trimmed of spaces
///      and of `. , ; : ! ? " ' `` ` ``, with one leading `about`, `for`, `in`, `of`, `on`,
///      `at` or `that` dropped (so "remember that I prefer tea" fills `I prefer tea`); the
///      whole message (trimmed) when nothing follows the word or nothing matched. Optional
///      strings are left out;
///    - an integer or number gets the first number in the message (`-` and a decimal part
///      included; an integer takes its integer part), `0` when there is none; optional
///      ones only when there is one;
///    - an `enum` gets the first of its values that appears in the message as whole words,
///      else (when required) its first value; a `const` its value;
///    - a boolean `false`, an array `[]`, a nested object its own properties by these rules;
///      optional ones are left out;
///    - a required property whose schema allows `null` (`"type": ["integer", "null"]`, a
///      `null` branch of `anyOf`/`oneOf`, as [strict](lgadk_core::ToolSpec::strict) schemas
///      make of optional fields) gets `null` unless the message supplies its value;
///      `anyOf`/`oneOf` otherwise use their first branch that is not `null`.
/// 4. **Ids** are `call_<n>`, `n` counting on from the tool calls already in the conversation
///    (skipping ids it already uses), so they are unique in the conversation.
/// 5. **Answering from results.** When the conversation ends with tool results, the reply is
///    text, one sentence per result in their order: `"[offline model] <tool>: <result>."`
///    (the result's first 48 words; `<tool>` is the name of the call it answers).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lgadk_core::Result<()> {
/// use lgadk_core::serde_json::json;
/// use lgadk_core::{ChatModel, ChatRequest, Message, ToolSpec};
/// use lgadk_llm::OfflineModel;
///
/// let weather = ToolSpec::new(
///     "get_weather",
///     "Current weather in a city",
///     json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
/// )
/// .with_keywords(["weather", "forecast"]);
/// let model = OfflineModel::new();
/// let mut messages = vec![Message::user("What's the weather in Paris?")];
///
/// let reply = model.chat(ChatRequest::new(messages.clone()).with_tools(vec![weather.clone()])).await?;
/// let call = reply.message.tool_calls[0].clone();
/// assert_eq!((call.id.as_str(), call.name.as_str()), ("call_1", "get_weather"));
/// assert_eq!(call.arguments, json!({"city": "Paris"}));
///
/// messages.push(reply.message);
/// messages.push(Message::tool(call.id, "sunny, 21°C"));
/// let answer = model.chat(ChatRequest::new(messages).with_tools(vec![weather])).await?;
/// assert_eq!(answer.message.content, "[offline model] get_weather: sunny, 21°C.");
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
        crate::tool_choice::check(request)?;
        let message = match &self.script {
            None => {
                let calls = tools::plan_calls(request);
                if calls.is_empty() {
                    Message::assistant(compose_reply(&request.messages))
                } else {
                    Message { tool_calls: calls, ..Message::assistant("") }
                }
            }
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
        // Text word by word, then each tool call on a chunk of its own (as a provider delivers
        // calls once their fragments are assembled), then the finish reason with the usage.
        let mut chunks: Vec<ChatChunk> = word_pieces(&whole.message.content)
            .into_iter()
            .map(|delta| ChatChunk { delta, ..ChatChunk::default() })
            .collect();
        chunks.extend(
            whole
                .message
                .tool_calls
                .into_iter()
                .map(|call| ChatChunk { tool_calls: vec![call], ..ChatChunk::default() }),
        );
        chunks.push(ChatChunk { usage: Some(whole.usage), finish_reason: whole.finish_reason, ..ChatChunk::default() });
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
