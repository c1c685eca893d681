//! The tool loop against a real HTTP server on loopback that speaks OpenAI's chat-completions
//! protocol (and refuses, as OpenAI does, a request whose tool calls lack their results): the
//! model's parallel tool calls arrive as streamed argument fragments, both tools run, their
//! results go back in the next request, and the turn is saved — in memory and on Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

// The loopback server of lgadk-llm's tests (its module allows the helpers this test leaves unused).
#[path = "../crates/lgadk-llm/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Recorded, Reply, TestServer, chunk, completion, text_chunk, tool_completion, usage_chunk};
use futures_util::StreamExt as _;
use lgadk::SessionManager;
use lgadk::core::{ChatModel, ChatState, FunctionTool, Role, ToolSet};
use lgadk::graph::prebuilt::ToolLoop;
use lgadk::graph::{CompiledGraph, RunEvent, RunRequest};
use lgadk::llm::{OpenAiModel, RetryPolicy};
use lgadk::serde_json::{Value, json};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct City {
    city: String,
}

fn tools() -> ToolSet {
    let weather = FunctionTool::new("get_weather", "Current weather for a city", |args: City, _| async move {
        Ok::<_, String>(format!("sunny in {}", args.city))
    });
    let time = FunctionTool::new("get_time", "Local time in a city", |args: City, _| async move {
        Ok::<_, String>(json!({"city": args.city, "time": "14:05"}))
    });
    ToolSet::new().with(weather).unwrap().with(time).unwrap()
}

/// Two parallel calls, their arguments interleaved in fragments, as OpenAI streams them.
fn streamed_calls() -> Vec<Value> {
    let call = |index: u32, id: &str, name: &str| json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}});
    let args = |index: u32, part: &str| json!({"index": index, "function": {"arguments": part}});
    vec![
        chunk(json!({"role": "assistant", "content": null, "tool_calls": [call(0, "call_w", "get_weather")]}), None),
        chunk(json!({"tool_calls": [args(0, "{\"ci"), call(1, "call_t", "get_time")]}), None),
        chunk(json!({"tool_calls": [args(1, "{\"city\": \"Li"), args(0, "ty\": \"Pa")]}), None),
        chunk(json!({"tool_calls": [args(1, "ma\"}"), args(0, "ris\"}")]}), None),
        chunk(json!({}), Some("tool_calls")),
        usage_chunk(61, 30),
    ]
}

/// First request: the tool calls; second: the answer, streamed or whole as the client asked.
fn handler(n: usize, request: &Recorded) -> Reply {
    let streaming = request.body["stream"] == json!(true);
    match (n % 2, streaming) {
        (0, true) => Reply::sse(streamed_calls()),
        (0, false) => Reply::json(
            200,
            &tool_completion(&[
                ("call_w", "get_weather", "{\"city\": \"Paris\"}"),
                ("call_t", "get_time", "{\"city\": \"Lima\"}"),
            ]),
        ),
        (_, true) => Reply::sse(vec![
            text_chunk("Sunny in Paris; "),
            text_chunk("14:05 in Lima."),
            chunk(json!({}), Some("stop")),
            usage_chunk(90, 9),
        ]),
        (_, false) => Reply::json(200, &completion("Sunny in Paris; 14:05 in Lima.", Some((90, 9)))),
    }
}

fn graph(server: &TestServer, sessions: &SessionManager) -> CompiledGraph<ChatState> {
    let model = OpenAiModel::builder("gpt-test")
        .with_base_url(server.base_url())
        .with_api_key("sk-test-key")
        .with_retry(RetryPolicy::none())
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    ToolLoop::new(Arc::new(model) as Arc<dyn ChatModel>)
        .with_system_prompt("Use the tools.")
        .with_tools(tools())
        .with_parallel_tool_calls(true)
        .graph::<ChatState>()
        .with_sessions(sessions.clone())
        .compile()
        .unwrap()
}

/// The second request of a turn carries the calls and both results, in call order.
fn check_results_sent(request: &Recorded) {
    let messages = request.body["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "tool"], "{messages:#?}");
    assert_eq!(messages[2]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(messages[3], json!({"role": "tool", "tool_call_id": "call_w", "content": "sunny in Paris"}));
    assert_eq!(messages[4]["tool_call_id"], "call_t");
    assert_eq!(messages[4]["content"], "{\"city\":\"Lima\",\"time\":\"14:05\"}");
    assert_eq!(request.body["parallel_tool_calls"], true);
    assert_eq!(request.body["tools"].as_array().unwrap().len(), 2);
}

async fn loop_on(sessions: SessionManager) {
    let server = TestServer::start(handler).await;
    let graph = graph(&server, &sessions);
    let id = sessions.create_session("ann", lgadk::core::Metadata::new()).await.unwrap();

    // Streamed: the model's calls arrive in fragments; the tool events come in between.
    let mut stream = graph.stream(RunRequest::new("Weather in Paris and time in Lima?").with_session(id.clone()));
    let (mut started, mut finished, mut tokens, mut response) = (Vec::new(), 0, String::new(), None);
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            RunEvent::ToolStarted { name, arguments, .. } => started.push((name, arguments)),
            RunEvent::ToolFinished { error, .. } => {
                assert!(!error);
                finished += 1;
            }
            RunEvent::Token { text, .. } => tokens.push_str(&text),
            RunEvent::Finished(done) => response = Some(done),
            _ => {}
        }
    }
    started.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        started,
        [("get_time".into(), json!({"city": "Lima"})), ("get_weather".into(), json!({"city": "Paris"}))]
    );
    assert_eq!(finished, 2);
    let response = response.unwrap();
    assert_eq!(tokens, "Sunny in Paris; 14:05 in Lima.");
    assert_eq!(response.output, tokens);
    assert_eq!((response.usage.prompt_tokens, response.usage.completion_tokens), (151, 39), "both model calls count");
    check_results_sent(&server.requests()[1]);

    // Not streamed, on the same session: the history the server gets holds the first turn.
    let again = graph.run(RunRequest::new("And again?").with_session(id.clone())).await.unwrap();
    assert_eq!(again.output, "Sunny in Paris; 14:05 in Lima.");
    let third = &server.requests()[2];
    assert_eq!(third.body["messages"].as_array().unwrap().len(), 1 + 5 + 1, "system, the first turn, the new message");
    let roles: Vec<Role> = again.state.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles.iter().filter(|r| **r == Role::Tool).count(), 4);
    let summary = sessions.get_session_summary(&id).await.unwrap().unwrap();
    assert_eq!(
        (summary.interactions, summary.total_tokens_in, summary.total_tokens_out),
        (2, 151 + 50 + 90, 39 + 12 + 9)
    );
}

#[tokio::test]
async fn the_loop_runs_parallel_calls_from_an_openai_compatible_server_in_memory() {
    loop_on(SessionManager::in_memory()).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn the_loop_runs_parallel_calls_from_an_openai_compatible_server_on_redis() {
    let Some(server) = lgadk::session::testing::RedisServer::start() else { return };
    loop_on(SessionManager::redis(&server.url()).await.unwrap()).await;
}
