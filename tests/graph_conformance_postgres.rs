//! The graph-level conformance suite on PostgreSQL: every manager the fixture opens has its
//! own connection pool to one schema of the test process's PostgreSQL, as processes of a fleet
//! would.
#![cfg(feature = "postgres")]

use lgadk::SessionManager;
use lgadk::graph::testing::GraphFixture;
use lgadk::session::PostgresStore;
use lgadk::session::testing::{TestDatabase, unique_schema};

const RETENTION: usize = 3;

async fn fixture() -> Option<GraphFixture> {
    let url = TestDatabase::shared()?.url();
    let schema = unique_schema("graph_conformance");
    Some(GraphFixture::new(RETENTION, (), move || {
        let (url, schema) = (url.clone(), schema.clone());
        async move {
            let store = PostgresStore::builder(url)
                .with_schema(schema)
                .with_max_connections(4)
                .with_checkpoint_retention(RETENTION)
                .connect()
                .await?;
            Ok(SessionManager::new(store))
        }
    }))
}

lgadk::graph::graph_conformance!(fixture);
