//! The memory conformance suite against [`InMemoryMemoryStore`].

use std::sync::Arc;

use lgadk_core::ManualClock;
use lgadk_core::memory::EmbedFields;
use lgadk_core::memory::testing::{MemoryFixture, TestEmbedder};
use lgadk_session::InMemoryMemoryStore;

async fn fixture() -> Option<MemoryFixture> {
    let clock = ManualClock::new(1_700_000_000_000);
    let embedder = TestEmbedder::new();
    let store = InMemoryMemoryStore::builder().with_clock(clock.clone()).build();
    let semantic = InMemoryMemoryStore::builder()
        .with_clock(clock.clone())
        .with_embedder(Arc::new(embedder.clone()), EmbedFields::Whole)
        .build();
    Some(MemoryFixture::new(Arc::new(store), Arc::new(semantic), embedder, clock))
}

lgadk_core::memory_store_conformance!(fixture);
