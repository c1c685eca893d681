//! Runs: created in the background, waited for, streamed over SSE, joined, cancelled, listed.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lgadk_core::{Metadata, NewSession, Session};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::threads::{owned, thread_id};
use crate::assistant::TurnInput;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::metrics::StreamGuard;
use crate::runs::{Mode, Multitask, NewRun, Part, RunRecord};
use crate::server::AppState;
use crate::wire::{self, JsonBody, Path, Query};

#[derive(Debug, Default, Deserialize)]
struct Command {
    #[serde(default)]
    resume: Option<Value>,
    #[serde(default)]
    update: Option<Value>,
    #[serde(default)]
    goto: Option<Value>,
}

/// A run request as LangGraph's clients send it. Fields lgadk has no use for (`config`,
/// `context`, `stream_subgraphs`, `durability`, …) are accepted and ignored; fields that would
/// change what the run does and that lgadk cannot honour are refused with 422.
#[derive(Debug, Deserialize)]
pub(super) struct RunCreate {
    assistant_id: String,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    command: Option<Command>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    stream_mode: Option<Value>,
    #[serde(default)]
    multitask_strategy: Option<String>,
    #[serde(default)]
    if_not_exists: Option<String>,
    #[serde(default)]
    on_disconnect: Option<String>,
    #[serde(default)]
    on_completion: Option<String>,
    #[serde(default)]
    raise_error: Option<bool>,
    #[serde(default)]
    interrupt_before: Option<Value>,
    #[serde(default)]
    interrupt_after: Option<Value>,
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    checkpoint: Option<Value>,
    #[serde(default)]
    checkpoint_id: Option<String>,
    #[serde(default)]
    after_seconds: Option<f64>,
}

/// Where a run goes: an existing thread of the caller's, or (stateless runs) a new one.
enum Target {
    Thread(String),
    Stateless,
}

fn modes(value: Option<&Value>) -> ApiResult<Vec<Mode>> {
    let names: Vec<&str> = match value {
        None | Some(Value::Null) => vec!["values"],
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many
            .iter()
            .map(|v| v.as_str().ok_or_else(|| ApiError::invalid("stream_mode", "expected strings")))
            .collect::<ApiResult<_>>()?,
        Some(_) => return Err(ApiError::invalid("stream_mode", "expected a mode or a list of modes")),
    };
    let mut modes = Vec::new();
    for name in names {
        let mode = Mode::parse(name).ok_or_else(|| {
            ApiError::invalid(
                "stream_mode",
                format!("`{name}` is not supported (values, updates, messages, messages-tuple, custom)"),
            )
        })?;
        if !modes.contains(&mode) {
            modes.push(mode);
        }
    }
    Ok(modes)
}

fn multitask(value: Option<&str>) -> ApiResult<Multitask> {
    Ok(match value {
        None | Some("reject") => Multitask::Reject,
        Some("enqueue") => Multitask::Enqueue,
        Some("interrupt") => Multitask::Interrupt,
        Some("rollback") => Multitask::Rollback,
        Some(other) => return Err(ApiError::invalid("multitask_strategy", format!("unknown strategy `{other}`"))),
    })
}

/// Refuses what lgadk cannot honour.
fn check_supported(body: &RunCreate) -> ApiResult<()> {
    let set = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null() && v != &json!([]));
    for (field, given) in [
        ("interrupt_before", set(&body.interrupt_before)),
        ("interrupt_after", set(&body.interrupt_after)),
        ("checkpoint", set(&body.checkpoint)),
        ("checkpoint_id", body.checkpoint_id.is_some()),
        ("webhook", body.webhook.is_some()),
        ("after_seconds", body.after_seconds.is_some_and(|s| s > 0.0)),
    ] {
        if given {
            return Err(ApiError::invalid(field, "not supported by lgadk-server"));
        }
    }
    if let Some(command) = &body.command {
        if command.update.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid("command.update", "not supported by lgadk-server"));
        }
        if command.goto.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid("command.goto", "not supported by lgadk-server"));
        }
    }
    if body.on_disconnect.as_deref().is_some_and(|v| !matches!(v, "cancel" | "continue")) {
        return Err(ApiError::invalid("on_disconnect", "expected cancel or continue"));
    }
    if body.on_completion.as_deref().is_some_and(|v| !matches!(v, "delete" | "keep")) {
        return Err(ApiError::invalid("on_completion", "expected delete or keep"));
    }
    Ok(())
}

/// A started run and whether its thread is ended when it finishes (stateless runs).
struct Started {
    run: Arc<RunRecord>,
    on_disconnect_cancel: bool,
    raise_error: bool,
}

