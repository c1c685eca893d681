//! Context windows against a real HTTP server on loopback that speaks OpenAI's chat-completions
//! protocol and, as OpenAI does, answers 400 to a request with a tool call lacking its results
//! or a tool result lacking its call: a long conversation with tool calls, cut naively, is
//! refused; cut by a context window, under every limit tried, it is accepted; and the tool loop
//! with a window runs turn after turn on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

// The loopback server of lgadk-llm's tests (its module allows the helpers this test leaves unused).
#[path = "../crates/lgadk-llm/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Recorded, Reply, TestServer, completion, tool_completion};
use lgadk::SessionManager;
use lgadk::core::{
    ChatModel, ChatRequest, ChatState, ContextWindow, Error, FunctionTool, Message, Role, TokenCounter, ToolCall,
    ToolSet, window,
};
use lgadk::graph::RunRequest;
use lgadk::graph::prebuilt::ToolLoop;
use lgadk::llm::tokens::O200kCounter;
use lgadk::llm::{OpenAiModel, RetryPolicy};
use lgadk::serde_json::json;

fn model(server: &TestServer) -> Arc<dyn ChatModel> {
    let model = OpenAiModel::builder("gpt-test")
        .with_base_url(server.base_url())
        .with_api_key("sk-test-key")
        .with_retry(RetryPolicy::none())
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    Arc::new(model)
}

/// A system prompt, `turns` turns of question, two parallel tool calls, their results and an
/// answer, then a new question.
fn long_history(turns: usize) -> Vec<Message> {
    let mut messages = vec![Message::system("Use the tools.")];
    for t in 0..turns {
        messages.push(Message::user(format!("Weather in city {t}, and the time there?")));
        let call = |kind: &str, name: &str| ToolCall {
            id: format!("call_{t}_{kind}"),
            name: name.into(),
            arguments: json!({"city": format!("city {t}")}),
        };
        messages.push(Message {
            tool_calls: vec![call("w", "get_weather"), call("t", "get_time")],
            ..Message::assistant("")
        });
        messages.push(Message::tool(format!("call_{t}_w"), format!("sunny in city {t}, {t}°C")));
        messages.push(Message::tool(format!("call_{t}_t"), format!("{t:02}:05")));
        messages.push(Message::assistant(format!("It is sunny in city {t} and {t:02}:05 there.")));
    }
    messages.push(Message::user("And what did I ask first?"));
    messages
}

