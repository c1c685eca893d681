//! [`ModelNode`]: one model call of the tool loop.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use lgadk_core::{
    Agent, AgentEvent, AgentRouting, ChatModel, ChatRequest, ChatResponse, ContextSummary, ContextWindow, Error,
    HistoryMap, HistoryView, Message, Result, Role, RunContext, StreamedReply, ToolChoice, ToolError, ToolSpec, Usage,
    collect_stream, window,
};
use tracing::Instrument as _;

use super::team::ModelTeam;
use super::{StepLimitPolicy, ToolLoopOptions, ToolLoopState};

/// The tool loop's model step: see the [module docs](super). Built by
/// [`ToolLoop::model_node`](super::ToolLoop::model_node).
pub struct ModelNode {
    pub(super) name: String,
    pub(super) model: Arc<dyn ChatModel>,
    pub(super) tools: Vec<ToolSpec>,
    pub(super) system_prompt: Option<String>,
    pub(super) tool_choice: Option<ToolChoice>,
    pub(super) parallel_tool_calls: Option<bool>,
    pub(super) options: ToolLoopOptions,
    pub(super) team: Option<ModelTeam>,
    pub(super) context_window: Option<ContextWindow>,
}

impl fmt::Debug for ModelNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelNode")
            .field("name", &self.name)
            .field("model", &self.model.id())
            .field("tools", &self.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>())
            .field("options", &self.options)
            .field("team", &self.team)
            .field("context_window", &self.context_window)
            .finish_non_exhaustive()
    }
}

/// The history of a state the loop runs on.
pub(super) fn history<'a, S: ToolLoopState>(state: &'a mut S, node: &str) -> Result<&'a mut Vec<Message>> {
    state.messages_mut().ok_or_else(|| Error::InvalidConfig {
        reason: format!("node `{node}` needs a state that keeps a message history (`GraphState::messages_mut`)"),
    })
}

/// Model calls made so far in this turn: the model's messages since the turn's user message.
fn model_calls_this_turn(messages: &[Message]) -> usize {
    messages.iter().rev().take_while(|m| m.role != Role::User).filter(|m| m.role == Role::Assistant).count()
}

/// Closes a batch left waiting for approvals when a new turn starts instead of a resume: the
/// calls that ran keep their results, the waiting ones get a "not run" result, in call order,
/// so no call in the history is left without its result.
/// Returns whether it closed one.
fn close_abandoned_batch<S: ToolLoopState>(state: &mut S, node: &str) -> Result<bool> {
    let Some(batch) = state.tool_batch_mut().take() else { return Ok(false) };
    let messages = history(state, node)?;
    let Some(Message { role: Role::Assistant, tool_calls, .. }) = messages.last() else { return Ok(false) };
    if tool_calls.iter().map(|c| c.id.as_str()).ne(batch.call_ids.iter().map(String::as_str)) {
        return Ok(false);
    }
    let calls = tool_calls.clone();
    for call in calls {
        let done = batch.finished.iter().find(|m| m.tool_call_id.as_deref() == Some(call.id.as_str()));
        let result = done.cloned().unwrap_or_else(|| {
            let reason = "the user sent a new message before it was approved".to_owned();
            Message {
                name: Some(call.name.clone()),
                ..Message::tool(&call.id, error_text(&ToolError::NotRun { reason }))
            }
        });
        messages.push(result);
    }
    tracing::info!(calls = batch.call_ids.len(), "a new turn closed a batch that waited for approval");
    Ok(true)
}

/// What an agent that took over at `routing.since` sees of `messages`: the part of the history
/// before the handoff its view allows, then everything since. Also returns how many messages
/// at its start are not from the history (a task) and the history index the rest starts at.
fn visible(messages: &[Message], routing: &AgentRouting) -> (Vec<Message>, usize, usize) {
    let (before, after) = messages.split_at(routing.since);
    let (mut seen, synthetic, offset): (Vec<Message>, usize, usize) = match routing.view {
        HistoryView::Last(n) => {
            let window = &before[before.len().saturating_sub(n)..];
            // Never start with tool results whose call was cut off.
            let start = window.iter().position(|m| m.role != Role::Tool).unwrap_or(window.len());
            let kept = &window[start..];
            (kept.to_vec(), 0, routing.since - kept.len())
        }
        HistoryView::TaskOnly => {
            let task = routing
                .task
                .clone()
                .or_else(|| before.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.clone()));
            let task: Vec<Message> = task.map(Message::user).into_iter().collect();
            let synthetic = task.len();
            (task, synthetic, routing.since)
        }
        _ => (before.to_vec(), 0, 0),
    };
    seen.extend_from_slice(after);
    (seen, synthetic, offset)
}

