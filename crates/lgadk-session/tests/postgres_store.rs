//! `PostgresStore` on the test process's PostgreSQL: what the shared suite cannot see
//! (migrations, schema isolation, settings, damaged data, round trips per operation, purge).
#![cfg(all(feature = "postgres", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::error::Error as _;
use std::time::Duration;

use lgadk_core::{
    Checkpointer, Error, Interaction, ManualClock, Message, MetadataUpdate, NewCheckpoint, NewSession, OpId, Outcome,
    Page, SessionId, SessionStore, Timeout, UserId,
};
use lgadk_session::testing::{PostgresServer, TestDatabase, WireCounter, WireCounts, unique_schema};
use lgadk_session::{PostgresStore, SessionManager};
use serde_json::json;

async fn store_on(url: String, schema: &str, clock: ManualClock) -> PostgresStore {
    PostgresStore::builder(url).with_schema(schema).with_clock(clock).connect().await.unwrap()
}

fn psql(sql: &str) -> Option<String> {
    match TestDatabase::shared()? {
        TestDatabase::Owned(server) => Some(server.psql(sql)),
        // Only the owned server can be inspected with psql here.
        _ => None,
    }
}

/// Many pools connecting at once to a fresh schema apply each migration exactly once: the
/// advisory lock serializes them, and the later ones find the schema migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_connecting_together_migrate_once() {
    let Some(database) = TestDatabase::shared() else { return };
    let schema = unique_schema("migrate");
    let connects = (0..8).map(|_| {
        let (url, schema) = (database.url(), schema.clone());
        tokio::spawn(async move { PostgresStore::builder(url).with_schema(schema).connect().await })
    });
    let stores: Vec<PostgresStore> =
        futures_join(connects).await.into_iter().map(|joined| joined.unwrap().unwrap()).collect();
    assert_eq!(stores.len(), 8);
    // Every store works on the one schema.
    let id = stores[0].create(NewSession::default()).await.unwrap().id;
    assert!(stores[7].exists(&id).await.unwrap());
    if let Some(rows) = psql(&format!("SELECT version, count(*) OVER () FROM {schema}.lgadk_migrations ORDER BY 1")) {
        assert_eq!(rows, "1|3\n2|3\n3|3", "one row per migration");
    }
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await);
    }
    out
}

/// A schema migrated by a newer lgadk is refused, and nothing is written to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_version_is_refused() {
    let Some(database) = TestDatabase::shared() else { return };
    let schema = unique_schema("newer");
    drop(store_on(database.url(), &schema, ManualClock::starting_now()).await);
    let Some(_) = psql(&format!("INSERT INTO {schema}.lgadk_migrations (version, description) VALUES (999, 'future')"))
    else {
        return;
    };
    let err = PostgresStore::builder(database.url()).with_schema(&schema).connect().await.unwrap_err();
    assert!(matches!(err, Error::Backend { outcome: Outcome::NotApplied, .. }), "{err:?}");
    assert!(format!("{:?}", err.source()).contains("999"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_before_anything_is_sent() {
    for schema in ["", "Upper", "9lives", "a-b", "x;drop table y"] {
        let err = PostgresStore::builder("postgres://nobody@127.0.0.1:1/db").with_schema(schema).connect().await;
        assert!(matches!(err, Err(Error::InvalidConfig { .. })), "{schema}: {err:?}");
    }
    let err = PostgresStore::builder("not a url").connect().await;
    assert!(matches!(err, Err(Error::InvalidConfig { .. })), "{err:?}");
}

/// Nothing listens: `connect` fails within the acquire timeout, as a backend error that
/// applied nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_fails_fast_with_a_typed_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let err = PostgresStore::builder(format!("postgres://lgadk@127.0.0.1:{port}/postgres"))
        .with_acquire_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend { outcome: Outcome::NotApplied, .. }), "{err:?}");
    assert!(err.source().is_some());
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

/// Two schemas in one database are two stores: neither sees the other's sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_isolate_stores() {
    let Some(database) = TestDatabase::shared() else { return };
    let clock = ManualClock::starting_now();
    let a = store_on(database.url(), &unique_schema("iso_a"), clock.clone()).await;
    let b = store_on(database.url(), &unique_schema("iso_b"), clock).await;
    let alice = UserId::parse("alice").unwrap();
    let id = SessionId::parse("shared-id").unwrap();
    a.create(NewSession::for_user(alice.clone()).with_id(id.clone())).await.unwrap();
    assert!(b.get(&id).await.unwrap().is_none());
    b.create(NewSession::for_user(alice.clone()).with_id(id.clone())).await.unwrap();
    a.track_interaction(&id, Interaction::tokens(1, 2)).await.unwrap();
    assert_eq!(b.get(&id).await.unwrap().unwrap().stats.interactions, 0);
    assert_eq!(a.list_user_sessions(&alice, Page::first(10)).await.unwrap().ids, std::slice::from_ref(&id));
    assert!(a.end(&id).await.unwrap());
    assert!(b.exists(&id).await.unwrap());
}

