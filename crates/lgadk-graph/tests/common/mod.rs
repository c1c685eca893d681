//! Test helpers: a deterministic model, a chat agent over it, and a failing model.
#![allow(dead_code, unreachable_pub, reason = "each test binary uses a different part")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures_util::StreamExt as _;
use lgadk_core::{
    Agent, ChatChunk, ChatModel, ChatRequest, ChatResponse, ChatState, ChatStream, Error, Message, ModelErrorKind,
    Result, Role, RunContext, Usage,
};

/// Answers `echo #<n>: <last user message>`, reporting usage of (number of prompt messages × 10,
/// words of the answer), and streams the answer word by word.
#[derive(Debug, Default)]
pub struct EchoModel {
    calls: AtomicUsize,
    /// Fails every call from this one on (1-based), if set.
    fail_from: Option<usize>,
}

impl EchoModel {
    pub fn failing_from(call: usize) -> Self {
        Self { calls: AtomicUsize::new(0), fail_from: Some(call) }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn usage_for(prompt_messages: usize, answer: &str) -> Usage {
        Usage::new(prompt_messages as u64 * 10, answer.split_whitespace().count() as u64)
    }
}

#[async_trait]
impl ChatModel for EchoModel {
    fn id(&self) -> &str {
        "test/echo"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_from.is_some_and(|from| n >= from) {
            return Err(Error::model(self.id(), ModelErrorKind::ServerError, Some(500), "scripted failure"));
        }
        let last = request.messages.iter().rev().find(|m| m.role == Role::User).map_or("", |m| m.content.as_str());
        let answer = format!("echo #{n}: {last}");
        let usage = Self::usage_for(request.messages.len(), &answer);
        Ok(ChatResponse { message: Message::assistant(answer), usage, finish_reason: Some("stop".into()) })
    }

    async fn stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let whole = self.chat(request).await?;
        let words: Vec<String> = whole.message.content.split_inclusive(' ').map(str::to_owned).collect();
        let last = words.len().saturating_sub(1);
        let chunks: Vec<Result<ChatChunk>> = words
            .into_iter()
            .enumerate()
            .map(|(i, delta)| {
                Ok(ChatChunk { delta, usage: (i == last).then_some(whole.usage), ..ChatChunk::default() })
            })
            .collect();
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }
}

/// A chat agent: appends the user's message, asks the model with a system prompt, appends the
/// answer. Streams when someone listens.
pub struct TestAgent {
    pub name: String,
    pub model: Arc<dyn ChatModel>,
}

impl TestAgent {
    pub fn new(name: &str, model: Arc<dyn ChatModel>) -> Self {
        Self { name: name.to_owned(), model }
    }
}

#[async_trait]
impl Agent<ChatState> for TestAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn call(&self, state: &mut ChatState, ctx: &RunContext) -> Result<()> {
        state.messages.push(Message::user(state.input.clone()));
        let mut prompt = vec![Message::system("You are a test.")];
        prompt.extend(state.messages.iter().cloned());
        let request = ChatRequest::new(prompt);
        let (answer, usage) = if ctx.is_streaming() {
            let mut stream = self.model.stream(request).await?;
            let (mut text, mut usage) = (String::new(), Usage::default());
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                ctx.emit(lgadk_core::AgentEvent::Token { node: self.name.clone(), text: chunk.delta.clone() });
                text.push_str(&chunk.delta);
                usage += chunk.usage.unwrap_or_default();
            }
            (text, usage)
        } else {
            let reply = self.model.chat(request).await?;
            (reply.message.content, reply.usage)
        };
        ctx.add_usage(usage);
        state.output.clone_from(&answer);
        state.messages.push(Message::assistant(answer));
        Ok(())
    }
}
