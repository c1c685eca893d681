//! Context windows in the tool loop: what each request carries of a long session, the running
//! summary, and the usage it costs. The window's invariants over random conversations are
//! property-tested in lgadk-core (`tests/context_window.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lgadk_core::{
    ChatModel, ChatRequest, ChatResponse, ChatState, ContextSummary, ContextWindow, EstimatedTokens, FunctionTool,
    Message, Metadata, Result, Role, TokenCounter, ToolCall, ToolSet, Usage,
};
use lgadk_graph::RunRequest;
use lgadk_graph::prebuilt::ToolLoop;
use lgadk_session::SessionManager;
use serde_json::json;

const SYSTEM: &str = "You count things.";

/// Calls `count` twice when the request ends with the user's message (ids unique over the
/// model's life), answers `done` after tool results; records every request.
#[derive(Debug, Default)]
struct Counting {
    next_id: AtomicUsize,
    requests: Mutex<Vec<ChatRequest>>,
}

#[async_trait]
impl ChatModel for Counting {
    fn id(&self) -> &str {
        "test/counting"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let message = match request.messages.last() {
            Some(last) if last.role == Role::Tool => Message::assistant(format!("done after {}", last.content)),
            _ => {
                let calls = (0..2)
                    .map(|k| {
                        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
                        ToolCall { id: format!("call_{id}"), name: "count".into(), arguments: json!({"what": k}) }
                    })
                    .collect();
                Message { tool_calls: calls, ..Message::assistant("") }
            }
        };
        self.requests.lock().unwrap().push(request);
        Ok(ChatResponse { message, usage: Usage::new(10, 5), finish_reason: None })
    }
}

/// Summarizes by listing how many lines it was given; records every request.
#[derive(Debug, Default)]
struct Summarizer {
    requests: Mutex<Vec<ChatRequest>>,
}

#[async_trait]
impl ChatModel for Summarizer {
    fn id(&self) -> &str {
        "test/summarizer"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let n = self.requests.lock().unwrap().len();
        self.requests.lock().unwrap().push(request);
        Ok(ChatResponse {
            message: Message::assistant(format!("summary {n}")),
            usage: Usage::new(7, 3),
            finish_reason: None,
        })
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Count {
    what: u32,
}

fn tools() -> ToolSet {
    let count =
        FunctionTool::new(
            "count",
            "Counts.",
            |args: Count, _ctx| async move { Ok::<_, String>(format!("n{}", args.what)) },
        );
    ToolSet::new().with(count).unwrap()
}

/// Calls and results travel together in `messages`.
fn assert_paired(messages: &[Message]) {
    let mut i = 0;
    while i < messages.len() {
        assert_ne!(messages[i].role, Role::Tool, "a result without its call: {messages:#?}");
        let ids: HashSet<&str> = messages[i].tool_calls.iter().map(|c| c.id.as_str()).collect();
        i += 1;
        let mut answered = HashSet::new();
        while i < messages.len() && messages[i].role == Role::Tool {
            let id = messages[i].tool_call_id.as_deref().unwrap();
            assert!(ids.contains(id), "result {id} after another call");
            answered.insert(id);
            i += 1;
        }
        assert_eq!(answered, ids, "a call without all its results");
    }
}

#[tokio::test]
async fn a_long_session_sends_a_window_and_stores_everything() {
    let sessions = SessionManager::in_memory();
    let model = Arc::new(Counting::default());
    let budget = 120;
    let graph = ToolLoop::new(Arc::clone(&model) as _)
        .with_tools(tools())
        .with_system_prompt(SYSTEM)
        .with_context_window(ContextWindow::last_messages(6).with_max_tokens(budget))
        .graph::<ChatState>()
        .with_sessions(sessions.clone())
        .compile()
        .unwrap();
    let id = sessions.create_session("ann", Metadata::new()).await.unwrap();
    let turns = 12;
    for turn in 0..turns {
        let reply = graph.run(RunRequest::new(format!("count {turn}")).with_session(id.clone())).await.unwrap();
        assert_eq!(reply.output, "done after n1");
    }
    let state = graph.state(&id).await.unwrap().unwrap();
    // Each turn stores user, call, 2 results, answer: nothing was cut from the history.
    assert_eq!(state.messages.len(), turns * 5);
    let requests = model.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), turns * 2);
    for (n, request) in requests.iter().enumerate() {
        assert_eq!(request.messages[0], Message::system(SYSTEM), "request {n}");
        assert_paired(&request.messages[1..]);
        assert!(request.messages.len() <= 7, "request {n} has {} messages", request.messages.len());
        let tokens: u64 = request.messages.iter().map(|m| EstimatedTokens.count_message(m)).sum();
        assert!(tokens <= budget, "request {n}: {tokens} tokens");
        // The turn's question is always there.
        let asked = format!("count {}", n / 2);
        assert!(request.messages.iter().any(|m| m.role == Role::User && m.content == asked), "request {n}");
    }
    // Late requests dropped most of the history.
    assert!(requests.last().unwrap().messages.len() < state.messages.len() / 4);
}

