//! The graph-level conformance suite on a 3-master Redis Cluster: every manager the fixture
//! opens has its own cluster connection, as processes of a fleet would.
#![cfg(feature = "redis-cluster")]
#![allow(clippy::expect_used, reason = "test code: a failure is a panic")]

use lgadk::SessionManager;
use lgadk::graph::testing::GraphFixture;
use lgadk::session::RedisStore;
use lgadk::session::testing::RedisCluster;

const RETENTION: usize = 3;

async fn fixture() -> Option<GraphFixture> {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.expect("start the cluster")?;
    let urls = cluster.urls();
    Some(GraphFixture::new(RETENTION, cluster, move || {
        let urls = urls.clone();
        async move {
            let store = RedisStore::cluster_builder(urls)
                .with_prefix("graph-conformance")
                .with_checkpoint_retention(RETENTION)
                .connect()
                .await?;
            assert!(store.is_cluster(), "the store runs on the cluster");
            Ok(SessionManager::new(store))
        }
    }))
}

lgadk::graph::graph_conformance!(fixture);
