//! The API matrix over real HTTP on the in-memory backend.

mod common;

use common::{TestServer, scenarios};

macro_rules! on_memory {
    ($($name:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let server = TestServer::memory().await;
            scenarios::$name(&server).await;
        }
    )+};
}

on_memory!(
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
