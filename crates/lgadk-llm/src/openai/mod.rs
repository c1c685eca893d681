//! [`OpenAiModel`] and [`OpenAiEmbedder`]: OpenAI and every OpenAI-compatible server, through
//! async-openai.

mod convert;
mod embeddings;
mod failure;
mod http;
mod retry;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{ChatCompletionResponseStream, FinishReason};
use async_trait::async_trait;
use futures_util::StreamExt;
use lgadk_core::{
    ChatChunk, ChatModel, ChatRequest, ChatResponse, ChatStream, Error, Message, Result, ToolCall, Usage,
};
use tracing::{Instrument, field};

use self::convert::{MaxTokensField, ToolCallAssembler};
pub use self::embeddings::{DEFAULT_EMBEDDING_BATCH, OpenAiEmbedder, OpenAiEmbedderBuilder};
use self::failure::ProviderFailure;
pub use self::retry::RetryPolicy;
use crate::tokens;

/// OpenAI's API base, used when neither an argument nor `OPENAI_BASE_URL` names another.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Default bound on waiting for an answer (and, when streaming, for each next chunk).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default bound on establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The finish reason of a completion the provider's content filter stopped.
const CONTENT_FILTER: &str = "content_filter";

/// Reads a configuration variable; the process environment unless a registry says otherwise.
pub(crate) type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub(crate) fn process_env() -> EnvLookup {
    Arc::new(|key| std::env::var(key).ok())
}

/// A chat model served over the OpenAI chat-completions API: OpenAI itself, or any
/// compatible server (Ollama, vLLM, LM Studio, llama.cpp) given its base URL.
///
/// - API key and base URL come from the builder, else from `OPENAI_API_KEY` / `OPENAI_BASE_URL`.
/// - [`chat`](ChatModel::chat) and SSE [`stream`](ChatModel::stream)ing, both with tool
///   definitions and tool calls; streams ask for usage in their final chunk
///   (`stream_options.include_usage`). When a server reports no usage, it is counted with
///   the tokenizer ([`tokens`](crate::tokens)).
/// - A timeout per request (for a stream: until it opens, then between chunks) and a connect
///   timeout; retries per [`RetryPolicy`] (429, 5xx and failures to connect, honouring
///   `Retry-After`; never other 4xx, and by default never once the request was sent and the
///   connection broke). async-openai's own retry layer is switched off, so the number of
///   requests sent is exactly what the policy allows.
/// - Failures are [`Error::Model`] with a [`ModelErrorKind`](lgadk_core::ModelErrorKind) read
///   from the status, the error code and the wording of OpenAI and the compatible servers
///   (see the [crate docs](crate#model-errors)), and the HTTP status when there was one.
///
/// # Tools
/// - Each [`ToolSpec`](lgadk_core::ToolSpec) goes out as a function definition with its
///   name, description and JSON Schema, and `"strict": true` when the spec is
///   [strict](lgadk_core::ToolSpec::strict) (nothing otherwise: `false` is the default, and
///   some compatible servers refuse the field). Its `keywords` are for the offline model and
///   are never sent.
/// - [`ToolChoice`](lgadk_core::ToolChoice) is sent as OpenAI spells it (`"auto"`, `"none"`,
///   `"required"`, `{"type": "function", "function": {"name": …}}`) and `parallel_tool_calls`
///   as given; both only when the request offers tools (OpenAI refuses them otherwise). A
///   choice no model can honour (`Required` without tools, a named tool that is not offered)
///   is [`Error::InvalidConfig`] before anything is sent.
/// - Streamed tool calls are assembled from their fragments (by index, however the fragments
///   of parallel calls interleave) and delivered whole, in index order, on the chunk that
///   finishes the completion.
/// - Tool-call arguments are parsed as JSON; an empty string is `{}`. Arguments that are not
///   JSON (or are a bare JSON string) do not fail the completion: they arrive as a
///   [`Value::String`](serde_json::Value::String) holding the text the model sent, which the
///   tool loop's schema check reports back to the model as invalid arguments, and which goes
///   back to the server unchanged when the conversation continues.
/// - A [`Role::Tool`](lgadk_core::Role::Tool) message goes out as `{"role": "tool",
///   "tool_call_id": …, "content": …}`; one without a `tool_call_id` is
///   [`Error::InvalidConfig`].
///
/// ```no_run
/// # async fn demo() -> lgadk_core::Result<()> {
/// use std::time::Duration;
/// use lgadk_core::{ChatModel, ChatRequest, Message};
/// use lgadk_llm::{OpenAiModel, RetryPolicy};
///
/// let model = OpenAiModel::builder("llama3")
///     .with_base_url("http://localhost:11434/v1")
///     .with_api_key("ollama")
///     .with_timeout(Duration::from_secs(30))
///     .with_retry(RetryPolicy::default().with_max_retries(2))
///     .build()?;
/// let reply = model.chat(ChatRequest::new(vec![Message::user("Hello!")])).await?;
/// println!("{} ({} tokens)", reply.message.content, reply.usage.total());
/// # Ok(())
/// # }
/// ```
pub struct OpenAiModel {
    id: String,
    model: String,
    base_url: String,
    client: Client<OpenAIConfig>,
    timeout: Duration,
    retry: RetryPolicy,
    max_tokens_field: MaxTokensField,
}

