//! `examples/tool_agent.rs` as people run it, and its approval flow across two OS processes on
//! Redis: one process runs the turn that stops for approval and exits; a second process — this
//! test binary started again — loads the session cold from Redis and resumes it. The example's
//! source is compiled into this test (`#[path]`), so its tools and graph are the ones tested.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

#[path = "../examples/tool_agent.rs"]
#[allow(dead_code, unreachable_pub, reason = "`main` is the binary's; the tests call its functions")]
mod example;

use std::process::{Command, ExitCode};
use std::sync::Arc;

use lgadk::core::{ApprovalRequest, ChatModel, Error, Role, SessionId};
use lgadk::graph::RunRequest;
use lgadk::graph::testing::ToolCallingModel;
use lgadk::serde_json::json;

/// The env var that makes [`resume_worker`] act: `<redis url> <session id> <outbox>`.
const WORKER: &str = "LGADK_TOOL_AGENT_RESUME";

fn scripted() -> Arc<dyn ChatModel> {
    ToolCallingModel::new([
        ("calculator", json!({"expression": "2^10 - 24"})),
        ("save_note", json!({"text": "call the plumber"})),
        ("lookup", json!({"query": "Kenya"})),
    ])
}

async fn transcript(args: &[&str]) -> (ExitCode, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = example::cli(args.iter().map(|a| (*a).to_owned()), &mut out, &mut err).await;
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[tokio::test]
async fn the_offline_example_runs_its_tools_and_shows_both_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.txt");
    let (code, out, err) = transcript(&["--outbox", outbox.to_str().unwrap()]).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}\n{out}");
    assert!(out.contains("→ 21"), "the calculator computed (12 + 30) * 2 / 4:\n{out}");
    assert!(out.contains("Tokyo") && out.contains("→ 1024"), "two tools in one message:\n{out}");
    assert!(out.contains("✅ Reviewer approves") && out.contains("❌ Reviewer rejects"), "{out}");
    let notes = std::fs::read_to_string(&outbox).unwrap();
    assert!(notes.contains("call the plumber on Monday"), "{notes}");
    assert!(!notes.contains("shares"), "the rejected note was never written: {notes}");
}

#[tokio::test]
async fn bad_arguments_are_refused_with_the_usage() {
    let (code, _, err) = transcript(&["--backend"]).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(err.contains("--backend needs a value") && err.contains("usage: tool_agent"), "{err}");
    let (code, out, _) = transcript(&["--help"]).await;
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(out.contains("--outbox <file>"), "{out}");
}

#[tokio::test]
async fn the_calculator_computes_and_explains_what_it_cannot() {
    use example::tools;
    let tools = tools(std::env::temp_dir().join("unused-outbox")).unwrap();
    let calc = |expression: &str| {
        let tools = tools.clone();
        let expression = expression.to_owned();
        async move {
            let ctx = lgadk::core::ToolContext::new("c");
            tools.call("calculator", json!({"expression": expression}), ctx).await.map(|o| o.into_content())
        }
    };
    assert_eq!(calc("-2^2 + 3 * (4 - 1) / 2").await.unwrap(), "0.5");
    assert_eq!(calc("2^3^2").await.unwrap(), "512", "power is right-associative");
    assert_eq!(calc("2^-1").await.unwrap(), "0.5");
    assert!(calc("1 / (2 - 2)").await.unwrap_err().to_string().contains("division by zero"));
    assert!(calc("(1 + 2").await.unwrap_err().to_string().contains("never closed"));
    assert!(calc("2 +").await.unwrap_err().to_string().contains("ends too early"));
}

/// The first process: runs the turn (the calculator and the lookup run, the note waits), then
/// a second OS process resumes it with an approval; the note is written once, by the second.
#[cfg(feature = "redis")]
#[tokio::test]
async fn an_approval_is_resumed_by_another_process_on_redis() {
    use lgadk::session::testing::RedisServer;
    let Some(server) = RedisServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.txt");
    let sessions = example::session_manager("redis", Some(server.url())).await.unwrap();
    let graph = example::agent(scripted(), example::tools(outbox.clone()).unwrap(), &sessions).unwrap();
    let id = sessions.create_session("dana", lgadk::core::Metadata::new()).await.unwrap();

    let err = graph.run(RunRequest::new("note it and do the sums").with_session(id.clone())).await.unwrap_err();
    assert!(matches!(&err, Error::Interrupted { node, .. } if node == "tools"), "{err:?}");
    let pending = ApprovalRequest::from_interrupt(&err).unwrap().pending;
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].call_id.as_str(), pending[0].name.as_str()), ("call_2_1", "save_note"));
    assert!(!outbox.exists(), "nothing is written before the approval");

    let worker = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "resume_worker", "--nocapture"])
        .env(WORKER, format!("{} {id} {}", server.url(), outbox.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&worker.stdout);
    assert!(
        worker.status.success(),
        "the resuming process failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&worker.stderr)
    );
    assert!(stdout.contains("resumed:"), "the worker ran the resume: {stdout}");

    let notes = std::fs::read_to_string(&outbox).unwrap();
    assert_eq!(notes.lines().count(), 1, "the note was written once: {notes}");
    assert!(notes.contains(&format!("[{id}] call the plumber")), "{notes}");
    // This process sees the whole trace: three results in call order, then the answer.
    let state = graph.state(&id).await.unwrap().unwrap();
    let results: Vec<&str> =
        state.messages.iter().filter(|m| m.role == Role::Tool).map(|m| m.content.as_str()).collect();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], "1000");
    assert!(results[1].starts_with("saved to "), "{}", results[1]);
    assert!(results[2].contains("Nairobi"), "{}", results[2]);
    assert!(state.output.starts_with("done: 1000; saved to"), "{}", state.output);
    assert_eq!(sessions.get_session_summary(&id).await.unwrap().unwrap().interactions, 2);
}

/// The second process of [`an_approval_is_resumed_by_another_process_on_redis`]: does nothing
/// unless that test started it.
#[tokio::test]
async fn resume_worker() {
    let Ok(job) = std::env::var(WORKER) else { return };
    let mut parts = job.splitn(3, ' ');
    let (url, id, outbox) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let id = SessionId::parse(id).unwrap();
    let sessions = example::session_manager("redis", Some(url.to_owned())).await.unwrap();
    let graph = example::agent(scripted(), example::tools(outbox.into()).unwrap(), &sessions).unwrap();
    let decisions = lgadk::core::ApprovalDecisions::new().approve("call_2_1");
    let done = graph.resume(&id, decisions.into()).await.unwrap();
    println!("resumed: {}", done.output);
}
