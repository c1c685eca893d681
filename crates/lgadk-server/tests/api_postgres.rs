//! The API matrix over real HTTP on PostgreSQL (the test process's own server, a schema per
//! test).
#![cfg(feature = "postgres")]

mod common;

use common::{TestServer, scenarios};
use lgadk_server::Limits;
use lgadk_session::testing::{TestDatabase, unique_schema};
use lgadk_session::{PostgresStore, SessionManager};

macro_rules! on_postgres {
    ($($name:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(database) = TestDatabase::shared() else { return };
            let store = PostgresStore::builder(database.url())
                .with_schema(unique_schema(stringify!($name)))
                .with_max_connections(8)
                .connect()
                .await
                .expect("postgres answers");
            let server = TestServer::start(SessionManager::new(store), None, Limits::default()).await;
            scenarios::$name(&server).await;
        }
    )+};
}

on_postgres!(
    assistants_search_and_get,
    threads_lifecycle,
    stream_modes,
    wait_state_history_analytics,
    create_join_get_list,
    interrupt_then_resume,
    multitask_reject_and_enqueue,
    cancel_saves_nothing,
    stateless_wait,
);
