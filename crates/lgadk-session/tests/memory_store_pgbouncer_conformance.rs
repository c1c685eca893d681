//! The memory conformance suite against a `PostgresMemoryStore` through PgBouncer in
//! transaction mode with the prepared-statement cache off: every statement is one simple query.
#![cfg(all(feature = "postgres", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::Arc;

use lgadk_core::ManualClock;
use lgadk_core::memory::EmbedFields;
use lgadk_core::memory::testing::{MemoryFixture, TestEmbedder};
use lgadk_session::testing::{TestPooler, unique_schema};
use lgadk_session::{PostgresMemoryStore, PostgresStore};

async fn fixture() -> Option<MemoryFixture> {
    let bouncer = &TestPooler::shared()?.pgbouncer;
    let clock = ManualClock::starting_now();
    let connect = || {
        PostgresStore::builder(bouncer.url())
            .with_schema(unique_schema("memory_bounced"))
            .with_statement_cache_capacity(0)
            .with_max_connections(8)
            .with_clock(clock.clone())
            .connect()
    };
    let plain = connect().await.expect("connect through pgbouncer");
    let semantic = connect().await.expect("connect through pgbouncer");
    let embedder = TestEmbedder::new();
    let store = PostgresMemoryStore::on(&plain).build();
    let semantic =
        PostgresMemoryStore::on(&semantic).with_embedder(Arc::new(embedder.clone()), EmbedFields::Whole).build();
    Some(MemoryFixture::new(Arc::new(store), Arc::new(semantic), embedder, clock))
}

lgadk_core::memory_store_conformance!(fixture);
