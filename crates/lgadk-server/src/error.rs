//! Error responses as LangGraph's API sends them: a status code and `{"detail": "..."}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lgadk_core::{Error, GraphError};

/// An error answer: a status and the `detail` text.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) detail: String,
    /// Seconds for a `Retry-After` header.
    pub(crate) retry_after: Option<u64>,
}

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self { status, detail: detail.into(), retry_after: None }
    }

    pub(crate) fn not_found(what: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} {id} not found"))
    }

    /// 422 naming the offending field.
    pub(crate) fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, format!("invalid `{field}`: {reason}"))
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "missing or invalid API key (send it in x-api-key or Authorization: Bearer)",
        )
    }

    pub(crate) fn thread_busy() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Thread is already running a task. Wait for it to finish or choose a different multitask strategy.",
        )
    }

    pub(crate) fn too_many_runs(limit: usize) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            detail: format!("this user already has {limit} runs pending or running; retry when one finishes"),
            retry_after: Some(1),
        }
    }

    /// The error type name LangGraph puts in an SSE `error` event and in `__error__`.
    pub(crate) fn kind(err: &Error) -> &'static str {
        match err {
            Error::SessionNotFound(_) => "NotFound",
            Error::Conflict { .. } | Error::AlreadyExists(_) => "Conflict",
            Error::Graph(GraphError::Cancelled { .. }) => "CancelledError",
            Error::Graph(GraphError::RecursionLimit { .. }) => "GraphRecursionError",
            Error::Model { .. } => "ModelError",
            Error::Backend { .. } => "BackendError",
            Error::Tool { .. } => "ToolError",
            _ => "RunError",
        }
    }
}

/// The status code an error answers with.
pub(crate) fn status_of(err: &Error) -> StatusCode {
    match err {
        Error::SessionNotFound(_) => StatusCode::NOT_FOUND,
        Error::AlreadyExists(_) | Error::Conflict { .. } => StatusCode::CONFLICT,
        Error::InvalidSessionId { .. }
        | Error::InvalidUserId { .. }
        | Error::MetadataTooLarge { .. }
        | Error::NestingTooDeep { .. }
        | Error::InvalidConfig { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::Graph(GraphError::Invalid { .. }) => StatusCode::BAD_REQUEST,
        Error::Backend { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::Model { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let status = status_of(&err);
        if status.is_server_error() {
            tracing::warn!(error = %err, "request failed");
        }
        let detail = match &err {
            Error::SessionNotFound(id) => format!("Thread {id} not found"),
            other => other.to_string(),
        };
        Self::new(status, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "detail": self.detail });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
