//! Operations: liveness, readiness (the session backend answers), server info, metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::server::AppState;

/// `GET /ok`: the process answers.
pub(super) async fn ok() -> Json<Value> {
    Json(json!({"ok": true}))
}

/// `GET /ready`: the session backend answers a read.
pub(super) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.sessions.session_exists("lgadk-server-readiness").await {
        Ok(_) => Json(json!({"ok": true, "backend": state.sessions.store().backend()})).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("the session backend does not answer: {err}"))
                .into_response()
        }
    }
}

/// `GET /info`: what this server is.
pub(super) async fn info(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "server": "lgadk-server",
        "backend": state.sessions.store().backend(),
        "assistants": state.assistants.keys().collect::<Vec<_>>(),
        "flags": {"assistants": true, "crons": false, "langsmith": false},
    }))
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let body = state.metrics.render();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}
