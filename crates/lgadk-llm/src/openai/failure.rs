//! Provider failures: the crate-private detail kept as the `source` of `Error::Model`, and the
//! mapping from HTTP statuses, OpenAI error codes and compatible servers' messages to the public
//! [`ModelErrorKind`].

use std::time::Duration;

use async_openai::error::{OpenAIError, StreamError};
use lgadk_core::{Error, ModelErrorKind};
use serde_json::Value;

/// Longest excerpt of an error body kept in the message.
const BODY_EXCERPT: usize = 200;

/// Why a call to an OpenAI-compatible server failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProviderFailure {
    /// The server answered with a non-success status (other than an auth failure).
    #[error("the provider answered {status}: {message}")]
    Status {
        status: u16,
        kind: ModelErrorKind,
        message: String,
        /// `Retry-After` / `retry-after-ms`, when the server sent one.
        retry_after: Option<Duration>,
    },
    /// 401 or 403: the key is missing, wrong or lacks access.
    #[error(
        "the provider rejected the credentials ({status}): {message}; check the API key (argument or OPENAI_API_KEY)"
    )]
    Auth { status: u16, message: String },
    /// The server sent an error object where a completion or the next chunk of a stream belonged.
    #[error("the provider sent an error instead of a completion: {message}")]
    ErrorObject { kind: ModelErrorKind, message: String },
    /// No connection could be made; the request was never sent.
    #[error("could not connect to the provider")]
    Connect(#[source] reqwest::Error),
    /// The request went out and the connection broke before a complete answer came back.
    #[error("the connection broke after the request was sent, before a complete answer")]
    ConnectionLost(#[source] reqwest::Error),
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built")]
    HttpClient(#[source] reqwest::Error),
    /// The body is not a chat completion.
    #[error("the provider's answer does not decode")]
    Decode(#[source] serde_json::Error),
    /// An embeddings answer that does not fit its request: a vector missing or extra, an
    /// index out of place, vectors of different lengths or of the wrong length, a value that is
    /// not finite.
    #[error("the provider's embeddings do not fit the request: {reason}")]
    BadEmbeddings { reason: String },
    /// A completion without any choice.
    #[error("the provider's answer has no choices")]
    NoChoices,
    /// The completion finished with `finish_reason: content_filter`.
    #[error("the provider's content filter stopped the completion (finish reason `content_filter`)")]
    ContentFilter,
    /// No answer (or, in a stream, no next chunk) within the configured timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The stream ended or broke before the model finished.
    #[error("the stream broke off before the model finished")]
    StreamCut(#[source] Option<Box<StreamError>>),
    /// async-openai refused the call before sending it, or failed in another way.
    #[error("the OpenAI client failed")]
    Client(#[source] OpenAIError),
}

/// Parses `Retry-After` (seconds) or OpenAI's `retry-after-ms` from response headers.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
    };
    if let Some(ms) = number("retry-after-ms") {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    number("retry-after").and_then(|secs| Duration::try_from_secs_f64(secs).ok())
}

/// The parts of an error body that say what went wrong.
///
/// Read leniently, because the compatible servers differ: OpenAI, LiteLLM and LM Studio send
/// `{"error": {"message", "type", "code"}}` with a string code, vLLM and llama.cpp a numeric
/// code, older vLLM the object without the `error` wrapper, Ollama `{"error": "text"}`, and
/// proxies plain text or HTML.
#[derive(Debug, Default)]
struct ErrorBody {
    message: String,
    /// `type` and `code`, lowercased, when they are strings.
    labels: Vec<String>,
    /// A numeric `code`, which vLLM and llama.cpp set to the HTTP status.
    numeric_code: Option<u16>,
}

impl ErrorBody {
    fn parse(body: &[u8]) -> Self {
        let parsed = serde_json::from_slice::<Value>(body).ok().and_then(|json| {
            let object = match json.get("error") {
                Some(Value::String(text)) => return Some(Self { message: text.clone(), ..Self::default() }),
                Some(inner @ Value::Object(_)) => inner,
                _ if json.get("message").is_some() => &json,
                _ => match json.get("detail") {
                    Some(Value::String(text)) => return Some(Self { message: text.clone(), ..Self::default() }),
                    _ => return None,
                },
            };
            let message = match object.get("message") {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            let labels = ["type", "code"]
                .iter()
                .filter_map(|key| object.get(*key)?.as_str())
                .map(str::to_ascii_lowercase)
                .collect();
            let numeric_code = object.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
            Some(Self { message, labels, numeric_code })
        });
        parsed.unwrap_or_else(|| Self { message: excerpt(&String::from_utf8_lossy(body)), ..Self::default() })
    }

    fn has_label(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }

    /// Whether the body itself says what happened: codes first, then the servers' wording.
    /// `None` leaves the decision to the status.
    fn kind_from_content(&self, status: Option<u16>, retry_after: Option<Duration>) -> Option<ModelErrorKind> {
        let text = self.message.to_lowercase();
        let mentions = |phrases: &[&str]| phrases.iter().any(|p| text.contains(p));
        // A 429 that talks about tokens is a tokens-per-minute limit, not an overflow.
        let wording_counts = status != Some(429);
        if self.has_label("insufficient_quota") || mentions(QUOTA_PHRASES) {
            return Some(ModelErrorKind::Quota);
        }
        if CONTEXT_LABELS.iter().any(|l| self.has_label(l)) || (wording_counts && mentions(CONTEXT_PHRASES)) {
            return Some(ModelErrorKind::ContextWindowExceeded);
        }
        if CONTENT_FILTER_LABELS.iter().any(|l| self.has_label(l))
            || (wording_counts && mentions(CONTENT_FILTER_PHRASES))
        {
            return Some(ModelErrorKind::ContentFiltered);
        }
        if self.has_label("rate_limit_exceeded") {
            return Some(ModelErrorKind::RateLimited { retry_after });
        }
        if self.has_label("invalid_api_key") {
            return Some(ModelErrorKind::Authentication);
        }
        None
    }
}

/// `type`/`code` values that mean the context window overflowed: OpenAI's code, llama.cpp's type.
const CONTEXT_LABELS: &[&str] = &["context_length_exceeded", "exceed_context_size_error"];

/// How servers word a context-window overflow (matched lowercased, as substrings).
const CONTEXT_PHRASES: &[&str] = &[
    // OpenAI, vLLM, Mistral, OpenRouter: "This model's maximum context length is 4096 tokens…"
    "maximum context length",
    "context length exceeded",
    "context_length_exceeded",
    // Ollama: "the input length exceeds the context length"
    "exceeds the context length",
    // llama.cpp: "request (4476 tokens) exceeds the available context size (4096 tokens)"
    "exceeds the available context size",
    // LM Studio: "The number of tokens to keep from the initial prompt is greater than the context length",
    // "Trying to keep the first N tokens when context the overflows", "Cannot truncate prompt with n_keep…"
    "greater than the context length",
    "when context the overflows",
    "cannot truncate prompt with n_keep",
    // LiteLLM: "litellm.ContextWindowExceededError: …"
    "contextwindowexceedederror",
    "exceeds the context window",
    "context window exceeded",
    "context window full",
    // Anthropic behind a proxy: "prompt is too long: 200001 tokens > 200000 maximum"
    "prompt is too long",
    "input is too long",
    "too many tokens",
    // Gemini's OpenAI endpoint: "The input token count (N) exceeds the maximum number of tokens allowed (M)."
    "exceeds the maximum number of tokens",
];

/// `type`/`code` values for content the provider refused (Azure OpenAI, OpenAI).
const CONTENT_FILTER_LABELS: &[&str] = &["content_filter", "content_policy_violation"];

/// How servers word a content-filter refusal.
const CONTENT_FILTER_PHRASES: &[&str] = &["content management policy", "content filter", "content_filter"];

/// How OpenAI words an exhausted quota when the code is missing.
const QUOTA_PHRASES: &[&str] = &["exceeded your current quota", "insufficient_quota"];

/// The kind for a status whose body said nothing more specific.
fn kind_from_status(status: u16, retry_after: Option<Duration>) -> ModelErrorKind {
    match status {
        401 | 403 => ModelErrorKind::Authentication,
        402 => ModelErrorKind::Quota,
        408 => ModelErrorKind::Timeout,
        429 => ModelErrorKind::RateLimited { retry_after },
        400..=499 => ModelErrorKind::InvalidRequest,
        500..=599 => ModelErrorKind::ServerError,
        // 1xx/3xx where an answer belonged.
        _ => ModelErrorKind::MalformedResponse,
    }
}

fn excerpt(text: &str) -> String {
    let text = text.trim();
    let mut excerpt: String = text.chars().take(BODY_EXCERPT).collect();
    if excerpt.len() < text.len() {
        excerpt.push('…');
    }
    if excerpt.is_empty() {
        excerpt.push_str("(empty body)");
    }
    excerpt
}

impl ProviderFailure {
    /// The failure for a non-success answer with `body`.
    pub(crate) fn from_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Self {
        let body = ErrorBody::parse(body);
        let kind =
            body.kind_from_content(Some(status), retry_after).unwrap_or_else(|| kind_from_status(status, retry_after));
        let message = if body.message.is_empty() { "(no message)".to_owned() } else { body.message };
        match kind {
            ModelErrorKind::Authentication if matches!(status, 401 | 403) => Self::Auth { status, message },
            kind => Self::Status { status, kind, message, retry_after },
        }
    }

    /// The failure for a body or stream event that carries an error object instead of a
    /// completion or chunk, or `None` if `data` is no error object.
    fn from_error_object(data: &str) -> Option<Self> {
        let json: Value = serde_json::from_str(data).ok()?;
        json.get("error")?;
        let body = ErrorBody::parse(data.as_bytes());
        let kind = body
            .kind_from_content(body.numeric_code, None)
            .or_else(|| body.numeric_code.map(|status| kind_from_status(status, None)))
            .unwrap_or(ModelErrorKind::ServerError);
        Some(Self::ErrorObject { kind, message: body.message })
    }

    /// Classifies a transport error: whether the request had gone out decides the kind.
    fn from_reqwest(error: reqwest::Error) -> Self {
        if error.is_connect() {
            Self::Connect(error)
        } else if error.is_builder() {
            Self::Client(OpenAIError::Reqwest(error))
        } else {
            Self::ConnectionLost(error)
        }
    }

    /// Classifies an error returned by async-openai.
    pub(crate) fn from_openai(error: OpenAIError) -> Self {
        match error {
            OpenAIError::Boxed(boxed) => match boxed.downcast::<Self>() {
                Ok(failure) => *failure,
                Err(other) => Self::Client(OpenAIError::Boxed(other)),
            },
            OpenAIError::Reqwest(e) => Self::from_reqwest(e),
            OpenAIError::ApiError(api) => {
                // Only reached without our HTTP service; re-encode so one mapper decides.
                let body = serde_json::json!({"error": api.api_error});
                Self::from_status(api.status_code.as_u16(), None, body.to_string().as_bytes())
            }
            OpenAIError::JSONDeserialize(e, data) => Self::from_error_object(&data).unwrap_or(Self::Decode(e)),
            OpenAIError::StreamError(e) => Self::StreamCut(Some(e)),
            other => Self::Client(other),
        }
    }

    /// The HTTP status, when the server answered with one.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } | Self::Auth { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The public kind of this failure.
    pub(crate) fn kind(&self) -> ModelErrorKind {
        match self {
            Self::Status { kind, .. } | Self::ErrorObject { kind, .. } => kind.clone(),
            Self::Auth { .. } => ModelErrorKind::Authentication,
            Self::Connect(_) => ModelErrorKind::Connect,
            Self::ConnectionLost(_) => ModelErrorKind::ConnectionLost,
            Self::Decode(_) | Self::NoChoices | Self::BadEmbeddings { .. } => ModelErrorKind::MalformedResponse,
            Self::ContentFilter => ModelErrorKind::ContentFiltered,
            Self::Timeout(_) => ModelErrorKind::Timeout,
            Self::StreamCut(_) => ModelErrorKind::StreamCut,
            Self::Client(OpenAIError::InvalidArgument(_)) => ModelErrorKind::InvalidRequest,
            Self::HttpClient(_) | Self::Client(_) => ModelErrorKind::Other,
        }
    }

    /// Whether the retry loop tries again by itself: rate limits, server errors and failures
    /// before the request was sent; a connection lost after sending only if `after_send`. Never
    /// a timeout (it bounds the caller's wait) nor anything mid-stream.
    pub(crate) fn retry_now(&self, after_send: bool) -> bool {
        match self.kind() {
            ModelErrorKind::Connect | ModelErrorKind::RateLimited { .. } | ModelErrorKind::ServerError => {
                !matches!(self, Self::ErrorObject { .. })
            }
            ModelErrorKind::ConnectionLost => after_send,
            _ => false,
        }
    }

    /// The server's `Retry-After`, if any.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The public error for model `model`.
    pub(crate) fn into_error(self, model: &str) -> Error {
        Error::model(model, self.kind(), self.status(), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: u16, body: &str) -> ModelErrorKind {
        ProviderFailure::from_status(status, None, body.as_bytes()).kind()
    }

    #[test]
    fn json_error_bodies_are_read() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        let failure = ProviderFailure::from_status(429, Some(Duration::from_secs(2)), body);
        assert!(failure.retry_now(false));
        assert_eq!(failure.kind(), ModelErrorKind::RateLimited { retry_after: Some(Duration::from_secs(2)) });
        assert_eq!(failure.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(failure.to_string(), "the provider answered 429: Rate limit reached");
    }

    #[test]
    fn quota_exhaustion_and_client_errors_are_final() {
        let quota = br#"{"error":{"message":"No quota","type":"insufficient_quota","code":null}}"#;
        let quota = ProviderFailure::from_status(429, None, quota);
        assert_eq!(quota.kind(), ModelErrorKind::Quota);
        assert!(!quota.retry_now(true));
        assert_eq!(kind(400, "bad"), ModelErrorKind::InvalidRequest);
        assert!(ProviderFailure::from_status(503, None, b"").retry_now(false));
        let auth = ProviderFailure::from_status(401, None, b"<html>nope</html>");
        assert!(matches!(auth, ProviderFailure::Auth { status: 401, .. }));
        assert!(auth.to_string().contains("API key"), "{auth}");
    }

    #[test]
    fn compatible_servers_context_overflow_wordings_are_recognised() {
        let bodies = [
            (
                400,
                r#"{"error":{"message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.","type":"BadRequestError","param":null,"code":400}}"#,
            ),
            (
                400,
                r#"{"object":"error","message":"This model's maximum context length is 2048 tokens. However, you requested 2100 tokens (2000 in the messages, 100 in the completion).","type":"BadRequestError","param":null,"code":400}"#,
            ),
            (
                400,
                r#"{"error":{"code":400,"message":"request (4476 tokens) exceeds the available context size (4096 tokens)","type":"exceed_context_size_error","n_prompt_tokens":4476,"n_ctx":4096}}"#,
            ),
            (500, r#"{"error":"the input length exceeds the context length"}"#),
            (
                400,
                r#"{"error":{"message":"The number of tokens to keep from the initial prompt is greater than the context length. Try to load the model with a larger context length, or provide a shorter input","type":"invalid_request_error"}}"#,
            ),
            (
                400,
                r#"{"error":{"message":"litellm.ContextWindowExceededError: litellm.BadRequestError: prompt is too long: 200001 tokens > 200000 maximum","type":null,"param":null,"code":"400"}}"#,
            ),
            (400, "prompt is too long"),
        ];
        for (status, body) in bodies {
            assert_eq!(kind(status, body), ModelErrorKind::ContextWindowExceeded, "{body}");
        }
        // A tokens-per-minute limit talks about tokens too, but it is a rate limit.
        let tpm = r#"{"error":{"message":"Too many tokens per minute, please slow down","type":"tokens","code":null}}"#;
        assert_eq!(kind(429, tpm), ModelErrorKind::RateLimited { retry_after: None });
    }

    #[test]
    fn long_bodies_are_cut() {
        let body = "x".repeat(1000);
        let ProviderFailure::Status { message, .. } = ProviderFailure::from_status(502, None, body.as_bytes()) else {
            panic!("expected a status failure")
        };
        assert_eq!(message.chars().count(), BODY_EXCERPT + 1);
    }

    #[test]
    fn retry_after_headers_are_parsed() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        let mut date = reqwest::header::HeaderMap::new();
        date.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&date), None);
    }
}
