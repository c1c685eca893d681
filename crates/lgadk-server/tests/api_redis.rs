//! The API matrix over real HTTP on Redis (a redis-server of the test's own on a free port).

mod common;

use common::{TestServer, scenarios};
use lgadk_server::Limits;
use lgadk_session::SessionManager;
use lgadk_session::testing::RedisServer;

macro_rules! on_redis {
    ($($name:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(redis) = RedisServer::start() else { return };
            let sessions = SessionManager::redis(&redis.url()).await.expect("redis answers");
            let server = TestServer::start(sessions, None, Limits::default()).await;
            scenarios::$name(&server).await;
            drop(server);
            drop(redis);
        }
    )+};
}

on_redis!(
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
