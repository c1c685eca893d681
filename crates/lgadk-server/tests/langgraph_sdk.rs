//! The official `langgraph-sdk` Python client against the server, over real HTTP, on the memory
//! and the Redis backend: `tests/sdk/test_sdk.py` (owned by this project) drives assistants,
//! threads, state, history, runs in every stream mode, background runs and joins, an interrupt
//! answered with `Command(resume=...)`, a busy thread's second run, enqueued runs, cancelling,
//! the analytics extension, and who sees which thread.
//!
//! The interpreter comes from `LGADK_SDK_PYTHON`, which `cargo xtask test` sets after making
//! `target/sdk-venv` from the pinned `tests/sdk/requirements.txt`, or is that venv's own
//! interpreter when it exists. Without it the tests say SKIPPED, unless `CI` is set: then a
//! missing client is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]
#![allow(clippy::print_stderr, reason = "a skipped test says why")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use lgadk_core::{ChatModel, ChatState, FunctionTool, Message, Result, RunContext, ToolContext, ToolSet};
use lgadk_graph::prebuilt::ToolLoop;
use lgadk_graph::{CompiledGraph, GraphBuilder};
use lgadk_server::{ApiKeys, Server, conversational_graph, offline_model};
use lgadk_session::SessionManager;
use tokio::net::TcpListener;

const ALICE: &str = "alice-key-0123456789";
const BOB: &str = "bob-key-0123456789";
const ADMIN: &str = "admin-key-0123456789";

/// The client's interpreter, or `None` (SKIPPED) outside CI.
fn sdk_python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/sdk-venv/bin/python");
    let python = std::env::var_os("LGADK_SDK_PYTHON").map(PathBuf::from).or_else(|| venv.exists().then_some(venv));
    match python {
        Some(python) => Some(python),
        None if std::env::var_os("CI").is_some() => {
            panic!("no langgraph-sdk venv: set LGADK_SDK_PYTHON or run `cargo xtask test`, which makes one")
        }
        None => {
            eprintln!("SKIPPED: no langgraph-sdk venv (run `cargo xtask test` to make target/sdk-venv)");
            None
        }
    }
}

/// Arguments of the note tool.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct SaveNote {
    /// The note's text.
    text: String,
}

/// A tool loop whose one tool needs a person's approval; the offline model calls it when a
/// message says "note".
fn approvals(model: Arc<dyn ChatModel>, sessions: &SessionManager) -> Result<CompiledGraph<ChatState>> {
    let save_note = FunctionTool::new(
        "save_note",
        "Saves a note for the user. A person approves each note first.",
        |args: SaveNote, _ctx: ToolContext| async move { Ok::<_, String>(format!("saved: {}", args.text)) },
    )
    .with_keywords(["note"])
    .requiring_approval();
    ToolLoop::new(model)
        .with_tools(ToolSet::new().with(save_note)?)
        .graph::<ChatState>()
        .with_sessions(sessions.clone())
        .compile()
}

/// One node that takes half a second (and notices a cancelled run), then answers.
fn slow(sessions: &SessionManager) -> Result<CompiledGraph<ChatState>> {
    GraphBuilder::new("slow")
        .add_node_fn("slow", |mut state: ChatState, ctx: Arc<RunContext>| async move {
            for _ in 0..10 {
                if ctx.is_cancelled() {
                    return Err(lgadk_core::GraphError::Cancelled { graph: "slow".into() }.into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let said = state.input.clone();
            state.messages.push(Message::user(said.clone()));
            state.messages.push(Message::assistant(format!("slowly: {said}")));
            Ok(state)
        })
        .configure_session_management(sessions.clone())
        .build()
}

/// Serves the three assistants on `sessions` on a free loopback port, runs the script against
/// it and fails with the script's output when a check failed.
async fn run_script(python: &Path, sessions: SessionManager) {
    let model = offline_model();
    let keys = ApiKeys::new()
        .with_user(ALICE, "alice")
        .and_then(|keys| keys.with_user(BOB, "bob"))
        .and_then(|keys| keys.with_admin(ADMIN, "admin"))
        .unwrap();
    let server = Server::builder()
        .assistant("agent", conversational_graph(Arc::clone(&model), sessions.clone()).unwrap())
        .assistant("approvals", approvals(model, &sessions).unwrap())
        .assistant("slow", slow(&sessions).unwrap())
        .sessions(sessions)
        .api_keys(keys)
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/test_sdk.py");
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .args(["--url", &url, "--alice-key", ALICE, "--bob-key", BOB, "--admin-key", ADMIN])
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("LANGGRAPH_API_KEY")
        .env_remove("LANGSMITH_API_KEY")
        .env_remove("LANGCHAIN_API_KEY")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), output).await.expect("the SDK script hung").unwrap();
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the langgraph-sdk script failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains(" passed, 0 failed"), "the script ran no checks:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langgraph_sdk_on_memory() {
    let Some(python) = sdk_python() else { return };
    run_script(&python, SessionManager::in_memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langgraph_sdk_on_redis() {
    let Some(python) = sdk_python() else { return };
    let Some(server) = lgadk_session::testing::RedisServer::start() else { return };
    let sessions = SessionManager::redis(&server.url()).await.unwrap();
    run_script(&python, sessions).await;
}
