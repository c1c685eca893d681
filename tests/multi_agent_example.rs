//! `examples/multi_agent.rs` as people run it: offline, in memory and on Redis, the triage
//! agent hands each customer to the right specialist and later turns — on a graph with its own
//! connection — continue with that specialist. The example's source is compiled in.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failure is a panic")]

#[path = "../examples/multi_agent.rs"]
#[allow(dead_code, unreachable_pub, reason = "`main` is the binary's; the tests call `cli`")]
mod example;

use std::process::ExitCode;

async fn transcript(args: &[&str]) -> (ExitCode, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = example::cli(args.iter().map(|a| (*a).to_owned()), &mut out, &mut err).await;
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

/// The lines naming who answered each turn, in order.
fn speakers(out: &str) -> Vec<&str> {
    out.lines().filter_map(|l| l.trim_start().strip_prefix("🤖 ")).filter_map(|l| l.split(':').next()).collect()
}

fn check(out: &str) {
    assert_eq!(speakers(out), ["billing", "technical", "billing", "technical", "technical"], "{out}");
    assert!(out.contains("🔧 transfer_to_billing: Transferred the conversation to `billing`."), "{out}");
    assert!(out.contains("🔧 invoices: INV-1042"), "billing looked Maya's invoices up: {out}");
    assert!(out.contains("🔧 diagnostics: Error 651"), "{out}");
    assert!(out.contains("📊 Maya: 3 turns") && out.contains("📊 Leo: 2 turns"), "{out}");
    // Maya's breakdown by agent: triage once, billing in all three turns, technical once.
    let maya = out.split("📊 Maya").nth(1).unwrap();
    for expected in ["billing: 3 turns", "technical: 1 turn,", "triage: 1 turn,"] {
        assert!(maya.contains(expected), "{expected}: {maya}");
    }
}

#[tokio::test]
async fn offline_in_memory_each_customer_reaches_the_right_agent_and_stays_there() {
    let (code, out, err) = transcript(&[]).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    check(&out);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn on_redis_a_second_connection_continues_with_the_agent_that_holds_the_conversation() {
    let Some(server) = lgadk::session::testing::RedisServer::start() else { return };
    let url = server.url();
    let (code, out, err) = transcript(&["--backend", "redis", "--redis-url", &url]).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    check(&out);
}

#[tokio::test]
async fn bad_arguments_get_the_usage() {
    let (code, _, err) = transcript(&["--nope"]).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(err.contains("usage: multi_agent"), "{err}");
}

/// The env var that makes [`next_turn_worker`] act: `<redis url> <session id>`.
const WORKER: &str = "LGADK_MULTI_AGENT_NEXT_TURN";

/// The first process: triage hands Maya's conversation to billing, then a second OS process —
/// this test binary started again, with nothing shared but Redis — runs her next turn, and
/// billing answers it without triage.
#[cfg(feature = "redis")]
#[tokio::test]
async fn the_next_turn_in_another_process_starts_with_the_agent_that_holds_the_conversation() {
    use lgadk::core::Role;
    use lgadk::graph::RunRequest;
    let Some(server) = lgadk::session::testing::RedisServer::start() else { return };
    let sessions = lgadk::SessionManager::redis(&server.url()).await.unwrap();
    let model = lgadk::get_model("offline").unwrap();
    let desk = example::desk(&model, &sessions).unwrap();
    let id = sessions.create_session("maya", lgadk::core::Metadata::new()).await.unwrap();
    let first = desk.run(RunRequest::new("I was charged twice on my last invoice").with_session(id.clone())).await;
    assert_eq!(first.unwrap().state.routing.active.as_deref(), Some("billing"));

    let worker = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "next_turn_worker", "--nocapture"])
        .env(WORKER, format!("{} {id}", server.url()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&worker.stdout);
    assert!(worker.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&worker.stderr));
    assert!(stdout.contains("answered by billing"), "{stdout}");

    let state = desk.state(&id).await.unwrap().unwrap();
    let authors: Vec<&str> = state
        .messages
        .iter()
        .filter(|m| m.role == Role::Assistant && m.tool_calls.is_empty())
        .filter_map(|m| m.name.as_deref())
        .collect();
    assert_eq!(authors, ["billing", "billing"], "both turns answered by billing");
    let summary = sessions.get_session_summary(&id).await.unwrap().unwrap();
    assert_eq!((summary.agents["billing"].interactions, summary.agents["triage"].interactions), (2, 1));
}

/// The second process of the test above: does nothing unless that test started it.
#[tokio::test]
async fn next_turn_worker() {
    let Ok(job) = std::env::var(WORKER) else { return };
    let (url, id) = job.split_once(' ').unwrap();
    let sessions = lgadk::SessionManager::redis(url).await.unwrap();
    let desk = example::desk(&lgadk::get_model("offline").unwrap(), &sessions).unwrap();
    let id = lgadk::core::SessionId::parse(id).unwrap();
    let reply = desk.run(lgadk::graph::RunRequest::new("When will the refund arrive?").with_session(id)).await.unwrap();
    let speaker = reply.state.messages.last().and_then(|m| m.name.clone()).unwrap_or_default();
    println!("answered by {speaker}: {}", reply.output);
}
