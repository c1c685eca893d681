//! The crate-private detail of a provider failure, kept as the `source` of `Error::Model`.

use std::time::Duration;

use async_openai::error::{ApiError, OpenAIError, StreamError, WrappedError};
use lgadk_core::Error;

/// Longest excerpt of a non-JSON error body kept in the message.
const BODY_EXCERPT: usize = 200;

/// Why a call to an OpenAI-compatible server failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProviderFailure {
    /// The server answered with a non-success status (other than an auth failure).
    #[error("the provider answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// `insufficient_quota`: a 429 that no retry will fix.
        quota_exhausted: bool,
        /// `Retry-After` / `retry-after-ms`, when the server sent one.
        retry_after: Option<Duration>,
    },
    /// 401 or 403: the key is missing, wrong or lacks access.
    #[error(
        "the provider rejected the credentials ({status}): {message}; check the API key (argument or OPENAI_API_KEY)"
    )]
    Auth { status: u16, message: String },
    /// Connecting, sending or receiving failed.
    #[error("the request did not get an answer from the provider")]
    Transport(#[source] reqwest::Error),
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built")]
    HttpClient(#[source] reqwest::Error),
    /// The body is not a chat completion.
    #[error("the provider's answer does not decode as a chat completion")]
    Decode(#[source] serde_json::Error),
    /// A completion without any choice.
    #[error("the provider's answer has no choices")]
    NoChoices,
    /// The model produced tool arguments that are not JSON.
    #[error("the arguments of tool call `{name}` are not JSON")]
    ToolArguments {
        name: String,
        #[source]
        source: serde_json::Error,
    },
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

impl ProviderFailure {
    /// The failure for a non-success answer with `body`.
    pub(crate) fn from_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Self {
        match serde_json::from_slice::<WrappedError>(body) {
            Ok(wrapped) => Self::from_api(status, retry_after, wrapped.error),
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let mut excerpt: String = text.chars().take(BODY_EXCERPT).collect();
                if excerpt.len() < text.len() {
                    excerpt.push('…');
                }
                if excerpt.is_empty() {
                    excerpt.push_str("(empty body)");
                }
                Self::classify(status, retry_after, excerpt, false)
            }
        }
    }

    fn from_api(status: u16, retry_after: Option<Duration>, error: ApiError) -> Self {
        let quota = [error.code.as_deref(), error.r#type.as_deref()].contains(&Some("insufficient_quota"));
        Self::classify(status, retry_after, error.message, quota)
    }

    fn classify(status: u16, retry_after: Option<Duration>, message: String, quota_exhausted: bool) -> Self {
        match status {
            401 | 403 => Self::Auth { status, message },
            _ => Self::Status { status, message, quota_exhausted, retry_after },
        }
    }

    /// Classifies an error returned by async-openai.
    pub(crate) fn from_openai(error: OpenAIError) -> Self {
        match error {
            OpenAIError::Boxed(boxed) => match boxed.downcast::<Self>() {
                Ok(failure) => *failure,
                Err(other) => Self::Client(OpenAIError::Boxed(other)),
            },
            OpenAIError::Reqwest(e) => Self::Transport(e),
            OpenAIError::ApiError(api) => Self::from_api(api.status_code.as_u16(), None, api.api_error),
            OpenAIError::JSONDeserialize(e, _) => Self::Decode(e),
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

    /// Whether the same call may succeed later: 429 (not out of quota), 5xx, connection
    /// failures, timeouts and broken streams.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, quota_exhausted, .. } => (*status == 429 && !quota_exhausted) || *status >= 500,
            Self::Transport(e) => e.is_connect() || e.is_request() || e.is_timeout(),
            Self::Timeout(_) | Self::StreamCut(_) => true,
            _ => false,
        }
    }

    /// Whether the retry loop tries again by itself: retryable, but never after the timeout
    /// (it bounds the caller's wait) and never mid-stream.
    pub(crate) fn retry_now(&self) -> bool {
        self.is_retryable() && !matches!(self, Self::Timeout(_) | Self::StreamCut(_))
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
        Error::Model {
            model: model.to_owned(),
            status: self.status(),
            retryable: self.is_retryable(),
            source: Box::new(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_bodies_are_read() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        let failure = ProviderFailure::from_status(429, Some(Duration::from_secs(2)), body);
        assert!(failure.is_retryable() && failure.retry_now());
        assert_eq!(failure.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(failure.to_string(), "the provider answered 429: Rate limit reached");
    }

    #[test]
    fn quota_exhaustion_and_client_errors_are_final() {
        let quota = br#"{"error":{"message":"No quota","type":"insufficient_quota","code":null}}"#;
        assert!(!ProviderFailure::from_status(429, None, quota).is_retryable());
        assert!(!ProviderFailure::from_status(400, None, b"bad").is_retryable());
        assert!(ProviderFailure::from_status(503, None, b"").is_retryable());
        let auth = ProviderFailure::from_status(401, None, b"<html>nope</html>");
        assert!(matches!(auth, ProviderFailure::Auth { status: 401, .. }));
        assert!(auth.to_string().contains("API key"), "{auth}");
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
