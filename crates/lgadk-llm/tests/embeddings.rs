//! `OpenAiEmbedder` against the loopback OpenAI-compatible server: batching, order, dimensions,
//! retries and typed failures. No network, no key.
#![cfg(feature = "openai")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests: a failure is a panic")]

mod common;

use std::error::Error as _;
use std::time::{Duration, Instant};

use common::{Reply, TestServer, embeddings, test_vector};
use lgadk_core::memory::Embedder;
use lgadk_core::{Error, ModelErrorKind};
use lgadk_llm::{OpenAiEmbedder, OpenAiEmbedderBuilder, RetryPolicy};
use serde_json::json;

fn fast_retry() -> RetryPolicy {
    RetryPolicy::default().with_base_delay(Duration::from_millis(10)).with_max_delay(Duration::from_millis(40))
}

fn builder(server: &TestServer) -> OpenAiEmbedderBuilder {
    OpenAiEmbedder::builder("text-embedding-test")
        .with_base_url(server.base_url())
        .with_api_key("sk-test-key")
        .with_retry(fast_retry())
        .with_timeout(Duration::from_secs(5))
}

fn texts(items: &[&str]) -> Vec<String> {
    items.iter().map(|t| (*t).to_owned()).collect()
}

fn model_error(err: &Error) -> (Option<u16>, ModelErrorKind) {
    match err {
        Error::Model { model, status, kind, .. } => {
            assert_eq!(model, "openai/text-embedding-test");
            (*status, kind.clone())
        }
        other => panic!("expected Error::Model, got {other:?}"),
    }
}

#[tokio::test]
async fn texts_are_sent_in_batches_and_come_back_in_order() {
    let server = TestServer::start(|_, request| embeddings(request, 8)).await;
    let embedder = builder(&server).with_model_dimensions(8).with_batch_size(2).build().unwrap();
    let input = texts(&["window seat", "vegetarian meals", "aisle seat", "no onions", "late checkout"]);

    let vectors = embedder.embed(input.clone()).await.unwrap();

    let expected: Vec<Vec<f32>> = input.iter().map(|t| test_vector(t, 8)).collect();
    assert_eq!(vectors, expected, "one vector per text, in the texts' order though the server lists them reversed");
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "5 texts in batches of 2");
    let sent: Vec<serde_json::Value> = requests.iter().map(|r| r.body["input"].clone()).collect();
    assert_eq!(
        sent,
        [json!(["window seat", "vegetarian meals"]), json!(["aisle seat", "no onions"]), json!(["late checkout"])]
    );
    for request in &requests {
        assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/v1/embeddings"));
        assert_eq!(request.header("authorization"), Some("Bearer sk-test-key"));
        assert_eq!(request.body["model"], "text-embedding-test");
        assert_eq!(request.body["encoding_format"], "float");
        assert!(request.body.get("dimensions").is_none(), "not sent unless asked for");
    }
}

#[tokio::test]
async fn dimensions_are_asked_for_and_checked() {
    let server = TestServer::start(|_, request| embeddings(request, 8)).await;
    let embedder = builder(&server).with_dimensions(16).build().unwrap();
    assert_eq!((embedder.dimensions(), embedder.requested_dimensions()), (16, Some(16)));
    let vectors = embedder.embed(texts(&["prefers tea"])).await.unwrap();
    assert_eq!(vectors, vec![test_vector("prefers tea", 16)]);
    assert_eq!(server.requests()[0].body["dimensions"], 16);

    // A server that ignores `dimensions` answers with its own length: refused, not passed on.
    let ignoring = TestServer::start(|_, request| {
        let mut plain = request.clone();
        plain.body.as_object_mut().unwrap().remove("dimensions");
        embeddings(&plain, 8)
    })
    .await;
    let err = builder(&ignoring).with_dimensions(16).build().unwrap().embed(texts(&["x"])).await.unwrap_err();
    assert_eq!(model_error(&err), (None, ModelErrorKind::MalformedResponse));
    assert!(err.source().unwrap().to_string().contains("has 8 values, expected 16"), "{err:#}");
}

