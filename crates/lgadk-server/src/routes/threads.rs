//! Threads: a thread is an lgadk session owned by the caller. Its state and history are the
//! session's checkpoints; its analytics are the session's.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use lgadk_core::session::Timeout;
use lgadk_core::{Error, Metadata, NewSession, Page, Session, SessionId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::assistant::{Assistant, Saved};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::runs::Status;
use crate::server::AppState;
use crate::wire::{JsonBody, Path, Query, ValuesUpdate};

/// Parses a thread id from a path or body; a malformed one is a 422 naming `field`.
pub(super) fn thread_id(raw: &str, field: &str) -> ApiResult<SessionId> {
    SessionId::parse(raw).map_err(|err| ApiError::invalid(field, err))
}

/// The caller's thread `raw`, or 404 if it does not exist or belongs to someone else.
pub(super) async fn owned(state: &AppState, principal: &Principal, raw: &str) -> ApiResult<Session> {
    let id = thread_id(raw, "thread_id")?;
    match state.sessions.get_session(&id).await? {
        Some(session) if principal.may_see(session.user_id.as_ref()) => Ok(session),
        _ => Err(ApiError::not_found("Thread", raw)),
    }
}

/// The assistant whose state type reads `session`: the one its metadata names, else the default.
pub(super) fn assistant_of<'a>(state: &'a AppState, session: &Session) -> &'a Arc<dyn Assistant> {
    let named = ["assistant_id", "graph_id"]
        .iter()
        .find_map(|key| session.metadata.get(*key).and_then(Value::as_str))
        .and_then(|name| state.assistants.get(name));
    match named {
        Some(assistant) => assistant,
        // The default assistant is one of them by construction.
        None => &state.assistants[&state.default_assistant],
    }
}

fn checkpoint(thread: &SessionId, version: Option<u64>) -> Value {
    json!({
        "thread_id": thread.as_str(),
        "checkpoint_ns": "",
        "checkpoint_id": version.map(|v| v.to_string()),
        "checkpoint_map": null,
    })
}

/// The interrupts of a saved state: the value the last run reported if it is still known.
fn interrupts(state: &AppState, thread: &SessionId, saved: &Saved) -> Vec<Value> {
    if saved.next.is_empty() {
        return Vec::new();
    }
    let reported = state.runs.list(thread).into_iter().find_map(|run| {
        let (result, _) = run.result()?;
        result.get("__interrupt__").and_then(Value::as_array).cloned()
    });
    reported.unwrap_or_else(|| {
        let node = saved.node.clone().unwrap_or_default();
        vec![json!({"value": null, "id": format!("{thread}:{node}")})]
    })
}

/// A saved state as LangGraph's `ThreadState`.
fn thread_state(state: &AppState, thread: &SessionId, saved: Option<&Saved>, latest: bool) -> Value {
    let Some(saved) = saved else {
        return json!({
            "values": {}, "next": [], "tasks": [], "interrupts": [],
            "checkpoint": checkpoint(thread, None), "parent_checkpoint": null,
            "metadata": {}, "created_at": null,
        });
    };
    let interrupts = if latest { interrupts(state, thread, saved) } else { Vec::new() };
    let tasks: Vec<Value> = saved
        .next
        .iter()
        .map(|node| {
            json!({
                "id": format!("{thread}:{}:{node}", saved.version), "name": node, "error": null,
                "interrupts": interrupts, "checkpoint": null, "state": null, "result": null,
            })
        })
        .collect();
    let parent = (saved.version > 1).then(|| checkpoint(thread, Some(saved.version - 1)));
    json!({
        "values": saved.values,
        "next": saved.next,
        "tasks": tasks,
        "interrupts": interrupts,
        "checkpoint": checkpoint(thread, Some(saved.version)),
        "parent_checkpoint": parent,
        "metadata": {"step": saved.step, "source": "loop", "writes": saved.node.as_ref().map(|n| json!({ n.clone(): null })), "parents": {}},
        "created_at": saved.created_at,
    })
}

/// The thread's latest saved state, if any.
async fn latest(state: &AppState, session: &Session) -> ApiResult<Option<Saved>> {
    let assistant = assistant_of(state, session);
    Ok(assistant.history(&session.id, 1).await?.into_iter().next())
}

