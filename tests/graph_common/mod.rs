//! Helpers for the root package's graph tests: the seed's `SimpleAgent` and a model wrapper
//! that records the usage every call reported.
#![allow(dead_code, unreachable_pub, reason = "each test binary uses a different part")]
#![allow(clippy::expect_used, reason = "test code: a failure is a panic")]

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use lgadk::SessionManager;
use lgadk::core::{Agent, ChatModel, ChatRequest, ChatResponse, ChatState, Message, Result, RunContext, Usage};
use lgadk::graph::{CompiledGraph, GraphBuilder};

/// Forwards to `inner` and keeps the usage of every reply.
#[derive(Debug)]
pub struct RecordingModel {
    inner: Arc<dyn ChatModel>,
    usages: Mutex<Vec<Usage>>,
}

impl RecordingModel {
    pub fn new(inner: Arc<dyn ChatModel>) -> Arc<Self> {
        Arc::new(Self { inner, usages: Mutex::new(Vec::new()) })
    }

    /// The usages reported so far, in call order.
    pub fn usages(&self) -> Vec<Usage> {
        self.usages.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[async_trait]
impl ChatModel for RecordingModel {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let reply = self.inner.chat(request).await?;
        self.usages.lock().unwrap_or_else(PoisonError::into_inner).push(reply.usage);
        Ok(reply)
    }
}

/// The seed's agent: a system prompt, the conversation so far, and the model's answer.
pub struct SimpleAgent {
    pub model: Arc<dyn ChatModel>,
}

#[async_trait]
impl Agent<ChatState> for SimpleAgent {
    fn name(&self) -> &str {
        "assistant"
    }

    async fn call(&self, state: &mut ChatState, ctx: &RunContext) -> Result<()> {
        state.messages.push(Message::user(state.input.clone()));
        let mut prompt =
            vec![Message::system("You are a helpful assistant that provides concise, accurate responses.")];
        prompt.extend(state.messages.iter().cloned());
        let reply = self.model.chat(ChatRequest::new(prompt)).await?;
        ctx.add_usage(reply.usage);
        state.output.clone_from(&reply.message.content);
        state.messages.push(reply.message);
        Ok(())
    }
}

/// The seed's graph: one `SimpleAgent` over `model`, saved to `sessions`.
pub fn assistant_graph(model: Arc<dyn ChatModel>, sessions: SessionManager) -> CompiledGraph<ChatState> {
    GraphBuilder::new("conversational_assistant")
        .add_agent(SimpleAgent { model })
        .configure_session_management(sessions)
        .build()
        .expect("a one-agent graph builds")
}
