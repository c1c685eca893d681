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