/// A thread as LangGraph's `Thread`.
async fn describe(state: &AppState, session: &Session) -> ApiResult<Value> {
    let saved = latest(state, session).await?;
    let status = if state.runs.is_busy(&session.id) {
        "busy"
    } else if saved.as_ref().is_some_and(|s| !s.next.is_empty()) {
        "interrupted"
    } else if state.runs.last_status(&session.id) == Some(Status::Error) {
        "error"
    } else {
        "idle"
    };
    let mut interrupts = Map::new();
    if let Some(saved) = &saved {
        let list = self::interrupts(state, &session.id, saved);
        if !list.is_empty() {
            interrupts.insert(format!("{}:{}", session.id, saved.version), list.into());
        }
    }
    Ok(json!({
        "thread_id": session.id.as_str(),
        "created_at": session.created_at,
        "updated_at": session.last_active,
        "metadata": session.metadata,
        "status": status,
        "values": saved.map_or_else(|| json!({}), |s| s.values),
        "interrupts": interrupts,
        "config": {},
    }))
}

#[derive(Debug, Deserialize)]
pub(super) struct Create {
    #[serde(default)]
    thread_id: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    if_exists: Option<IfExists>,
    #[serde(default)]
    ttl: Option<Ttl>,
    #[serde(default)]
    supersteps: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum IfExists {
    Raise,
    DoNothing,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Ttl {
    Minutes(f64),
    Spec {
        ttl: f64,
        #[serde(default)]
        strategy: Option<String>,
    },
}

fn ttl_timeout(ttl: Option<&Ttl>) -> ApiResult<Timeout> {
    let (minutes, strategy) = match ttl {
        None => return Ok(Timeout::Default),
        Some(Ttl::Minutes(minutes)) => (*minutes, None),
        Some(Ttl::Spec { ttl, strategy }) => (*ttl, strategy.as_deref()),
    };
    if !matches!(strategy, None | Some("delete")) {
        return Err(ApiError::invalid("ttl.strategy", "only `delete` is supported"));
    }
    if !(minutes.is_finite() && minutes > 0.0 && minutes <= 60.0 * 24.0 * 365.0 * 10.0) {
        return Err(ApiError::invalid("ttl.ttl", "expected a positive number of minutes"));
    }
    Ok(Timeout::After(Duration::from_secs_f64(minutes * 60.0)))
}

/// `POST /threads`.
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    JsonBody(create): JsonBody<Create>,
) -> ApiResult<Json<Value>> {
    if create.supersteps.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("supersteps", "not supported"));
    }
    let id = match &create.thread_id {
        Some(raw) => Some(thread_id(raw, "thread_id")?),
        None => None,
    };
    let new = NewSession {
        id: id.clone(),
        user_id: Some(principal.user.clone()),
        metadata: create.metadata.unwrap_or_default(),
        timeout: ttl_timeout(create.ttl.as_ref())?,
        ..NewSession::default()
    };
    match state.sessions.create_session_with(new).await {
        Ok(session) => Ok(Json(describe(&state, &session).await?)),
        Err(Error::AlreadyExists(existing)) if create.if_exists == Some(IfExists::DoNothing) => {
            match state.sessions.get_session(&existing).await? {
                Some(session) if principal.may_see(session.user_id.as_ref()) => {
                    Ok(Json(describe(&state, &session).await?))
                }
                // Someone else's thread: it exists, but this caller may not have it.
                _ => Err(ApiError::new(StatusCode::CONFLICT, format!("Thread {existing} already exists"))),
            }
        }
        Err(Error::AlreadyExists(existing)) => {
            Err(ApiError::new(StatusCode::CONFLICT, format!("Thread {existing} already exists")))
        }
        Err(err) => Err(err.into()),
    }
}

