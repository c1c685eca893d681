//! [`OpenAiEmbedder`]: embeddings from OpenAI and every OpenAI-compatible server, through
//! async-openai's `/embeddings` call, with the chat provider's retry loop and failure mapping.

use std::fmt;
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::embeddings::{
    CreateEmbeddingRequest, CreateEmbeddingResponse, EmbeddingInput, EncodingFormat,
};
use async_trait::async_trait;
use lgadk_core::memory::Embedder;
use lgadk_core::{Error, Result};
use tracing::{Instrument, field};

use super::failure::ProviderFailure;
use super::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, EnvLookup, RetryPolicy, connect, millis, process_env, retry};

/// Default number of texts sent in one request (OpenAI accepts up to 2048).
pub const DEFAULT_EMBEDDING_BATCH: usize = 128;

/// OpenAI's largest batch: more inputs in one request are refused.
const MAX_EMBEDDING_BATCH: usize = 2048;

/// The vector lengths of OpenAI's embedding models, so they need no configuration.
const KNOWN_DIMENSIONS: &[(&str, usize)] =
    &[("text-embedding-3-small", 1536), ("text-embedding-3-large", 3072), ("text-embedding-ada-002", 1536)];

/// The vector length of a model in [`KNOWN_DIMENSIONS`] (also when named `openai/<model>`).
fn known_dimensions(model: &str) -> Option<usize> {
    let name = model.rsplit('/').next().unwrap_or(model);
    KNOWN_DIMENSIONS.iter().find(|(known, _)| *known == name).map(|(_, d)| *d)
}

/// An embedding model served over the OpenAI embeddings API: OpenAI itself
/// (`text-embedding-3-small`, …) or any compatible server (Ollama, vLLM, LM Studio, llama.cpp,
/// LiteLLM) given its base URL.
///
/// - Texts go out in batches of [`with_batch_size`](OpenAiEmbedderBuilder::with_batch_size)
///   (default [`DEFAULT_EMBEDDING_BATCH`]), one request per batch, in order; the vectors come back
///   in the order of the texts, whatever order the server lists them in.
/// - Every vector has [`dimensions`](Embedder::dimensions) values: OpenAI's models' own
///   length, a length asked for with
///   [`with_dimensions`](OpenAiEmbedderBuilder::with_dimensions) (sent as `dimensions`, which
///   `text-embedding-3` and later models honour), or one declared for another model with
///   [`with_model_dimensions`](OpenAiEmbedderBuilder::with_model_dimensions).
/// - An answer that does not fit the request (a vector missing or extra, an index out of
///   place or repeated, vectors of different lengths, a value that is not finite) is
///   [`Error::Model`] with kind
///   [`MalformedResponse`](lgadk_core::ModelErrorKind::MalformedResponse); nothing partial is
///   returned.
/// - Timeouts, retries ([`RetryPolicy`]: 429 honouring `Retry-After`, 5xx, failures to
///   connect) and the kinds of failures are those of [`OpenAiModel`](super::OpenAiModel): see
///   the [crate docs](crate#model-errors).
/// - Each call is one `model.embed` span with the model id, the number of texts and batches,
///   the prompt tokens the server reported and the latency. Texts are never recorded.
///
/// ```no_run
/// # async fn demo() -> lgadk_core::Result<()> {
/// use lgadk_core::memory::Embedder;
/// use lgadk_llm::OpenAiEmbedder;
///
/// let embedder = OpenAiEmbedder::builder("text-embedding-3-small").with_dimensions(256).build()?;
/// let vectors = embedder.embed(vec!["I prefer window seats".to_owned()]).await?;
/// assert_eq!(vectors[0].len(), 256);
///
/// // A local model behind Ollama: its vector length is declared, nothing extra is sent.
/// let local = OpenAiEmbedder::builder("nomic-embed-text")
///     .with_id("ollama/nomic-embed-text")
///     .with_base_url("http://localhost:11434/v1")
///     .with_model_dimensions(768)
///     .build()?;
/// # Ok(())
/// # }
/// ```
pub struct OpenAiEmbedder {
    id: String,
    model: String,
    base_url: String,
    client: Client<OpenAIConfig>,
    timeout: Duration,
    retry: RetryPolicy,
    /// The length every vector has.
    dimensions: usize,
    /// Sent as `dimensions` (only when asked for with `with_dimensions`).
    requested: Option<u32>,
    batch_size: usize,
}

