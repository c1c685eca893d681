//! `RedisStore` when its server dies, hangs or drops connections: calls fail fast with
//! `Error::Backend` saying whether they applied anything, the same store works again after a
//! restart, the first call after the server closed a connection succeeds, writes repeated with
//! their op id count once, and with `appendfsync always` no acknowledged write is lost.
#![cfg(all(feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]
#![allow(clippy::print_stderr, reason = "reports what the fault test saw")]

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lgadk_core::{
    Checkpointer, Error, Interaction, Message, Metadata, MetadataUpdate, NewCheckpoint, NewSession, OpId, Outcome,
    Page, SessionId, SessionStore, Timeout, TurnCommit, TurnStore, UserId,
};
use lgadk_session::testing::RedisServer;
use lgadk_session::{RedisStore, SessionManager};

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

/// Eight writers track interactions through a `SessionManager` while the server is frozen
/// (SIGSTOP) for three response timeouts and then continued. Every call whose outcome is
/// unknown (the manager's own repeat included) is repeated by its caller with the same op id
/// until it is acknowledged: the stored totals equal the acknowledged calls exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_repeated_with_their_op_id_count_once_across_a_frozen_server() {
    const WRITERS: usize = 8;
    const CALLS: u64 = 25;
    let Some(server) = RedisServer::start() else { return };
    let store = RedisStore::builder(server.url())
        .with_prefix("frozen")
        .with_response_timeout(RESPONSE_TIMEOUT)
        .connect()
        .await
        .unwrap();
    let manager = SessionManager::new(store.clone());
    let id = store.create(NewSession::default().with_timeout(Timeout::Never)).await.unwrap().id;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let unknown = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (manager, id) = (manager.clone(), id.clone());
            let (acknowledged, unknown) = (Arc::clone(&acknowledged), Arc::clone(&unknown));
            tokio::spawn(async move {
                for _ in 0..CALLS {
                    let turn = Interaction::tokens(1, 2).with_op_id(OpId::new());
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        assert!(attempts <= 40, "a call was never acknowledged");
                        match manager.record_interaction(&id, turn.clone()).await {
                            Ok(_) => break,
                            Err(err) if err.outcome() == Some(Outcome::Unknown) => {
                                assert!(!err.is_retryable(), "an unknown outcome is not blindly retryable");
                                unknown.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(err) => panic!("unexpected error {err:?}"),
                        }
                    }
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.pause();
    tokio::time::sleep(RESPONSE_TIMEOUT * 3).await;
    server.resume();
    for writer in writers {
        writer.await.expect("no writer panicked");
    }
    let stats = store.get(&id).await.unwrap().unwrap().stats;
    let (acknowledged, unknown) = (acknowledged.load(Ordering::SeqCst), unknown.load(Ordering::SeqCst));
    eprintln!("acknowledged {acknowledged}, stored {}, unknown outcomes repeated {unknown}", stats.interactions);
    assert_eq!(acknowledged, WRITERS as u64 * CALLS);
    assert!(unknown > 0, "the frozen server left some outcomes unknown");
    assert_eq!(stats.interactions, acknowledged, "applied exactly once each");
    assert_eq!((stats.total_tokens_in, stats.total_tokens_out), (acknowledged, 2 * acknowledged));
}

/// A frozen server: a write fails with `Outcome::Unknown` after the timeout, a read with
/// `NotApplied`; the write, never repeated, is applied once the server continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_writes_are_unknown_and_unanswered_reads_applied_nothing() {
    let Some(server) = RedisServer::start() else { return };
    let store = RedisStore::builder(server.url()).with_response_timeout(RESPONSE_TIMEOUT).connect().await.unwrap();
    let id = store.create(NewSession::default().with_timeout(Timeout::Never)).await.unwrap().id;
    server.pause();
    let write = store.track_interaction(&id, Interaction::tokens(1, 1)).await.unwrap_err();
    let read = store.get(&id).await.unwrap_err();
    server.resume();
    assert!(matches!(write, Error::Backend { outcome: Outcome::Unknown, .. }), "{write:?}");
    assert!(!write.is_retryable());
    assert!(matches!(read, Error::Backend { outcome: Outcome::NotApplied, .. }), "{read:?}");
    assert!(read.is_retryable());
    let stats = store.get(&id).await.unwrap().unwrap().stats;
    assert_eq!(stats.interactions, 1, "the unanswered write was applied after all");
}

async fn reconnect_fixture(server: &RedisServer) -> (RedisStore, SessionId) {
    let store = RedisStore::builder(server.url()).with_response_timeout(RESPONSE_TIMEOUT).connect().await.unwrap();
    let id = store.create(NewSession::default().with_timeout(Timeout::Never)).await.unwrap().id;
    (store, id)
}

/// A write that is never sent twice (`update_metadata`) as the first call on a connection the
/// server has closed: it must go out on a new connection.
async fn first_call_succeeds(store: &RedisStore, id: &SessionId, cause: &str) {
    let mut update = Metadata::new();
    update.insert("after".into(), cause.into());
    let first = store.update_metadata(id, MetadataUpdate::Merge(update)).await;
    assert!(first.is_ok(), "first call after {cause}: {first:?}");
    assert_eq!(store.track_interaction(id, Interaction::tokens(1, 1)).await.unwrap().interactions, 1);
}

/// The server closes idle connections (`timeout 1`): the next call reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_call_after_the_server_closed_an_idle_connection_succeeds() {
    let Some(server) = RedisServer::start() else { return };
    let (store, id) = reconnect_fixture(&server).await;
    let before = connections_received(&server);
    server.command(&["CONFIG", "SET", "timeout", "1"]).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    first_call_succeeds(&store, &id, "an idle timeout").await;
    // Two of the new connections are this test's own commands (CONFIG SET, INFO); the third is
    // the store's reconnect.
    assert!(connections_received(&server) >= before + 3, "the server did close the idle connection");
}

