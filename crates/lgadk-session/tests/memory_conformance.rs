//! The shared conformance suite against [`InMemoryStore`].

use std::sync::Arc;

use lgadk_core::ManualClock;
use lgadk_core::testing::StoreFixture;
use lgadk_session::InMemoryStore;

async fn fixture() -> Option<StoreFixture> {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = InMemoryStore::builder()
        .with_clock(clock.clone())
        .with_metadata_limit(1024)
        .with_checkpoint_retention(3)
        .build();
    Some(StoreFixture::new(Arc::new(store), clock, 1024, 3))
}

lgadk_core::session_store_conformance!(fixture);
