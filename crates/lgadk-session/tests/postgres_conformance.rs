//! The shared conformance suite against a `PostgresStore`: each scenario in its own schema of
//! the test process's PostgreSQL (or of `LGADK_TEST_DATABASE_URL`).
#![cfg(all(feature = "postgres", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::Arc;

use lgadk_core::ManualClock;
use lgadk_core::testing::StoreFixture;
use lgadk_session::PostgresStore;
use lgadk_session::testing::{TestDatabase, unique_schema};

const METADATA_LIMIT: usize = 1024;
const RETENTION: usize = 3;

/// A fresh schema per scenario, and a store on it driven by a manual clock.
async fn fixture() -> Option<StoreFixture> {
    let database = TestDatabase::shared()?;
    let clock = ManualClock::starting_now();
    let store = PostgresStore::builder(database.url())
        .with_schema(unique_schema("conformance"))
        .with_max_connections(8)
        .with_clock(clock.clone())
        .with_metadata_limit(METADATA_LIMIT)
        .with_checkpoint_retention(RETENTION)
        .connect()
        .await
        .expect("connect to the test database");
    Some(StoreFixture::new(Arc::new(store), clock, METADATA_LIMIT, RETENTION))
}

lgadk_core::session_store_conformance!(fixture);