/// Stored data lgadk did not write (a metadata document that is not an object, a negative
/// counter, a checkpoint state that is not JSON for its type) fails as `Corrupt` naming the
/// session; writes to it change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_are_corrupt_not_a_panic() {
    let Some(database) = TestDatabase::shared() else { return };
    let schema = unique_schema("corrupt");
    let store = store_on(database.url(), &schema, ManualClock::starting_now()).await;
    let id = store.create(NewSession::default()).await.unwrap().id;
    let cp = NewCheckpoint { state: json!({"ok": true}), messages: vec![Message::user("hi")], ..Default::default() };
    store.put(&id, cp, 0).await.unwrap();
    let Some(_) = psql(&format!("UPDATE {schema}.sessions SET metadata = '[1, 2]'::jsonb WHERE id = '{id}'")) else {
        return;
    };
    let err = store.get(&id).await.unwrap_err();
    assert!(matches!(&err, Error::Corrupt { id: bad, .. } if *bad == id), "{err:?}");

    psql(&format!("UPDATE {schema}.sessions SET metadata = '{{}}'::jsonb, interactions = -1 WHERE id = '{id}'"));
    assert!(matches!(store.get(&id).await, Err(Error::Corrupt { .. })));
    psql(&format!("UPDATE {schema}.sessions SET interactions = 0 WHERE id = '{id}'"));

    psql(&format!("UPDATE {schema}.messages SET body = '{{\"not\": \"a message\"}}'::json WHERE session_id = '{id}'"));
    assert!(matches!(store.messages(&id, 0..10).await, Err(Error::Corrupt { .. })));
    assert!(store.get(&id).await.unwrap().is_some(), "the session itself still reads");
}

/// Every operation is one round trip on a connection that has its statement prepared, and one
/// statement: counted on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_one_statement_in_one_round_trip() {
    let Some(server) = PostgresServer::start() else { return };
    let wire = WireCounter::start(server.port());
    let store = PostgresStore::builder(wire.url_for(&server.url()))
        .with_schema("ops")
        .with_max_connections(1)
        .connect()
        .await
        .unwrap();
    let alice = UserId::parse("alice").unwrap();
    let mut op = 0u64;
    // Twice: the first round prepares each statement on the connection, the second is measured.
    for round in 0..2 {
        let id = store.create(NewSession::for_user(alice.clone()).with_op_id(OpId::new())).await.unwrap().id;
        let mut counts = Vec::new();
        let mut step = |what: &'static str, wire: &WireCounter| counts.push((what, wire.take()));
        wire.take();
        store.get(&id).await.unwrap();
        step("get", &wire);
        store.exists(&id).await.unwrap();
        step("exists", &wire);
        store.track_interaction(&id, Interaction::tokens(1, 1).with_op_id(OpId::new())).await.unwrap();
        step("track_interaction", &wire);
        store.touch(&id).await.unwrap();
        step("touch", &wire);
        store.update_metadata(&id, MetadataUpdate::Merge(lgadk_core::metadata! {"a" => 1})).await.unwrap();
        step("update_metadata", &wire);
        store.list_user_sessions(&alice, Page::first(10)).await.unwrap();
        step("list_user_sessions", &wire);
        store.version(&id).await.unwrap();
        step("version", &wire);
        store.put(&id, NewCheckpoint::default(), 0).await.unwrap();
        step("put", &wire);
        store.latest(&id).await.unwrap();
        step("latest", &wire);
        store.messages(&id, 0..10).await.unwrap();
        step("messages", &wire);
        store.delete(&id).await.unwrap();
        step("delete", &wire);
        store.purge_expired().await.unwrap();
        step("purge_expired", &wire);
        store.end(&id).await.unwrap();
        step("end", &wire);
        store.create(NewSession::default()).await.unwrap();
        step("create", &wire);
        if round == 1 {
            for (what, count) in counts {
                assert_eq!(count, WireCounts { round_trips: 1, statements: 1, prepares: 0 }, "{what}");
                op += 1;
            }
        }
    }
    assert_eq!(op, 14);
}

/// Purge deletes what expired and re-files what was extended since it was filed, so a second
/// purge finds nothing due; its cost follows what came due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_refiles_extended_sessions() {
    let Some(database) = TestDatabase::shared() else { return };
    let schema = unique_schema("purge");
    let clock = ManualClock::starting_now();
    let store = store_on(database.url(), &schema, clock.clone()).await;
    let short = || NewSession::default().with_timeout(Timeout::After(Duration::from_secs(10)));
    let stays = store.create(short()).await.unwrap().id;
    let goes = store.create(short()).await.unwrap().id;
    let never = store.create(NewSession::default().with_timeout(Timeout::Never)).await.unwrap().id;
    clock.advance(Duration::from_secs(8));
    store.touch(&stays).await.unwrap();
    clock.advance(Duration::from_secs(5));
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    assert!(!store.exists(&goes).await.unwrap());
    assert!(store.exists(&stays).await.unwrap());
    assert!(store.exists(&never).await.unwrap());
    if let Some(filed) =
        psql(&format!("SELECT filed_deadline_ms - last_active_ms FROM {schema}.sessions WHERE id = '{stays}'"))
    {
        assert_eq!(filed, "10000", "re-filed under its current deadline");
    }
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    clock.advance(Duration::from_secs(11));
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    assert!(store.exists(&never).await.unwrap());
}

