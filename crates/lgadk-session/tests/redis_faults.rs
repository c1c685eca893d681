//! `RedisStore` when its server dies: calls fail fast with `Error::Backend`, the same store
//! works again after a restart, and with `appendfsync always` no acknowledged write is lost.
#![cfg(all(feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]
#![allow(clippy::print_stderr, reason = "reports what the fault test saw")]

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lgadk_core::{
    Checkpointer, Error, Interaction, Metadata, MetadataUpdate, NewSession, Page, SessionStore, Timeout, UserId,
};
use lgadk_session::RedisStore;
use lgadk_session::testing::RedisServer;

const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);
/// Scheduling slack on a loaded 2-core machine, on top of the response timeout.
const SLACK: Duration = Duration::from_millis(150);

struct Call {
    started: Instant,
    ended: Instant,
    result: lgadk_core::Result<()>,
}

async fn one_call(store: &RedisStore, id: &lgadk_core::SessionId, kind: usize) -> lgadk_core::Result<()> {
    let alice = UserId::parse("alice").unwrap();
    match kind % 7 {
        0 => store.track_interaction(id, Interaction::tokens(1, 1)).await.map(drop),
        1 => store.get(id).await.map(drop),
        2 => {
            let mut update = Metadata::new();
            update.insert(format!("k{kind}"), kind.into());
            store.update_metadata(id, MetadataUpdate::Merge(update)).await.map(drop)
        }
        3 => store.list_user_sessions(&alice, Page::first(5)).await.map(drop),
        4 => store.version(id).await.map(drop),
        5 => store.create(NewSession::for_user(alice)).await.map(drop),
        _ => store.purge_expired().await.map(drop),
    }
}

/// 32 tasks keep calling while the server is killed and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_server_fails_fast_and_the_same_store_recovers() {
    let Some(mut server) = RedisServer::start() else { return };
    let store = RedisStore::builder(server.url())
        .with_prefix("fault")
        .with_connection_timeout(RESPONSE_TIMEOUT)
        .with_response_timeout(RESPONSE_TIMEOUT)
        .connect()
        .await
        .unwrap();
    let id = store.create(NewSession::for_user(UserId::parse("alice").unwrap())).await.unwrap().id;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..32)
        .map(|task| {
            let (store, id, stop) = (store.clone(), id.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut calls = Vec::new();
                let mut n = task;
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let result = one_call(&store, &id, n).await;
                    calls.push(Call { started, ended: Instant::now(), result });
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                calls
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    server.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarting_at = Instant::now();
    tokio::task::block_in_place(|| server.restart());
    let back_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);

    let mut calls = Vec::new();
    for task in tasks {
        calls.extend(task.await.expect("no task panicked"));
    }
    let (mut before, mut down, mut after) = (0, 0, 0);
    for call in &calls {
        let took = call.ended - call.started;
        assert!(took <= RESPONSE_TIMEOUT + SLACK, "a call took {took:?}: {:?}", call.result);
        if let Err(err) = &call.result {
            match err {
                Error::Backend { backend: "redis", .. } => assert!(err.source().is_some()),
                // The restarted server has no data (no persistence): the old session is gone. A call
                // that waited on the reconnect may reach the new server.
                Error::SessionNotFound(_) => assert!(call.ended >= restarting_at, "{err:?}"),
                other => panic!("unexpected error {other:?}"),
            }
        }
        if call.ended < killed_at {
            assert!(call.result.is_ok(), "before the kill: {:?}", call.result);
            before += 1;
        } else if call.started >= killed_at && call.ended < restarting_at {
            assert!(matches!(call.result, Err(Error::Backend { .. })), "while down: {:?}", call.result);
            down += 1;
        } else if call.started >= back_at + Duration::from_millis(500) {
            assert!(!matches!(call.result, Err(Error::Backend { .. })), "after the restart: {:?}", call.result);
            after += 1;
        }
    }
    assert!(before >= 32 && down >= 32 && after >= 32, "calls before/down/after: {before}/{down}/{after}");
    let slowest = calls.iter().map(|call| call.ended - call.started).max().unwrap_or_default();
    eprintln!("calls before/down/after the kill: {before}/{down}/{after}; slowest call {slowest:?}");

    // The same store, not rebuilt, works again.
    let again = store.create(NewSession::default()).await.unwrap().id;
    assert_eq!(store.track_interaction(&again, Interaction::tokens(2, 3)).await.unwrap().interactions, 1);
}

/// With `appendonly yes` and `appendfsync always`, every acknowledged `track_interaction`
/// survives a crash (SIGKILL) and restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_interactions_survive_a_crash() {
    let Some(mut server) = RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]) else {
        return;
    };
    let store = RedisStore::builder(server.url())
        .with_prefix("durable")
        .with_response_timeout(RESPONSE_TIMEOUT)
        .connect()
        .await
        .unwrap();
    let id = store.create(NewSession::default().with_timeout(Timeout::Never)).await.unwrap().id;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let attempted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, id) = (store.clone(), id.clone());
            let (acknowledged, attempted) = (Arc::clone(&acknowledged), Arc::clone(&attempted));
            tokio::spawn(async move {
                loop {
                    attempted.fetch_add(1, Ordering::SeqCst);
                    match store.track_interaction(&id, Interaction::tokens(1, 2)).await {
                        Ok(_) => acknowledged.fetch_add(1, Ordering::SeqCst),
                        Err(_) => return,
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.kill();
    for task in tasks {
        task.await.unwrap();
    }
    tokio::task::block_in_place(|| server.restart());

    let started = Instant::now();
    let session = loop {
        match store.get(&id).await {
            Ok(session) => break session.expect("the session survived the crash"),
            Err(err) if started.elapsed() < Duration::from_secs(5) => drop(err),
            Err(err) => panic!("store did not come back: {err:?}"),
        }
    };
    let (acknowledged, attempted) = (acknowledged.load(Ordering::SeqCst), attempted.load(Ordering::SeqCst));
    let stats = session.stats;
    assert!(acknowledged > 0);
    assert!(
        (acknowledged..=attempted).contains(&stats.interactions),
        "acknowledged {acknowledged}, attempted {attempted}, stored {}",
        stats.interactions
    );
    assert_eq!((stats.total_tokens_in, stats.total_tokens_out), (stats.interactions, 2 * stats.interactions));
}
