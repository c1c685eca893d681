//! Runs in this process: each runs on a task of its own (so a client that disconnects does
//! not stop it unless it asked to), in order per thread, within a per-user limit; its stream
//! parts are kept so that streams and joins can follow it from the start (or from an SSE
//! `Last-Event-ID`). Run records live in memory: finished ones are kept up to
//! [`Limits::finished_runs_kept`](crate::Limits::finished_runs_kept).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use lgadk_core::{CancelToken, Error, SessionId, UserId};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::assistant::{self, Assistant, Step, TurnInput};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::server::Limits;
use crate::wire;

/// A stream mode a run reports in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    Values,
    Updates,
    /// LangGraph's `messages`: `messages/metadata`, `messages/partial`, `messages/complete`.
    Messages,
    /// LangGraph's `messages-tuple`: `messages` events of `[chunk, metadata]`.
    MessagesTuple,
    Custom,
}

impl Mode {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "values" => Self::Values,
            "updates" => Self::Updates,
            "messages" => Self::Messages,
            "messages-tuple" => Self::MessagesTuple,
            "custom" => Self::Custom,
            _ => return None,
        })
    }
}

/// How a new run treats a thread that is already running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Multitask {
    Reject,
    /// Cancel what runs (it saves nothing), then run.
    Interrupt,
    Rollback,
    Enqueue,
}

impl Multitask {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Interrupt => "interrupt",
            Self::Rollback => "rollback",
            Self::Enqueue => "enqueue",
        }
    }
}

/// A run's status, as LangGraph names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Pending,
    Running,
    Success,
    Error,
    /// Stopped by an interrupt (waiting for `command.resume`) or cancelled.
    Interrupted,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Success => "success",
            Self::Error => "error",
            Self::Interrupted => "interrupted",
        }
    }

    fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }
}

/// One SSE event of a run: its mode (`None`: sent in every mode), name and JSON data.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) mode: Option<Mode>,
    pub(crate) event: &'static str,
    pub(crate) data: String,
}

impl Part {
    fn new(mode: Option<Mode>, event: &'static str, data: &Value) -> Arc<Self> {
        Arc::new(Self { mode, event, data: data.to_string() })
    }
}

/// A run, from creation to its result.
pub(crate) struct RunRecord {
    pub(crate) run_id: String,
    pub(crate) thread_id: SessionId,
    pub(crate) assistant_id: String,
    pub(crate) user: UserId,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) metadata: Value,
    pub(crate) multitask: Multitask,
    pub(crate) modes: Vec<Mode>,
    pub(crate) cancel: CancelToken,
    progress: Mutex<Progress>,
    /// Bumped on every new part and on the end, for followers.
    changed: watch::Sender<u64>,
}