/// Validates the request, finds or creates the thread, and starts the run.
async fn start(
    state: &Arc<AppState>,
    principal: &Principal,
    target: Target,
    body: RunCreate,
    stream: bool,
) -> ApiResult<Started> {
    check_supported(&body)?;
    let Some(assistant) = state.assistants.get(&body.assistant_id).cloned() else {
        return Err(ApiError::not_found("Assistant", &body.assistant_id));
    };
    let modes = modes(body.stream_mode.as_ref())?;
    let multitask = multitask(body.multitask_strategy.as_deref())?;
    let resume = body.command.as_ref().and_then(|c| c.resume.clone());
    let text = match (&resume, &body.input) {
        (Some(_), _) => None,
        (None, Some(input)) if !input.is_null() => Some(wire::input_text(input)?),
        (None, _) => return Err(ApiError::invalid("input", "a run needs `input` or `command.resume`")),
    };
    let (session, stateless) = match target {
        Target::Thread(raw) => (thread_for(state, principal, &raw, body.if_not_exists.as_deref()).await?, false),
        Target::Stateless => {
            let new = NewSession { user_id: Some(principal.user.clone()), ..NewSession::default() };
            (state.sessions.create_session_with(new).await?, true)
        }
    };
    let thread = session.id.clone();
    let input = match (text, resume) {
        (_, Some(value)) => TurnInput::Resume { thread: thread.clone(), value },
        (Some(text), None) => {
            let mut merge = Metadata::new();
            merge.insert("graph_id".into(), body.assistant_id.clone().into());
            merge.insert("assistant_id".into(), body.assistant_id.clone().into());
            TurnInput::Message { text, thread: thread.clone(), metadata: Some(merge) }
        }
        (None, None) => return Err(ApiError::invalid("input", "a run needs `input` or `command.resume`")),
    };
    let new = NewRun {
        thread_id: thread.clone(),
        assistant_id: body.assistant_id.clone(),
        assistant,
        user: principal.user.clone(),
        input,
        metadata: body.metadata.map_or_else(|| json!({}), Value::Object),
        multitask,
        modes,
    };
    let run = match state.runs.start(new) {
        Ok(run) => run,
        Err(err) => {
            if stateless {
                let _ = state.sessions.end_session(&thread).await;
            }
            return Err(err);
        }
    };
    // Stateless runs delete their thread when done, unless asked to keep it.
    if stateless && body.on_completion.as_deref() != Some("keep") {
        let (run, state) = (Arc::clone(&run), Arc::clone(state));
        tokio::spawn(async move {
            run.finished().await;
            if let Err(err) = state.sessions.end_session(&run.thread_id).await {
                tracing::warn!(error = %err, thread.id = %run.thread_id, "the stateless run's thread could not be deleted");
            }
        });
    }
    let on_disconnect_cancel = match body.on_disconnect.as_deref() {
        Some("cancel") => true,
        Some(_) => false,
        // LangGraph cancels a stateless stream whose client went away; a thread's run goes on.
        None => stream && stateless,
    };
    Ok(Started { run, on_disconnect_cancel, raise_error: body.raise_error.unwrap_or(true) })
}

/// The caller's thread, created first when `if_not_exists` is `create`.
async fn thread_for(
    state: &AppState,
    principal: &Principal,
    raw: &str,
    if_not_exists: Option<&str>,
) -> ApiResult<Session> {
    match if_not_exists {
        None | Some("reject") => owned(state, principal, raw).await,
        Some("create") => match owned(state, principal, raw).await {
            Ok(session) => Ok(session),
            Err(err) if err.status == StatusCode::NOT_FOUND => {
                let id = thread_id(raw, "thread_id")?;
                let new =
                    NewSession { id: Some(id.clone()), user_id: Some(principal.user.clone()), ..NewSession::default() };
                match state.sessions.create_session_with(new).await {
                    Ok(session) => Ok(session),
                    // Someone else's thread, or one created meanwhile: not this caller's to use.
                    Err(lgadk_core::Error::AlreadyExists(_)) => Err(ApiError::not_found("Thread", raw)),
                    Err(err) => Err(err.into()),
                }
            }
            Err(err) => Err(err),
        },
        Some(_) => Err(ApiError::invalid("if_not_exists", "expected create or reject")),
    }
}

fn location(run: &RunRecord) -> HeaderValue {
    let path = format!("/threads/{}/runs/{}", run.thread_id, run.run_id);
    HeaderValue::from_str(&path).unwrap_or_else(|_| HeaderValue::from_static("/runs"))
}