impl fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("id", &self.id)
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("dimensions", &self.dimensions)
            .field("requested", &self.requested)
            .field("batch_size", &self.batch_size)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Configures an [`OpenAiEmbedder`]; [`build`](Self::build) validates and sends nothing.
pub struct OpenAiEmbedderBuilder {
    model: String,
    id: Option<String>,
    api_key: Option<String>,
    base_url: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    dimensions: Option<u32>,
    model_dimensions: Option<usize>,
    batch_size: usize,
    env: EnvLookup,
}

impl fmt::Debug for OpenAiEmbedderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiEmbedderBuilder")
            .field("model", &self.model)
            .field("id", &self.id)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .field("dimensions", &self.dimensions)
            .field("model_dimensions", &self.model_dimensions)
            .field("batch_size", &self.batch_size)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl OpenAiEmbedderBuilder {
    /// Reports `id` (e.g. `ollama/nomic-embed-text`) on spans and errors; default `openai/<model>`.
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

    /// Asks for vectors of `dimensions` values: sent as `dimensions`, which `text-embedding-3`
    /// and later models honour by shortening their vectors (older models and many compatible
    /// servers refuse the field). Every vector must then have that length.
    #[must_use]
    pub fn with_dimensions(mut self, dimensions: u32) -> Self {
        self.dimensions = Some(dimensions);
        self
    }

    /// Declares the model's own vector length, without sending anything: for models this
    /// crate does not know (it knows OpenAI's `text-embedding-3-small`, `-3-large` and
    /// `ada-002`), e.g. 768 for Ollama's `nomic-embed-text`. Every vector must have that length.
    #[must_use]
    pub fn with_model_dimensions(mut self, dimensions: usize) -> Self {
        self.model_dimensions = Some(dimensions);
        self
    }

    /// Sends at most `batch_size` texts per request (default [`DEFAULT_EMBEDDING_BATCH`], at most
    /// 2048, OpenAI's limit).
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Bounds the wait for each request's answer (default [`DEFAULT_TIMEOUT`]).
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

    /// Sets the retry policy (default [`RetryPolicy::default`]). An embeddings request changes
    /// nothing on the server, so a connection lost after sending is worth retrying too:
    /// turn it on with [`RetryPolicy::with_retry_after_send`].
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Reads `OPENAI_*` variables through `env` instead of the process environment.
    #[must_use]
    pub(crate) fn with_env_lookup(mut self, env: EnvLookup) -> Self {
        self.env = env;
        self
    }

    /// Builds the embedder; no request is sent.
    ///
    /// # Errors
    /// - [`Error::InvalidConfig`] for an empty model name; a vector length that is 0, or
    ///   unknown (neither asked for, declared, nor one of OpenAI's models), or declared
    ///   differently from the one asked for; a batch size of 0 or above 2048; a base URL that
    ///   is not `http(s)`; or no API key (argument or `OPENAI_API_KEY`) when the base URL is
    ///   OpenAI's.
    /// - [`Error::Model`] if the HTTP client cannot be built.
    pub fn build(self) -> Result<OpenAiEmbedder> {
        let model = self.model.trim().to_owned();
        let id = self.id.unwrap_or_else(|| format!("openai/{model}"));
        if model.is_empty() {
            return Err(Error::InvalidConfig { reason: format!("embedder `{id}` has an empty model name") });
        }
        let requested = self.dimensions.map(|d| d as usize);
        let dimensions = match (requested, self.model_dimensions) {
            (Some(asked), Some(declared)) if asked != declared => {
                return Err(Error::InvalidConfig {
                    reason: format!("embedder `{id}` asks for {asked} dimensions but declares {declared}"),
                });
            }
            (Some(d), _) | (None, Some(d)) => d,
            (None, None) => known_dimensions(&model).ok_or_else(|| Error::InvalidConfig {
                reason: format!(
                    "embedder `{id}`: the vector length of model `{model}` is unknown; declare it with \
                     with_model_dimensions (or ask for one with with_dimensions)"
                ),
            })?,
        };
        if dimensions == 0 {
            return Err(Error::InvalidConfig { reason: format!("embedder `{id}` has 0 dimensions") });
        }
        if !(1..=MAX_EMBEDDING_BATCH).contains(&self.batch_size) {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "embedder `{id}` has batch size {}; it must be 1 to {MAX_EMBEDDING_BATCH}",
                    self.batch_size
                ),
            });
        }
        let (base_url, client) = connect(&id, self.base_url, self.api_key, &self.env, self.connect_timeout)?;
        Ok(OpenAiEmbedder {
            id,
            model,
            base_url,
            client,
            timeout: self.timeout,
            retry: self.retry,
            dimensions,
            requested: self.dimensions,
            batch_size: self.batch_size,
        })
    }
}