struct Progress {
    status: Status,
    updated_at: DateTime<Utc>,
    /// Parts by their SSE id; message parts are dropped (`None`) once the run ends.
    parts: Vec<Option<Arc<Part>>>,
    /// The run's result: the thread's values, with `__interrupt__` or `__error__` when so.
    result: Option<Value>,
    /// The error, for `raise_error` answers.
    error: Option<(u16, String)>,
    done: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RunRecord {
    pub(crate) fn status(&self) -> Status {
        lock(&self.progress).status
    }

    pub(crate) fn to_json(&self) -> Value {
        let progress = lock(&self.progress);
        json!({
            "run_id": self.run_id,
            "thread_id": self.thread_id.as_str(),
            "assistant_id": self.assistant_id,
            "created_at": self.created_at,
            "updated_at": progress.updated_at,
            "status": progress.status.as_str(),
            "metadata": self.metadata,
            "multitask_strategy": self.multitask.as_str(),
            "kwargs": {},
        })
    }

    /// The run's result once it has ended: the values, and the error (status, detail) if it failed.
    pub(crate) fn result(&self) -> Option<(Value, Option<(u16, String)>)> {
        let progress = lock(&self.progress);
        progress.done.then(|| (progress.result.clone().unwrap_or(Value::Null), progress.error.clone()))
    }

    /// Waits until the run has ended.
    pub(crate) async fn finished(&self) {
        let mut rx = self.changed.subscribe();
        loop {
            if lock(&self.progress).done {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Parts from SSE id `from` on, and whether the run has ended.
    pub(crate) fn parts_from(&self, from: usize) -> (Vec<(usize, Arc<Part>)>, bool) {
        let progress = lock(&self.progress);
        let parts = progress
            .parts
            .iter()
            .enumerate()
            .skip(from)
            .filter_map(|(id, part)| part.as_ref().map(|p| (id, Arc::clone(p))))
            .collect();
        (parts, progress.done)
    }

    pub(crate) fn part_count(&self) -> usize {
        lock(&self.progress).parts.len()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Drops the token-level parts of an ended run (what a run has most of) once no more than
    /// `followers` streams follow it; streams that join later get the other parts.
    pub(crate) fn trim_unless_followed(&self, followers: usize) {
        if self.changed.receiver_count() > followers {
            return;
        }
        let mut progress = lock(&self.progress);
        if !progress.done {
            return;
        }
        for part in &mut progress.parts {
            if part.as_ref().is_some_and(|p| matches!(p.mode, Some(Mode::Messages | Mode::MessagesTuple))) {
                *part = None;
            }
        }
    }

    fn push(&self, part: Arc<Part>) {
        let mut progress = lock(&self.progress);
        progress.parts.push(Some(part));
        drop(progress);
        self.changed.send_modify(|n| *n += 1);
    }

    fn set_status(&self, status: Status) {
        let mut progress = lock(&self.progress);
        progress.status = status;
        progress.updated_at = Utc::now();
    }

    fn wants(&self, mode: Mode) -> bool {
        self.modes.contains(&mode)
    }
}

/// Everything the registry tracks, under one lock (held briefly, never across an await).
#[derive(Default)]
struct Table {
    runs: HashMap<String, Arc<RunRecord>>,
    /// Each thread's runs, oldest first.
    by_thread: HashMap<SessionId, Vec<Arc<RunRecord>>>,
    /// Finished run ids, oldest first, for forgetting.
    finished: VecDeque<(SessionId, String)>,
    /// Active (pending or running) runs per user.
    active_by_user: HashMap<UserId, usize>,
    active: usize,
    /// The end of the last run queued on each thread: the next one waits for it.
    tails: HashMap<SessionId, watch::Receiver<bool>>,
    accepting: bool,
}

/// The runs of this process.
pub(crate) struct RunRegistry {
    table: Mutex<Table>,
    limits: Limits,
    metrics: Metrics,
    /// The number of active runs, for draining.
    active: watch::Sender<usize>,
}

/// What a new run needs.
pub(crate) struct NewRun {
    pub(crate) thread_id: SessionId,
    pub(crate) assistant_id: String,
    pub(crate) assistant: Arc<dyn Assistant>,
    pub(crate) user: UserId,
    pub(crate) input: TurnInput,
    pub(crate) metadata: Value,
    pub(crate) multitask: Multitask,
    pub(crate) modes: Vec<Mode>,
}

impl RunRegistry {
    pub(crate) fn new(limits: Limits, metrics: Metrics) -> Self {
        let table = Table { accepting: true, ..Table::default() };
        Self { table: Mutex::new(table), limits, metrics, active: watch::channel(0).0 }
    }

    /// Registers a run and starts its task.
    ///
    /// # Errors
    /// 503 while shutting down, 429 over the user's run limit, 409 when the thread is busy
    /// and the strategy is `reject`.
    pub(crate) fn start(self: &Arc<Self>, new: NewRun) -> Result<Arc<RunRecord>, ApiError> {
        let NewRun { thread_id, assistant_id, assistant, user, input, metadata, multitask, modes } = new;
        let now = Utc::now();
        let record = Arc::new(RunRecord {
            run_id: uuid::Uuid::new_v4().to_string(),
            thread_id: thread_id.clone(),
            assistant_id,
            user: user.clone(),
            created_at: now,
            metadata,
            multitask,
            modes,
            cancel: CancelToken::new(),
            progress: Mutex::new(Progress {
                status: Status::Pending,
                updated_at: now,
                parts: Vec::new(),
                result: None,
                error: None,
                done: false,
            }),
            changed: watch::channel(0).0,
        });
        let (done_tx, previous) = {
            let mut table = lock(&self.table);
            if !table.accepting {
                return Err(ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"));
            }
            let limit = self.limits.max_concurrent_runs_per_user;
            if table.active_by_user.get(&user).copied().unwrap_or(0) >= limit {
                return Err(ApiError::too_many_runs(limit));
            }
            let active_on_thread: Vec<Arc<RunRecord>> = table
                .by_thread
                .get(&thread_id)
                .map(|runs| runs.iter().filter(|r| r.status().is_active()).cloned().collect())
                .unwrap_or_default();
            match multitask {
                Multitask::Reject if !active_on_thread.is_empty() => return Err(ApiError::thread_busy()),
                Multitask::Interrupt | Multitask::Rollback => active_on_thread.iter().for_each(|r| r.cancel.cancel()),
                _ => {}
            }
            *table.active_by_user.entry(user).or_default() += 1;
            table.active += 1;
            let active = table.active;
            self.active.send_replace(active);
            table.runs.insert(record.run_id.clone(), Arc::clone(&record));
            table.by_thread.entry(thread_id.clone()).or_default().push(Arc::clone(&record));
            let (done_tx, done_rx) = watch::channel(false);
            let previous = table.tails.insert(thread_id, done_rx);
            (done_tx, previous)
        };
        self.metrics.run_started();
        let registry = Arc::clone(self);
        let run = Arc::clone(&record);
        let span = tracing::info_span!("server.run", run.id = %record.run_id, thread.id = %record.thread_id, assistant = %record.assistant_id);
        tokio::spawn(
            async move {
                registry.drive(&run, assistant.as_ref(), input, previous).await;
                // Done first, so that `finish` sees whether this was the thread's last run.
                let _ = done_tx.send(true);
                registry.finish(&run);
            }
            .instrument(span),
        );
        Ok(record)
    }

    /// Runs one run to its end, recording its parts.
    async fn drive(
        &self,
        run: &RunRecord,
        assistant: &dyn Assistant,
        input: TurnInput,
        previous: Option<watch::Receiver<bool>>,
    ) {
        run.push(Part::new(None, "metadata", &json!({"run_id": run.run_id, "attempt": 1})));
        if let Some(mut previous) = previous {
            tokio::select! {
                _ = previous.wait_for(|done| *done) => {}
                () = run.cancel.cancelled() => {}
            }
        }
        if run.cancel.is_cancelled() {
            self.end(run, Status::Interrupted, Value::Null, None, Duration::ZERO, (0, 0));
            return;
        }
        run.set_status(Status::Running);
        let started = Instant::now();
        let thread = run.thread_id.clone();
        if let TurnInput::Message { text, .. } = &input
            && run.wants(Mode::Values)
        {
            self.input_values(run, assistant, text).await;
        }
        let mut steps = assistant.start(input.clone(), run.cancel.clone());
        let mut finished_nodes: Vec<String> = Vec::new();
        let mut streamed = StreamedMessage::default();
        while let Some(step) = steps.next().await {
            match step {
                Ok(Step::NodeFinished { node }) => finished_nodes.push(node),
                Ok(Step::Token { node, text }) => streamed.token(run, &node, &text),
                Ok(Step::Custom { node, name, data }) => {
                    if run.wants(Mode::Custom) {
                        run.push(Part::new(
                            Some(Mode::Custom),
                            "custom",
                            &json!({"node": node, "name": name, "data": data}),
                        ));
                    }
                }
                Ok(Step::Finished(done)) => {
                    if run.wants(Mode::Updates) {
                        let last = finished_nodes.len().saturating_sub(1);
                        for (index, node) in finished_nodes.iter().enumerate() {
                            let update =
                                if index == last { json!({"messages": done.new_messages}) } else { Value::Null };
                            run.push(Part::new(Some(Mode::Updates), "updates", &json!({ node.clone(): update })));
                        }
                    }
                    streamed.complete(run, &done.new_messages);
                    if run.wants(Mode::Values) {
                        run.push(Part::new(Some(Mode::Values), "values", &done.values));
                    }
                    let tokens = (done.usage.prompt_tokens, done.usage.completion_tokens);
                    self.end(run, Status::Success, done.values, None, started.elapsed(), tokens);
                    return;
                }
                Err(Error::Interrupted { node, value, .. }) => {
                    let interrupts = json!([{ "value": value, "id": format!("{thread}:{node}") }]);
                    let mut values = match assistant.history(&thread, 1).await {
                        Ok(saved) => saved.into_iter().next().map_or_else(|| json!({}), |s| s.values),
                        Err(err) => {
                            tracing::warn!(error = %err, "the interrupted run's state could not be read");
                            json!({})
                        }
                    };
                    if let Value::Object(map) = &mut values {
                        map.insert("__interrupt__".into(), interrupts.clone());
                    }
                    if run.wants(Mode::Updates) {
                        run.push(Part::new(Some(Mode::Updates), "updates", &json!({"__interrupt__": interrupts})));
                    }
                    if run.wants(Mode::Values) {
                        run.push(Part::new(Some(Mode::Values), "values", &values));
                    }
                    self.end(run, Status::Interrupted, values, None, started.elapsed(), (0, 0));
                    return;
                }
                Err(err) => {
                    self.failed(run, &err, started.elapsed());
                    return;
                }
            }
        }
        // The steps ended without a result: the task driving the graph stopped.
        let err = Error::Graph(lgadk_core::GraphError::Invalid {
            graph: run.assistant_id.clone(),
            reason: "the run ended without a result".to_owned(),
        });
        self.failed(run, &err, started.elapsed());
    }

    /// The first `values` event of a turn, as LangGraph sends it: the thread's values with
    /// the user's message added. One read of the latest checkpoint, only for `values` streams.
    async fn input_values(&self, run: &RunRecord, assistant: &dyn Assistant, text: &str) {
        let mut values = match assistant.history(&run.thread_id, 1).await {
            Ok(saved) => saved.into_iter().next().map_or_else(|| json!({}), |s| s.values),
            // The run reads the thread itself and reports what fails.
            Err(_) => return,
        };
        let Value::Object(map) = &mut values else { return };
        let messages = map.entry("messages").or_insert_with(|| json!([]));
        if let Value::Array(list) = messages {
            let human = lgadk_core::Message::user(text);
            let id = wire::message_id(&run.thread_id, list.len());
            list.push(wire::message_to_langchain(&human, &id, None));
        }
        run.push(Part::new(Some(Mode::Values), "values", &values));
    }

    fn failed(&self, run: &RunRecord, err: &Error, took: Duration) {
        let status = if assistant::is_cancelled(err) { Status::Interrupted } else { Status::Error };
        let body = json!({"error": ApiError::kind(err), "message": err.to_string()});
        run.push(Part::new(None, "error", &body));
        let mapped = crate::error::status_of(err).as_u16();
        self.end(run, status, json!({"__error__": body}), Some((mapped, err.to_string())), took, (0, 0));
    }

    fn end(
        &self,
        run: &RunRecord,
        status: Status,
        result: Value,
        error: Option<(u16, String)>,
        took: Duration,
        tokens: (u64, u64),
    ) {
        {
            let mut progress = lock(&run.progress);
            progress.status = status;
            progress.updated_at = Utc::now();
            progress.result = Some(result);
            progress.error = error;
            progress.done = true;
        }
        run.changed.send_modify(|n| *n += 1);
        run.trim_unless_followed(0);
        self.metrics.run_finished(status.as_str(), took, tokens.0, tokens.1);
        tracing::info!(status = status.as_str(), took_ms = took.as_millis(), "run ended");
    }

    /// Books the run's end: the user's and the server's counts, the forgetting of old runs.
    fn finish(&self, run: &Arc<RunRecord>) {
        let mut table = lock(&self.table);
        if let Some(count) = table.active_by_user.get_mut(&run.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.active_by_user.remove(&run.user);
            }
        }
        table.active = table.active.saturating_sub(1);
        let active = table.active;
        self.active.send_replace(active);
        table.finished.push_back((run.thread_id.clone(), run.run_id.clone()));
        while table.finished.len() > self.limits.finished_runs_kept {
            let Some((thread, id)) = table.finished.pop_front() else { break };
            table.runs.remove(&id);
            if let Some(runs) = table.by_thread.get_mut(&thread) {
                runs.retain(|r| r.run_id != id);
                if runs.is_empty() {
                    table.by_thread.remove(&thread);
                }
            }
        }
        // The thread's queue is empty once the last run queued on it is done.
        if table.tails.get(&run.thread_id).is_some_and(|tail| *tail.borrow()) {
            table.tails.remove(&run.thread_id);
        }
    }

    /// A run of `thread`.
    pub(crate) fn get(&self, thread: &SessionId, run_id: &str) -> Option<Arc<RunRecord>> {
        lock(&self.table).runs.get(run_id).filter(|r| &r.thread_id == thread).cloned()
    }

    /// The runs of `thread`, newest first.
    pub(crate) fn list(&self, thread: &SessionId) -> Vec<Arc<RunRecord>> {
        let table = lock(&self.table);
        let mut runs = table.by_thread.get(thread).cloned().unwrap_or_default();
        runs.reverse();
        runs
    }

    /// Whether `thread` has a run pending or running.
    pub(crate) fn is_busy(&self, thread: &SessionId) -> bool {
        lock(&self.table).by_thread.get(thread).is_some_and(|runs| runs.iter().any(|r| r.status().is_active()))
    }

    /// The status of the thread's latest run, if any is known.
    pub(crate) fn last_status(&self, thread: &SessionId) -> Option<Status> {
        lock(&self.table).by_thread.get(thread).and_then(|runs| runs.last()).map(|r| r.status())
    }

    /// Cancels every active run of `thread`.
    pub(crate) fn cancel_thread(&self, thread: &SessionId) {
        let table = lock(&self.table);
        for run in table.by_thread.get(thread).into_iter().flatten() {
            run.cancel.cancel();
        }
    }

    /// Forgets a finished run.
    pub(crate) fn forget_run(&self, thread: &SessionId, run_id: &str) {
        let mut table = lock(&self.table);
        if table.runs.get(run_id).is_some_and(|r| &r.thread_id == thread && !r.status().is_active()) {
            table.runs.remove(run_id);
            if let Some(runs) = table.by_thread.get_mut(thread) {
                runs.retain(|r| r.run_id != run_id);
            }
        }
    }

    /// Forgets a deleted thread's finished runs.
    pub(crate) fn forget_thread(&self, thread: &SessionId) {
        let mut table = lock(&self.table);
        if let Some(runs) = table.by_thread.get_mut(thread) {
            runs.retain(|r| r.status().is_active());
        }
        let ids: Vec<String> = table
            .runs
            .values()
            .filter(|r| &r.thread_id == thread && !r.status().is_active())
            .map(|r| r.run_id.clone())
            .collect();
        for id in ids {
            table.runs.remove(&id);
        }
    }

    /// Stops taking runs, waits up to `grace` for the active ones, then cancels the rest and
    /// waits for them to stop (a cancelled run stops before its next step and saves nothing).
    pub(crate) async fn drain(&self, grace: Duration) {
        lock(&self.table).accepting = false;
        let mut active = self.active.subscribe();
        let all_done = matches!(tokio::time::timeout(grace, active.wait_for(|n| *n == 0)).await, Ok(Ok(_)));
        if !all_done {
            let cancelled = {
                let table = lock(&self.table);
                table.runs.values().filter(|r| r.status().is_active()).inspect(|r| r.cancel.cancel()).count()
            };
            tracing::warn!(cancelled, "runs still going after the shutdown grace were cancelled");
            let _ = tokio::time::timeout(Duration::from_secs(30), active.wait_for(|n| *n == 0)).await;
        }
    }
}

/// The message a run is streaming token by token, for the `messages` modes.
#[derive(Default)]
struct StreamedMessage {
    /// Messages streamed so far in the run; the current one's id counts from it.
    count: usize,
    /// The current message's node and text so far.
    current: Option<(String, String)>,
}

impl StreamedMessage {
    fn id(run: &RunRecord, count: usize) -> String {
        format!("run-{}-{count}", run.run_id)
    }

    fn metadata(run: &RunRecord, node: &str) -> Value {
        json!({
            "langgraph_node": node,
            "run_id": run.run_id,
            "thread_id": run.thread_id.as_str(),
            "assistant_id": run.assistant_id,
        })
    }

    fn token(&mut self, run: &RunRecord, node: &str, text: &str) {
        let fresh = !matches!(&self.current, Some((current, _)) if current == node);
        if fresh {
            if self.current.is_some() {
                self.count += 1;
            }
            self.current = Some((node.to_owned(), String::new()));
        }
        let id = Self::id(run, self.count);
        if run.wants(Mode::MessagesTuple) {
            let chunk = json!({"type": "AIMessageChunk", "content": text, "id": id, "tool_calls": [], "tool_call_chunks": [], "additional_kwargs": {}, "response_metadata": {}});
            run.push(Part::new(Some(Mode::MessagesTuple), "messages", &json!([chunk, Self::metadata(run, node)])));
        }
        if let Some((_, so_far)) = &mut self.current {
            so_far.push_str(text);
            if run.wants(Mode::Messages) {
                if fresh {
                    let meta = json!({ id.clone(): {"metadata": Self::metadata(run, node)} });
                    run.push(Part::new(Some(Mode::Messages), "messages/metadata", &meta));
                }
                let partial = json!([{"type": "ai", "content": so_far, "id": id, "tool_calls": [], "invalid_tool_calls": [], "additional_kwargs": {}, "response_metadata": {}}]);
                run.push(Part::new(Some(Mode::Messages), "messages/partial", &partial));
            }
        }
    }

    /// At the end of the turn: `messages/complete` with the turn's new messages, and, when
    /// nothing was streamed token by token, each of them as one `messages` tuple.
    fn complete(&self, run: &RunRecord, new_messages: &[Value]) {
        let produced: Vec<&Value> = new_messages.iter().filter(|m| m["type"] != "human").collect();
        if run.wants(Mode::Messages) && !produced.is_empty() {
            run.push(Part::new(Some(Mode::Messages), "messages/complete", &json!(produced)));
        }
        if run.wants(Mode::MessagesTuple) && self.current.is_none() {
            for message in produced {
                let meta = json!({"run_id": run.run_id, "thread_id": run.thread_id.as_str(), "assistant_id": run.assistant_id});
                run.push(Part::new(Some(Mode::MessagesTuple), "messages", &json!([message, meta])));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failure is a panic")]

    use async_trait::async_trait;
    use lgadk_core::{Result, Usage};
    use lgadk_session::SessionManager;

    use super::*;
    use crate::assistant::{Finished, Saved, Steps};
    use crate::wire::ValuesUpdate;

    /// Finishes every run at once.
    struct Instant(SessionManager);

    #[async_trait]
    impl Assistant for Instant {
        fn sessions(&self) -> &SessionManager {
            &self.0
        }

        fn start(&self, _: TurnInput, _: CancelToken) -> Steps {
            let done = Finished { values: json!({}), new_messages: Vec::new(), usage: Usage::default() };
            Box::pin(futures_util::stream::once(async move { Ok(Step::Finished(Box::new(done))) }))
        }

        async fn history(&self, _: &SessionId, _: usize) -> Result<Vec<Saved>> {
            Ok(Vec::new())
        }

        async fn update(&self, thread: &SessionId, _: ValuesUpdate, _: Option<&str>) -> Result<Saved> {
            Err(lgadk_core::Error::SessionNotFound(thread.clone()))
        }
    }

    /// Regression: the "last run done" signal of a thread was kept for ever, one per thread
    /// that ever ran.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_threads_queue_and_counts_are_forgotten_once_its_runs_are_done() {
        let registry = Arc::new(RunRegistry::new(Limits::default(), Metrics::new()));
        let assistant: Arc<dyn Assistant> = Arc::new(Instant(SessionManager::in_memory()));
        let thread = SessionId::parse("t-1").unwrap();
        let mut runs = Vec::new();
        for n in 0..3 {
            let new = NewRun {
                thread_id: thread.clone(),
                assistant_id: "instant".into(),
                assistant: Arc::clone(&assistant),
                user: UserId::parse("u").unwrap(),
                input: TurnInput::Resume { thread: thread.clone(), value: json!(n) },
                metadata: json!({}),
                multitask: Multitask::Enqueue,
                modes: vec![Mode::Values],
            };
            runs.push(registry.start(new).unwrap());
        }
        for run in &runs {
            run.finished().await;
            assert_eq!(run.status(), Status::Success);
        }
        let mut active = registry.active.subscribe();
        active.wait_for(|n| *n == 0).await.unwrap();
        let table = lock(&registry.table);
        assert!(table.tails.is_empty(), "no queue left behind");
        assert!(table.active_by_user.is_empty());
        assert_eq!(table.by_thread[&thread].len(), 3, "the finished runs are kept for listing");
    }
}