fn roles(request: &Recorded) -> Vec<String> {
    request.body["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_long_conversation_with_tool_calls_is_accepted_once_windowed() {
    let server = TestServer::start(|_, _| Reply::json(200, &completion("ok", Some((50, 2))))).await;
    let model = model(&server);
    let history = long_history(40);

    // The last 4 messages, cut without regard for tool calls, start with a tool result: refused.
    let mut naive = vec![history[0].clone()];
    naive.extend_from_slice(&history[history.len() - 4..]);
    assert_eq!(naive[1].role, Role::Tool);
    let err = model.chat(ChatRequest::new(naive)).await.unwrap_err();
    assert!(matches!(err, Error::Model { status: Some(400), .. }), "{err:?}");

    // Windows by message count and by o200k token budget, over a range of limits: all accepted.
    let counter: Arc<dyn TokenCounter> = Arc::new(O200kCounter);
    let mut policies: Vec<ContextWindow> = (0..=12).map(ContextWindow::last_messages).collect();
    policies.extend(
        [10, 40, 80, 150, 300, 600, 1200].map(|t| ContextWindow::token_budget(t).with_counter(Arc::clone(&counter))),
    );
    for policy in &policies {
        let cut = window(&history, policy, None);
        assert!(cut.messages.len() < history.len(), "{policy:?} dropped nothing");
        if let Some(max) = policy.max_tokens
            && !cut.minimal
        {
            assert!(cut.tokens <= max, "{policy:?}: {} tokens", cut.tokens);
        }
        let reply = model.chat(ChatRequest::new(cut.messages.clone())).await;
        assert!(reply.is_ok(), "{policy:?} was refused: {reply:?}\n{:#?}", cut.messages);
        // The system prompt and the new question always travel.
        let sent = server.requests().last().unwrap().clone();
        let sent_roles = roles(&sent);
        assert_eq!(sent_roles.first().map(String::as_str), Some("system"));
        assert_eq!(sent.body["messages"].as_array().unwrap().last().unwrap()["content"], "And what did I ask first?");
    }
    // 1 refused + one accepted request per policy.
    assert_eq!(server.requests().len(), 1 + policies.len());
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct City {
    city: String,
}

fn tools() -> ToolSet {
    let weather = FunctionTool::new("get_weather", "Current weather for a city", |args: City, _| async move {
        Ok::<_, String>(format!("sunny in {}", args.city))
    });
    let time = FunctionTool::new("get_time", "Local time in a city", |args: City, _| async move {
        Ok::<_, String>(format!("14:05 in {}", args.city))
    });
    ToolSet::new().with(weather).unwrap().with(time).unwrap()
}

/// Even requests: two parallel calls with ids unique to the request; odd ones: the answer.
fn handler(n: usize, _request: &Recorded) -> Reply {
    if n.is_multiple_of(2) {
        let (w, t) = (format!("call_{n}_w"), format!("call_{n}_t"));
        Reply::json(
            200,
            &tool_completion(&[(&w, "get_weather", "{\"city\": \"Paris\"}"), (&t, "get_time", "{\"city\": \"Lima\"}")]),
        )
    } else {
        Reply::json(200, &completion("Sunny in Paris; 14:05 in Lima.", Some((90, 9))))
    }
}

#[tokio::test]
async fn the_tool_loop_with_a_window_runs_a_long_session_on_the_server() {
    let server = TestServer::start(handler).await;
    let sessions = SessionManager::in_memory();
    let graph = ToolLoop::new(model(&server))
        .with_system_prompt("Use the tools.")
        .with_tools(tools())
        .with_context_window(ContextWindow::last_messages(5).with_max_tokens(400).with_counter(Arc::new(O200kCounter)))
        .graph::<ChatState>()
        .with_sessions(sessions.clone())
        .compile()
        .unwrap();
    let id = sessions.create_session("ann", lgadk::core::Metadata::new()).await.unwrap();
    let turns = 10;
    for turn in 0..turns {
        let reply =
            graph.run(RunRequest::new(format!("Weather and time, take {turn}?")).with_session(id.clone())).await;
        assert_eq!(reply.unwrap().output, "Sunny in Paris; 14:05 in Lima.", "turn {turn}");
    }
    let state = graph.state(&id).await.unwrap().unwrap();
    assert_eq!(state.messages.len(), turns * 5, "the stored history is whole");
    let requests = server.requests();
    assert_eq!(requests.len(), turns * 2);
    for request in &requests {
        assert!(roles(request).len() <= 6, "system prompt + at most 5: {:?}", roles(request));
    }
    // The last request: the system prompt, the previous answer, the question, the calls and
    // their results.
    assert_eq!(roles(requests.last().unwrap()), ["system", "assistant", "user", "assistant", "tool", "tool"]);
}

/// Random conversations (a system prompt or not; user messages, answers, and assistant messages
/// with 1–3 tool calls followed by their results; a new question last), windowed by random
/// limits: the server accepts every request. A batch waiting for approval is not generated: the
/// tool loop closes it before it asks the model again, and OpenAI refuses a request ending with
/// unanswered calls.
#[test]
fn random_windowed_conversations_are_accepted_by_the_server() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    #[derive(Debug, Clone)]
    enum Step {
        User(usize),
        Answer(usize),
        Calls(usize, usize),
    }
    let step = prop_oneof![
        (0usize..80).prop_map(Step::User),
        (0usize..80).prop_map(Step::Answer),
        (1usize..4, 0usize..80).prop_map(|(n, len)| Step::Calls(n, len)),
    ];
    let conversation = (any::<bool>(), prop::collection::vec(step, 0..30)).prop_map(|(system, steps)| {
        let mut messages = Vec::new();
        if system {
            messages.push(Message::system("Use the tools."));
        }
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Step::User(len) => messages.push(Message::user(format!("q{i} {}", "word ".repeat(len)))),
                Step::Answer(len) => messages.push(Message::assistant(format!("a{i} {}", "word ".repeat(len)))),
                Step::Calls(n, len) => {
                    let calls = (0..n)
                        .map(|k| ToolCall {
                            id: format!("call_{i}_{k}"),
                            name: "get_weather".into(),
                            arguments: json!({"k": k}),
                        })
                        .collect();
                    messages.push(Message { tool_calls: calls, ..Message::assistant("") });
                    for k in 0..n {
                        messages.push(Message::tool(format!("call_{i}_{k}"), "sunny ".repeat(len)));
                    }
                }
            }
        }
        messages.push(Message::user("And now?"));
        messages
    });
    let policy = (prop::option::of(0usize..10), prop::option::of(0u64..500)).prop_map(|(messages, tokens)| {
        let mut policy = ContextWindow::default().with_counter(Arc::new(O200kCounter));
        policy.max_messages = messages;
        policy.max_tokens = tokens;
        policy
    });

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = runtime.block_on(TestServer::start(|_, _| Reply::json(200, &completion("ok", Some((5, 1))))));
    let model = runtime.block_on(async { model(&server) });
    let mut runner = TestRunner::new(Config { cases: 96, failure_persistence: None, ..Config::default() });
    runner
        .run(&(conversation, policy), |(messages, policy)| {
            let cut = window(&messages, &policy, None);
            let reply = runtime.block_on(model.chat(ChatRequest::new(cut.messages.clone())));
            prop_assert!(reply.is_ok(), "refused: {reply:?}\n{:#?}", cut.messages);
            Ok(())
        })
        .unwrap();
    assert_eq!(server.requests().len(), 96);
}