/// The messages a request starts from, before any context window: the system prompt, then what
/// the agent sees of the history, laid out as `map` says.
struct Seen {
    messages: Vec<Message>,
    map: HistoryMap,
}

/// The text a failed call leaves for the model.
pub(super) fn error_text(err: &ToolError) -> String {
    format!("Error: {err}")
}

impl ModelNode {
    /// What this agent sees: the system prompt, then its view of the history.
    fn seen(&self, messages: &[Message], routing: Option<&AgentRouting>) -> Seen {
        let mut all = Vec::with_capacity(messages.len() + 2);
        all.extend(self.system_prompt.iter().map(|prompt| Message::system(prompt.clone())));
        let system = all.len();
        match routing.filter(|r| r.active.as_deref() == Some(self.name.as_str()) && r.since <= messages.len()) {
            Some(routing) => {
                let (seen, synthetic, offset) = visible(messages, routing);
                all.extend(seen);
                Seen { messages: all, map: HistoryMap::new(system + synthetic, offset) }
            }
            None => {
                all.extend_from_slice(messages);
                Seen { messages: all, map: HistoryMap::new(system, 0) }
            }
        }
    }

    /// The request for the model: `messages`, then tools (its own and its handoffs).
    fn request(&self, messages: Vec<Message>) -> ChatRequest {
        let mut tools = self.tools.clone();
        if let Some(team) = &self.team {
            tools.extend(team.handoffs.iter().cloned());
        }
        let mut request = ChatRequest::new(messages).with_tools(tools);
        request.tool_choice = self.tool_choice.clone();
        request.parallel_tool_calls = self.parallel_tool_calls;
        request
    }

    /// Applies the context window to what this agent sees, summarizing first what left the
    /// window since the last summary when the policy has a summarizer.
    async fn windowed<S: ToolLoopState>(
        &self,
        state: &mut S,
        seen: Seen,
        policy: &ContextWindow,
        ctx: &RunContext,
    ) -> Result<Vec<Message>> {
        let summary = state.context_summary().cloned();
        let mut cut = window(&seen.messages, policy, summary.as_ref().map(|s| s.text.as_str()));
        if let (Some(summarizer), Some(due)) =
            (&policy.summarizer, policy.summary_due(&cut, seen.map, summary.as_ref()))
        {
            if state.context_summary_mut().is_none() {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "node `{}` summarizes its context window, but its state keeps no summary (`ToolLoopState::context_summary_mut`)",
                        self.name
                    ),
                });
            }
            let left = &seen.messages[due.range.clone()];
            let request = policy.summary_request(summary.as_ref(), left);
            let span = tracing::info_span!("model.summarize", model = %summarizer.id(), messages = left.len());
            let started = std::time::Instant::now();
            let reply = summarizer.chat(request).instrument(span).await?;
            ctx.add_agent_usage(&self.name, reply.usage, started.elapsed());
            tracing::debug!(summarized = left.len(), covers = due.covers, "context summary refreshed");
            let text = reply.message.content;
            // The new summary may be longer: cut again (what leaves now is summarized next time).
            cut = window(&seen.messages, policy, Some(&text));
            if let Some(slot) = state.context_summary_mut() {
                *slot = Some(ContextSummary::new(text, due.covers));
            }
        }
        tracing::debug!(
            dropped = cut.dropped.len(),
            sent = cut.messages.len(),
            tokens = cut.tokens,
            minimal = cut.minimal,
            summary = cut.summary_sent,
            "context window applied"
        );
        Ok(cut.messages)
    }

    /// Whether the turn's user message is still to be added: not when the model continues
    /// after tool results, nor in a team when another agent's answer was handed back to this
    /// one.
    fn starts_turn(&self, messages: &[Message]) -> bool {
        if self.team.as_ref().is_some_and(|team| !team.adds_input) {
            return false;
        }
        match messages.last() {
            None => true,
            // Added by the node before this one (a group chat's selector).
            Some(last) if last.role == Role::Tool || last.role == Role::User => false,
            Some(last) => {
                let handed_back = self.team.is_some()
                    && last.role == Role::Assistant
                    && last.name.as_deref().is_some_and(|author| author != self.name);
                !handed_back
            }
        }
    }

    /// Streams the reply, emitting its text as tokens.
    async fn stream_reply(&self, request: ChatRequest, ctx: &RunContext) -> Result<ChatResponse> {
        let stream = self.model.stream(request).await?;
        let StreamedReply { message, usage, finish_reason, .. } =
            collect_stream(stream, |text| ctx.emit(AgentEvent::Token { node: self.name.clone(), text })).await?;
        // A provider that reports no usage in its stream counts as none.
        Ok(ChatResponse { message, usage: usage.unwrap_or_default(), finish_reason })
    }

    /// Appends the model's message (named after this agent in a team). An answer without tool
    /// calls is the turn's output; a worker of a supervised team then hands control back.
    fn finish<S: ToolLoopState>(&self, state: &mut S, mut message: Message) -> Result<()> {
        if self.team.is_some() {
            message.name = Some(self.name.clone());
        }
        let answered = message.tool_calls.is_empty();
        let content = message.content.clone();
        let messages = history(state, &self.name)?;
        messages.push(message);
        let len = messages.len();
        if answered {
            state.set_output(&content);
            if let (Some(boss), Some(routing)) =
                (self.team.as_ref().and_then(|t| t.return_to.clone()), state.routing_mut())
            {
                routing.active = Some(boss);
                routing.since = len;
                routing.view = HistoryView::All;
                routing.task = None;
            }
        }
        Ok(())
    }

    fn stopped_answer(&self) -> String {
        format!(
            "I stopped before finishing: this turn reached its limit of {} model calls. The tool results so far are above; ask me to continue.",
            self.options.max_model_calls
        )
    }
}

