//! Long-term memory in graph runs: the store reaches nodes and tools through the run's
//! context with the session's user, and the `remember`/`recall` tools of the tool loop keep
//! each user's memories to that user, across sessions and across graphs sharing a store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::{Arc, Mutex};

use lgadk_core::memory::{ListRequest, MemoryStore, Namespace};
use lgadk_core::{ChatModel, ChatState, Role, UserId};
use lgadk_graph::prebuilt::{MemoryTools, ToolLoop};
use lgadk_graph::testing::ToolCallingModel;
use lgadk_graph::{CompiledGraph, END, RunRequest, START, StateGraph};
use lgadk_session::{InMemoryMemoryStore, SessionManager};
use serde_json::{Value, json};

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// A tool loop whose model calls the memory tools as `script` says, on `sessions`, with
/// `memory` if given.
fn agent(
    script: Vec<(&str, Value)>,
    sessions: &SessionManager,
    memory: Option<Arc<dyn MemoryStore>>,
) -> CompiledGraph<ChatState> {
    let model: Arc<dyn ChatModel> = ToolCallingModel::new(script);
    let graph = ToolLoop::new(model)
        .with_memory_tools(&MemoryTools::new())
        .unwrap()
        .graph::<ChatState>()
        .with_sessions(sessions.clone())
        .compile()
        .unwrap();
    match memory {
        Some(store) => graph.with_memory(store),
        None => graph,
    }
}

/// The tool results of the turn that ended with `state`.
fn results(state: &ChatState) -> Vec<String> {
    state.messages.iter().filter(|m| m.role == Role::Tool).map(|m| m.content.clone()).collect()
}

async fn memories_of(store: &dyn MemoryStore, name: &str) -> Vec<Value> {
    let prefix = Namespace::new(["users", name]).unwrap();
    store.list(ListRequest::under(prefix)).await.unwrap().items.into_iter().map(|item| item.value).collect()
}

#[tokio::test]
async fn what_a_user_remembers_in_one_session_is_recalled_in_a_later_one() {
    let sessions = SessionManager::in_memory();
    let store: Arc<dyn MemoryStore> = Arc::new(InMemoryMemoryStore::new());
    let remember = agent(
        vec![("remember", json!({"memory": "Prefers window seats", "topic": "seat"}))],
        &sessions,
        Some(Arc::clone(&store)),
    );
    let first = remember.run(RunRequest::new("I like window seats").with_user(user("alice"))).await.unwrap();
    assert_eq!(results(&first.state), ["Remembered: Prefers window seats"]);
    let stored = memories_of(&*store, "alice").await;
    assert_eq!(stored, [json!({"text": "Prefers window seats", "topic": "seat"})]);
    let item = &store.list(ListRequest::everything()).await.unwrap().items[0];
    assert_eq!(item.namespace, Namespace::new(["users", "alice", "memories"]).unwrap());
    assert_eq!(item.key.as_str(), "topic-seat");

    // A later session of the same user, on another graph sharing the store.
    let recall = agent(vec![("recall", json!({"query": "seat preference"}))], &sessions, Some(Arc::clone(&store)));
    let later = recall.run(RunRequest::new("Book me a flight").with_user(user("alice"))).await.unwrap();
    assert_ne!(later.session_id, first.session_id);
    let found = results(&later.state);
    assert!(found[0].contains("- Prefers window seats"), "{found:?}");
    assert!(later.output.contains("Prefers window seats"), "the model answered from it: {}", later.output);

    // The same topic again replaces the memory instead of adding one.
    let again = agent(
        vec![("remember", json!({"memory": "Prefers aisle seats now", "topic": "Seat"}))],
        &sessions,
        Some(Arc::clone(&store)),
    );
    again.run(RunRequest::new("aisle from now on").with_user(user("alice"))).await.unwrap();
    assert_eq!(memories_of(&*store, "alice").await, [json!({"text": "Prefers aisle seats now", "topic": "seat"})]);
}

#[tokio::test]
async fn users_never_see_each_others_memories() {
    let sessions = SessionManager::in_memory();
    let store: Arc<dyn MemoryStore> = Arc::new(InMemoryMemoryStore::new());
    let remember =
        |memory: &str| agent(vec![("remember", json!({"memory": memory}))], &sessions, Some(Arc::clone(&store)));
    remember("Allergic to peanuts").run(RunRequest::new("note it").with_user(user("alice"))).await.unwrap();
    remember("Likes jazz").run(RunRequest::new("note it").with_user(user("bob"))).await.unwrap();

    let recall = agent(vec![("recall", json!({"query": "peanuts allergy"}))], &sessions, Some(Arc::clone(&store)));
    let bob = recall.run(RunRequest::new("what do you know?").with_user(user("bob"))).await.unwrap();
    let found = results(&bob.state).join("\n");
    assert!(found.contains("Likes jazz"), "bob's own memory (nothing of his matched, so all of his): {found}");
    assert!(!found.contains("Allergic"), "alice's memory leaked to bob: {found}");

    // A model cannot reach another namespace through its arguments: there is no argument for it.
    let sneaky = agent(
        vec![("recall", json!({"query": "peanuts", "user": "alice", "namespace": ["users", "alice"]}))],
        &sessions,
        Some(Arc::clone(&store)),
    );
    let tried = sneaky.run(RunRequest::new("alice's memories").with_user(user("bob"))).await.unwrap();
    assert!(!results(&tried.state).join("\n").contains("Allergic"), "{:?}", results(&tried.state));
    assert_eq!(memories_of(&*store, "alice").await.len(), 1);
    assert_eq!(memories_of(&*store, "bob").await.len(), 1);
}