/// `CLIENT KILL TYPE normal` closes the store's connection: the next call reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_call_after_client_kill_succeeds() {
    let Some(server) = RedisServer::start() else { return };
    let (store, id) = reconnect_fixture(&server).await;
    let killed: u64 = server.command(&["CLIENT", "KILL", "TYPE", "normal"]).unwrap().parse().unwrap();
    assert!(killed >= 1, "the store's connection was killed");
    tokio::time::sleep(Duration::from_millis(50)).await;
    first_call_succeeds(&store, &id, "CLIENT KILL").await;
}

/// A restart on the same port (with the data kept on disk): the next call reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_call_after_a_restart_succeeds() {
    let Some(mut server) = RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]) else {
        return;
    };
    let (store, id) = reconnect_fixture(&server).await;
    tokio::task::block_in_place(|| server.restart());
    first_call_succeeds(&store, &id, "a restart").await;
}

fn connections_received(server: &RedisServer) -> u64 {
    let info = server.command(&["INFO", "stats"]).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// `(calls, failed or rejected calls)` of one command in `INFO commandstats`.
fn command_stats(server: &RedisServer, name: &str) -> (u64, u64) {
    let stats = server.command(&["INFO", "commandstats"]).unwrap();
    let Some(line) = stats.lines().find_map(|line| line.strip_prefix(&format!("cmdstat_{name}:"))) else {
        return (0, 0);
    };
    let field = |key: &str| -> u64 {
        line.split(',').find_map(|part| part.strip_prefix(&format!("{key}="))).map_or(0, |v| v.parse().unwrap())
    };
    (field("calls"), field("failed_calls") + field("rejected_calls"))
}

/// `(EVALSHA calls, failed EVALSHA, SCRIPT LOAD calls)` since the last `CONFIG RESETSTAT`.
fn script_stats(server: &RedisServer) -> (u64, u64, u64) {
    let (evalsha, failed) = command_stats(server, "evalsha");
    (evalsha, failed, command_stats(server, "script|load").0)
}

/// One graph turn on an existing session: read it with its checkpoint version, commit the
/// checkpoint with the interaction.
async fn turn(store: &RedisStore, id: &SessionId, version: u64) {
    let start = store.begin_turn(id, Some(version)).await.unwrap().unwrap();
    assert_eq!((start.version, start.latest), (version, None));
    store.commit_turn(id, commit(version)).await.unwrap();
}

/// A turn's commit on `version`: a checkpoint with one message, an interaction.
fn commit(version: u64) -> TurnCommit {
    let checkpoint =
        NewCheckpoint { step: version + 1, messages: vec![Message::user("q")], ..NewCheckpoint::default() };
    TurnCommit {
        checkpoint: checkpoint.with_op_id(OpId::new()),
        expected_version: version,
        interaction: Some(Interaction::tokens(1, 1).with_op_id(OpId::new())),
        merge_metadata: None,
    }
}

/// A turn's commit left unanswered by a frozen server is `Unknown`; repeated with the same op
/// ids once the server answers, it is applied once: one checkpoint, one message, one
/// interaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_turn_commit_repeated_with_its_op_ids_applies_once() {
    let Some(server) = RedisServer::start() else { return };
    let store = RedisStore::builder(server.url()).with_response_timeout(RESPONSE_TIMEOUT).connect().await.unwrap();
    let id = store.create(NewSession::default().with_timeout(Timeout::Never)).await.unwrap().id;
    let first = commit(0);
    server.pause();
    let err = store.commit_turn(&id, first.clone()).await.unwrap_err();
    server.resume();
    assert!(matches!(err, Error::Backend { outcome: Outcome::Unknown, .. }), "{err:?}");
    let saved = store.commit_turn(&id, first).await.expect("the repeat succeeds instead of conflicting");
    assert_eq!((saved.checkpoint.version, saved.checkpoint.log_len), (1, 1));
    assert_eq!(saved.stats.map(|stats| stats.interactions), Some(1));
    assert_eq!(store.version(&id).await.unwrap(), 1);
    assert_eq!(store.messages(&id, 0..10).await.unwrap().len(), 1);
    assert_eq!(store.get(&id).await.unwrap().unwrap().stats.interactions, 1);
}

