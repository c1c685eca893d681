//! `examples/memory_agent.rs` as people run it, and its memory across OS processes on Redis:
//! one process remembers a user's preferences and exits; a second process — this test binary
//! started again — recalls them in a new session. The example's source is compiled into this
//! test (`#[path]`), so its graph and stores are the ones tested.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

#[path = "../examples/memory_agent.rs"]
#[allow(dead_code, unreachable_pub, reason = "`main` is the binary's; the tests call its functions")]
mod example;

use std::process::ExitCode;

async fn transcript(args: &[&str]) -> (ExitCode, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = example::cli(args.iter().map(|a| (*a).to_owned()), &mut out, &mut err).await;
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[tokio::test]
async fn the_offline_example_remembers_in_one_session_and_recalls_in_the_next() {
    let (code, out, err) = transcript(&[]).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}\n{out}");
    assert!(out.contains("remember → Remembered: I prefer window seats on flights"), "{out}");
    assert!(out.contains("remember → Remembered: I am vegetarian"), "{out}");
    assert!(out.contains("🧠 Remembered about maya (2 in users/maya/memories)"), "{out}");
    // The later session of maya recalls both; leo, asking the same, gets none of them.
    let sessions: Vec<&str> = out.split("\n— Session ").skip(1).collect();
    assert_eq!(sessions.len(), 3, "{out}");
    assert!(sessions[1].contains("(maya)") && sessions[1].contains("recall → Remembered about this user"), "{out}");
    let answer = sessions[1].lines().find(|l| l.contains("🤖")).unwrap();
    assert!(answer.contains("window seats") && answer.contains("vegetarian"), "{answer}");
    assert!(sessions[2].contains("(leo)") && sessions[2].contains("Nothing is remembered about this user yet"));
    assert!(!sessions[2].contains("window") && !sessions[2].contains("vegetarian"), "{out}");
}

#[tokio::test]
async fn bad_arguments_are_refused_with_the_usage() {
    let (code, _, err) = transcript(&["--embedder"]).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(err.contains("--embedder needs a value") && err.contains("usage: memory_agent"), "{err}");
    let (code, _, err) = transcript(&["--embedder", "acme/x"]).await;
    assert_eq!(code, ExitCode::FAILURE);
    assert!(err.contains("unknown embedder provider `acme`"), "{err}");
    let (code, _, err) = transcript(&["--backend", "disk"]).await;
    assert_eq!(code, ExitCode::FAILURE);
    assert!(err.contains("unknown backend `disk`"), "{err}");
    let (code, out, _) = transcript(&["--help"]).await;
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(out.contains("--embedder <provider/model>") && out.contains("lexical"), "{out}");
}

/// The env var that makes [`recall_worker`] act: `<redis url>`.
const WORKER: &str = "LGADK_MEMORY_AGENT_RECALL";

/// The whole example on Redis, then the cross-process case: this process remembers in one
/// session; a second OS process (this test binary again) recalls in a new session, reading
/// the memories cold from Redis.
#[cfg(feature = "redis")]
#[tokio::test]
async fn memories_outlive_the_process_on_redis() {
    use std::process::Command;
    use std::sync::Arc;

    use lgadk::core::UserId;
    use lgadk::core::memory::{ListRequest, MemoryStore};
    use lgadk::session::testing::RedisServer;

    let Some(server) = RedisServer::start() else { return };
    let (code, out, err) = transcript(&["--backend", "redis", "--redis-url", &server.url()]).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}\n{out}");
    let answer = out.split("\n— Session ").nth(2).unwrap();
    assert!(answer.contains("window seats") && answer.contains("vegetarian"), "{out}");

    // The example cleaned up after itself: no memory is left in Redis.
    let embedder = lgadk::llm::get_embedder("offline").unwrap();
    let (_, memory) = example::stores("redis", Some(server.url()), Arc::clone(&embedder)).await.unwrap();
    assert!(memory.list(ListRequest::everything()).await.unwrap().items.is_empty());

    // This process remembers...
    let (sessions, memory) = example::stores("redis", Some(server.url()), embedder).await.unwrap();
    let graph = example::assistant(lgadk::get_model("offline").unwrap(), &sessions, Arc::clone(&memory)).unwrap();
    let maya = UserId::parse("maya").unwrap();
    let mut sink = Vec::new();
    example::session(&graph, &maya, &["Remember that I take the night train when I can."], &mut sink).await.unwrap();
    let stored = memory.list(ListRequest::under(example::memories_of(&maya).unwrap())).await.unwrap().items;
    assert_eq!(stored.len(), 1);

    // ...and another process recalls.
    let worker = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "recall_worker", "--nocapture"])
        .env(WORKER, server.url())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&worker.stdout);
    assert!(
        worker.status.success(),
        "the recalling process failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&worker.stderr)
    );
    assert!(stdout.contains("recalled: ") && stdout.contains("I take the night train when I can"), "{stdout}");
}

/// The second process of [`memories_outlive_the_process_on_redis`]: does nothing unless that
/// test started it.
#[tokio::test]
async fn recall_worker() {
    let Ok(url) = std::env::var(WORKER) else { return };
    let embedder = lgadk::llm::get_embedder("offline").unwrap();
    let (sessions, memory) = example::stores("redis", Some(url), embedder).await.unwrap();
    let graph = example::assistant(lgadk::get_model("offline").unwrap(), &sessions, memory).unwrap();
    let maya = lgadk::core::UserId::parse("maya").unwrap();
    let mut sink = Vec::new();
    let answers = example::session(&graph, &maya, &["Which travel preferences do I have?"], &mut sink).await.unwrap();
    println!("recalled: {}", answers.join(" | "));
}
