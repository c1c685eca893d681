//! The shared conformance suite against a `RedisStore` on its own single `redis-server`.
#![cfg(all(feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::Arc;

use lgadk_core::ManualClock;
use lgadk_core::testing::StoreFixture;
use lgadk_session::RedisStore;
use lgadk_session::testing::RedisServer;

const METADATA_LIMIT: usize = 1024;
const RETENTION: usize = 3;

/// A fresh server per scenario, and a store on it driven by a manual clock.
async fn fixture() -> Option<StoreFixture> {
    let server = RedisServer::start()?;
    let clock = ManualClock::starting_now();
    let store = RedisStore::builder(server.url())
        .with_prefix("conformance")
        .with_clock(clock.clone())
        .with_metadata_limit(METADATA_LIMIT)
        .with_checkpoint_retention(RETENTION)
        .connect()
        .await
        .expect("connect to the test server");
    Some(StoreFixture::new(Arc::new(store), clock, METADATA_LIMIT, RETENTION).with_keep_alive(server))
}

lgadk_core::session_store_conformance!(fixture);