/// Scripts are loaded when the store connects and again when it reconnects: the first turn on
/// a fresh or restarted server is two EVALSHA and nothing else, like any later turn, and no
/// EVALSHA fails with NOSCRIPT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_turn_on_a_fresh_or_restarted_server_costs_what_a_later_one_does() {
    let Some(mut server) = RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]) else {
        return;
    };
    let (store, id) = reconnect_fixture(&server).await;
    let mut measured = Vec::new();
    for version in 0..2 {
        server.command(&["CONFIG", "RESETSTAT"]).unwrap();
        turn(&store, &id, version).await;
        measured.push(script_stats(&server));
    }
    tokio::task::block_in_place(|| server.restart());
    // The store reconnects on its own and loads every script; wait until it has.
    let started = Instant::now();
    while command_stats(&server, "script|load").0 == 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "the store did not reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for version in 2..4 {
        server.command(&["CONFIG", "RESETSTAT"]).unwrap();
        turn(&store, &id, version).await;
        measured.push(script_stats(&server));
    }
    eprintln!("(EVALSHA calls, failed EVALSHA, SCRIPT LOAD calls) per turn: {measured:?}");
    assert_eq!(measured, [(2, 0, 0); 4], "fresh, later, after a restart, later");

    // A turn that races the reconnect still meets no NOSCRIPT: the scripts are loaded, in one
    // pipeline, before the connection is used.
    tokio::task::block_in_place(|| server.restart());
    server.command(&["CONFIG", "RESETSTAT"]).unwrap();
    turn(&store, &id, 4).await;
    let (evalsha, failed, _) = script_stats(&server);
    assert_eq!((evalsha, failed), (2, 0));
}
