//! The memory conformance suite against a `RedisMemoryStore` on its own single `redis-server`.
#![cfg(all(feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::Arc;

use lgadk_core::ManualClock;
use lgadk_core::memory::EmbedFields;
use lgadk_core::memory::testing::{MemoryFixture, TestEmbedder};
use lgadk_session::RedisStore;
use lgadk_session::memory_store::redis::RedisMemoryStore;
use lgadk_session::testing::RedisServer;

/// A fresh server per scenario; the plain and the semantic store use different prefixes.
async fn fixture() -> Option<MemoryFixture> {
    let server = RedisServer::start()?;
    let clock = ManualClock::starting_now();
    let connect = |prefix: &'static str| {
        RedisStore::builder(server.url()).with_prefix(prefix).with_clock(clock.clone()).connect()
    };
    let plain = connect("plain").await.expect("connect to the test server");
    let semantic = connect("semantic").await.expect("connect to the test server");
    let embedder = TestEmbedder::new();
    let store = RedisMemoryStore::on(&plain).build();
    let semantic =
        RedisMemoryStore::on(&semantic).with_embedder(Arc::new(embedder.clone()), EmbedFields::Whole).build();
    Some(MemoryFixture::new(Arc::new(store), Arc::new(semantic), embedder, clock).with_keep_alive(server))
}

lgadk_core::memory_store_conformance!(fixture);
