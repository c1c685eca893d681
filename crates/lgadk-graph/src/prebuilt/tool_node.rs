//! [`ToolNode`]: runs the tool calls of the model's last message.

use std::any::Any;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::{Either, select};
use futures_util::{FutureExt as _, StreamExt as _, stream};
use lgadk_core::{
    Agent, AgentEvent, ApprovalDecision, ApprovalDecisions, ApprovalRequest, Error, Message, PendingApproval, Result,
    Role, RunContext, Tool, ToolBatch, ToolCall, ToolContext, ToolError, ToolSet, Usage,
};
use serde_json::Value;
use tracing::Instrument as _;

use super::model_node::{error_text, history};
use super::team::{HandoffLimitPolicy, ToolTeam};
use super::{ToolLoopOptions, ToolLoopState};

/// The tool loop's tool step: see the [module docs](super). Built by
/// [`ToolLoop::tool_node`](super::ToolLoop::tool_node).
pub struct ToolNode {
    pub(super) name: String,
    pub(super) tools: ToolSet,
    pub(super) options: ToolLoopOptions,
    pub(super) team: Option<ToolTeam>,
    /// The agent (model node) whose calls this node runs.
    pub(super) agent: String,
}

impl fmt::Debug for ToolNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolNode")
            .field("name", &self.name)
            .field("tools", &self.tools)
            .field("options", &self.options)
            .field("team", &self.team)
            .finish()
    }
}

/// A call about to run: the tool and the arguments it runs with.
struct Job {
    /// The call's id and name (its arguments are in `arguments`).
    call: ToolCall,
    tool: Arc<dyn Tool>,
    arguments: Value,
    /// Set when a reviewer changed the arguments: the model is told.
    edited: bool,
}

/// One call's result: the tool message and the error, if it failed.
struct Done {
    message: Message,
    error: Option<ToolError>,
}

fn result_message(call: &ToolCall, content: String) -> Message {
    Message { name: Some(call.name.clone()), ..Message::tool(call.id.clone(), content) }
}

