//! The tool loop's semantics on the in-memory backend: concurrency and ordering, failures the
//! model reads, fail-fast, the step cap, usage, events, cancellation and approvals. The
//! backend-facing parts (history across processes, approvals resumed cold) are in the graph
//! conformance suite, which runs on every backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use lgadk_core::{
    ApprovalDecisions, ApprovalRequest, ChatModel, ChatRequest, ChatResponse, ChatState, Error, FunctionTool,
    GraphError, Message, Result, Role, ToolCall, ToolSet, Usage,
};
use lgadk_graph::prebuilt::{StepLimitPolicy, ToolLoop, ToolLoopOptions};
use lgadk_graph::testing::ToolCallingModel;
use lgadk_graph::{CompiledGraph, RunEvent, RunRequest};
use lgadk_session::SessionManager;
use serde_json::{Value, json};

/// A model whose reply is a function of the request; it records every request.
struct Scripted<F> {
    reply: F,
    requests: Mutex<Vec<ChatRequest>>,
}

impl<F> std::fmt::Debug for Scripted<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripted")
    }
}

impl<F: Fn(&ChatRequest) -> Message + Send + Sync + 'static> Scripted<F> {
    fn new(reply: F) -> Arc<Self> {
        Arc::new(Self { reply, requests: Mutex::default() })
    }

    fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait]
impl<F: Fn(&ChatRequest) -> Message + Send + Sync + 'static> ChatModel for Scripted<F> {
    fn id(&self) -> &str {
        "test/scripted"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let message = (self.reply)(&request);
        self.requests.lock().unwrap().push(request);
        Ok(ChatResponse { message, usage: Usage::new(10, 5), finish_reason: None })
    }
}

fn calls(list: &[(&str, Value)]) -> Message {
    let tool_calls = list
        .iter()
        .enumerate()
        .map(|(i, (name, arguments))| ToolCall {
            id: format!("c{i}"),
            name: (*name).into(),
            arguments: arguments.clone(),
        })
        .collect();
    Message { tool_calls, ..Message::assistant("") }
}

