//! The API matrix over real HTTP on Redis (a redis-server of the test's own on a free port).
#![cfg(feature = "redis")]

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

/// `/ready` reaches the backend: 200 while Redis answers, 503 once it is gone, 200 again
/// after it is back; `/ok` answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_backend() {
    let Some(mut redis) = RedisServer::start() else { return };
    let sessions = SessionManager::redis(&redis.url()).await.expect("redis answers");
    let server = TestServer::start(sessions, None, Limits::default()).await;
    let (status, ready) = server.get("/ready", None).await;
    assert_eq!((status, &ready["backend"]), (200, &serde_json::json!("redis")));
    redis.kill();
    let (status, body) = server.get("/ready", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"].is_string());
    assert_eq!(server.get("/ok", None).await.0, 200);
    redis.restart();
    let mut status = 0;
    for _ in 0..50 {
        status = server.get("/ready", None).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
}

/// A request the backend holds up is answered 504 at the request timeout, and the thread it
/// read is intact afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_up_by_the_backend_times_out_with_504() {
    let Some(redis) = RedisServer::start() else { return };
    let sessions = SessionManager::redis(&redis.url()).await.expect("redis answers");
    let limits = Limits::default().with_request_timeout(std::time::Duration::from_millis(200));
    let server = TestServer::start(sessions, None, limits).await;
    let thread = server.thread(None).await;
    redis.pause();
    let started = std::time::Instant::now();
    let (status, body) = server.get(&format!("/threads/{thread}"), None).await;
    let took = started.elapsed();
    redis.resume();
    assert_eq!(status, 504, "{body}");
    assert!(body["detail"].is_string());
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    let (status, _) = server.get(&format!("/threads/{thread}"), None).await;
    assert_eq!(status, 200);
}
