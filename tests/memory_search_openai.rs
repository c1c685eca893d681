//! Semantic memory search through `OpenAiEmbedder` against a loopback OpenAI-compatible
//! `/embeddings` server, on the in-memory and Redis memory stores: memories are ranked by the
//! provider's vectors (here a small "meaning" space, so a query and a memory that share no word
//! still meet), the memory tools recall by meaning, and an embeddings failure reaches the tool
//! as a typed model error with nothing written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

// The loopback server of lgadk-llm's tests (its module allows the helpers this test leaves unused).
#[path = "../crates/lgadk-llm/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Recorded, Reply, TestServer, embedding_inputs};
use lgadk::SessionManager;
use lgadk::core::memory::{EmbedFields, Embedder, ListRequest, MemoryKey, MemoryStore, Namespace, SearchRequest};
use lgadk::core::{ChatModel, ChatState, Role, UserId};
use lgadk::graph::RunRequest;
use lgadk::graph::prebuilt::{MemoryTools, ToolLoop};
use lgadk::graph::testing::ToolCallingModel;
use lgadk::llm::{OpenAiEmbedder, RetryPolicy};
use lgadk::serde_json::{Value, json};
use lgadk::session::InMemoryMemoryStore;

/// The axes of the server's meaning space, and the words that point along each.
const AXES: [&[&str]; 3] = [
    &["seat", "seats", "window", "aisle", "flight", "legroom"],
    &["vegetarian", "eat", "dinner", "meal", "food", "restaurant"],
    &["jazz", "music", "concert", "band"],
];

/// A text's vector: one count per axis, plus a small constant so no vector is zero.
fn meaning(text: &str) -> Vec<f32> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).collect();
    let mut vector: Vec<f32> =
        AXES.iter().map(|axis| words.iter().filter(|w| axis.contains(w)).count() as f32).collect();
    vector.push(0.1);
    vector
}

/// Answers embeddings requests (already checked by the harness) with [`meaning`] vectors.
fn embeddings_server(request: &Recorded) -> Reply {
    let data: Vec<Value> = embedding_inputs(&request.body)
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": meaning(text)}))
        .collect();
    Reply::json(
        200,
        &json!({"object": "list", "model": request.body["model"], "data": data,
                             "usage": {"prompt_tokens": 3, "total_tokens": 3}}),
    )
}

fn embedder(server: &TestServer) -> Arc<dyn Embedder> {
    let embedder = OpenAiEmbedder::builder("meaning-test")
        .with_base_url(server.base_url())
        .with_api_key("sk-test-key")
        .with_model_dimensions(4)
        .with_retry(RetryPolicy::none())
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    Arc::new(embedder)
}

fn maya() -> Namespace {
    Namespace::new(["users", "maya", "memories"]).unwrap()
}

async fn put(store: &dyn MemoryStore, key: &str, text: &str) {
    store.put(&maya(), &MemoryKey::parse(key).unwrap(), json!({ "text": text }), None).await.unwrap();
}

/// Three memories, then a query that shares no word with the one it should find first.
async fn ranks_by_meaning(store: &dyn MemoryStore, server: &TestServer) {
    put(store, "seat", "Prefers window seats").await;
    put(store, "diet", "Is vegetarian").await;
    put(store, "music", "Loves jazz").await;
    let found = store
        .search(
            SearchRequest::under(Namespace::new(["users", "maya"]).unwrap()).with_query("What should I eat tonight?"),
        )
        .await
        .unwrap();
    let order: Vec<&str> = found.iter().map(|item| item.key.as_str()).collect();
    assert_eq!(order[0], "diet", "ranked by the provider's vectors: {order:?}");
    assert!(found[0].score.unwrap() > found[1].score.unwrap());

    // One request per put (the `text` field) and one for the query, each accepted by the server.
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    let inputs: Vec<Value> = requests.iter().map(|r| r.body["input"].clone()).collect();
    assert_eq!(
        inputs,
        [
            json!(["Prefers window seats"]),
            json!(["Is vegetarian"]),
            json!(["Loves jazz"]),
            json!(["What should I eat tonight?"])
        ]
    );
}

