//! Disconnects, graceful shutdown, request ids and many concurrent streams, over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

mod common;

use std::time::Duration;

use common::{SLOW, TestServer, user_input};
use lgadk_server::Limits;
use lgadk_session::SessionManager;
use serde_json::json;

/// Opens a streamed run, reads its first bytes, then hangs up.
async fn stream_and_hang_up(server: &TestServer, thread: &str, body: serde_json::Value) -> String {
    let mut response = server
        .client
        .post(server.url(&format!("/threads/{thread}/runs/stream")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let location = response.headers()["content-location"].to_str().unwrap().to_owned();
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: metadata"));
    drop(response);
    location
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_mid_stream_leaves_the_run_going_and_its_turn_saved() {
    let server = TestServer::memory().await;
    let thread = server.thread(None).await;
    let location =
        stream_and_hang_up(&server, &thread, json!({"assistant_id": "slow", "input": user_input("still here")})).await;
    let (status, joined) = server.get(&format!("{location}/join"), None).await;
    assert_eq!(status, 200);
    assert_eq!(joined["output"], "slow answer to still here");
    let (_, state) = server.get(&format!("/threads/{thread}/state"), None).await;
    assert_eq!(state["values"]["messages"].as_array().unwrap().len(), 2, "the whole turn is saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_with_on_disconnect_cancel_saves_nothing() {
    let server = TestServer::memory().await;
    let thread = server.thread(None).await;
    let body = json!({"assistant_id": "slow", "input": user_input("gone"), "on_disconnect": "cancel"});
    let location = stream_and_hang_up(&server, &thread, body).await;
    let (_, run) = server.get(&format!("{location}/join"), None).await;
    assert!(run.get("__error__").is_some(), "{run}");
    let (_, info) = server.get(&location, None).await;
    assert_eq!(info["status"], "interrupted");
    let (_, state) = server.get(&format!("/threads/{thread}/state"), None).await;
    assert_eq!(state["values"], json!({}), "nothing of the turn is saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_run_finish_within_the_grace() {
    let sessions = SessionManager::in_memory();
    let mut server =
        TestServer::start(sessions.clone(), None, Limits::default().with_shutdown_grace(Duration::from_secs(10))).await;
    let thread = server.thread(None).await;
    let (status, _) = server
        .post(
            &format!("/threads/{thread}/runs"),
            None,
            json!({"assistant_id": "slow", "input": user_input("finish me")}),
        )
        .await;
    assert_eq!(status, 200);
    server.shutdown();
    let served = tokio::time::timeout(Duration::from_secs(10), server.task.take().unwrap()).await.unwrap().unwrap();
    assert!(served.is_ok(), "{served:?}");
    let id = lgadk_core::SessionId::parse(&thread).unwrap();
    let summary = sessions.get_session_summary(&id).await.unwrap().unwrap();
    assert_eq!(summary.interactions, 1, "the run finished and its turn was saved");
    // Nothing listens any more.
    assert!(server.client.get(server.url("/ok")).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_runs_past_the_grace_and_saves_nothing_of_them() {
    let sessions = SessionManager::in_memory();
    let mut server =
        TestServer::start(sessions.clone(), None, Limits::default().with_shutdown_grace(Duration::from_millis(50)))
            .await;
    let thread = server.thread(None).await;
    let follower = {
        let client = server.client.clone();
        let url = server.url(&format!("/threads/{thread}/runs/stream"));
        let body = json!({"assistant_id": "slow", "input": user_input("cut short")}).to_string();
        tokio::spawn(async move {
            let response = client.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
            common::parse_sse(&response.text().await.unwrap())
        })
    };
    tokio::time::sleep(SLOW / 4).await;
    server.shutdown();
    let served = tokio::time::timeout(Duration::from_secs(10), server.task.take().unwrap()).await.unwrap().unwrap();
    assert!(served.is_ok(), "{served:?}");
    // The open stream was told, and ended.
    let events = follower.await.unwrap();
    assert_eq!(events.last().unwrap().event, "error", "{events:?}");
    let id = lgadk_core::SessionId::parse(&thread).unwrap();
    let summary = sessions.get_session_summary(&id).await.unwrap().unwrap();
    assert_eq!(summary.interactions, 0, "the cancelled turn is not tracked");
    assert_eq!(sessions.checkpointer().version(&id).await.unwrap(), 0, "nor saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id() {
    let server = TestServer::memory().await;
    let response = server.client.get(server.url("/ok")).header("x-request-id", "trace-42").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42");
    let response = server.client.get(server.url("/threads/none")).send().await.unwrap();
    assert!(!response.headers()["x-request-id"].is_empty());
}

/// Many concurrent streamed runs, each on its own thread: every one completes with its events
/// in order (metadata first, SSE ids increasing, tokens adding up to the saved answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_complete_in_order() {
    const STREAMS: usize = 1000;
    let server = TestServer::start(
        SessionManager::in_memory(),
        None,
        Limits::default().with_max_concurrent_runs_per_user(STREAMS),
    )
    .await;
    let mut threads = Vec::new();
    for _ in 0..STREAMS {
        threads.push(server.thread(None).await);
    }
    let tasks: Vec<_> = threads
        .into_iter()
        .enumerate()
        .map(|(n, thread)| {
            let client = server.client.clone();
            let url = server.url(&format!("/threads/{thread}/runs/stream"));
            let body = json!({"assistant_id": "agent", "input": user_input(&format!("hello {n}")), "stream_mode": ["messages-tuple", "values"]});
            tokio::spawn(async move {
                let response = client.post(url).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
                assert_eq!(response.status(), 200);
                common::parse_sse(&response.text().await.unwrap())
            })
        })
        .collect();
    for task in tasks {
        let events = task.await.unwrap();
        assert_eq!(events[0].event, "metadata");
        let ids: Vec<usize> = events.iter().map(|e| e.id.as_ref().unwrap().parse().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] + 1 == w[1]), "no event lost or reordered: {ids:?}");
        let tokens: String = events
            .iter()
            .filter(|e| e.event == "messages")
            .map(|e| e.data[0]["content"].as_str().unwrap().to_owned())
            .collect();
        let values = &events.last().unwrap().data;
        assert_eq!(events.last().unwrap().event, "values");
        assert_eq!(values["messages"][1]["content"].as_str().unwrap(), tokens);
    }
}

/// `/metrics` counts requests by route pattern and status, finished runs, their latency and
/// tokens, and shows no run or stream left active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_runs_and_tokens() {
    let server = TestServer::memory().await;
    let thread = server.thread(None).await;
    let (status, _) = server
        .post(
            &format!("/threads/{thread}/runs/wait"),
            None,
            json!({"assistant_id": "agent", "input": user_input("count me")}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .stream(
            &format!("/threads/{thread}/runs/stream"),
            None,
            json!({"assistant_id": "agent", "input": user_input("and me")}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.get("/threads/not%20an%20id", None).await.0, 422);
    let text = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = |prefix: &str| {
        text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix} in {text}")).to_owned()
    };
    let value = |prefix: &str| line(prefix).rsplit(' ').next().unwrap().parse::<f64>().unwrap();
    assert_eq!(
        value(r#"lgadk_server_http_requests_total{method="POST",route="/threads/{thread_id}/runs/wait",status="200"}"#),
        1.0
    );
    assert_eq!(
        value(r#"lgadk_server_http_requests_total{method="GET",route="/threads/{thread_id}",status="422"}"#),
        1.0
    );
    assert_eq!(value(r#"lgadk_server_runs_total{status="success"}"#), 2.0);
    assert_eq!(value("lgadk_server_run_duration_seconds_count"), 2.0);
    assert!(value(r#"lgadk_server_tokens_total{direction="in"}"#) > 0.0);
    assert!(value(r#"lgadk_server_tokens_total{direction="out"}"#) > 0.0);
    assert_eq!(value("lgadk_server_active_runs"), 0.0);
    assert_eq!(value("lgadk_server_active_streams"), 0.0);
}