fn failed(call: &ToolCall, err: ToolError) -> Done {
    Done { message: result_message(call, error_text(&err)), error: Some(err) }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

impl ToolNode {
    /// Runs one call: events, span, timeout, panics caught.
    async fn run(&self, job: Job, ctx: &RunContext) -> Done {
        let Job { call, tool, arguments, edited } = job;
        let call = &call;
        // Events cost a copy of the arguments: only when someone listens.
        if ctx.is_streaming() {
            ctx.emit(AgentEvent::ToolStarted {
                node: self.name.clone(),
                call_id: call.id.clone(),
                name: call.name.clone(),
                arguments: arguments.clone(),
            });
        }
        let span = tracing::info_span!("tool.call", tool = %call.name, call.id = %call.id, edited);
        let started = Instant::now();
        let tool_ctx = ToolContext::for_run(ctx, &self.name, &call.id);
        // The edited arguments are quoted to the model afterwards; others are not kept.
        let (arguments, quoted) = if edited { (arguments.clone(), Some(arguments)) } else { (arguments, None) };
        // `dyn Tool` directly: through `Arc`'s forwarding impl the call would box a second future.
        let running = AssertUnwindSafe(tool.as_ref().call(arguments, tool_ctx)).catch_unwind();
        let outcome = match tokio::time::timeout(self.options.tool_timeout, running).instrument(span.clone()).await {
            Err(_) => Err(ToolError::Timeout { after: self.options.tool_timeout }),
            Ok(Err(panic)) => Err(ToolError::Panicked { message: panic_message(panic.as_ref()) }),
            Ok(Ok(result)) => result,
        };
        let duration = started.elapsed();
        let done = match outcome {
            Ok(output) => {
                let content = output.into_content();
                let content = match quoted {
                    Some(arguments) => {
                        format!("(A reviewer changed the arguments to {arguments} before this call ran.)\n{content}")
                    }
                    None => content,
                };
                Done { message: result_message(call, content), error: None }
            }
            Err(err) => {
                span.in_scope(|| tracing::info!(error = %err, "tool call failed"));
                failed(call, err)
            }
        };
        self.finished(call, &done, duration, ctx);
        done
    }

    fn finished(&self, call: &ToolCall, done: &Done, duration: Duration, ctx: &RunContext) {
        if !ctx.is_streaming() {
            return;
        }
        ctx.emit(AgentEvent::ToolFinished {
            node: self.name.clone(),
            call_id: call.id.clone(),
            name: call.name.clone(),
            content: done.message.content.clone(),
            error: done.error.is_some(),
            duration,
        });
    }

    /// Runs `jobs` at most `max_concurrency` at once; results come back in the jobs' order.
    /// Cancelling the run drops the running calls.
    async fn run_all(&self, jobs: Vec<(usize, Job)>, ctx: &RunContext) -> Result<Vec<(usize, Done)>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let limit = self.options.max_concurrency.max(1);
        let all = stream::iter(jobs)
            .map(|(slot, job)| self.run(job, ctx).map(move |done| (slot, done)))
            .buffered(limit)
            .collect::<Vec<_>>();
        match select(pin!(all), pin!(ctx.cancel_token().cancelled())).await {
            Either::Left((done, _)) => Ok(done),
            Either::Right(((), _)) => {
                Err(Error::Tool { tool: "*".to_owned(), call_id: "*".to_owned(), source: ToolError::Cancelled })
            }
        }
    }

    /// With fail-fast on, the first failed call (in call order) fails the turn.
    fn check_fail_fast(&self, calls: &[ToolCall], results: &[Option<Done>]) -> Result<()> {
        if !self.options.fail_fast {
            return Ok(());
        }
        for (call, done) in calls.iter().zip(results) {
            if let Some(Done { error: Some(err), .. }) = done {
                return Err(Error::Tool { tool: call.name.clone(), call_id: call.id.clone(), source: err.clone() });
            }
        }
        Ok(())
    }

    /// A model message's calls, first time round: resolve each, run what needs no approval,
    /// and either finish the batch or keep it and ask for approvals.
    async fn start_batch<S: ToolLoopState>(&self, state: &mut S, calls: &[ToolCall], ctx: &RunContext) -> Result<()> {
        let mut results: Vec<Option<Done>> = calls.iter().map(|_| None).collect();
        let mut jobs = Vec::new();
        let mut awaiting = Vec::new();
        for (slot, call) in calls.iter().enumerate() {
            if self.is_handoff(call) {
                continue;
            }
            match self.tools.resolve(&call.name, &call.arguments) {
                Err(err) => {
                    let done = failed(call, err);
                    self.finished(call, &done, Duration::ZERO, ctx);
                    results[slot] = Some(done);
                }
                Ok(tool) if tool.requires_approval() => awaiting.push(PendingApproval {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                }),
                Ok(tool) => {
                    // One copy of the arguments, for the job; the call there needs only its id and name.
                    let call_only = ToolCall { id: call.id.clone(), name: call.name.clone(), arguments: Value::Null };
                    let job = Job {
                        call: call_only,
                        tool: Arc::clone(tool),
                        arguments: call.arguments.clone(),
                        edited: false,
                    };
                    jobs.push((slot, job));
                }
            }
        }
        for (slot, done) in self.run_all(jobs, ctx).await? {
            results[slot] = Some(done);
        }
        self.check_fail_fast(calls, &results)?;
        if awaiting.is_empty() {
            return self.append(state, calls, results, ctx);
        }
        let batch = ToolBatch {
            call_ids: calls.iter().map(|c| c.id.clone()).collect(),
            finished: results.into_iter().flatten().map(|done| done.message).collect(),
            awaiting: awaiting.clone(),
        };
        tracing::info!(waiting = awaiting.len(), finished = batch.finished.len(), "tool calls wait for approval");
        *state.tool_batch_mut() = Some(batch);
        let request = serde_json::to_value(ApprovalRequest { pending: awaiting })
            .map_err(|err| Error::InvalidConfig { reason: format!("approval request does not serialize: {err}") })?;
        Err(Error::interrupt_with(self.name.clone(), request))
    }

    /// A resumed batch: apply the reviewer's decisions to the waiting calls, run the approved
    /// and edited ones, and append every result in call order. Calls that ran before are
    /// never run again.
    async fn resume_batch<S: ToolLoopState>(
        &self,
        state: &mut S,
        calls: &[ToolCall],
        batch: ToolBatch,
        ctx: &RunContext,
    ) -> Result<()> {
        let decisions = parse_decisions(ctx.resume_value(), &batch)?;
        let mut results: Vec<Option<Done>> = calls
            .iter()
            .map(|call| {
                let done = batch.finished.iter().find(|m| m.tool_call_id.as_deref() == Some(call.id.as_str()));
                done.map(|message| Done { message: message.clone(), error: None })
            })
            .collect();
        let mut jobs = Vec::new();
        for (slot, call) in calls.iter().enumerate() {
            let Some(decision) = decisions.0.get(&call.id) else { continue };
            let (arguments, edited) = match decision {
                ApprovalDecision::Reject { reason } => {
                    let done = failed(call, ToolError::Rejected { reason: reason.clone() });
                    self.finished(call, &done, Duration::ZERO, ctx);
                    results[slot] = Some(done);
                    continue;
                }
                ApprovalDecision::Approve => (call.arguments.clone(), false),
                ApprovalDecision::Edit { arguments } => (arguments.clone(), true),
            };
            match self.tools.resolve(&call.name, &arguments) {
                Ok(tool) => {
                    let call = ToolCall { id: call.id.clone(), name: call.name.clone(), arguments: Value::Null };
                    jobs.push((slot, Job { call, tool: Arc::clone(tool), arguments, edited }));
                }
                Err(err) => {
                    let done = failed(call, err);
                    self.finished(call, &done, Duration::ZERO, ctx);
                    results[slot] = Some(done);
                }
            }
        }
        for (slot, done) in self.run_all(jobs, ctx).await? {
            results[slot] = Some(done);
        }
        self.check_fail_fast(calls, &results)?;
        self.append(state, calls, results, ctx)
    }

    fn is_handoff(&self, call: &ToolCall) -> bool {
        self.team.as_ref().is_some_and(|team| team.handoffs.contains_key(&call.name))
    }

    /// Appends every result in call order, after deciding the message's handoffs: the first is
    /// taken (within the turn's limit), any other is told it was not.
    fn append<S: ToolLoopState>(
        &self,
        state: &mut S,
        calls: &[ToolCall],
        mut results: Vec<Option<Done>>,
        ctx: &RunContext,
    ) -> Result<()> {
        *state.tool_batch_mut() = None;
        let mut taken = None;
        if let Some(team) = &self.team {
            let taken_so_far = state.routing().map_or(0, |r| r.handoffs_this_turn);
            for (call, result) in calls.iter().zip(results.iter_mut()) {
                let Some(handoff) = team.handoffs.get(&call.name).filter(|_| result.is_none()) else { continue };
                let content = match &taken {
                    Some((to, _, _)) => {
                        format!(
                            "Not transferred: only the first handoff of a message is taken, and the conversation went to `{to}`."
                        )
                    }
                    None if taken_so_far >= team.max_handoffs => match team.policy {
                        HandoffLimitPolicy::Fail => {
                            return Err(Error::HandoffLimit { agent: team.agent.clone(), limit: team.max_handoffs });
                        }
                        _ => format!(
                            "Not transferred: this turn reached its limit of {} handoffs; answer the user yourself.",
                            team.max_handoffs
                        ),
                    },
                    None => {
                        let task = call.arguments.get("task").and_then(Value::as_str).map(str::to_owned);
                        taken = Some((handoff.to.clone(), handoff.view, task));
                        format!("Transferred the conversation to `{}`.", handoff.to)
                    }
                };
                let done = Done { message: result_message(call, content), error: None };
                self.finished(call, &done, Duration::ZERO, ctx);
                *result = Some(done);
            }
        }
        if taken.is_some() && state.routing().is_none() {
            let reason = format!(
                "node `{}` hands off, so its state must keep an `AgentRouting` (`ToolLoopState::routing_mut`)",
                self.name
            );
            return Err(Error::InvalidConfig { reason });
        }
        let messages = history(state, &self.name)?;
        messages.extend(results.into_iter().flatten().map(|done| done.message));
        let since = messages.len();
        if let (Some((to, view, task)), Some(routing)) = (taken, state.routing_mut()) {
            tracing::info!(to = %to, "handoff");
            routing.active = Some(to);
            routing.since = since;
            routing.view = view;
            routing.task = task;
            routing.handoffs_this_turn = routing.handoffs_this_turn.saturating_add(1);
        }
        Ok(())
    }
}

