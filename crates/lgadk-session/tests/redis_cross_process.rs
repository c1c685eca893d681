//! Four OS processes, each with its own `RedisStore`, hammer one session: nothing is lost.
#![cfg(all(feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::process::{Command, Stdio};
use std::time::Duration;

use lgadk_core::{NewSession, SessionId, SessionStore, Timeout};
use lgadk_session::RedisStore;
use lgadk_session::testing::RedisServer;
use serde_json::json;

const PROCESSES: usize = 4;
const INTERACTIONS: u64 = 500;
const KEYS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_count_every_interaction_exactly_once() {
    let Some(server) = RedisServer::start() else { return };
    let store = RedisStore::builder(server.url()).with_prefix("xproc").connect().await.unwrap();
    let id = SessionId::parse("shared").unwrap();
    store.create(NewSession::default().with_id(id.clone()).with_timeout(Timeout::Never)).await.unwrap();

    let url = server.url();
    let outputs = tokio::task::spawn_blocking(move || {
        // Every child starts before any is waited for, so they really run at the same time.
        let children: Vec<_> = (0..PROCESSES)
            .map(|worker| {
                Command::new(env!("CARGO_BIN_EXE_lgadk-redis-hammer"))
                    .args([&url, "xproc", "shared", &worker.to_string(), &INTERACTIONS.to_string(), &KEYS.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        children.into_iter().map(|child| child.wait_with_output().unwrap()).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for output in &outputs {
        assert!(output.status.success(), "a worker failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    let session = store.get(&id).await.unwrap().unwrap();
    let total = PROCESSES as u64 * INTERACTIONS;
    assert_eq!(session.stats.interactions, total);
    assert_eq!((session.stats.total_tokens_in, session.stats.total_tokens_out), (3 * total, 5 * total));
    assert_eq!(session.stats.total_response_time, Duration::from_millis(2 * total));
    assert_eq!(session.metadata.len(), PROCESSES * KEYS);
    for worker in 0..PROCESSES {
        for n in 0..KEYS {
            let value = session.metadata.get(&format!("w{worker}-k{n}"));
            assert_eq!(value, Some(&json!({"worker": worker.to_string(), "n": n})), "w{worker}-k{n}");
        }
    }
}
