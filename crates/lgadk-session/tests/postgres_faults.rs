//! `PostgresStore` under faults: the server stopped immediately under load, backends
//! terminated mid-run, a crash after acknowledged writes, and writes whose answer never came.
#![cfg(all(feature = "postgres", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lgadk_core::{Error, Interaction, NewSession, OpId, Outcome, SessionId, SessionStore, Timeout};
use lgadk_session::PostgresStore;
use lgadk_session::testing::{PostgresOptions, PostgresServer};
use sqlx::Connection;

const ACQUIRE: Duration = Duration::from_millis(500);
const STATEMENT: Duration = Duration::from_millis(800);

async fn store(server: &PostgresServer, schema: &str) -> PostgresStore {
    PostgresStore::builder(server.url())
        .with_schema(schema)
        .with_max_connections(8)
        .with_acquire_timeout(ACQUIRE)
        .with_statement_timeout(STATEMENT)
        .connect()
        .await
        .unwrap()
}

async fn session(store: &PostgresStore) -> SessionId {
    store.create(NewSession::default().with_timeout(Timeout::Never)).await.unwrap().id
}

/// Tracks `turn` until it is acknowledged, repeating it with its op id after any backend
/// failure (as `SessionManager` does after an unknown outcome): it counts once.
async fn track_until_acknowledged(store: &PostgresStore, id: &SessionId) {
    let turn = Interaction::tokens(1, 2).with_op_id(OpId::new());
    let started = Instant::now();
    loop {
        match store.track_interaction(id, turn.clone()).await {
            Ok(_) => return,
            Err(Error::Backend { .. }) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("track_interaction: {err:?}"),
        }
    }
}

/// `pg_ctl -m immediate` under load: every call in flight or made while the server is down
/// ends, within the timeouts, in a typed backend error (never a hang or a panic); after a
/// restart the same store works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn immediate_stop_under_load_fails_fast_and_the_same_store_recovers() {
    let Some(mut server) = PostgresServer::start() else { return };
    let store = Arc::new(store(&server, "stop").await);
    let id = session(&store).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let (store, id, stop, ok, failed) =
                (Arc::clone(&store), id.clone(), Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = if worker % 2 == 0 {
                        store.track_interaction(&id, Interaction::tokens(1, 1).with_op_id(OpId::new())).await.map(drop)
                    } else {
                        store.get(&id).await.map(drop)
                    };
                    slowest = slowest.max(started.elapsed());
                    match result {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(Error::Backend { backend: "postgres", .. }) => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(err) => panic!("not a backend error: {err:?}"),
                    };
                }
                slowest
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ok.load(Ordering::Relaxed);
    assert!(before > 0, "the load ran");
    let stopped = tokio::task::spawn_blocking(move || {
        server.stop_immediate();
        server
    });
    let mut server = stopped.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let failures = failed.load(Ordering::Relaxed);
    assert!(failures > 0, "calls failed while the server was down");
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let slowest = worker.await.unwrap();
        assert!(slowest < ACQUIRE + STATEMENT + Duration::from_secs(1), "a call took {slowest:?}");
    }

    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    track_until_acknowledged(&store, &id).await;
    assert!(store.get(&id).await.unwrap().is_some(), "the same store reads again");
    drop(server);
}

/// Backends terminated with `pg_terminate_backend` while calls run: the pool drops the dead
/// connections and opens new ones, and with op ids every interaction counts exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_backends_are_replaced_and_nothing_counts_twice() {
    let Some(server) = PostgresServer::start() else { return };
    let store = Arc::new(store(&server, "terminate").await);
    let id = session(&store).await;
    const TASKS: u64 = 6;
    const EACH: u64 = 150;
    let workers: Vec<_> = (0..TASKS)
        .map(|_| {
            let (store, id) = (Arc::clone(&store), id.clone());
            tokio::spawn(async move {
                for _ in 0..EACH {
                    track_until_acknowledged(&store, &id).await;
                }
            })
        })
        .collect();
    let mut killed = 0u64;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let n = server.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'lgadk' AND pid <> pg_backend_pid()",
        );
        killed += n.parse::<u64>().unwrap();
    }
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(killed > 0, "backends were terminated mid-run");
    let stats = store.get(&id).await.unwrap().unwrap().stats;
    assert_eq!(stats.interactions, TASKS * EACH, "every interaction once, {killed} backends terminated");
    assert_eq!(stats.total_tokens_out, 2 * TASKS * EACH);
}

