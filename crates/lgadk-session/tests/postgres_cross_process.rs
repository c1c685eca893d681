//! Several OS processes, each with its own `PostgresStore`: four hammer one session and
//! nothing is lost; eight migrate one fresh schema at once and each migration applies once.
#![cfg(all(feature = "postgres", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use lgadk_core::{NewSession, SessionId, SessionStore, Timeout};
use lgadk_session::PostgresStore;
use lgadk_session::testing::{PostgresServer, unique_schema};
use serde_json::json;

const PROCESSES: usize = 4;
const INTERACTIONS: u64 = 500;
const KEYS: usize = 50;

/// Runs one `lgadk-pg-hammer` per argument list, all started before any is waited for, so
/// they really run at the same time.
async fn hammers(runs: Vec<Vec<String>>) -> Vec<Output> {
    tokio::task::spawn_blocking(move || {
        let children: Vec<_> = runs
            .iter()
            .map(|args| {
                Command::new(env!("CARGO_BIN_EXE_lgadk-pg-hammer"))
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        children.into_iter().map(|child| child.wait_with_output().unwrap()).collect()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_count_every_interaction_exactly_once() {
    let Some(server) = PostgresServer::start() else { return };
    let store = PostgresStore::builder(server.url()).with_schema("xproc").connect().await.unwrap();
    let id = SessionId::parse("shared").unwrap();
    store.create(NewSession::default().with_id(id.clone()).with_timeout(Timeout::Never)).await.unwrap();

    let runs = (0..PROCESSES)
        .map(|worker| {
            [&server.url(), "xproc", "shared", &worker.to_string(), &INTERACTIONS.to_string(), &KEYS.to_string()]
                .map(str::to_owned)
                .to_vec()
        })
        .collect();
    for output in hammers(runs).await {
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

/// Processes starting together on a fresh schema: all connect, the schema is created once and
/// each migration recorded once (the advisory lock serializes them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_migrate_once() {
    let Some(server) = PostgresServer::start() else { return };
    let schema = unique_schema("together");
    let runs =
        (0..8).map(|worker| [&server.url(), &schema, "-", &worker.to_string(), "0", "0"].map(str::to_owned).to_vec());
    for output in hammers(runs.collect()).await {
        assert!(output.status.success(), "a process failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let applied =
        server.psql(&format!("SELECT string_agg(version::text, ',' ORDER BY version) FROM {schema}.lgadk_migrations"));
    assert_eq!(applied, "1,2,3");
    let store = PostgresStore::builder(server.url()).with_schema(&schema).connect().await.unwrap();
    assert!(store.create(NewSession::default()).await.is_ok());
}