#[tokio::test]
async fn a_run_without_a_user_gets_a_tool_error_and_touches_nothing() {
    let sessions = SessionManager::in_memory();
    let store: Arc<dyn MemoryStore> = Arc::new(InMemoryMemoryStore::new());
    let remember = agent(vec![("remember", json!({"memory": "x"}))], &sessions, Some(Arc::clone(&store)));
    let done = remember.run(RunRequest::new("remember x")).await.unwrap();
    let result = results(&done.state);
    assert!(result[0].contains("no user") && result[0].contains("nothing was read or written"), "{result:?}");
    assert!(store.list(ListRequest::everything()).await.unwrap().items.is_empty());

    // Without a store the tools say so too, and the turn still completes.
    let unconfigured = agent(vec![("recall", json!({"query": "x"}))], &sessions, None);
    let done = unconfigured.run(RunRequest::new("recall x").with_user(user("alice"))).await.unwrap();
    assert!(results(&done.state)[0].contains("no memory store"), "{:?}", results(&done.state));
}

#[tokio::test]
async fn an_empty_memory_is_reported_and_bad_arguments_are_refused() {
    let sessions = SessionManager::in_memory();
    let store: Arc<dyn MemoryStore> = Arc::new(InMemoryMemoryStore::new());
    let recall = agent(vec![("recall", json!({"query": "anything"}))], &sessions, Some(Arc::clone(&store)));
    let done = recall.run(RunRequest::new("recall").with_user(user("carol"))).await.unwrap();
    assert_eq!(results(&done.state), ["Nothing is remembered about this user yet."]);

    let blank = agent(vec![("remember", json!({"memory": "   "}))], &sessions, Some(Arc::clone(&store)));
    let done = blank.run(RunRequest::new("remember").with_user(user("carol"))).await.unwrap();
    assert!(results(&done.state)[0].contains("the memory is empty"), "{:?}", results(&done.state));
    let wrong_type = agent(vec![("remember", json!({"memory": 42}))], &sessions, Some(Arc::clone(&store)));
    let done = wrong_type.run(RunRequest::new("remember").with_user(user("carol"))).await.unwrap();
    assert!(results(&done.state)[0].contains("memory"), "{:?}", results(&done.state));
    assert!(memories_of(&*store, "carol").await.is_empty());
}

#[tokio::test]
async fn nodes_get_the_store_and_the_sessions_owner_in_run_invoke_and_stream() {
    /// Per node call: the run's user, and whether it had a memory store.
    type Seen = Vec<(Option<String>, bool)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let log = Arc::clone(&seen);
    let graph = StateGraph::<ChatState>::new("probe")
        .add_node_fn("probe", move |state: ChatState, ctx| {
            log.lock().unwrap().push((ctx.user_id().map(|u| u.to_string()), ctx.memory().is_some()));
            async move { Ok(state) }
        })
        .add_edge(START, "probe")
        .add_edge("probe", END)
        .compile()
        .unwrap();
    graph.run(RunRequest::new("no memory yet").with_user(user("dana"))).await.unwrap();

    let graph = graph.with_memory(Arc::new(InMemoryMemoryStore::new()));
    assert_eq!(graph.memory().map(|m| m.backend()), Some("memory"));
    let first = graph.run(RunRequest::new("hi").with_user(user("dana"))).await.unwrap();
    // A later turn of the session: the owner comes from the session, not the request.
    graph.run(RunRequest::new("again").with_session(first.session_id.clone())).await.unwrap();
    graph.invoke(ChatState::default()).await.unwrap();
    let streamed: Vec<_> =
        futures_util::StreamExt::collect(graph.stream(RunRequest::new("streamed").with_user(user("erin")))).await;
    assert!(streamed.last().unwrap().is_ok());

    let dana = Some("dana".to_owned());
    assert_eq!(
        *seen.lock().unwrap(),
        [(dana.clone(), false), (dana.clone(), true), (dana, true), (None, true), (Some("erin".to_owned()), true)]
    );
}

#[tokio::test]
async fn memories_remembered_with_a_ttl_are_forgotten_when_it_passes() {
    let clock = lgadk_core::ManualClock::new(1_000_000);
    let store: Arc<dyn MemoryStore> = Arc::new(InMemoryMemoryStore::builder().with_clock(clock.clone()).build());
    let sessions = SessionManager::in_memory();
    let tools = MemoryTools::new().with_ttl(std::time::Duration::from_secs(60)).with_section("short_term");
    let graph = |script: Vec<(&str, Value)>| {
        let model: Arc<dyn ChatModel> = ToolCallingModel::new(script);
        ToolLoop::new(model)
            .with_memory_tools(&tools)
            .unwrap()
            .graph::<ChatState>()
            .with_sessions(sessions.clone())
            .compile()
            .unwrap()
            .with_memory(Arc::clone(&store))
    };
    graph(vec![("remember", json!({"memory": "Parked on level 3"}))])
        .run(RunRequest::new("remember where I parked").with_user(user("fay")))
        .await
        .unwrap();
    let item = &store.list(ListRequest::everything()).await.unwrap().items[0];
    assert_eq!(item.namespace, Namespace::new(["users", "fay", "short_term"]).unwrap());
    assert!(item.expires_at.is_some());

    let recall = graph(vec![("recall", json!({"query": "parking level"}))]);
    let within = recall.run(RunRequest::new("where did I park?").with_user(user("fay"))).await.unwrap();
    assert!(results(&within.state)[0].contains("Parked on level 3"), "{:?}", results(&within.state));
    clock.advance(std::time::Duration::from_secs(61));
    let after = recall.run(RunRequest::new("where did I park?").with_user(user("fay"))).await.unwrap();
    assert_eq!(results(&after.state), ["Nothing is remembered about this user yet."]);
}
