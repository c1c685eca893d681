//! `PostgresMemoryStore` beyond the shared suite: one statement in one round trip per
//! operation (prepared, and as simple queries with the statement cache off), and damaged rows
//! reported as such.
#![cfg(all(feature = "postgres", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::time::Duration;

use lgadk_core::memory::{ListRequest, MemoryKey, MemoryStore, Namespace, SearchRequest};
use lgadk_core::serde_json::json;
use lgadk_core::{Error, ManualClock};
use lgadk_session::testing::{PostgresServer, WireCounter, WireCounts};
use lgadk_session::{PostgresMemoryStore, PostgresStore};

fn ns(segments: &[&str]) -> Namespace {
    Namespace::new(segments).unwrap()
}

fn key(raw: &str) -> MemoryKey {
    MemoryKey::parse(raw).unwrap()
}

/// Every operation is one statement in one round trip, whether prepared (measured on the
/// second round, once each statement is prepared) or sent as a simple query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_one_statement_in_one_round_trip() {
    let Some(server) = PostgresServer::start() else { return };
    for (schema, cache) in [("prepared", None), ("simple", Some(0))] {
        let wire = WireCounter::start(server.port());
        let mut builder =
            PostgresStore::builder(wire.url_for(&server.url())).with_schema(schema).with_max_connections(1);
        if let Some(capacity) = cache {
            builder = builder.with_statement_cache_capacity(capacity);
        }
        let memory = PostgresMemoryStore::on(&builder.connect().await.unwrap()).build();
        let space = ns(&["users", "alice"]);
        let mut measured = 0;
        for round in 0..2 {
            let mut counts = Vec::new();
            wire.take();
            memory.put(&space, &key("k"), json!({"kind": "pref"}), Some(Duration::from_secs(60))).await.unwrap();
            counts.push(("put", wire.take()));
            memory.get(&space, &key("k")).await.unwrap();
            counts.push(("get", wire.take()));
            memory.list(ListRequest::under(space.clone())).await.unwrap();
            counts.push(("list", wire.take()));
            let request = SearchRequest::under(space.clone()).with_filter(json!({"kind": "pref"})).with_query("pref");
            assert_eq!(memory.search(request).await.unwrap().len(), 1);
            counts.push(("search", wire.take()));
            memory.delete(&space, &key("k")).await.unwrap();
            counts.push(("delete", wire.take()));
            memory.purge_expired().await.unwrap();
            counts.push(("purge_expired", wire.take()));
            if round == 1 {
                for (what, count) in counts {
                    assert_eq!(count, WireCounts { round_trips: 1, statements: 1, prepares: 0 }, "{schema}: {what}");
                    measured += 1;
                }
            }
        }
        assert_eq!(measured, 6);
    }
}

/// A row that does not decode is `CorruptMemory` naming the item; it can still be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_row_is_corrupt() {
    let Some(server) = PostgresServer::start() else { return };
    let clock = ManualClock::starting_now();
    let store = PostgresStore::builder(server.url()).with_schema("damaged").with_clock(clock).connect().await.unwrap();
    let memory = PostgresMemoryStore::on(&store).build();
    let space = ns(&["users", "bob"]);
    memory.put(&space, &key("ok"), json!(1), None).await.unwrap();
    server.psql(
        "INSERT INTO damaged.memory_items (namespace, key, value, created_ms, updated_ms) \
         VALUES (E'users\\x1fbob', E'bad\\x01key', '1', 0, 0)",
    );
    let err = memory.list(ListRequest::under(space.clone())).await.unwrap_err();
    assert!(
        matches!(&err, Error::CorruptMemory { namespace, key, .. } if namespace == "users/bob" && key == "bad\u{1}key"),
        "{err:?}"
    );
    server.psql("DELETE FROM damaged.memory_items WHERE key <> 'ok'");
    assert_eq!(memory.list(ListRequest::under(space)).await.unwrap().items.len(), 1);
}
