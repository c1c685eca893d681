//! The graph-level conformance suite on PostgreSQL through PgBouncer in transaction mode, with
//! the store's statement cache off: one server and one `pgbouncer` per test process, a schema
//! per scenario, every manager with its own pool.
#![cfg(feature = "postgres")]

use std::sync::OnceLock;

use lgadk::SessionManager;
use lgadk::graph::testing::GraphFixture;
use lgadk::session::PostgresStore;
use lgadk::session::testing::{PgBouncer, PostgresServer, unique_schema};

const RETENTION: usize = 3;

/// The process's server and pooler (started once; both stop when the process ends).
fn pooler() -> Option<&'static (PostgresServer, PgBouncer)> {
    static POOLER: OnceLock<Option<(PostgresServer, PgBouncer)>> = OnceLock::new();
    POOLER
        .get_or_init(|| {
            let server = PostgresServer::start()?;
            let bouncer = PgBouncer::start(&server)?;
            Some((server, bouncer))
        })
        .as_ref()
}

async fn fixture() -> Option<GraphFixture> {
    let url = pooler()?.1.url();
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
