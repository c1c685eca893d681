//! The PostgreSQL backend's failure detail, kept as the `source` of [`lgadk_core::Error`].

use std::time::Duration;

/// Why a PostgreSQL call failed, or why stored data did not decode.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PgFailure {
    /// No pooled connection could be had (the server is down, refused, or every connection
    /// stayed busy past the acquire timeout); nothing was sent.
    #[error("no connection from the pool")]
    Acquire(#[source] super::pool::AcquireError),
    /// The server answered with an error, or the connection failed while the statement ran.
    #[error("statement failed")]
    Statement(#[source] sqlx::Error),
    /// No answer within the statement timeout (the server may still apply the statement).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A statement answered in a shape the store does not write (another program changed the
    /// schema, or a bug).
    #[error("unexpected answer to `{op}`: {detail}")]
    BadReply { op: &'static str, detail: String },
    /// A stored JSON document does not decode.
    #[error("{what} is not valid JSON for its type")]
    BadJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A stored number is out of its range (a negative counter, say).
    #[error("stored `{column}` is out of range: {value}")]
    OutOfRange { column: &'static str, value: i64 },
    /// The schema in the database is newer than this version of lgadk knows.
    #[error("schema `{schema}` is at migration {found}; this lgadk knows up to {known}")]
    SchemaTooNew { schema: String, found: i64, known: i64 },
    /// Migrations are off and the schema is not at the version this lgadk needs.
    #[error("schema `{schema}` is at migration {found}; this lgadk needs {known} (connect once with migrations on)")]
    SchemaMismatch { schema: String, found: i64, known: i64 },
}
