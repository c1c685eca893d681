//! Authentication, isolation between users, limits and hostile requests, over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

mod common;

use common::{SLOW, TestServer, user_input};
use lgadk_server::{ApiKeys, Cors, Limits, Server};
use lgadk_session::SessionManager;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const ALICE: &str = "alice-key-0001";
const BOB: &str = "bob-key-000001";
const ADMIN: &str = "admin-key-0001";

fn keys() -> ApiKeys {
    ApiKeys::new().with_user(ALICE, "alice").unwrap().with_user(BOB, "bob").unwrap().with_admin(ADMIN, "ops").unwrap()
}

async fn with_keys(limits: Limits) -> TestServer {
    TestServer::start(SessionManager::in_memory(), Some(keys()), limits).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_key_are_401_and_operations_need_none() {
    let server = with_keys(Limits::default()).await;
    for key in [None, Some("wrong-key-0001"), Some("alice-key-000"), Some("")] {
        let (status, body) = server.post("/threads", key, json!({})).await;
        assert_eq!(status, 401, "{key:?}");
        assert!(body["detail"].as_str().unwrap().contains("API key"));
    }
    assert_eq!(server.get("/ok", None).await.0, 200);
    assert_eq!(server.get("/ready", None).await.0, 200);
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("lgadk_server_http_requests_total"));
    // Bearer works as well as x-api-key.
    let response = server
        .client
        .post(server.url("/threads"))
        .header("authorization", format!("Bearer {ALICE}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_thread_is_invisible_and_the_admin_sees_it() {
    let server = with_keys(Limits::default()).await;
    let thread = server.thread(Some(ALICE)).await;
    let (status, _) = server
        .post(
            &format!("/threads/{thread}/runs/wait"),
            Some(ALICE),
            json!({"assistant_id": "agent", "input": user_input("mine")}),
        )
        .await;
    assert_eq!(status, 200);

    let t = format!("/threads/{thread}");
    for (method, path, body) in [
        (Method::GET, t.clone(), None),
        (Method::PATCH, t.clone(), Some(json!({"metadata": {"x": 1}}))),
        (Method::GET, format!("{t}/state"), None),
        (Method::POST, format!("{t}/history"), Some(json!({}))),
        (Method::GET, format!("{t}/analytics"), None),
        (Method::GET, format!("{t}/runs"), None),
        (Method::POST, format!("{t}/runs/wait"), Some(json!({"assistant_id": "agent", "input": user_input("theirs")}))),
        (Method::POST, format!("{t}/runs"), Some(json!({"assistant_id": "agent", "input": user_input("theirs")}))),
        (Method::DELETE, t.clone(), None),
    ] {
        let (status, body) = server.send(method.clone(), &path, Some(BOB), body).await;
        assert_eq!(status, 404, "bob {method} {path}: {body}");
        assert_eq!(
            body["detail"],
            format!("Thread {thread} not found"),
            "the same answer as a thread that does not exist"
        );
    }
    // `if_not_exists: create` does not hand bob alice's thread either.
    let create = json!({"assistant_id": "agent", "input": user_input("x"), "if_not_exists": "create"});
    assert_eq!(server.post(&format!("{t}/runs/wait"), Some(BOB), create).await.0, 404);
    let (_, found) = server.post("/threads/search", Some(BOB), json!({})).await;
    assert_eq!(found, json!([]));
    let (_, found) = server.post("/threads/search", Some(ALICE), json!({})).await;
    assert_eq!(found.as_array().unwrap().len(), 1);

    // Alice's thread is untouched by bob's attempts; the admin sees and uses it.
    let (status, state) = server.get(&format!("{t}/state"), Some(ADMIN)).await;
    assert_eq!(status, 200);
    assert_eq!(state["values"]["messages"].as_array().unwrap().len(), 2);
    assert_eq!(server.get(&t, Some(ADMIN)).await.1["metadata"].get("x"), None);
    assert_eq!(server.send(Method::DELETE, &t, Some(ADMIN), None).await.0, 204);
    assert_eq!(server.get(&t, Some(ALICE)).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_over_the_per_user_limit_are_429_with_retry_after() {
    let server = with_keys(Limits::default().with_max_concurrent_runs_per_user(1)).await;
    let (first, second, bobs) =
        (server.thread(Some(ALICE)).await, server.thread(Some(ALICE)).await, server.thread(Some(BOB)).await);
    let slow = json!({"assistant_id": "slow", "input": user_input("busy")});
    assert_eq!(server.post(&format!("/threads/{first}/runs"), Some(ALICE), slow.clone()).await.0, 200);
    let response = server
        .client
        .post(server.url(&format!("/threads/{second}/runs")))
        .header("x-api-key", ALICE)
        .body(slow.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    // Another user is not held back by alice's runs.
    assert_eq!(server.post(&format!("/threads/{bobs}/runs"), Some(BOB), slow.clone()).await.0, 200);
    tokio::time::sleep(SLOW * 2).await;
    assert_eq!(server.post(&format!("/threads/{second}/runs"), Some(ALICE), slow).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_and_ids_are_4xx_naming_the_problem() {
    let server =
        TestServer::start(SessionManager::in_memory(), None, Limits::default().with_max_body_bytes(4096)).await;
    let thread = server.thread(None).await;
    let raw = |path: &str, body: Vec<u8>| {
        server.client.post(server.url(path)).header("content-type", "application/json").body(body).send()
    };
    // Over the body limit.
    let huge = format!(r#"{{"metadata": {{"blob": "{}"}}}}"#, "x".repeat(10_000));
    let response = raw("/threads", huge.into_bytes()).await.unwrap();
    assert_eq!(response.status(), 413);
    // Truncated, not JSON, not UTF-8, trailing garbage.
    for body in [&br#"{"metadata": {"a": "#[..], b"<html>", &[0xff, 0xfe, 0x00], br#"{} {}"#] {
        let (status, detail) = common::decode(raw("/threads", body.to_vec()).await.unwrap()).await;
        assert_eq!(status, 422, "{detail}");
        assert!(detail["detail"].as_str().unwrap().contains("JSON") || detail["detail"].is_string());
    }
    // Wrong types name the field.
    let (status, body) = server.post("/threads/search", None, json!({"limit": "ten"})).await;
    assert_eq!(status, 422);
    assert!(body["detail"].as_str().unwrap().contains("limit"), "{body}");
    let (status, body) =
        server.post(&format!("/threads/{thread}/runs/wait"), None, json!({"input": user_input("x")})).await;
    assert_eq!(status, 422);
    assert!(body["detail"].as_str().unwrap().contains("assistant_id"), "{body}");
    let (status, body) = server
        .post(&format!("/threads/{thread}/runs/wait"), None, json!({"assistant_id": "agent", "input": {"messages": 5}}))
        .await;
    assert_eq!(status, 422);
    assert!(body["detail"].as_str().unwrap().contains("input.messages"), "{body}");
    let (status, body) = server
        .post(
            &format!("/threads/{thread}/runs/wait"),
            None,
            json!({"assistant_id": "agent", "input": user_input("x"), "stream_mode": 3}),
        )
        .await;
    assert_eq!((status, body["detail"].as_str().unwrap().contains("stream_mode")), (422, true));
    // Nesting deeper than a JSON parser reads.
    let deep = format!(r#"{{"metadata": {{"a": {}1{}}}}}"#, "[".repeat(200), "]".repeat(200));
    assert_eq!(raw("/threads", deep.into_bytes()).await.unwrap().status(), 422);
    // Bad and unicode thread ids, unknown assistants and routes.
    for id in ["has%20space", "%E2%9C%93", "a%2Fb", &"x".repeat(200)] {
        let (status, body) = server.get(&format!("/threads/{id}"), None).await;
        assert_eq!(status, 422, "{id}: {body}");
        assert!(body["detail"].as_str().unwrap().contains("thread_id"));
    }
    let (status, _) = server
        .post(&format!("/threads/{thread}/runs/wait"), None, json!({"assistant_id": "ghost", "input": user_input("x")}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(server.get("/nowhere", None).await.0, 404);
    // Unsupported options are refused rather than ignored.
    let (status, body) = server
        .post(
            &format!("/threads/{thread}/runs/wait"),
            None,
            json!({"assistant_id": "agent", "input": user_input("x"), "interrupt_before": ["assistant"]}),
        )
        .await;
    assert_eq!((status, body["detail"].as_str().unwrap().contains("interrupt_before")), (422, true));
    // The thread is intact after all that.
    let (status, state) = server.get(&format!("/threads/{thread}/state"), None).await;
    assert_eq!((status, &state["values"]), (200, &json!({})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_content_length_is_a_4xx() {
    let server = TestServer::memory().await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /threads HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"metadata\""
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_string(&mut answer)).await;
    // Either a 4xx, or the connection closed without an answer: never a 5xx, never a thread.
    if let Some(status) = answer.split_whitespace().nth(1) {
        assert!(status.starts_with('4'), "{answer}");
    }
    let (_, threads) = server.post("/threads/search", None, json!({})).await;
    assert_eq!(threads, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_the_configured_origins() {
    let sessions = SessionManager::in_memory();
    let graph = lgadk_server::conversational_graph(lgadk_server::offline_model(), sessions.clone()).unwrap();
    let router = Server::builder()
        .assistant("agent", graph)
        .cors(Cors::Origins(vec!["https://ui.example".into()]))
        .build()
        .unwrap()
        .into_router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = common::client();
    let preflight = |origin: &'static str| {
        client
            .request(Method::OPTIONS, format!("{base}/threads"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://ui.example").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://ui.example");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
}