/// `GET /threads/{thread_id}`.
pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let session = owned(&state, &principal, &raw).await?;
    Ok(Json(describe(&state, &session).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct Patch {
    #[serde(default)]
    metadata: Option<Metadata>,
}

/// `PATCH /threads/{thread_id}`: merges metadata.
pub(super) async fn patch(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
    JsonBody(patch): JsonBody<Patch>,
) -> ApiResult<Json<Value>> {
    let mut session = owned(&state, &principal, &raw).await?;
    if let Some(metadata) = patch.metadata {
        session.metadata = state.sessions.update_session_metadata(&session.id, metadata, true).await?;
        if let Some(updated) = state.sessions.get_session(&session.id).await? {
            session = updated;
        }
    }
    Ok(Json(describe(&state, &session).await?))
}

/// `DELETE /threads/{thread_id}`: cancels its runs and ends the session.
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    let session = owned(&state, &principal, &raw).await?;
    state.runs.cancel_thread(&session.id);
    state.sessions.end_session(&session.id).await?;
    state.runs.forget_thread(&session.id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(super) struct Search {
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    values: Option<Map<String, Value>>,
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

fn default_limit() -> usize {
    10
}

/// Largest page a search returns.
const MAX_SEARCH_LIMIT: usize = 1000;

/// `POST /threads/search`: the caller's threads, newest first, filtered by metadata (every
/// key equal), ids and status, then `offset` and `limit`.
pub(super) async fn search(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    JsonBody(search): JsonBody<Search>,
) -> ApiResult<Json<Value>> {
    if search.values.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::invalid("values", "filtering by state values is not supported"));
    }
    if search.limit > MAX_SEARCH_LIMIT {
        return Err(ApiError::invalid("limit", format!("at most {MAX_SEARCH_LIMIT}")));
    }
    if search.status.as_deref().is_some_and(|s| !matches!(s, "idle" | "busy" | "interrupted" | "error")) {
        return Err(ApiError::invalid("status", "expected idle, busy, interrupted or error"));
    }
    let ids: Option<Vec<SessionId>> = match &search.ids {
        Some(ids) => Some(ids.iter().map(|raw| thread_id(raw, "ids")).collect::<ApiResult<_>>()?),
        None => None,
    };
    let mut found = Vec::new();
    let mut skipped = 0;
    let mut page = Page::first(Page::MAX_LIMIT);
    'pages: loop {
        let listed = state.sessions.user_sessions(&principal.user, page).await?;
        for id in listed.ids {
            if ids.as_ref().is_some_and(|ids| !ids.contains(&id)) {
                continue;
            }
            let Some(session) = state.sessions.get_session(&id).await? else { continue };
            let matches = search
                .metadata
                .as_ref()
                .is_none_or(|filter| filter.iter().all(|(key, value)| session.metadata.get(key) == Some(value)));
            if !matches {
                continue;
            }
            let thread = describe(&state, &session).await?;
            if search.status.as_ref().is_some_and(|status| thread["status"] != status.as_str()) {
                continue;
            }
            if skipped < search.offset {
                skipped += 1;
                continue;
            }
            if found.len() == search.limit {
                break 'pages;
            }
            found.push(thread);
        }
        match listed.next {
            Some(cursor) => page = Page::after(cursor, Page::MAX_LIMIT),
            None => break,
        }
    }
    Ok(Json(Value::Array(found)))
}

/// `GET /threads/{thread_id}/state`.
pub(super) async fn state(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let session = owned(&state, &principal, &raw).await?;
    let saved = latest(&state, &session).await?;
    Ok(Json(thread_state(&state, &session.id, saved.as_ref(), true)))
}

/// `POST /threads/{thread_id}/state`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateUpdateBody {
    #[serde(default)]
    values: Option<Value>,
    #[serde(default)]
    as_node: Option<String>,
    /// Accepted for LangGraph's clients; lgadk updates the latest state only.
    #[serde(default)]
    checkpoint: Option<Value>,
    #[serde(default)]
    checkpoint_id: Option<String>,
}

/// `POST /threads/{thread_id}/state`: LangGraph's `update_state`. `values.messages` are
/// appended (LangGraph's messages reducer), the state's other fields replaced; saved as a new
/// checkpoint made by `as_node`, with no interaction counted. Updating from an older
/// checkpoint is refused (422): lgadk's history only grows.
pub(super) async fn update_state(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<StateUpdateBody>,
) -> ApiResult<Json<Value>> {
    let session = owned(&state, &principal, &raw).await?;
    let latest_only = body.checkpoint.as_ref().and_then(|c| c.get("checkpoint_id")).and_then(Value::as_str);
    if let Some(id) = latest_only.or(body.checkpoint_id.as_deref()) {
        let current = latest(&state, &session).await?.map(|saved| saved.version.to_string());
        if current.as_deref() != Some(id) {
            return Err(ApiError::invalid("checkpoint_id", "only the latest checkpoint can be updated"));
        }
    }
    let update = ValuesUpdate::parse(body.values.as_ref())?;
    if state.runs.is_busy(&session.id) {
        return Err(ApiError::thread_busy());
    }
    let assistant = assistant_of(&state, &session);
    let saved = assistant.update(&session.id, update, body.as_node.as_deref()).await?;
    Ok(Json(json!({ "checkpoint": checkpoint(&session.id, Some(saved.version)) })))
}

