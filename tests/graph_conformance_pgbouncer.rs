//! The graph-level conformance suite on PostgreSQL through PgBouncer in transaction mode, with
//! the store's statement cache off: one server and one `pgbouncer` per test process, a schema
//! per scenario, every manager with its own pool.
#![cfg(feature = "postgres")]

use lgadk::SessionManager;
use lgadk::graph::testing::GraphFixture;
use lgadk::session::PostgresStore;
use lgadk::session::testing::{TestPooler, unique_schema};

const RETENTION: usize = 3;

async fn fixture() -> Option<GraphFixture> {
    let url = TestPooler::shared()?.pgbouncer.url();
    let schema = unique_schema("graph_bounced");
    Some(GraphFixture::new(RETENTION, (), move || {
        let (url, schema) = (url.clone(), schema.clone());
        async move {
            let store = PostgresStore::builder(url)
                .with_schema(schema)
                .with_statement_cache_capacity(0)
                .with_max_connections(4)
                .with_checkpoint_retention(RETENTION)
                .connect()
                .await?;
            Ok(SessionManager::new(store))
        }
    }))
}

lgadk::graph::graph_conformance!(fixture);
