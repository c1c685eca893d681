//! The memory conformance suite against a `RedisMemoryStore` on its own 3-master Redis Cluster.
#![cfg(all(feature = "redis-cluster", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::Arc;

use lgadk_core::ManualClock;
use lgadk_core::memory::EmbedFields;
use lgadk_core::memory::testing::{MemoryFixture, TestEmbedder};
use lgadk_session::RedisStore;
use lgadk_session::memory_store::redis::RedisMemoryStore;
use lgadk_session::testing::RedisCluster;

/// A fresh cluster per scenario; the plain and the semantic store use different prefixes, so
/// their keys land in different slots.
async fn fixture() -> Option<MemoryFixture> {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.expect("start the cluster")?;
    let clock = ManualClock::starting_now();
    let connect = |prefix: &'static str| {
        RedisStore::cluster_builder(cluster.urls()).with_prefix(prefix).with_clock(clock.clone()).connect()
    };
    let plain = connect("plain").await.expect("connect to the test cluster");
    assert!(plain.is_cluster());
    let semantic = connect("semantic").await.expect("connect to the test cluster");
    let embedder = TestEmbedder::new();
    let store = RedisMemoryStore::on(&plain).build();
    let semantic =
        RedisMemoryStore::on(&semantic).with_embedder(Arc::new(embedder.clone()), EmbedFields::Whole).build();
    Some(MemoryFixture::new(Arc::new(store), Arc::new(semantic), embedder, clock).with_keep_alive(cluster))
}

lgadk_core::memory_store_conformance!(fixture);
