//! The tool loop's approval interrupts over HTTP: the pending calls reach the client as the
//! interrupt's value, the tool calls and results as LangChain dicts, and `command.resume`
//! with the decisions runs the approved call once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

mod common;

use std::sync::{Arc, Mutex};

use common::user_input;
use lgadk_core::{ApprovalDecisions, ChatModel, ChatState, FunctionTool, ToolSet};
use lgadk_graph::prebuilt::ToolLoop;
use lgadk_llm::{OfflineModel, ScriptedReply};
use lgadk_server::Server;
use lgadk_session::SessionManager;
use serde_json::json;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Send {
    to: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_approval_interrupts_resume_with_the_decisions() {
    let sessions = SessionManager::in_memory();
    let sent = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&sent);
    let send = FunctionTool::new("send", "Sends a message.", move |args: Send, _| {
        log.lock().unwrap().push(args.to.clone());
        async move { Ok::<_, String>(format!("sent to {}", args.to)) }
    })
    .requiring_approval();
    let model: Arc<dyn ChatModel> = Arc::new(OfflineModel::scripted([
        ScriptedReply::tool_call("send", json!({"to": "ann"})),
        ScriptedReply::text("all sent"),
    ]));
    let graph = ToolLoop::new(model)
        .with_tools(ToolSet::new().with(send).unwrap())
        .graph::<ChatState>()
        .with_sessions(sessions.clone())
        .compile()
        .unwrap();
    let server = Server::builder().assistant("mailer", graph).sessions(sessions).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener, std::future::pending()));
    let client = common::client();
    let post = |path: String, body: serde_json::Value| {
        let request = client.post(format!("{base}{path}")).body(body.to_string()).send();
        async move { common::decode(request.await.unwrap()).await }
    };

    let (_, thread) = post("/threads".into(), json!({})).await;
    let thread = thread["thread_id"].as_str().unwrap().to_owned();
    let (status, paused) = post(
        format!("/threads/{thread}/runs/wait"),
        json!({"assistant_id": "mailer", "input": user_input("mail ann")}),
    )
    .await;
    assert_eq!(status, 200, "{paused}");
    let pending = &paused["__interrupt__"][0]["value"]["pending"];
    assert_eq!(pending[0]["call_id"], "call_1", "{paused}");
    assert!(sent.lock().unwrap().is_empty(), "nothing that needs approval ran");
    let ai = &paused["messages"][1];
    assert_eq!(ai["type"], "ai");
    assert_eq!(
        ai["tool_calls"][0],
        json!({"name": "send", "args": {"to": "ann"}, "id": "call_1", "type": "tool_call"})
    );

    let decisions: serde_json::Value = ApprovalDecisions::new().approve("call_1").into();
    let (status, done) = post(
        format!("/threads/{thread}/runs/wait"),
        json!({"assistant_id": "mailer", "command": {"resume": decisions}}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(*sent.lock().unwrap(), ["ann"]);
    let messages = done["messages"].as_array().unwrap();
    let types: Vec<&str> = messages.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["human", "ai", "tool", "ai"]);
    assert_eq!(messages[2]["tool_call_id"], "call_1");
    assert_eq!(messages[3]["content"], "all sent");
    assert!(done.get("__interrupt__").is_none());
}