impl fmt::Debug for OpenAiModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiModel")
            .field("id", &self.id)
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Configures an [`OpenAiModel`]; [`build`](Self::build) validates and connects nothing yet.
pub struct OpenAiModelBuilder {
    model: String,
    id: Option<String>,
    api_key: Option<String>,
    base_url: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    max_tokens_field: MaxTokensField,
    env: EnvLookup,
}

impl fmt::Debug for OpenAiModelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiModelBuilder")
            .field("model", &self.model)
            .field("id", &self.id)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl OpenAiModelBuilder {
    /// Reports `id` (e.g. `ollama/llama3`) on spans and errors; default `openai/<model>`.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Uses `api_key` instead of `OPENAI_API_KEY`.
    #[must_use]
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// Talks to `base_url` (up to and including `/v1`) instead of `OPENAI_BASE_URL` or OpenAI.
    #[must_use]
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
        self
    }

    /// Bounds the wait for an answer, per attempt (default [`DEFAULT_TIMEOUT`]). For a stream it
    /// bounds the wait until the stream opens and then the wait for each next chunk. A timeout
    /// is reported as retryable but not retried here: it is the caller's bound on waiting.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds connection setup (default [`DEFAULT_CONNECT_TIMEOUT`]).
    #[must_use]
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Sets the retry policy (default [`RetryPolicy::default`]).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sends the completion cap as `max_tokens`, which older compatible servers expect,
    /// instead of OpenAI's current `max_completion_tokens`.
    #[must_use]
    pub fn with_legacy_max_tokens(mut self) -> Self {
        self.max_tokens_field = MaxTokensField::Legacy;
        self
    }

    /// Reads `OPENAI_*` variables through `env` instead of the process environment.
    #[must_use]
    pub(crate) fn with_env_lookup(mut self, env: EnvLookup) -> Self {
        self.env = env;
        self
    }

    /// Builds the model; no request is sent.
    ///
    /// # Errors
    /// - [`Error::InvalidConfig`] for an empty model name, a base URL that is not `http(s)`,
    ///   or no API key (argument or `OPENAI_API_KEY`) when the base URL is OpenAI's.
    /// - [`Error::Model`] if the HTTP client cannot be built.
    pub fn build(self) -> Result<OpenAiModel> {
        let model = self.model.trim().to_owned();
        let id = self.id.unwrap_or_else(|| format!("openai/{model}"));
        if model.is_empty() {
            return Err(Error::InvalidConfig { reason: format!("model `{id}` has an empty model name") });
        }
        let (base_url, client) = connect(&id, self.base_url, self.api_key, &self.env, self.connect_timeout)?;
        Ok(OpenAiModel {
            id,
            model,
            base_url,
            client,
            timeout: self.timeout,
            retry: self.retry,
            max_tokens_field: self.max_tokens_field,
        })
    }
}

/// Checks that `raw` is an `http(s)` URL and drops a trailing `/`.
pub(crate) fn validate_base_url(raw: &str) -> Result<String> {
    let trimmed = raw.trim().trim_end_matches('/');
    match reqwest::Url::parse(trimmed) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(trimmed.to_owned()),
        _ => Err(Error::InvalidConfig { reason: format!("base URL `{raw}` is not an http(s) URL") }),
    }
}