#[async_trait]
impl<S: ToolLoopState> Agent<S> for ModelNode {
    fn name(&self) -> &str {
        &self.name
    }

    async fn call(&self, state: &mut S, ctx: &RunContext) -> Result<()> {
        let closed = close_abandoned_batch(state, &self.name)?;
        let input = state.input().to_owned();
        let messages = history(state, &self.name)?;
        // A turn starts with the user's message; after the tool node the model continues.
        let starts = closed || self.starts_turn(messages);
        if starts {
            messages.push(Message::user(input));
            if let Some(routing) = state.routing_mut() {
                routing.handoffs_this_turn = 0;
            }
        }
        let messages = state.messages();
        if model_calls_this_turn(messages) >= self.options.max_model_calls {
            let limit = self.options.max_model_calls;
            return match self.options.on_step_limit {
                StepLimitPolicy::Fail => Err(Error::StepLimit { node: self.name.clone(), limit }),
                _ => {
                    tracing::info!(limit, "the model call limit ended the turn");
                    let answer = self.stopped_answer();
                    self.finish(state, Message::assistant(answer))
                }
            };
        }
        let seen = self.seen(messages, state.routing());
        let messages = match &self.context_window {
            Some(policy) => self.windowed(state, seen, policy, ctx).await?,
            None => seen.messages,
        };
        let request = self.request(messages);
        let span = tracing::info_span!(
            "model.call",
            model = %self.model.id(),
            messages = request.messages.len(),
            tools = request.tools.len()
        );
        let started = std::time::Instant::now();
        let reply = async {
            if ctx.is_streaming() { self.stream_reply(request, ctx).await } else { self.model.chat(request).await }
        }
        .instrument(span)
        .await?;
        let took = started.elapsed();
        let Usage { prompt_tokens, completion_tokens } = reply.usage;
        tracing::debug!(prompt_tokens, completion_tokens, tool_calls = reply.message.tool_calls.len(), "model replied");
        ctx.add_agent_usage(&self.name, reply.usage, took);
        self.finish(state, reply.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> Vec<Message> {
        (0..6)
            .map(|i| if i % 2 == 0 { Message::user(format!("u{i}")) } else { Message::assistant(format!("a{i}")) })
            .collect()
    }

    fn routing(view: HistoryView) -> AgentRouting {
        let mut routing = AgentRouting::default();
        routing.active = Some("b".into());
        routing.since = 4;
        routing.view = view;
        routing.task = Some("the task".into());
        routing
    }

    /// A summary's `covers` counts stored messages, so the part of a view that is the stored
    /// history must map back to it whatever the view.
    #[test]
    fn the_history_part_of_a_view_maps_back_to_stored_indices() {
        let messages = history();
        let (seen, synthetic, offset) = visible(&messages, &routing(HistoryView::All));
        assert_eq!((seen.len(), synthetic, offset), (6, 0, 0));

        let (seen, synthetic, offset) = visible(&messages, &routing(HistoryView::Last(2)));
        assert_eq!((synthetic, offset), (0, 2));
        assert_eq!(seen, messages[2..]);

        let (seen, synthetic, offset) = visible(&messages, &routing(HistoryView::TaskOnly));
        assert_eq!((synthetic, offset), (1, 4));
        assert_eq!(seen[0], Message::user("the task"));
        assert_eq!(seen[1..], messages[4..]);

        // With a system prompt and the task first: request index 2 is stored index 4.
        let map = HistoryMap::new(2, 4);
        assert_eq!(map.stored(2), 4);
        assert_eq!(map.stored(3), 5);
        assert_eq!(map.position(5), 3);
        // A summary that covers less than the view starts from the view's start.
        assert_eq!(map.position(1), 2);
    }
}
