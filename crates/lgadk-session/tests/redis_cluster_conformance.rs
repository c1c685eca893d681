//! The shared conformance suite against a `RedisStore` on its own 3-master Redis Cluster.
#![cfg(all(feature = "redis-cluster", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::Arc;

use lgadk_core::ManualClock;
use lgadk_core::testing::StoreFixture;
use lgadk_session::RedisStore;
use lgadk_session::testing::RedisCluster;

const METADATA_LIMIT: usize = 1024;
const RETENTION: usize = 3;

/// A fresh cluster per scenario, and a store on it driven by a manual clock.
async fn fixture() -> Option<StoreFixture> {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.expect("start the cluster")?;
    let clock = ManualClock::starting_now();
    let store = RedisStore::cluster_builder(cluster.urls())
        .with_prefix("conformance")
        .with_clock(clock.clone())
        .with_metadata_limit(METADATA_LIMIT)
        .with_checkpoint_retention(RETENTION)
        .connect()
        .await
        .expect("connect to the test cluster");
    assert!(store.is_cluster());
    Some(StoreFixture::new(Arc::new(store), clock, METADATA_LIMIT, RETENTION).with_keep_alive(cluster))
}

lgadk_core::session_store_conformance!(fixture);
