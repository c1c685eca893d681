//! [`ChatAgent`]: a graph node that answers each turn with a chat model.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use lgadk_core::{
    Agent, AgentEvent, ChatModel, ChatRequest, ChatResponse, ChatState, Message, Result, Role, RunContext,
    StreamedReply, ToolSpec, collect_stream,
};

use crate::template::PromptTemplate;
use crate::tokens;

/// An [`Agent<ChatState>`] that sends the conversation to a [`ChatModel`] and records the reply.
///
/// Each call builds the request from the system prompt, the history in `state.messages` and the
/// turn's user message: `state.input`, or the [template](Self::with_template) rendered with
/// `input` and the string, number and boolean values of `state.extra`. When the history ends with
/// tool results (a tool node ran after this agent asked for tools), no new user message is
/// added: the model continues from the results.
///
/// On success it appends the user input (as typed, not the rendered template) and the assistant
/// reply to `state.messages`, sets `state.output`, and adds the reply's usage to the run with
/// [`RunContext::add_usage`]. On failure the state is left as it was. When the run streams
/// ([`RunContext::is_streaming`]) it calls [`ChatModel::stream`] and emits an
/// [`AgentEvent::Token`] per text delta.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lgadk_core::Result<()> {
/// use std::sync::Arc;
/// use lgadk_core::{Agent, ChatState, RunContext};
/// use lgadk_llm::{ChatAgent, OfflineModel};
///
/// let agent = ChatAgent::new("assistant", Arc::new(OfflineModel::scripted(["Hi Ada!"])))
///     .with_system_prompt("You are friendly.");
/// let mut state = ChatState { input: "Hello, I'm Ada".into(), ..ChatState::default() };
/// let ctx = RunContext::default();
/// agent.call(&mut state, &ctx).await?;
/// assert_eq!(state.output, "Hi Ada!");
/// assert_eq!(state.messages.len(), 2);
/// assert!(ctx.usage().total() > 0);
/// # Ok(())
/// # }
/// ```
pub struct ChatAgent {
    name: String,
    model: Arc<dyn ChatModel>,
    system_prompt: Option<String>,
    template: Option<PromptTemplate>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    tools: Vec<ToolSpec>,
}

impl fmt::Debug for ChatAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatAgent")
            .field("name", &self.name)
            .field("model", &self.model.id())
            .field("system_prompt", &self.system_prompt)
            .field("template", &self.template.as_ref().map(PromptTemplate::as_str))
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("tools", &self.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

fn extra_value(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl ChatAgent {
    /// An agent named `name` (its node name in a graph) answering with `model`.
    pub fn new(name: impl Into<String>, model: Arc<dyn ChatModel>) -> Self {
        Self {
            name: name.into(),
            model,
            system_prompt: None,
            template: None,
            temperature: None,
            max_tokens: None,
            tools: Vec::new(),
        }
    }

    /// Sends `prompt` as the system message before the history, on every call.
    #[must_use]
    pub fn with_system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }

    /// Renders the turn's user message with `template` (`{input}` is the user's input).
    #[must_use]
    pub fn with_template(mut self, template: PromptTemplate) -> Self {
        self.template = Some(template);
        self
    }

    /// Sets the sampling temperature.
    #[must_use]
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Caps the length of each reply.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Offers `tools` to the model; tool calls end up on the reply in `state.messages`.
    #[must_use]
    pub fn with_tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.tools = tools;
        self
    }

    /// The model this agent talks to.
    pub fn model(&self) -> &Arc<dyn ChatModel> {
        &self.model
    }

    /// The request for this turn, and the user message to record (none after tool results).
    fn request(&self, state: &ChatState) -> Result<(ChatRequest, Option<Message>)> {
        let continuing = state.messages.last().is_some_and(|m| m.role == Role::Tool);
        let mut messages = Vec::with_capacity(state.messages.len() + 2);
        if let Some(prompt) = &self.system_prompt {
            messages.push(Message::system(prompt.clone()));
        }
        messages.extend(state.messages.iter().cloned());
        let recorded = if continuing {
            None
        } else {
            let content = match &self.template {
                Some(template) => template.format_with(|name| match name {
                    "input" => Some(state.input.clone()),
                    other => state.extra.get(other).and_then(extra_value),
                })?,
                None => state.input.clone(),
            };
            messages.push(Message::user(content));
            Some(Message::user(state.input.clone()))
        };
        let request = ChatRequest {
            messages,
            tools: self.tools.clone(),
            tool_choice: None,
            parallel_tool_calls: None,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
        };
        Ok((request, recorded))
    }

    async fn stream_reply(&self, request: ChatRequest, ctx: &RunContext) -> Result<ChatResponse> {
        let stream = self.model.stream(request.clone()).await?;
        let StreamedReply { message, usage, finish_reason, .. } =
            collect_stream(stream, |text| ctx.emit(AgentEvent::Token { node: self.name.clone(), text })).await?;
        let usage = usage.unwrap_or_else(|| tokens::count_usage(&request, &message));
        Ok(ChatResponse { message, usage, finish_reason })
    }
}

#[async_trait]
impl Agent<ChatState> for ChatAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn call(&self, state: &mut ChatState, ctx: &RunContext) -> Result<()> {
        let (request, user) = self.request(state)?;
        let started = std::time::Instant::now();
        let reply =
            if ctx.is_streaming() { self.stream_reply(request, ctx).await? } else { self.model.chat(request).await? };
        ctx.add_agent_usage(&self.name, reply.usage, started.elapsed());
        state.messages.extend(user);
        state.output.clone_from(&reply.message.content);
        state.messages.push(reply.message);
        Ok(())
    }
}