/// Calls the tools of `list` once, then answers with the results it read.
fn once(list: Vec<(&'static str, Value)>) -> impl Fn(&ChatRequest) -> Message + Send + Sync + 'static {
    move |request| match request.messages.last() {
        Some(m) if m.role == Role::Tool => {
            let results: Vec<String> = request
                .messages
                .iter()
                .filter(|m| m.role == Role::Tool)
                .map(|m| format!("{}={}", m.tool_call_id.clone().unwrap_or_default(), m.content))
                .collect();
            Message::assistant(results.join(" | "))
        }
        _ => calls(&list),
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Sleep {
    ms: u64,
    label: String,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Nothing {}

/// `sleep` waits `ms` and returns `label`, tracking how many run at once.
fn sleep_tool(in_flight: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) -> FunctionTool {
    FunctionTool::new("sleep", "Sleeps.", move |args: Sleep, _| {
        let (in_flight, peak) = (Arc::clone(&in_flight), Arc::clone(&peak));
        async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(args.ms)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, String>(args.label)
        }
    })
}

fn graph(model: Arc<dyn ChatModel>, tools: ToolSet, options: ToolLoopOptions) -> CompiledGraph<ChatState> {
    ToolLoop::new(model).with_tools(tools).with_options(options).graph::<ChatState>().compile().unwrap()
}

fn tool_messages(state: &ChatState) -> Vec<(String, String)> {
    state
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| (m.tool_call_id.clone().unwrap(), m.content.clone()))
        .collect()
}

#[tokio::test]
async fn calls_run_concurrently_up_to_the_bound_and_results_keep_the_call_order() {
    for (limit, expected_peak) in [(None, 8), (Some(3), 3)] {
        let (in_flight, peak) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
        let tools = ToolSet::new().with(sleep_tool(in_flight, Arc::clone(&peak))).unwrap();
        // Ten calls; earlier calls sleep longer, so they finish last.
        let list: Vec<(&str, Value)> =
            (0..10).map(|i| ("sleep", json!({"ms": 100 - i * 8, "label": format!("r{i}")}))).collect();
        let model = Scripted::new(once(list));
        let options =
            limit.map_or_else(ToolLoopOptions::default, |n| ToolLoopOptions::default().with_max_concurrency(n));
        let reply = graph(model, tools, options).run(RunRequest::new("go")).await.unwrap();
        assert_eq!(peak.load(Ordering::SeqCst), expected_peak);
        let results = tool_messages(&reply.state);
        let expected: Vec<(String, String)> = (0..10).map(|i| (format!("c{i}"), format!("r{i}"))).collect();
        assert_eq!(results, expected, "results are appended in call order");
        assert!(
            reply.state.messages.iter().filter(|m| m.role == Role::Tool).all(|m| m.name.as_deref() == Some("sleep"))
        );
    }
}

fn failing_tools() -> ToolSet {
    let fails =
        FunctionTool::new(
            "fails",
            "Always fails.",
            |_: Nothing, _| async move { Err::<String, _>("the disk is full") },
        );
    let panics = FunctionTool::new("panics", "Panics.", |_: Nothing, _| async move {
        if true {
            panic!("tool bug");
        }
        Ok::<String, String>(String::new())
    });
    let slow = FunctionTool::new("slow", "Never ends in time.", |_: Nothing, _| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<_, String>("late")
    });
    let typed =
        FunctionTool::new("typed", "Needs a label.", |args: Sleep, _| async move { Ok::<_, String>(args.label) });
    [fails, panics, slow, typed].into_iter().try_fold(ToolSet::new(), ToolSet::with).unwrap()
}

#[tokio::test]
async fn every_kind_of_failure_becomes_a_result_the_model_reads() {
    let list = vec![
        ("nope", json!({})),
        ("typed", json!({"ms": 1, "label": 7})),
        ("fails", json!({})),
        ("slow", json!({})),
        ("panics", json!({})),
        ("typed", json!({"ms": 1, "label": "fine"})),
    ];
    let model = Scripted::new(once(list));
    let options = ToolLoopOptions::default().with_tool_timeout(Duration::from_millis(50));
    let reply = graph(Arc::clone(&model) as _, failing_tools(), options).run(RunRequest::new("go")).await.unwrap();
    let results = tool_messages(&reply.state);
    let content = |i: usize| results[i].1.as_str();
    assert!(content(0).starts_with("Error: there is no tool named `nope`"), "{}", content(0));
    assert!(content(1).contains("field `label`"), "{}", content(1));
    assert_eq!(content(2), "Error: the disk is full");
    assert!(content(3).contains("did not finish within 50ms"), "{}", content(3));
    assert!(content(4).contains("panicked: tool bug"), "{}", content(4));
    assert_eq!(content(5), "fine");
    // The model's second request carried every result.
    let second = &model.requests()[1];
    assert_eq!(second.messages.iter().filter(|m| m.role == Role::Tool).count(), 6);
    assert!(reply.output.contains("c2=Error: the disk is full"));
}

#[tokio::test]
async fn fail_fast_stops_the_turn_and_saves_nothing() {
    let sessions = SessionManager::in_memory();
    let model = Scripted::new(once(vec![("typed", json!({"ms": 1, "label": "ok"})), ("fails", json!({}))]));
    let graph = ToolLoop::new(model)
        .with_tools(failing_tools())
        .with_options(ToolLoopOptions::default().with_fail_fast(true))
        .graph::<ChatState>()
        .with_sessions(sessions.clone())
        .compile()
        .unwrap();
    let id = sessions.create_session("ann", lgadk_core::Metadata::new()).await.unwrap();
    let err = graph.run(RunRequest::new("go").with_session(id.clone())).await.unwrap_err();
    assert!(matches!(&err, Error::Tool { tool, call_id, .. } if tool == "fails" && call_id == "c1"), "{err:?}");
    assert!(graph.state(&id).await.unwrap().is_none(), "nothing of the turn was saved");
    assert_eq!(sessions.get_session_summary(&id).await.unwrap().unwrap().interactions, 0);
}

/// A model that never stops calling tools.
fn forever() -> impl Fn(&ChatRequest) -> Message + Send + Sync + 'static {
    |request| {
        let n = request.messages.len();
        Message {
            tool_calls: vec![ToolCall {
                id: format!("c{n}"),
                name: "typed".into(),
                arguments: json!({"ms": 0, "label": "x"}),
            }],
            ..Message::assistant("")
        }
    }
}

#[tokio::test]
async fn the_step_cap_answers_or_fails_as_configured() {
    let model = Scripted::new(forever());
    let reply =
        graph(Arc::clone(&model) as _, failing_tools(), ToolLoopOptions::default()).run(RunRequest::new("go")).await;
    let reply = reply.unwrap();
    assert_eq!(model.requests().len(), 10, "the default cap is 10 model calls per turn");
    assert!(reply.output.contains("limit of 10 model calls"), "{}", reply.output);
    assert_eq!(reply.state.messages.last().map(|m| m.role), Some(Role::Assistant));
    assert_eq!(tool_messages(&reply.state).len(), 10, "every call has its result");
    assert_eq!((reply.usage.prompt_tokens, reply.usage.completion_tokens), (100, 50));

    let sessions = SessionManager::in_memory();
    let options = ToolLoopOptions::default().with_max_model_calls(3).with_step_limit_policy(StepLimitPolicy::Fail);
    let graph = ToolLoop::new(Scripted::new(forever()))
        .with_tools(failing_tools())
        .with_options(options)
        .graph::<ChatState>()
        .with_sessions(sessions.clone())
        .compile()
        .unwrap();
    let err = graph.run(RunRequest::new("go").with_user(lgadk_core::UserId::parse("bo").unwrap())).await.unwrap_err();
    assert!(matches!(err, Error::StepLimit { limit: 3, .. }), "{err:?}");
    assert!(sessions.get_user_sessions("bo").await.unwrap().is_empty(), "a failed first turn leaves no session");
}

#[tokio::test]
async fn streaming_reports_each_call_started_and_finished() {
    let model = Scripted::new(once(vec![("typed", json!({"ms": 1, "label": "a"})), ("fails", json!({}))]));
    let graph = graph(model, failing_tools(), ToolLoopOptions::default());
    let mut stream = graph.stream(RunRequest::new("go"));
    let mut tool_events = Vec::new();
    let mut finished = None;
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            RunEvent::ToolStarted { node, call_id, name, arguments } => {
                assert_eq!(node, "tools");
                tool_events.push(format!("start {call_id} {name} {arguments}"));
            }
            RunEvent::ToolFinished { call_id, content, error, duration, .. } => {
                assert!(duration < Duration::from_secs(5));
                tool_events.push(format!("end {call_id} {error} {content}"));
            }
            RunEvent::Finished(response) => finished = Some(response),
            _ => {}
        }
    }
    tool_events.sort();
    assert_eq!(
        tool_events,
        [
            "end c0 false a",
            "end c1 true Error: the disk is full",
            "start c0 typed {\"label\":\"a\",\"ms\":1}",
            "start c1 fails {}",
        ]
    );
    assert_eq!(tool_messages(&finished.unwrap().state).len(), 2);
}