/// With `fsync` on, what the store acknowledged survives an immediate stop (a crash of the
/// server) and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_an_immediate_stop() {
    let Some(mut server) = PostgresServer::start_with(PostgresOptions::default().durable()) else { return };
    let store = store(&server, "durable").await;
    let id = session(&store).await;
    for _ in 0..200 {
        store.track_interaction(&id, Interaction::tokens(1, 1)).await.unwrap();
    }
    let server = tokio::task::spawn_blocking(move || {
        server.stop_immediate();
        server.restart();
        server
    })
    .await
    .unwrap();
    let reopened = PostgresStore::builder(server.url()).with_schema("durable").connect().await.unwrap();
    let stats = reopened.get(&id).await.unwrap().unwrap().stats;
    assert_eq!(stats.interactions, 200);
}

/// A write whose answer never came (its row locked by another transaction past the statement
/// timeout) fails with `Outcome::Unknown`; the server applies it once the lock is released;
/// repeated with its op id, it counts once. A read that times out applied nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_writes_are_unknown_and_their_repeat_applies_once() {
    let Some(server) = PostgresServer::start() else { return };
    let store = store(&server, "unknown").await;
    let id = session(&store).await;
    let mut locker = sqlx::PgConnection::connect(&server.url()).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("SELECT 1 FROM unknown.sessions WHERE id = $1 FOR UPDATE")
        .bind(id.as_str())
        .execute(&mut locker)
        .await
        .unwrap();

    let turn = Interaction::tokens(3, 5).with_op_id(OpId::new());
    let started = Instant::now();
    let err = store.track_interaction(&id, turn.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Backend { outcome: Outcome::Unknown, .. }), "{err:?}");
    assert!(started.elapsed() < STATEMENT + Duration::from_millis(500));
    let plain = store.track_interaction(&id, Interaction::tokens(1, 1)).await.unwrap_err();
    assert_eq!(plain.outcome(), Some(Outcome::Unknown), "{plain:?}");

    sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
    // The first attempt may still be applied by the server: repeating it with its op id
    // counts it once whether it was or not.
    let mut stats = store.track_interaction(&id, turn.clone()).await.unwrap();
    for _ in 0..50 {
        if stats.interactions >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        stats = store.get(&id).await.unwrap().unwrap().stats;
    }
    assert_eq!(stats.total_tokens_out, 5 + 1, "the op-id write once, the plain one applied after all");
    let again = store.track_interaction(&id, turn).await.unwrap();
    assert_eq!(again.total_tokens_out, 6, "a later repeat changes nothing");
}

/// Connections ended while idle (`pg_terminate_backend`): with the idle check, the store pings
/// a connection idle past it and replaces it before a write goes out, so the write succeeds;
/// without it, a write without an op id sent on the ended connection has an unknown outcome
/// (the server may end a connection after committing), and the next call works on a new
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_ended_while_idle_are_replaced_before_a_write() {
    use lgadk_core::MetadataUpdate;
    let Some(server) = PostgresServer::start() else { return };
    for (schema, check) in [("checked", Duration::from_millis(100)), ("unchecked", Duration::MAX)] {
        let store = PostgresStore::builder(server.url())
            .with_schema(schema)
            .with_max_connections(1)
            .with_idle_check(check)
            .connect()
            .await
            .unwrap();
        let id = session(&store).await;
        server.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'lgadk'");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let merge = || MetadataUpdate::Merge(lgadk_core::metadata! {"k" => 1});
        let written = store.update_metadata(&id, merge()).await;
        if schema == "checked" {
            assert!(written.is_ok(), "{written:?}");
        } else {
            assert!(matches!(written, Err(Error::Backend { outcome: Outcome::Unknown, .. })), "{written:?}");
            assert!(store.update_metadata(&id, merge()).await.is_ok(), "the next call uses a new connection");
        }
    }
}

/// A server that closes idle connections itself (`idle_session_timeout`) says so: a write sent
/// on such a connection never ran, so it is sent again on a new one and succeeds, even without
/// an op id and without the idle check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_connections_the_server_closed_for_idleness_are_sent_again() {
    use lgadk_core::MetadataUpdate;
    let options = PostgresOptions::default().setting("idle_session_timeout=300ms");
    let Some(server) = PostgresServer::start_with(options) else { return };
    let store = PostgresStore::builder(server.url())
        .with_schema("idle")
        .with_max_connections(1)
        .with_idle_check(Duration::MAX)
        .connect()
        .await
        .unwrap();
    let id = session(&store).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let merged = store.update_metadata(&id, MetadataUpdate::Merge(lgadk_core::metadata! {"k" => 1})).await.unwrap();
    assert_eq!(merged["k"], 1);
}