#[tokio::test]
async fn in_memory_search_ranks_by_the_providers_vectors() {
    let server = TestServer::start(|_, request| embeddings_server(request)).await;
    let store = InMemoryMemoryStore::builder().with_embedder(embedder(&server), EmbedFields::paths(["text"])).build();
    ranks_by_meaning(&store, &server).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_search_ranks_by_the_providers_vectors() {
    use lgadk::session::RedisMemoryStore;
    use lgadk::session::testing::RedisServer;
    let Some(redis) = RedisServer::start() else { return };
    let server = TestServer::start(|_, request| embeddings_server(request)).await;
    let sessions = lgadk::session::RedisStore::builder(redis.url()).connect().await.unwrap();
    let store = RedisMemoryStore::on(&sessions).with_embedder(embedder(&server), EmbedFields::paths(["text"])).build();
    ranks_by_meaning(&store, &server).await;
}

#[tokio::test]
async fn the_recall_tool_finds_memories_by_meaning() {
    let server = TestServer::start(|_, request| embeddings_server(request)).await;
    let store: Arc<dyn MemoryStore> =
        Arc::new(InMemoryMemoryStore::builder().with_embedder(embedder(&server), EmbedFields::paths(["text"])).build());
    put(&*store, "seat", "Prefers window seats").await;
    put(&*store, "diet", "Is vegetarian").await;

    let model: Arc<dyn ChatModel> =
        ToolCallingModel::new([("recall", json!({"query": "book a restaurant for dinner"}))]);
    let graph = ToolLoop::new(model)
        .with_memory_tools(&MemoryTools::new().with_recall_limit(1))
        .unwrap()
        .graph::<ChatState>()
        .with_sessions(SessionManager::in_memory())
        .compile()
        .unwrap()
        .with_memory(store);
    let done = graph.run(RunRequest::new("dinner?").with_user(UserId::parse("maya").unwrap())).await.unwrap();
    let result = done.state.messages.iter().find(|m| m.role == Role::Tool).unwrap();
    assert_eq!(result.content, "Remembered about this user, most relevant first (1):\n- Is vegetarian");
}

#[tokio::test]
async fn an_embeddings_failure_is_a_typed_tool_error_and_nothing_is_written() {
    let server = TestServer::always(Reply::error(401, "Incorrect API key provided")).await;
    let store: Arc<dyn MemoryStore> =
        Arc::new(InMemoryMemoryStore::builder().with_embedder(embedder(&server), EmbedFields::paths(["text"])).build());
    let err = store.put(&maya(), &MemoryKey::parse("k").unwrap(), json!({"text": "x"}), None).await.unwrap_err();
    assert!(
        matches!(&err, lgadk::Error::Model { kind: lgadk::ModelErrorKind::Authentication, status: Some(401), .. }),
        "{err:?}"
    );

    let model: Arc<dyn ChatModel> = ToolCallingModel::new([("remember", json!({"memory": "Prefers window seats"}))]);
    let graph = ToolLoop::new(model)
        .with_memory_tools(&MemoryTools::new())
        .unwrap()
        .graph::<ChatState>()
        .with_sessions(SessionManager::in_memory())
        .compile()
        .unwrap()
        .with_memory(Arc::clone(&store));
    let done = graph.run(RunRequest::new("remember").with_user(UserId::parse("maya").unwrap())).await.unwrap();
    let result = &done.state.messages.iter().find(|m| m.role == Role::Tool).unwrap().content;
    assert!(
        result.contains("could not store the memory: model `openai/meaning-test` failed with status 401"),
        "{result}"
    );
    assert!(store.list(ListRequest::everything()).await.unwrap().items.is_empty());
}