/// Resolves base URL and key (argument, then `OPENAI_BASE_URL` / `OPENAI_API_KEY`) and builds
/// an async-openai client that sends each request once (the caller's retry loop decides).
///
/// # Errors
/// [`Error::InvalidConfig`] for a base URL that is not `http(s)`, or no key for OpenAI's own
/// URL; [`Error::Model`] if the HTTP client cannot be built.
pub(crate) fn connect(
    id: &str,
    base_url: Option<String>,
    api_key: Option<String>,
    env: &EnvLookup,
    connect_timeout: Duration,
) -> Result<(String, Client<OpenAIConfig>)> {
    let base_url =
        non_empty(base_url).or_else(|| non_empty(env("OPENAI_BASE_URL"))).unwrap_or_else(|| OPENAI_BASE_URL.to_owned());
    let base_url = validate_base_url(&base_url)?;
    let api_key = match non_empty(api_key).or_else(|| non_empty(env("OPENAI_API_KEY"))) {
        Some(key) => key,
        None if base_url == OPENAI_BASE_URL => {
            return Err(Error::InvalidConfig {
                reason: format!("model `{id}` needs an API key: pass one to the builder or set OPENAI_API_KEY"),
            });
        }
        // Local servers (Ollama, vLLM, llama.cpp…) usually need none.
        None => String::new(),
    };

    http::install_crypto_provider();
    let http = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .build()
        .map_err(|e| ProviderFailure::HttpClient(e).into_error(id))?;
    let config = OpenAIConfig::new()
        .with_api_base(base_url.clone())
        .with_api_key(api_key)
        .with_org_id(non_empty(env("OPENAI_ORG_ID")).unwrap_or_default())
        .with_project_id(non_empty(env("OPENAI_PROJECT_ID")).unwrap_or_default());
    // `with_http_client` re-installs the retrying executor, so it must come first;
    // `with_http_service` then replaces it with one that sends each request once.
    let client =
        Client::with_config(config).with_http_client(http.clone()).with_http_service(http::HttpService::new(http));
    Ok((base_url, client))
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

fn model_span(id: &str) -> tracing::Span {
    tracing::info_span!(
        "model.chat",
        model = %id,
        tokens_in = field::Empty,
        tokens_out = field::Empty,
        latency_ms = field::Empty,
    )
}

fn record_usage(span: &tracing::Span, usage: Usage) {
    span.record("tokens_in", usage.prompt_tokens);
    span.record("tokens_out", usage.completion_tokens);
}

impl OpenAiModel {
    /// A builder for `model` (e.g. `gpt-4o-mini`, `llama3`).
    pub fn builder(model: impl Into<String>) -> OpenAiModelBuilder {
        OpenAiModelBuilder {
            model: model.into(),
            id: None,
            api_key: None,
            base_url: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry: RetryPolicy::default(),
            max_tokens_field: MaxTokensField::Completion,
            env: process_env(),
        }
    }

    /// `model` with key and base URL from `OPENAI_API_KEY` / `OPENAI_BASE_URL` and defaults
    /// for everything else.
    ///
    /// # Errors
    /// As [`OpenAiModelBuilder::build`].
    pub fn from_env(model: impl Into<String>) -> Result<Self> {
        Self::builder(model).build()
    }

    /// The model name sent to the server.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The API base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Runs `attempt` until it succeeds, fails for good, or the policy's retries are used up.
    async fn with_retries<T, F, Fut>(&self, attempt: F) -> Result<T, ProviderFailure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderFailure>>,
    {
        retry::with_retries(&self.retry, attempt).await
    }

    async fn chat_once(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let wire = convert::to_wire_request(&self.model, request, false, self.max_tokens_field)?;
        let response = self
            .with_retries(|| {
                let wire = wire.clone();
                async move {
                    match tokio::time::timeout(self.timeout, self.client.chat().create(wire)).await {
                        Ok(answer) => answer.map_err(ProviderFailure::from_openai),
                        Err(_) => Err(ProviderFailure::Timeout(self.timeout)),
                    }
                }
            })
            .await
            .map_err(|f| f.into_error(&self.id))?;
        let (message, usage, finish_reason) =
            convert::from_wire_response(response).map_err(|f| f.into_error(&self.id))?;
        if finish_reason.as_deref() == Some(CONTENT_FILTER) {
            return Err(ProviderFailure::ContentFilter.into_error(&self.id));
        }
        let usage = usage.unwrap_or_else(|| tokens::count_usage(request, &message));
        Ok(ChatResponse { message, usage, finish_reason })
    }

    async fn open_stream(&self, request: &ChatRequest) -> Result<ChatCompletionResponseStream> {
        let wire = convert::to_wire_request(&self.model, request, true, self.max_tokens_field)?;
        self.with_retries(|| {
            let wire = wire.clone();
            async move {
                match tokio::time::timeout(self.timeout, self.client.chat().create_stream(wire)).await {
                    Ok(opened) => opened.map_err(ProviderFailure::from_openai),
                    Err(_) => Err(ProviderFailure::Timeout(self.timeout)),
                }
            }
        })
        .await
        .map_err(|f| f.into_error(&self.id))
    }
}

#[async_trait]
impl ChatModel for OpenAiModel {
    fn id(&self) -> &str {
        &self.id
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let span = model_span(&self.id);
        let started = Instant::now();
        let result = self.chat_once(&request).instrument(span.clone()).await;
        if let Ok(reply) = &result {
            record_usage(&span, reply.usage);
        }
        span.record("latency_ms", millis(started.elapsed()));
        result
    }

    async fn stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let span = model_span(&self.id);
        let started = Instant::now();
        let inner = match self.open_stream(&request).instrument(span.clone()).await {
            Ok(inner) => inner,
            Err(err) => {
                span.record("latency_ms", millis(started.elapsed()));
                return Err(err);
            }
        };
        let state = StreamState {
            inner,
            id: self.id.clone(),
            timeout: self.timeout,
            request,
            tools: ToolCallAssembler::default(),
            content: String::new(),
            tool_calls: Vec::new(),
            finish_reason: None,
            usage: None,
            pending: None,
            done: false,
            span,
            started,
        };
        Ok(Box::pin(futures_util::stream::unfold(state, StreamState::next_chunk)))
    }
}

