//! The model contract: chat requests, responses, streaming chunks, tools and token usage.

use std::fmt;
use std::ops::{Add, AddAssign};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures_core::Stream;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::message::{Message, ToolCall};

/// Token usage of one model call, or a sum of several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens in the completion.
    pub completion_tokens: u64,
}

impl Usage {
    /// Usage of `prompt_tokens` in and `completion_tokens` out.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self { prompt_tokens, completion_tokens }
    }

    /// Prompt plus completion tokens.
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

impl Add for Usage {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            completion_tokens: self.completion_tokens.saturating_add(other.completion_tokens),
        }
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        *self = *self + other;
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolSpec {
    /// Tool name, as the model will call it.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON schema of the arguments object.
    pub parameters: serde_json::Value,
    /// Whether the provider should hold the model to the schema exactly (OpenAI's `strict`
    /// function calling). Set it with [`strict`](Self::strict), which also makes the schema
    /// fit strict mode's rules.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    /// Words that, in a user's message, make the offline model call the tool (besides its
    /// name). Never sent to a provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
}

impl ToolSpec {
    /// A spec for the tool `name` taking arguments described by the JSON Schema `parameters`.
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: serde_json::Value) -> Self {
        Self { name: name.into(), description: description.into(), parameters, strict: false, keywords: Vec::new() }
    }

    /// This spec in strict mode: every object in the schema gets `additionalProperties: false`
    /// and lists all its properties as required, as OpenAI's strict function calling demands
    /// (a field that was optional must then be sent, possibly as `null` if its type allows).
    #[must_use]
    pub fn strict(mut self) -> Self {
        make_strict(&mut self.parameters);
        self.strict = true;
        self
    }

    /// Sets [`keywords`](Self::keywords).
    #[must_use]
    pub fn with_keywords<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keywords: I) -> Self {
        self.keywords = keywords.into_iter().map(Into::into).collect();
        self
    }
}

/// Closes every object schema in `schema` and requires all of its properties.
fn make_strict(schema: &mut serde_json::Value) {
    use serde_json::Value;
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = map.get("properties") {
                let names = properties.keys().cloned().map(Value::String).collect();
                map.insert("required".into(), Value::Array(names));
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(make_strict);
        }
        Value::Array(items) => items.iter_mut().for_each(make_strict),
        _ => {}
    }
}

/// Whether and which tools the model must call (OpenAI's `tool_choice`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolChoice {
    /// The model decides (the providers' default when tools are offered).
    Auto,
    /// The model must not call a tool.
    None,
    /// The model must call at least one tool.
    Required,
    /// The model must call this tool.
    Tool(String),
}

/// One chat completion request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far, system prompt first.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// Whether and which tools the model must call; `None` leaves it to the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one message; `None` leaves it to the
    /// provider (OpenAI allows it by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Sampling temperature, if the caller sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Upper bound on completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

impl ChatRequest {
    /// A request for `messages` with provider defaults for everything else.
    pub fn new(messages: Vec<Message>) -> Self {
        Self { messages, ..Self::default() }
    }

    /// Offers `tools` to the model.
    #[must_use]
    pub fn with_tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.tools = tools;
        self
    }

    /// Sets [`tool_choice`](Self::tool_choice).
    #[must_use]
    pub fn with_tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = Some(choice);
        self
    }

    /// Sets [`parallel_tool_calls`](Self::parallel_tool_calls).
    #[must_use]
    pub fn with_parallel_tool_calls(mut self, parallel: bool) -> Self {
        self.parallel_tool_calls = Some(parallel);
        self
    }

    /// Sets the sampling temperature.
    #[must_use]
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Caps the completion length.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }
}

/// A whole chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The assistant message, with any tool calls.
    pub message: Message,
    /// Tokens used, as reported by the provider (or counted with a tokenizer when it cannot).
    pub usage: Usage,
    /// Why generation stopped (`stop`, `length`, `tool_calls`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

/// One piece of a streamed completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// New text since the previous chunk.
    pub delta: String,
    /// Tool calls completed by this chunk (providers assemble streamed fragments first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Usage, on the final chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Why generation stopped, on the last content chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

impl From<ChatResponse> for ChatChunk {
    fn from(whole: ChatResponse) -> Self {
        Self {
            delta: whole.message.content,
            tool_calls: whole.message.tool_calls,
            usage: Some(whole.usage),
            finish_reason: whole.finish_reason,
        }
    }
}

/// A stream of chunks from [`ChatModel::stream`].
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send + 'static>>;

/// A stream that yields one item, then ends.
#[derive(Debug)]
pub struct Once<T>(Option<T>);

impl<T> Once<T> {
    /// A stream yielding `item` once.
    pub fn new(item: T) -> Self {
        Self(Some(item))
    }
}

impl<T: Unpin> Stream for Once<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<T>> {
        Poll::Ready(self.0.take())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.0.is_some());
        (n, Some(n))
    }
}

/// A streamed reply read to its end by [`collect_stream`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StreamedReply {
    /// The whole message: its text and its tool calls.
    pub message: Message,
    /// The usage the provider reported, if it reported any.
    pub usage: Option<Usage>,
    /// Why the model stopped, when the provider said.
    pub finish_reason: Option<String>,
}

/// Reads `stream` to its end and puts the reply together, handing each non-empty piece of text
/// to `on_text` as it arrives (to stream it on).
///
/// # Errors
/// The first error the stream yields.
pub async fn collect_stream(mut stream: ChatStream, mut on_text: impl FnMut(String)) -> Result<StreamedReply> {
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    let (mut usage, mut finish_reason) = (None, None);
    while let Some(chunk) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
        let chunk = chunk?;
        if !chunk.delta.is_empty() {
            content.push_str(&chunk.delta);
            on_text(chunk.delta);
        }
        tool_calls.extend(chunk.tool_calls);
        usage = chunk.usage.or(usage);
        finish_reason = chunk.finish_reason.or(finish_reason);
    }
    let message = Message { tool_calls, ..Message::assistant(content) };
    Ok(StreamedReply { message, usage, finish_reason })
}

/// A chat model: OpenAI, any OpenAI-compatible server, the offline model, or your own.
///
/// # Contract
/// - Failures are [`Error::Model`](crate::Error::Model) with a
///   [`ModelErrorKind`](crate::ModelErrorKind) (which also says whether a retry may help) and the
///   HTTP status when there is one; a provider never panics on a bad answer.
/// - `usage` is what the provider reported, or counted with a real tokenizer when it reports
///   nothing; never a length-based guess.
#[async_trait]
pub trait ChatModel: fmt::Debug + Send + Sync + 'static {
    /// `"openai/gpt-4o-mini"`, `"offline"`: recorded on `model.chat` spans.
    fn id(&self) -> &str;

    /// One whole completion.
    ///
    /// # Errors
    /// `Model`.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse>;

    /// A streamed completion. The default yields one chunk holding the whole answer;
    /// streaming providers override it.
    ///
    /// # Errors
    /// `Model`, for the request that opens the stream; later failures arrive as stream items.
    async fn stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let whole = self.chat(request).await?;
        Ok(Box::pin(Once::new(Ok(ChatChunk::from(whole)))))
    }
}

macro_rules! forward_chat_model {
    ($($ptr:ident),+) => {$(
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: ChatModel + ?Sized> ChatModel for $ptr<T> {
            fn id(&self) -> &str {
                (**self).id()
            }
            async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
                (**self).chat(request).await
            }
            async fn stream(&self, request: ChatRequest) -> Result<ChatStream> {
                (**self).stream(request).await
            }
        }
    )+};
}

forward_chat_model!(Arc, Box);
