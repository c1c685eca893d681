//! The graph-level conformance suite on Redis: every manager the fixture opens has its own
//! connection to one `redis-server` started for the scenario, as processes of a fleet would.
#![cfg(feature = "redis")]

use lgadk::SessionManager;
use lgadk::graph::testing::GraphFixture;
use lgadk::session::RedisStore;
use lgadk::session::testing::RedisServer;

const RETENTION: usize = 3;

async fn fixture() -> Option<GraphFixture> {
    let server = RedisServer::start()?;
    let url = server.url();
    Some(GraphFixture::new(RETENTION, server, move || {
        let url = url.clone();
        async move {
            let store = RedisStore::builder(url)
                .with_prefix("graph-conformance")
                .with_checkpoint_retention(RETENTION)
                .connect()
                .await?;
            Ok(SessionManager::new(store))
        }
    }))
}

lgadk::graph::graph_conformance!(fixture);