fn with_location(mut response: Response, run: &RunRecord) -> Response {
    response.headers_mut().insert(header::CONTENT_LOCATION, location(run));
    response
}

/// `POST /threads/{thread_id}/runs`: starts a run in the background.
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<RunCreate>,
) -> ApiResult<Response> {
    let started = start(&state, &principal, Target::Thread(raw), body, false).await?;
    Ok(with_location(Json(started.run.to_json()).into_response(), &started.run))
}

/// `POST /runs`: a background run on a new thread.
pub(super) async fn create_stateless(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<RunCreate>,
) -> ApiResult<Response> {
    let started = start(&state, &principal, Target::Stateless, body, false).await?;
    Ok(with_location(Json(started.run.to_json()).into_response(), &started.run))
}

/// `POST /threads/{thread_id}/runs/stream`.
pub(super) async fn stream(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<RunCreate>,
) -> ApiResult<Response> {
    let started = start(&state, &principal, Target::Thread(raw), body, true).await?;
    Ok(sse(&state, started.run, None, 0, started.on_disconnect_cancel))
}

/// `POST /runs/stream`: a streamed run on a new thread.
pub(super) async fn stream_stateless(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<RunCreate>,
) -> ApiResult<Response> {
    let started = start(&state, &principal, Target::Stateless, body, true).await?;
    Ok(sse(&state, started.run, None, 0, started.on_disconnect_cancel))
}

/// `POST /threads/{thread_id}/runs/wait`.
pub(super) async fn wait(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<RunCreate>,
) -> ApiResult<Response> {
    let started = start(&state, &principal, Target::Thread(raw), body, false).await?;
    let response = result_response(&started.run, started.raise_error).await;
    Ok(with_location(response, &started.run))
}

/// `POST /runs/wait`: a run on a new thread, answered with its result.
pub(super) async fn wait_stateless(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<RunCreate>,
) -> ApiResult<Response> {
    let started = start(&state, &principal, Target::Stateless, body, false).await?;
    let response = result_response(&started.run, started.raise_error).await;
    Ok(with_location(response, &started.run))
}

/// Waits for the run and answers with its values; a failed run is its error status and
/// `detail` when `raise_error`, else its values with `__error__`.
async fn result_response(run: &RunRecord, raise_error: bool) -> Response {
    run.finished().await;
    match run.result() {
        Some((_, Some((status, detail)))) if raise_error => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            ApiError::new(status, detail).into_response()
        }
        Some((values, _)) => Json(values).into_response(),
        None => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the run ended without a result").into_response(),
    }
}

/// The caller's run `run_id` of thread `raw`, or 404.
async fn owned_run(state: &AppState, principal: &Principal, raw: &str, run_id: &str) -> ApiResult<Arc<RunRecord>> {
    let session = owned(state, principal, raw).await?;
    state.runs.get(&session.id, run_id).ok_or_else(|| ApiError::not_found("Run", run_id))
}

/// `GET /threads/{thread_id}/runs/{run_id}`.
pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path((raw, run_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(owned_run(&state, &principal, &raw, &run_id).await?.to_json()))
}

