//! The shared conformance suite against a `PostgresStore` through PgBouncer in transaction
//! mode, with the prepared-statement cache off: one PostgreSQL and one `pgbouncer` per test
//! process, a schema per scenario.
#![cfg(all(feature = "postgres", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::Arc;

use lgadk_core::ManualClock;
use lgadk_core::testing::StoreFixture;
use lgadk_session::PostgresStore;
use lgadk_session::testing::{TestPooler, unique_schema};

const METADATA_LIMIT: usize = 1024;
const RETENTION: usize = 3;

async fn fixture() -> Option<StoreFixture> {
    let bouncer = &TestPooler::shared()?.pgbouncer;
    let clock = ManualClock::starting_now();
    let store = PostgresStore::builder(bouncer.url())
        .with_schema(unique_schema("bounced"))
        .with_statement_cache_capacity(0)
        .with_max_connections(8)
        .with_clock(clock.clone())
        .with_metadata_limit(METADATA_LIMIT)
        .with_checkpoint_retention(RETENTION)
        .connect()
        .await
        .expect("connect through pgbouncer");
    Some(StoreFixture::new(Arc::new(store), clock, METADATA_LIMIT, RETENTION))
}

lgadk_core::session_store_conformance!(fixture);
