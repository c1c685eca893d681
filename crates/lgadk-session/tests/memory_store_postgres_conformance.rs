//! The memory conformance suite against a `PostgresMemoryStore`: each scenario in its own
//! schema of the test process's PostgreSQL (or of `LGADK_TEST_DATABASE_URL`).
#![cfg(all(feature = "postgres", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::Arc;

use lgadk_core::ManualClock;
use lgadk_core::memory::EmbedFields;
use lgadk_core::memory::testing::{MemoryFixture, TestEmbedder};
use lgadk_session::testing::{TestDatabase, unique_schema};
use lgadk_session::{PostgresMemoryStore, PostgresStore};

/// Two fresh schemas per scenario (the plain and the semantic store), on a manual clock.
async fn fixture() -> Option<MemoryFixture> {
    let database = TestDatabase::shared()?;
    let clock = ManualClock::starting_now();
    let connect = || {
        PostgresStore::builder(database.url())
            .with_schema(unique_schema("memory"))
            .with_max_connections(8)
            .with_clock(clock.clone())
            .connect()
    };
    let plain = connect().await.expect("connect to the test database");
    let semantic = connect().await.expect("connect to the test database");
    let embedder = TestEmbedder::new();
    let store = PostgresMemoryStore::on(&plain).build();
    let semantic =
        PostgresMemoryStore::on(&semantic).with_embedder(Arc::new(embedder.clone()), EmbedFields::Whole).build();
    Some(MemoryFixture::new(Arc::new(store), Arc::new(semantic), embedder, clock))
}

lgadk_core::memory_store_conformance!(fixture);
