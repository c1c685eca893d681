//! The Redis backend's failure detail, kept as the `source` of [`lgadk_core::Error`].

use std::time::Duration;

/// Why a Redis call failed, or why stored data did not decode.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisFailure {
    /// The client or the server reported an error.
    #[error("redis command failed")]
    Command(#[source] redis::RedisError),
    /// No answer within the configured response timeout (the server may still apply the call).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No connection could be opened within the configured response timeout; nothing was sent.
    #[error("no connection within {0:?}")]
    NoConnection(Duration),
    /// A script answered in an unexpected shape (another program wrote the keys, or a bug).
    #[error("unexpected reply from `{script}`: {detail}")]
    BadReply { script: &'static str, detail: &'static str },
    /// A stored field does not decode.
    #[error("stored field `{field}` does not decode")]
    BadField { field: String, value: Option<String> },
    /// A stored JSON value does not decode.
    #[error("{what} is not valid JSON for its type")]
    BadJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}