/// `SessionManager::postgres` connects with the defaults (schema `lgadk`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_manager_postgres_connects() {
    let Some(server) = PostgresServer::start() else { return };
    let sessions = SessionManager::postgres(&server.url()).await.unwrap();
    let id = sessions.create_session("alice", lgadk_core::metadata! {"plan" => "pro"}).await.unwrap();
    sessions.track_interaction(&id, 3, 4, Duration::from_millis(5)).await.unwrap();
    assert_eq!(sessions.get_session(&id).await.unwrap().unwrap().stats.total_tokens_out, 4);
    assert_eq!(server.psql("SELECT count(*) FROM lgadk.sessions"), "1");
}

/// U+0000: graph states and logged messages keep it (stored as `json` text); metadata, stored
/// as `jsonb`, cannot hold it, so such a write fails as a backend error that applied nothing
/// and the stored metadata stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_round_trip_in_states_and_fail_cleanly_in_metadata() {
    let Some(database) = TestDatabase::shared() else { return };
    for prepare in [true, false] {
        let mut builder = PostgresStore::builder(database.url()).with_schema(unique_schema("nul"));
        if !prepare {
            builder = builder.with_statement_cache_capacity(0);
        }
        let store = builder.connect().await.unwrap();
        let id =
            store.create(NewSession::default().with_metadata(lgadk_core::metadata! {"k" => "v"})).await.unwrap().id;
        let cp = NewCheckpoint {
            state: json!({"text": "a\u{0}b"}),
            messages: vec![Message::user("nul \u{0} here")],
            ..Default::default()
        };
        store.put(&id, cp, 0).await.unwrap();
        assert_eq!(store.latest(&id).await.unwrap().unwrap().state, json!({"text": "a\u{0}b"}));
        assert_eq!(store.messages(&id, 0..1).await.unwrap()[0].content, "nul \u{0} here");

        let err = store.update_metadata(&id, MetadataUpdate::Merge(lgadk_core::metadata! {"k" => "x\u{0}"})).await;
        assert!(matches!(err, Err(Error::Backend { outcome: Outcome::NotApplied, .. })), "{err:?}");
        assert_eq!(store.get(&id).await.unwrap().unwrap().metadata["k"], "v");
    }
}

/// With migrations off, `connect` changes nothing: it refuses a schema that is missing or not
/// migrated, and connects to one a migrating connect prepared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_migrations_off_connect_only_checks_the_schema() {
    let Some(database) = TestDatabase::shared() else { return };
    let schema = unique_schema("nomigrate");
    let refused = PostgresStore::builder(database.url()).with_schema(&schema).with_migrations(false).connect().await;
    assert!(matches!(refused, Err(Error::Backend { outcome: Outcome::NotApplied, .. })), "{refused:?}");
    if let Some(found) = psql(&format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'")) {
        assert_eq!(found, "0", "nothing was created");
    }
    drop(store_on(database.url(), &schema, ManualClock::starting_now()).await);
    let store =
        PostgresStore::builder(database.url()).with_schema(&schema).with_migrations(false).connect().await.unwrap();
    assert!(store.create(NewSession::default()).await.is_ok());
}

/// Regression: the harness stopped `pgbouncer` with SIGQUIT, which it ignores, so every
/// per-process pooler outlived its test process. Dropped, a pooler and a server are gone at
/// once, their directories with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_servers_and_poolers_stop_at_once() {
    use lgadk_session::testing::PgBouncer;
    let Some(server) = PostgresServer::start() else { return };
    let Some(bouncer) = PgBouncer::start(&server) else { return };
    let running = |pid: u32| {
        std::process::Command::new("kill").args(["-0", &pid.to_string()]).status().is_ok_and(|s| s.success())
    };
    let (server_pid, bouncer_pid) = (server.pid().unwrap(), bouncer.pid().unwrap());
    let dir = server.dir().to_owned();
    assert!(running(server_pid) && running(bouncer_pid));
    let started = std::time::Instant::now();
    drop(bouncer);
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(5), "stopping took {:?}", started.elapsed());
    assert!(!running(bouncer_pid), "pgbouncer still runs");
    assert!(!running(server_pid), "postgres still runs");
    assert!(!dir.exists(), "its directory is removed");
}