impl OpenAiEmbedder {
    /// A builder for `model` (e.g. `text-embedding-3-small`, `nomic-embed-text`).
    pub fn builder(model: impl Into<String>) -> OpenAiEmbedderBuilder {
        OpenAiEmbedderBuilder {
            model: model.into(),
            id: None,
            api_key: None,
            base_url: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry: RetryPolicy::default(),
            dimensions: None,
            model_dimensions: None,
            batch_size: DEFAULT_EMBEDDING_BATCH,
            env: process_env(),
        }
    }

    /// `model` with key and base URL from `OPENAI_API_KEY` / `OPENAI_BASE_URL` and defaults
    /// for everything else.
    ///
    /// # Errors
    /// As [`OpenAiEmbedderBuilder::build`].
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

    /// The `dimensions` sent with each request, if asked for with
    /// [`with_dimensions`](OpenAiEmbedderBuilder::with_dimensions).
    pub fn requested_dimensions(&self) -> Option<u32> {
        self.requested
    }

    async fn embed_texts(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let span = tracing::info_span!(
            "model.embed",
            model = %self.id,
            texts = texts.len(),
            batches = texts.len().div_ceil(self.batch_size),
            tokens_in = field::Empty,
            latency_ms = field::Empty,
        );
        let started = Instant::now();
        let result = self.embed_all(texts, &span).instrument(span.clone()).await;
        span.record("latency_ms", millis(started.elapsed()));
        result
    }

    async fn embed_all(&self, texts: &[String], span: &tracing::Span) -> Result<Vec<Vec<f32>>> {
        if let Some(at) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "text {at} given to embedder `{}` is empty; embeddings servers refuse empty input",
                    self.id
                ),
            });
        }
        let mut vectors = Vec::with_capacity(texts.len());
        let mut tokens: u64 = 0;
        for batch in texts.chunks(self.batch_size) {
            let (batch_vectors, prompt_tokens) = self.embed_batch(batch).await?;
            tokens = tokens.saturating_add(u64::from(prompt_tokens));
            vectors.extend(batch_vectors);
        }
        span.record("tokens_in", tokens);
        Ok(vectors)
    }

    /// One request; the vectors in the order of `batch` and the prompt tokens reported.
    async fn embed_batch(&self, batch: &[String]) -> Result<(Vec<Vec<f32>>, u32)> {
        let request = CreateEmbeddingRequest {
            model: self.model.clone(),
            input: EmbeddingInput::StringArray(batch.to_vec()),
            encoding_format: Some(EncodingFormat::Float),
            user: None,
            dimensions: self.requested,
        };
        let response = retry::with_retries(&self.retry, || {
            let request = request.clone();
            async move {
                match tokio::time::timeout(self.timeout, self.client.embeddings().create(request)).await {
                    Ok(answer) => answer.map_err(ProviderFailure::from_openai),
                    Err(_) => Err(ProviderFailure::Timeout(self.timeout)),
                }
            }
        })
        .await
        .map_err(|f| f.into_error(&self.id))?;
        let prompt_tokens = response.usage.prompt_tokens;
        let vectors = in_order(response, batch.len(), self.dimensions).map_err(|f| f.into_error(&self.id))?;
        Ok((vectors, prompt_tokens))
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    /// `openai/<model>` unless set with [`with_id`](OpenAiEmbedderBuilder::with_id).
    fn id(&self) -> &str {
        &self.id
    }

    /// The length asked for, declared, or known for the model.
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Embeds `texts`: one vector per text, in their order, in batches. No texts, no request.
    ///
    /// # Errors
    /// - [`Error::InvalidConfig`] when a text is empty or only whitespace (the servers refuse
    ///   them); nothing is sent.
    /// - [`Error::Model`] when a request fails (after the policy's retries) or an answer does
    ///   not fit its batch; the kinds are those of the [crate docs](crate#model-errors).
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        self.embed_texts(&texts).await
    }
}

