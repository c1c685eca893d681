//! [`ModelNode`]: one model call of the tool loop.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use lgadk_core::{
    Agent, AgentEvent, ChatModel, ChatRequest, ChatResponse, Error, Message, Result, Role, RunContext, ToolChoice,
    ToolError, ToolSpec, Usage,
};
use tracing::Instrument as _;

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
}

impl fmt::Debug for ModelNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelNode")
            .field("name", &self.name)
            .field("model", &self.model.id())
            .field("tools", &self.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>())
            .field("options", &self.options)
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

/// The text a failed call leaves for the model.
pub(super) fn error_text(err: &ToolError) -> String {
    format!("Error: {err}")
}

impl ModelNode {
    /// The request for the model: system prompt, history, tools.
    fn request(&self, messages: &[Message]) -> ChatRequest {
        let mut all = Vec::with_capacity(messages.len() + 1);
        all.extend(self.system_prompt.iter().map(|prompt| Message::system(prompt.clone())));
        all.extend_from_slice(messages);
        let mut request = ChatRequest::new(all).with_tools(self.tools.clone());
        request.tool_choice = self.tool_choice.clone();
        request.parallel_tool_calls = self.parallel_tool_calls;
        request
    }

    /// Streams the reply, emitting its text as tokens.
    async fn stream_reply(&self, request: ChatRequest, ctx: &RunContext) -> Result<ChatResponse> {
        let mut stream = self.model.stream(request).await?;
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        let mut usage = None;
        let mut finish_reason = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if !chunk.delta.is_empty() {
                content.push_str(&chunk.delta);
                ctx.emit(AgentEvent::Token { node: self.name.clone(), text: chunk.delta });
            }
            tool_calls.extend(chunk.tool_calls);
            usage = chunk.usage.or(usage);
            finish_reason = chunk.finish_reason.or(finish_reason);
        }
        let message = Message { tool_calls, ..Message::assistant(content) };
        // A provider that reports no usage in its stream counts as none.
        Ok(ChatResponse { message, usage: usage.unwrap_or_default(), finish_reason })
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
        let new_turn = close_abandoned_batch(state, &self.name)?;
        let input = state.input().to_owned();
        let messages = history(state, &self.name)?;
        // A turn starts with the user's message; after the tool node the model continues.
        if new_turn || messages.last().is_none_or(|m| m.role != Role::Tool) {
            messages.push(Message::user(input));
        }
        if model_calls_this_turn(messages) >= self.options.max_model_calls {
            let limit = self.options.max_model_calls;
            return match self.options.on_step_limit {
                StepLimitPolicy::Fail => Err(Error::StepLimit { node: self.name.clone(), limit }),
                _ => {
                    tracing::info!(limit, "the model call limit ended the turn");
                    let answer = self.stopped_answer();
                    messages.push(Message::assistant(answer.clone()));
                    state.set_output(&answer);
                    Ok(())
                }
            };
        }
        let request = self.request(messages);
        let span = tracing::info_span!(
            "model.call",
            model = %self.model.id(),
            messages = request.messages.len(),
            tools = request.tools.len()
        );
        let reply = async {
            if ctx.is_streaming() { self.stream_reply(request, ctx).await } else { self.model.chat(request).await }
        }
        .instrument(span)
        .await?;
        let Usage { prompt_tokens, completion_tokens } = reply.usage;
        tracing::debug!(prompt_tokens, completion_tokens, tool_calls = reply.message.tool_calls.len(), "model replied");
        ctx.add_usage(reply.usage);
        let answered = reply.message.tool_calls.is_empty();
        let content = reply.message.content.clone();
        messages.push(reply.message);
        if answered {
            state.set_output(&content);
        }
        Ok(())
    }
}