/// The reviewer's decisions from the resume value: exactly one per waiting call.
fn parse_decisions(value: Option<&Value>, batch: &ToolBatch) -> Result<ApprovalDecisions> {
    let invalid = |reason: String| Error::InvalidConfig { reason };
    let Some(value) = value else {
        return Err(invalid("resuming tool calls that wait for approval needs decisions".to_owned()));
    };
    let decisions: ApprovalDecisions = serde_json::from_value(value.clone()).map_err(|err| {
        invalid(format!(
            "the resume value is not approval decisions ({{\"<call id>\": {{\"decision\": \"approve\" | \"reject\" | \"edit\", ...}}}}): {err}"
        ))
    })?;
    for id in decisions.0.keys() {
        if !batch.awaiting.iter().any(|p| &p.call_id == id) {
            return Err(invalid(format!("call `{id}` is not waiting for approval")));
        }
    }
    if let Some(missing) = batch.awaiting.iter().find(|p| !decisions.0.contains_key(&p.call_id)) {
        return Err(invalid(format!("no decision for call `{}` ({})", missing.call_id, missing.name)));
    }
    Ok(decisions)
}

#[async_trait]
impl<S: ToolLoopState> Agent<S> for ToolNode {
    fn name(&self) -> &str {
        &self.name
    }

    async fn call(&self, state: &mut S, ctx: &RunContext) -> Result<()> {
        let calls = match history(state, &self.name)?.last() {
            Some(Message { role: Role::Assistant, tool_calls, .. }) if !tool_calls.is_empty() => tool_calls.clone(),
            _ => return Ok(()),
        };
        let batch = state.tool_batch_mut().take();
        let started = Instant::now();
        let ran = match batch {
            Some(batch) if batch.call_ids.iter().map(String::as_str).eq(calls.iter().map(|c| c.id.as_str())) => {
                self.resume_batch(state, &calls, batch, ctx).await
            }
            _ => self.start_batch(state, &calls, ctx).await,
        };
        // The tools' time is the calling agent's.
        ctx.add_agent_usage(&self.agent, Usage::default(), started.elapsed());
        ran
    }
}
