//! Assistants: the graphs the server was built with, read-only.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::server::AppState;
use crate::wire::{JsonBody, Path};

/// An assistant as LangGraph describes one.
fn describe(state: &AppState, name: &str) -> Value {
    json!({
        "assistant_id": name,
        "graph_id": name,
        "name": name,
        "description": null,
        "config": {},
        "context": {},
        "metadata": {"created_by": "system"},
        "version": 1,
        "created_at": state.created_at,
        "updated_at": state.created_at,
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct Search {
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    graph_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

fn default_limit() -> usize {
    10
}

/// `POST /assistants/search`.
pub(super) async fn search(State(state): State<Arc<AppState>>, JsonBody(search): JsonBody<Search>) -> Json<Value> {
    let found: Vec<Value> = state
        .assistants
        .keys()
        .filter(|name| search.graph_id.as_ref().is_none_or(|g| g == *name))
        .filter(|name| search.name.as_ref().is_none_or(|n| n == *name))
        .map(|name| describe(&state, name))
        .filter(|assistant| {
            search.metadata.as_ref().is_none_or(|filter| filter.iter().all(|(k, v)| &assistant["metadata"][k] == v))
        })
        .skip(search.offset)
        .take(search.limit)
        .collect();
    Json(Value::Array(found))
}

/// The assistant named `id`, or 404.
fn find(state: &AppState, id: &str) -> ApiResult<Value> {
    if state.assistants.contains_key(id) { Ok(describe(state, id)) } else { Err(ApiError::not_found("Assistant", id)) }
}

/// `GET /assistants/{assistant_id}`.
pub(super) async fn get(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    find(&state, &id).map(Json)
}

/// `GET /assistants/{assistant_id}/schemas`.
pub(super) async fn schemas(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    find(&state, &id)?;
    let messages =
        json!({"type": "object", "properties": {"messages": {"type": "array", "items": {"type": "object"}}}});
    Ok(Json(json!({
        "graph_id": id,
        "input_schema": messages,
        "output_schema": messages,
        "state_schema": messages,
        "config_schema": null,
        "context_schema": null,
    })))
}