/// `DELETE /threads/{thread_id}/runs/{run_id}`: forgets a finished run; 409 while it runs.
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path((raw, run_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let run = owned_run(&state, &principal, &raw, &run_id).await?;
    if run.result().is_none() {
        return Err(ApiError::new(StatusCode::CONFLICT, "the run is still pending or running; cancel it first"));
    }
    state.runs.forget_run(&run.thread_id, &run.run_id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(super) struct ListParams {
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    status: Option<String>,
}

fn default_limit() -> usize {
    10
}

/// `GET /threads/{thread_id}/runs`: the thread's runs this process knows, newest first.
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let session = owned(&state, &principal, &raw).await?;
    let runs: Vec<Value> = state
        .runs
        .list(&session.id)
        .iter()
        .filter(|run| params.status.as_ref().is_none_or(|s| run.status().as_str() == s))
        .skip(params.offset)
        .take(params.limit)
        .map(|run| run.to_json())
        .collect();
    Ok(Json(Value::Array(runs)))
}

#[derive(Debug, Deserialize)]
pub(super) struct CancelParams {
    #[serde(default)]
    wait: Option<String>,
    #[serde(default)]
    action: Option<String>,
}

/// `POST /threads/{thread_id}/runs/{run_id}/cancel`: the run stops before its next step and
/// saves nothing. `?wait=true` answers once it has stopped.
pub(super) async fn cancel(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path((raw, run_id)): Path<(String, String)>,
    Query(params): Query<CancelParams>,
) -> ApiResult<Response> {
    if !matches!(params.action.as_deref(), None | Some("interrupt" | "rollback")) {
        return Err(ApiError::invalid("action", "expected interrupt or rollback"));
    }
    let run = owned_run(&state, &principal, &raw, &run_id).await?;
    run.cancel.cancel();
    if wire::flag("wait", params.wait.as_deref())? {
        run.finished().await;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /threads/{thread_id}/runs/{run_id}/join`: waits for the run, answers with its values.
pub(super) async fn join(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path((raw, run_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let run = owned_run(&state, &principal, &raw, &run_id).await?;
    run.finished().await;
    Ok(Json(run.result().map_or(Value::Null, |(values, _)| values)).into_response())
}

/// `GET /threads/{thread_id}/runs/{run_id}/stream`: follows a run's stream from its start, or
/// after the SSE `Last-Event-ID` the client sends when it reconnects. `stream_mode` may be
/// repeated or comma-separated; empty means the run's own modes.
pub(super) async fn join_stream(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path((raw, run_id)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let run = owned_run(&state, &principal, &raw, &run_id).await?;
    let mut names = Vec::new();
    let mut cancel_on_disconnect = false;
    for (key, value) in &params {
        match key.as_str() {
            "stream_mode" => names.extend(value.split(',').map(str::trim).filter(|v| !v.is_empty()).map(Value::from)),
            "cancel_on_disconnect" => cancel_on_disconnect = wire::flag("cancel_on_disconnect", Some(value))?,
            _ => {}
        }
    }
    let filter = if names.is_empty() { None } else { Some(modes(Some(&Value::Array(names)))?) };
    let from = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(id) => {
            id.trim().parse::<usize>().map_err(|_| ApiError::invalid("Last-Event-ID", "expected an event id"))? + 1
        }
        None => 0,
    };
    Ok(sse(&state, run, filter, from, cancel_on_disconnect))
}

/// What an SSE response follows: the run, where it is in its parts, which modes it sends.
struct Follow {
    run: Arc<RunRecord>,
    next: usize,
    filter: Option<Vec<Mode>>,
    changes: watch::Receiver<u64>,
    queue: std::collections::VecDeque<(usize, Arc<Part>)>,
    ended: bool,
    _guard: StreamGuard,
    cancel_on_drop: bool,
}

impl Drop for Follow {
    fn drop(&mut self) {
        // The client went away before the run ended and asked for that to cancel it.
        if self.cancel_on_drop && self.run.result().is_none() {
            tracing::info!(run.id = %self.run.run_id, "stream closed by the client; cancelling the run");
            self.run.cancel.cancel();
        }
        // This stream's own receiver still counts.
        self.run.trim_unless_followed(1);
    }
}

fn event_of(id: usize, part: &Part) -> Event {
    Event::default().event(part.event).data(&part.data).id(id.to_string())
}

/// The run's parts as SSE events (those of `filter`'s modes, or the run's own), from part `from`.
fn sse(
    state: &AppState,
    run: Arc<RunRecord>,
    filter: Option<Vec<Mode>>,
    from: usize,
    cancel_on_drop: bool,
) -> Response {
    let changes = run.subscribe();
    let location = location(&run);
    let follow = Follow {
        next: from.min(run.part_count()),
        run,
        filter,
        changes,
        queue: std::collections::VecDeque::new(),
        ended: false,
        _guard: state.metrics.stream_opened(),
        cancel_on_drop,
    };
    let events = futures_util::stream::unfold(follow, |mut follow| async move {
        loop {
            if let Some((id, part)) = follow.queue.pop_front() {
                let wanted = match (&part.mode, &follow.filter) {
                    (None, _) | (Some(_), None) => true,
                    (Some(mode), Some(filter)) => filter.contains(mode),
                };
                if wanted {
                    return Some((Ok::<_, Infallible>(event_of(id, &part)), follow));
                }
                continue;
            }
            if follow.ended {
                return None;
            }
            follow.changes.borrow_and_update();
            let (parts, done) = follow.run.parts_from(follow.next);
            if let Some((last, _)) = parts.last() {
                follow.next = last + 1;
            }
            follow.queue.extend(parts);
            if done {
                follow.ended = true;
                continue;
            }
            if follow.queue.is_empty() && follow.changes.changed().await.is_err() {
                follow.ended = true;
            }
        }
    });
    let mut response = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    response.headers_mut().insert(header::CONTENT_LOCATION, location);
    response
}