/// Sets its flag when dropped: the tool's future was dropped, not left running.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn cancelling_the_run_drops_running_tools_and_writes_nothing() {
    let sessions = SessionManager::in_memory();
    let (started, dropped) = (Arc::new(tokio::sync::Notify::new()), Arc::new(AtomicBool::new(false)));
    let hang = {
        let (started, dropped) = (Arc::clone(&started), Arc::clone(&dropped));
        FunctionTool::new("hang", "Never returns.", move |_: Nothing, _| {
            let guard = DropFlag(Arc::clone(&dropped));
            let started = Arc::clone(&started);
            async move {
                let _guard = guard;
                started.notify_one();
                std::future::pending::<()>().await;
                Ok::<_, String>("never")
            }
        })
    };
    let graph = ToolLoop::new(Scripted::new(once(vec![("hang", json!({}))])))
        .with_tools(ToolSet::new().with(hang).unwrap())
        .graph::<ChatState>()
        .with_sessions(sessions.clone())
        .compile()
        .unwrap();
    let id = sessions.create_session("ann", lgadk_core::Metadata::new()).await.unwrap();
    let mut stream = graph.stream(RunRequest::new("go").with_session(id.clone()));
    started.notified().await;
    stream.cancel();
    let mut last = None;
    while let Some(event) = stream.next().await {
        last = Some(event);
    }
    assert!(matches!(last, Some(Err(Error::Graph(GraphError::Cancelled { .. })))), "{last:?}");
    assert!(dropped.load(Ordering::SeqCst), "the running tool was dropped");
    assert!(graph.state(&id).await.unwrap().is_none(), "nothing was written");
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Note {
    text: String,
}

#[tokio::test]
async fn a_new_message_instead_of_a_resume_closes_the_waiting_batch() {
    let written = Arc::new(AtomicUsize::new(0));
    let note = {
        let written = Arc::clone(&written);
        FunctionTool::new("note", "Writes a note.", move |args: Note, _| {
            written.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, String>(format!("noted {}", args.text)) }
        })
        .requiring_approval()
    };
    let model = ToolCallingModel::new([("note", json!({"text": "hi"}))]);
    let graph = ToolLoop::new(Arc::clone(&model) as Arc<dyn ChatModel>)
        .with_tools(ToolSet::new().with(note).unwrap())
        .graph::<ChatState>()
        .compile()
        .unwrap();
    let err = graph.run(RunRequest::new("note hi")).await.unwrap_err();
    let Error::Interrupted { session_id: Some(id), .. } = &err else { panic!("{err:?}") };
    assert_eq!(ApprovalRequest::from_interrupt(&err).unwrap().pending.len(), 1);

    // The user moves on: the waiting call gets a "not run" result, then the new turn runs
    // (and asks for approval of its own call).
    let err = graph.run(RunRequest::new("never mind").with_session(id.clone())).await.unwrap_err();
    assert!(matches!(err, Error::Interrupted { .. }));
    let state = graph.state(id).await.unwrap().unwrap();
    let roles: Vec<Role> = state.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::User, Role::Assistant]);
    assert!(state.messages[2].content.contains("not run"), "{}", state.messages[2].content);
    assert_eq!(written.load(Ordering::SeqCst), 0);

    // Resuming with a decision for a call that is not waiting is refused.
    let stray = ApprovalDecisions::new().approve("call_1_0").approve("call_4_0");
    let err = graph.resume(id, stray.into()).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig { reason } if reason.contains("call_1_0")), "{err:?}");
    let done = graph.resume(id, ApprovalDecisions::new().approve("call_4_0").into()).await.unwrap();
    assert_eq!(done.output, "done: noted hi");
    assert_eq!(written.load(Ordering::SeqCst), 1);
}