#[tokio::test]
async fn what_leaves_the_window_is_summarized_once_and_the_summary_follows_the_system_prompt() {
    let sessions = SessionManager::in_memory();
    let model = Arc::new(Counting::default());
    let summarizer = Arc::new(Summarizer::default());
    let graph = ToolLoop::new(Arc::clone(&model) as _)
        .with_tools(tools())
        .with_system_prompt(SYSTEM)
        .with_context_window(ContextWindow::last_messages(5).with_summarizer(Arc::clone(&summarizer) as _))
        .graph::<ChatState>()
        .with_sessions(sessions.clone())
        .compile()
        .unwrap();
    let id = sessions.create_session("ann", Metadata::new()).await.unwrap();

    // Turn 1 fits: no summary.
    let first = graph.run(RunRequest::new("count 0").with_session(id.clone())).await.unwrap();
    assert!(summarizer.requests.lock().unwrap().is_empty());
    assert_eq!(first.usage, Usage::new(20, 10));

    // Turn 2: its first request still fits (5 old messages would not: the user message is
    // pinned, then the answer, then the 3-message call), so turn 1 leaves from the start.
    let second = graph.run(RunRequest::new("count 1").with_session(id.clone())).await.unwrap();
    let summaries = summarizer.requests.lock().unwrap().clone();
    assert!(!summaries.is_empty());
    let first_summary = &summaries[0].messages[1].content;
    assert!(first_summary.contains("user: count 0"), "{first_summary}");
    // The summarizer's usage counts for the turn.
    assert_eq!(second.usage, Usage::new(20 + 7 * summaries.len() as u64, 10 + 3 * summaries.len() as u64));
    let state = graph.state(&id).await.unwrap().unwrap();
    let summary = state.context_summary.clone().unwrap();
    assert_eq!(summary.text, format!("summary {}", summaries.len() - 1));

    // Turn 3: only messages after what the summary covers are summarized again, each once.
    let before = summaries.len();
    graph.run(RunRequest::new("count 2").with_session(id.clone())).await.unwrap();
    let summaries = summarizer.requests.lock().unwrap().clone();
    let third: Vec<&str> = summaries[before..].iter().map(|r| r.messages[1].content.as_str()).collect();
    assert!(!third.is_empty());
    assert!(third[0].starts_with(&format!("Current summary:\n{}\n", summary.text)), "{third:?}");
    assert!(third[0].contains("user: count 1"), "{third:?}");
    assert!(third.iter().all(|s| !s.contains("user: count 0")), "turn 1 summarized twice: {third:?}");
    let calls: Vec<&str> = third.iter().flat_map(|s| s.lines()).filter(|l| l.contains("called count")).collect();
    let unique: HashSet<&str> = calls.iter().copied().collect();
    assert_eq!(calls.len(), unique.len(), "a message summarized twice: {third:?}");

    // Every model request after the first summary carries it right after the system prompt.
    let requests = model.requests.lock().unwrap().clone();
    let latest = graph.state(&id).await.unwrap().unwrap().context_summary.unwrap();
    let request = requests.last().unwrap();
    assert_eq!(request.messages[0], Message::system(SYSTEM));
    assert_eq!(request.messages[1], ContextSummary::message(&latest.text));
    assert_paired(&request.messages[2..]);
    // The history is whole; the summary covers a prefix of it.
    let stored = graph.state(&id).await.unwrap().unwrap();
    assert_eq!(stored.messages.len(), 15);
    assert!(latest.covers > 0 && latest.covers < stored.messages.len());
    assert_ne!(stored.messages[latest.covers].role, Role::Tool, "cut at a unit boundary");
}

/// A state with a history but no place for a summary.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Plain {
    input: String,
    output: String,
    messages: Vec<Message>,
    batch: Option<lgadk_core::ToolBatch>,
}

impl lgadk_core::GraphState for Plain {
    fn messages(&self) -> &[Message] {
        &self.messages
    }

    fn messages_mut(&mut self) -> Option<&mut Vec<Message>> {
        Some(&mut self.messages)
    }

    fn output(&self) -> String {
        self.output.clone()
    }
}

impl lgadk_graph::prebuilt::ToolLoopState for Plain {
    fn input(&self) -> &str {
        &self.input
    }

    fn set_output(&mut self, output: &str) {
        output.clone_into(&mut self.output);
    }

    fn tool_batch(&self) -> Option<&lgadk_core::ToolBatch> {
        self.batch.as_ref()
    }

    fn tool_batch_mut(&mut self) -> &mut Option<lgadk_core::ToolBatch> {
        &mut self.batch
    }
}

#[tokio::test]
async fn summarizing_needs_a_state_that_keeps_the_summary() {
    let model = Arc::new(Counting::default());
    let summarizer = Arc::new(Summarizer::default());
    let graph = ToolLoop::new(Arc::clone(&model) as _)
        .with_context_window(ContextWindow::last_messages(1).with_summarizer(Arc::clone(&summarizer) as _))
        .graph::<Plain>()
        .compile()
        .unwrap();
    let old = (0..4).flat_map(|i| [Message::user(format!("q{i}")), Message::assistant(format!("a{i}"))]).collect();
    let err = graph.invoke(Plain { input: "next".into(), messages: old, ..Plain::default() }).await.unwrap_err();
    assert!(
        matches!(&err, lgadk_core::Error::InvalidConfig { reason } if reason.contains("keeps no summary")),
        "{err:?}"
    );
    assert!(summarizer.requests.lock().unwrap().is_empty(), "no summary made that could not be kept");
    assert!(model.requests.lock().unwrap().is_empty());

    // Without a summarizer, the same state gets the window alone.
    let graph = ToolLoop::new(Arc::clone(&model) as _)
        .with_tools(tools())
        .with_context_window(ContextWindow::last_messages(1))
        .graph::<Plain>()
        .compile()
        .unwrap();
    let old: Vec<Message> =
        (0..4).flat_map(|i| [Message::user(format!("q{i}")), Message::assistant(format!("a{i}"))]).collect();
    let state = graph.invoke(Plain { input: "next".into(), messages: old, ..Plain::default() }).await.unwrap();
    assert_eq!(state.output, "done after n1");
    let requests = model.requests.lock().unwrap().clone();
    assert_eq!(requests[0].messages, vec![Message::user("next")]);
    // The call and its two results travel together, with the question (the limit is the minimum).
    let roles: Vec<Role> = requests[1].messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::Tool]);
}