/// The vectors of `response` by their `index`, checked against the batch: exactly `expected`
/// of them, each index once, each of `length` values, every value finite.
fn in_order(
    response: CreateEmbeddingResponse,
    expected: usize,
    length: usize,
) -> Result<Vec<Vec<f32>>, ProviderFailure> {
    let bad = |reason: String| ProviderFailure::BadEmbeddings { reason };
    if response.data.len() != expected {
        return Err(bad(format!("{expected} texts were sent and {} vectors came back", response.data.len())));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
    for item in response.data {
        let index = item.index as usize;
        let Some(slot) = slots.get_mut(index) else {
            return Err(bad(format!("vector index {index} is out of range for {expected} texts")));
        };
        if slot.is_some() {
            return Err(bad(format!("vector index {index} came twice")));
        }
        if item.embedding.len() != length {
            return Err(bad(format!("vector {index} has {} values, expected {length}", item.embedding.len())));
        }
        if item.embedding.iter().any(|v| !v.is_finite()) {
            return Err(bad(format!("vector {index} holds a value that is not finite")));
        }
        *slot = Some(item.embedding);
    }
    // Every slot is filled: as many distinct in-range indexes as slots.
    Ok(slots.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use async_openai::types::embeddings::{Embedding, EmbeddingUsage};

    use super::*;

    fn response(items: &[(u32, Vec<f32>)]) -> CreateEmbeddingResponse {
        CreateEmbeddingResponse {
            object: "list".into(),
            model: "m".into(),
            data: items
                .iter()
                .map(|(index, v)| Embedding { index: *index, object: "embedding".into(), embedding: v.clone() })
                .collect(),
            usage: EmbeddingUsage { prompt_tokens: 1, total_tokens: 1 },
        }
    }

    fn reason(result: Result<Vec<Vec<f32>>, ProviderFailure>) -> String {
        match result {
            Err(ProviderFailure::BadEmbeddings { reason }) => reason,
            other => panic!("expected BadEmbeddings, got {other:?}"),
        }
    }

    #[test]
    fn vectors_are_put_in_the_order_of_their_indexes() {
        let got = in_order(response(&[(1, vec![2.0]), (0, vec![1.0])]), 2, 1).unwrap();
        assert_eq!(got, vec![vec![1.0], vec![2.0]]);
    }

    #[test]
    fn answers_that_do_not_fit_the_batch_are_refused() {
        assert!(reason(in_order(response(&[(0, vec![1.0])]), 2, 1)).contains("2 texts were sent and 1"));
        assert!(reason(in_order(response(&[(0, vec![1.0]), (0, vec![1.0])]), 2, 1)).contains("twice"));
        assert!(reason(in_order(response(&[(0, vec![1.0]), (5, vec![1.0])]), 2, 1)).contains("out of range"));
        let uneven = in_order(response(&[(0, vec![1.0]), (1, vec![1.0, 2.0])]), 2, 1);
        assert!(reason(uneven).contains("vector 1 has 2 values, expected 1"));
        assert!(reason(in_order(response(&[(0, vec![f32::NAN])]), 1, 1)).contains("not finite"));
        assert!(reason(in_order(response(&[(0, vec![])]), 1, 1)).contains("has 0 values"));
    }

    #[test]
    fn openai_models_need_no_declared_length() {
        assert_eq!(known_dimensions("text-embedding-3-small"), Some(1536));
        assert_eq!(known_dimensions("openai/text-embedding-3-large"), Some(3072));
        assert_eq!(known_dimensions("nomic-embed-text"), None);
    }
}
