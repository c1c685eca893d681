//! The graph-level conformance suite against the in-memory store: every manager the fixture
//! opens shares one `InMemoryStore`, as processes share a Redis.
#![cfg(feature = "testing")]

use lgadk_graph::testing::GraphFixture;
use lgadk_session::{InMemoryStore, SessionManager};

const RETENTION: usize = 3;

async fn fixture() -> Option<GraphFixture> {
    let store = InMemoryStore::builder().with_checkpoint_retention(RETENTION).build();
    Some(GraphFixture::new(RETENTION, (), move || {
        let store = store.clone();
        async move { Ok(SessionManager::new(store)) }
    }))
}

lgadk_graph::graph_conformance!(fixture);