#[tokio::test]
async fn nothing_is_sent_for_no_texts_and_empty_texts_are_refused_before_sending() {
    let server = TestServer::start(|_, request| embeddings(request, 8)).await;
    let embedder = builder(&server).with_model_dimensions(8).build().unwrap();
    assert!(embedder.embed(Vec::new()).await.unwrap().is_empty());
    let err = embedder.embed(texts(&["fine", "  "])).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig { reason } if reason.contains("text 1")), "{err}");
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn unauthorized_is_an_authentication_error_and_not_retried() {
    let server = TestServer::always(Reply::error(401, "Incorrect API key provided")).await;
    let err = builder(&server).with_model_dimensions(8).build().unwrap().embed(texts(&["hello"])).await.unwrap_err();
    assert_eq!(model_error(&err), (Some(401), ModelErrorKind::Authentication));
    assert!(!err.is_retryable());
    assert_eq!(server.request_count(), 1);
    assert!(err.source().unwrap().to_string().contains("Incorrect API key provided"));
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_wait_the_server_asks_for() {
    let server = TestServer::start(|n, request| {
        if n == 0 {
            Reply::api_error(429, "Rate limit reached", Some("requests"), Some("rate_limit_exceeded"))
                .with_header("Retry-After", "1")
        } else {
            embeddings(request, 8)
        }
    })
    .await;
    // Retry-After asks for 1 s; the cap shortens it to 150 ms, far above the 10 ms backoff.
    let embedder = builder(&server)
        .with_model_dimensions(8)
        .with_retry(fast_retry().with_max_retry_after(Duration::from_millis(150)))
        .build();
    let started = Instant::now();
    let vectors = embedder.unwrap().embed(texts(&["hello"])).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(vectors, vec![test_vector("hello", 8)]);
    assert_eq!(server.request_count(), 2);
    assert!(elapsed >= Duration::from_millis(150), "Retry-After was not honoured: {elapsed:?}");

    // Without retries left the limit is reported, with the wait the server asked for.
    let limited = TestServer::always(Reply::error(429, "slow down").with_header("Retry-After", "2")).await;
    let err = builder(&limited).with_model_dimensions(8).with_retry(RetryPolicy::none()).build().unwrap();
    let err = err.embed(texts(&["hello"])).await.unwrap_err();
    let expected = ModelErrorKind::RateLimited { retry_after: Some(Duration::from_secs(2)) };
    assert_eq!(model_error(&err), (Some(429), expected));
    assert!(err.is_retryable());
    assert_eq!(limited.request_count(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_as_configured() {
    let server = TestServer::always(Reply::raw(503, "text/plain", "overloaded")).await;
    let embedder =
        builder(&server).with_model_dimensions(8).with_retry(fast_retry().with_max_retries(2)).build().unwrap();
    let err = embedder.embed(texts(&["hello"])).await.unwrap_err();
    assert_eq!(model_error(&err), (Some(503), ModelErrorKind::ServerError));
    assert_eq!(server.request_count(), 3, "1 attempt + 2 retries");
}

#[tokio::test]
async fn a_malformed_body_is_a_typed_decode_error() {
    let server = TestServer::always(Reply::raw(200, "application/json", "{\"object\": \"list\", \"da")).await;
    let err = builder(&server).with_model_dimensions(8).build().unwrap().embed(texts(&["hello"])).await.unwrap_err();
    assert_eq!(model_error(&err), (None, ModelErrorKind::MalformedResponse));
    assert_eq!(server.request_count(), 1, "a malformed answer is not retried");
    assert!(err.source().unwrap().to_string().contains("does not decode"), "{err:#}");
    assert!(err.source().unwrap().source().is_some(), "the serde error is kept as the cause");
}

#[tokio::test]
async fn a_wrong_number_of_vectors_is_refused_whole() {
    // The server drops the last text's vector.
    let server = TestServer::start(|_, request| {
        let mut fewer = request.clone();
        let input = fewer.body["input"].as_array_mut().unwrap();
        input.pop();
        embeddings(&fewer, 8)
    })
    .await;
    let err = builder(&server)
        .with_model_dimensions(8)
        .build()
        .unwrap()
        .embed(texts(&["a b", "c d", "e f"]))
        .await
        .unwrap_err();
    assert_eq!(model_error(&err), (None, ModelErrorKind::MalformedResponse));
    let detail = err.source().unwrap().to_string();
    assert!(detail.contains("3 texts were sent and 2 vectors came back"), "{detail}");
}

#[tokio::test]
async fn the_servers_own_request_checks_pass() {
    // The harness refuses what OpenAI refuses; a request that breaks a rule gets its 400.
    let server = TestServer::start(|_, request| embeddings(request, 8)).await;
    let client = raw_post(&server, json!({"model": "m", "input": ["ok", ""]})).await;
    assert_eq!(client, 400);
    let client = raw_post(&server, json!({"model": "m", "input": "ok", "encoding_format": "base64"})).await;
    assert_eq!(client, 400);
    let embedder = builder(&server).with_dimensions(4).with_batch_size(2048).build().unwrap();
    assert_eq!(embedder.dimensions(), 4);
    let many: Vec<String> = (0..2048).map(|i| format!("memory {i}")).collect();
    assert_eq!(embedder.embed(many).await.unwrap().len(), 2048);
}

/// POSTs `body` to the server's `/embeddings` with a raw HTTP/1.1 request; the status.
async fn raw_post(server: &TestServer, body: serde_json::Value) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(server.host()).await.unwrap();
    let body = body.to_string();
    let head = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.host(),
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body.as_bytes()).await.unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.unwrap();
    answer.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn builder_validates_its_configuration() {
    let invalid = |b: OpenAiEmbedderBuilder| matches!(b.build(), Err(Error::InvalidConfig { .. }));
    let local = || OpenAiEmbedder::builder("m").with_base_url("http://127.0.0.1:9/v1");
    let declared = || local().with_model_dimensions(8);
    assert!(invalid(OpenAiEmbedder::builder(" ").with_base_url("http://127.0.0.1:9/v1")));
    assert!(invalid(local().with_dimensions(0)));
    assert!(invalid(local()), "an unknown model's vector length must be declared");
    assert!(invalid(local().with_dimensions(8).with_model_dimensions(16)));
    assert_eq!(OpenAiEmbedder::builder("text-embedding-3-small").with_api_key("k").build().unwrap().dimensions(), 1536);
    assert!(invalid(declared().with_batch_size(0)));
    assert!(invalid(declared().with_batch_size(2049)));
    assert!(invalid(declared().with_base_url("ftp://x")));
    let ok = declared().with_id("ollama/nomic").build().unwrap();
    assert_eq!((ok.id(), ok.model(), ok.base_url()), ("ollama/nomic", "m", "http://127.0.0.1:9/v1"));
}