/// Turns async-openai's chunk stream into lgadk chunks: assembles tool calls, checks that the
/// model finished, and ends with a chunk that carries the usage.
struct StreamState {
    inner: ChatCompletionResponseStream,
    id: String,
    timeout: Duration,
    request: ChatRequest,
    tools: ToolCallAssembler,
    content: String,
    tool_calls: Vec<ToolCall>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    /// A failure to report after the chunk that came with it (a filtered completion's last words).
    pending: Option<ProviderFailure>,
    done: bool,
    span: tracing::Span,
    started: Instant,
}

impl StreamState {
    async fn next_chunk(mut self) -> Option<(Result<ChatChunk>, Self)> {
        loop {
            if self.done {
                return None;
            }
            let outcome = if let Some(failure) = self.pending.take() {
                Err(failure)
            } else {
                let next = tokio::time::timeout(self.timeout, self.inner.next()).instrument(self.span.clone()).await;
                match next {
                    Err(_) => Err(ProviderFailure::Timeout(self.timeout)),
                    Ok(Some(Err(e))) => Err(ProviderFailure::from_openai(e)),
                    Ok(Some(Ok(chunk))) => self.absorb(chunk),
                    Ok(None) => return self.end(),
                }
            };
            match outcome {
                Ok(Some(chunk)) => return Some((Ok(chunk), self)),
                Ok(None) => {}
                Err(failure) => {
                    self.done = true;
                    self.span.record("latency_ms", millis(self.started.elapsed()));
                    let err = failure.into_error(&self.id);
                    return Some((Err(err), self));
                }
            }
        }
    }

    /// Folds one wire chunk in; `Ok(None)` when it carries nothing for the caller yet.
    fn absorb(
        &mut self,
        chunk: async_openai::types::chat::CreateChatCompletionStreamResponse,
    ) -> Result<Option<ChatChunk>, ProviderFailure> {
        if let Some(usage) = &chunk.usage {
            self.usage = Some(convert::to_usage(usage));
        }
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
            return Ok(None);
        };
        let delta = choice.delta.content.or(choice.delta.refusal).unwrap_or_default();
        for fragment in choice.delta.tool_calls.unwrap_or_default() {
            self.tools.push(fragment);
        }
        let mut out = ChatChunk { delta, ..ChatChunk::default() };
        if choice.finish_reason == Some(FinishReason::ContentFilter) {
            // The filter stopped the model: deliver what came with this chunk, then fail.
            if out.delta.is_empty() {
                return Err(ProviderFailure::ContentFilter);
            }
            self.pending = Some(ProviderFailure::ContentFilter);
            return Ok(Some(out));
        }
        if let Some(reason) = choice.finish_reason {
            let reason = convert::finish_reason_name(reason).to_owned();
            out.tool_calls = self.tools.finish();
            self.tool_calls.extend(out.tool_calls.iter().cloned());
            self.finish_reason = Some(reason.clone());
            out.finish_reason = Some(reason);
        }
        self.content.push_str(&out.delta);
        let empty = out.delta.is_empty() && out.tool_calls.is_empty() && out.finish_reason.is_none();
        Ok((!empty).then_some(out))
    }

    /// The stream ended: a final usage chunk if the model finished, a `StreamCut` otherwise.
    fn end(mut self) -> Option<(Result<ChatChunk>, Self)> {
        self.done = true;
        self.span.record("latency_ms", millis(self.started.elapsed()));
        if self.finish_reason.is_none() {
            let err = ProviderFailure::StreamCut(None).into_error(&self.id);
            return Some((Err(err), self));
        }
        let usage = self.usage.unwrap_or_else(|| {
            let reply = Message { tool_calls: self.tool_calls.clone(), ..Message::assistant(self.content.clone()) };
            tokens::count_usage(&self.request, &reply)
        });
        record_usage(&self.span, usage);
        Some((Ok(ChatChunk { usage: Some(usage), ..ChatChunk::default() }), self))
    }
}