#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    before: Option<Value>,
}

/// Largest history page.
const MAX_HISTORY: usize = 1000;

async fn history_of(state: &AppState, principal: &Principal, raw: &str, query: HistoryQuery) -> ApiResult<Json<Value>> {
    let session = owned(state, principal, raw).await?;
    if query.limit > MAX_HISTORY {
        return Err(ApiError::invalid("limit", format!("at most {MAX_HISTORY}")));
    }
    // `before` is a checkpoint (`{"checkpoint_id": "3"}`) or its id.
    let before = match &query.before {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Object(map)) => map.get("checkpoint_id").and_then(Value::as_str).map(str::to_owned),
        Some(_) => return Err(ApiError::invalid("before", "expected a checkpoint")),
    };
    let before = match before {
        Some(id) => {
            Some(id.parse::<u64>().map_err(|_| ApiError::invalid("before.checkpoint_id", "unknown checkpoint"))?)
        }
        None => None,
    };
    let assistant = assistant_of(state, &session);
    let wanted = query.limit + before.map_or(0, |_| MAX_HISTORY);
    let saved = assistant.history(&session.id, wanted.min(MAX_HISTORY * 2)).await?;
    let newest = saved.first().map(|s| s.version);
    let states: Vec<Value> = saved
        .iter()
        .filter(|s| before.is_none_or(|b| s.version < b))
        .take(query.limit)
        .map(|s| thread_state(state, &session.id, Some(s), Some(s.version) == newest))
        .collect();
    Ok(Json(Value::Array(states)))
}

/// `POST /threads/{thread_id}/history`.
pub(super) async fn history(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
    JsonBody(query): JsonBody<HistoryQuery>,
) -> ApiResult<Json<Value>> {
    history_of(&state, &principal, &raw, query).await
}

#[derive(Debug, Deserialize)]
pub(super) struct HistoryParams {
    #[serde(default = "default_limit")]
    limit: usize,
}

/// `GET /threads/{thread_id}/history?limit=`.
pub(super) async fn history_get(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
    Query(params): Query<HistoryParams>,
) -> ApiResult<Json<Value>> {
    history_of(&state, &principal, &raw, HistoryQuery { limit: params.limit, before: None }).await
}

/// `GET /threads/{thread_id}/analytics` (lgadk extension): interactions, tokens in and out,
/// response times, per agent when the graph records it.
pub(super) async fn analytics(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let session = owned(&state, &principal, &raw).await?;
    match state.sessions.get_session_summary(&session.id).await? {
        Some(summary) => Ok(Json(
            serde_json::to_value(summary)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        )),
        None => Err(ApiError::not_found("Thread", &raw)),
    }
}

/// Threads a per-user summary adds up at most.
const MAX_SUMMARY_THREADS: usize = 1000;

/// `GET /users/me/analytics` (lgadk extension): the caller's totals over their live threads
/// (the newest 1,000).
pub(super) async fn user_analytics(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    let page = state.sessions.user_sessions(&principal.user, Page::first(MAX_SUMMARY_THREADS)).await?;
    let (mut threads, mut interactions, mut tokens_in, mut tokens_out, mut time_ms) =
        (0_u64, 0_u64, 0_u64, 0_u64, 0_f64);
    for id in &page.ids {
        if let Some(summary) = state.sessions.get_session_summary(id).await? {
            threads += 1;
            interactions += summary.interactions;
            tokens_in += summary.total_tokens_in;
            tokens_out += summary.total_tokens_out;
            time_ms += summary.avg_response_time.as_secs_f64() * 1000.0 * summary.interactions as f64;
        }
    }
    let avg = if interactions == 0 { 0.0 } else { time_ms / interactions as f64 };
    Ok(Json(json!({
        "user_id": principal.user.as_str(),
        "threads": threads,
        "interactions": interactions,
        "total_tokens_in": tokens_in,
        "total_tokens_out": tokens_out,
        "avg_response_time_ms": avg,
        "truncated": page.next.is_some(),
    })))
}
