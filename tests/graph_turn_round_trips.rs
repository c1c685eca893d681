//! What a graph turn costs on Redis, counted with MONITOR: the commands real
//! [`CompiledGraph::run`](lgadk::CompiledGraph::run) calls send.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]
#![allow(clippy::print_stderr, reason = "the test prints what it counted")]

use std::ops::Range;

use async_trait::async_trait;
use lgadk::core::{
    ChatState, Checkpoint, Checkpointer, Interaction, Message, MetadataUpdate, NewCheckpoint, NewSession, Page,
    Session, SessionPage, SessionStats, SessionStore, TurnStore, Usage,
};
use lgadk::session::RedisStore;
use lgadk::session::testing::{Monitor, RedisServer};
use lgadk::{CompiledGraph, Metadata, Result, RunRequest, SessionId, SessionManager, StateGraph, UserId, metadata};

/// A one-node chat graph over `sessions` that answers and reports some usage.
fn graph(sessions: SessionManager) -> CompiledGraph<ChatState> {
    StateGraph::<ChatState>::new("rt")
        .add_node_fn("reply", |mut state: ChatState, ctx| async move {
            state.messages.push(Message::user(state.input.clone()));
            state.messages.push(Message::assistant("ok"));
            ctx.add_usage(Usage::new(7, 3));
            Ok(state)
        })
        .set_entry_point("reply")
        .set_finish_point("reply")
        .with_sessions(sessions)
        .compile()
        .unwrap()
}

/// The commands of a warm turn, a cold turn (a fresh graph: another process, or an evicted
/// cache), a warm turn with request metadata, and a turn whose cached state is stale (another
/// graph saved the session since), on `sessions`.
async fn measure(server: &RedisServer, sessions: SessionManager) -> [Vec<String>; 4] {
    let first_graph = graph(sessions.clone());
    // Not measured: the first create through a store also sweeps the indexes.
    let id = first_graph.run(RunRequest::new("one")).await.unwrap().session_id;
    let mut monitor = Monitor::start(server);
    monitor.client_commands_since_last(server);

    let second = first_graph.run(RunRequest::new("two").with_session(id.clone())).await.unwrap();
    assert_eq!(second.state.messages.len(), 4);
    let warm = monitor.client_commands_since_last(server);

    let other_graph = graph(sessions.clone());
    let third = other_graph.run(RunRequest::new("three").with_session(id.clone())).await.unwrap();
    assert_eq!(third.state.messages.len(), 6, "the cold turn loaded the whole history");
    let cold = monitor.client_commands_since_last(server);

    let request = RunRequest::new("four").with_session(id.clone()).with_metadata(metadata! {"plan" => "pro"});
    assert_eq!(other_graph.run(request).await.unwrap().state.metadata.get("plan"), Some(&"pro".into()));
    let with_metadata = monitor.client_commands_since_last(server);

    let fifth = first_graph.run(RunRequest::new("five").with_session(id.clone())).await.unwrap();
    assert_eq!(fifth.state.messages.len(), 10, "the stale cache was replaced by the latest state");
    let stale = monitor.client_commands_since_last(server);

    let session = sessions.get_session(&id).await.unwrap().unwrap();
    assert_eq!(session.stats.interactions, 5, "every turn was tracked");
    assert_eq!(session.metadata.get("plan"), Some(&"pro".into()));
    [warm, cold, with_metadata, stale]
}

/// Regression for the turn's cost: a warm turn is one read and one commit (it was 4: get,
/// checkpoint version, put, track), a cold one as well (it was 5: get, latest, messages, put,
/// track). The same graph on a store that keeps the default, call-by-call `TurnStore` shows
/// the old figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_graph_turn_is_two_round_trips_and_a_cold_one_at_most_three() {
    let Some(server) = RedisServer::start() else { return };
    let connect = |prefix: &'static str| RedisStore::builder(server.url()).with_prefix(prefix).connect();

    let [warm, cold, with_metadata, stale] =
        measure(&server, SessionManager::new(connect("turns").await.unwrap())).await;
    eprintln!("two-call turns: warm {warm:?}, cold {cold:?}, warm with metadata {with_metadata:?}, stale {stale:?}");
    assert_eq!(warm, ["evalsha", "evalsha"], "warm turn: begin_turn + commit_turn");
    assert_eq!(cold, ["evalsha", "evalsha"], "cold turn: begin_turn with the log + commit_turn");
    assert!(cold.len() <= 3);
    assert_eq!(with_metadata, ["evalsha", "evalsha"], "the metadata merge rides on the commit");
    assert_eq!(stale, ["evalsha", "evalsha"], "a stale cache reloads in the same read");

    let [warm, cold, with_metadata, stale] =
        measure(&server, SessionManager::new(CallByCall(connect("calls").await.unwrap()))).await;
    eprintln!(
        "call-by-call turns: warm {warm:?}, cold {cold:?}, warm with metadata {with_metadata:?}, stale {stale:?}"
    );
    assert_eq!(warm.len(), 4, "get, version, put, track: {warm:?}");
    assert_eq!(cold.len(), 5, "get, latest, messages, put, track: {cold:?}");
}

/// A Redis store whose turns use the default `TurnStore` methods: one call per step, as
/// graph turns were before `begin_turn`/`commit_turn`.
#[derive(Debug)]
struct CallByCall(RedisStore);

impl TurnStore for CallByCall {}

#[async_trait]
impl SessionStore for CallByCall {
    fn backend(&self) -> &'static str {
        "redis-call-by-call"
    }
    async fn create(&self, new: NewSession) -> Result<Session> {
        self.0.create(new).await
    }
    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        self.0.get(id).await
    }
    async fn track_interaction(&self, id: &SessionId, turn: Interaction) -> Result<SessionStats> {
        self.0.track_interaction(id, turn).await
    }
    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.0.touch(id).await
    }
    async fn update_metadata(&self, id: &SessionId, update: MetadataUpdate) -> Result<Metadata> {
        self.0.update_metadata(id, update).await
    }
    async fn list_user_sessions(&self, user: &UserId, page: Page) -> Result<SessionPage> {
        self.0.list_user_sessions(user, page).await
    }
    async fn end(&self, id: &SessionId) -> Result<bool> {
        self.0.end(id).await
    }
    async fn purge_expired(&self) -> Result<usize> {
        self.0.purge_expired().await
    }
}

#[async_trait]
impl Checkpointer for CallByCall {
    async fn version(&self, id: &SessionId) -> Result<u64> {
        self.0.version(id).await
    }
    async fn put(&self, id: &SessionId, checkpoint: NewCheckpoint, expected_version: u64) -> Result<Checkpoint> {
        self.0.put(id, checkpoint, expected_version).await
    }
    async fn latest(&self, id: &SessionId) -> Result<Option<Checkpoint>> {
        self.0.latest(id).await
    }
    async fn checkpoint(&self, id: &SessionId, version: u64) -> Result<Option<Checkpoint>> {
        self.0.checkpoint(id, version).await
    }
    async fn list(&self, id: &SessionId, limit: usize) -> Result<Vec<Checkpoint>> {
        self.0.list(id, limit).await
    }
    async fn messages(&self, id: &SessionId, range: Range<u64>) -> Result<Vec<Message>> {
        self.0.messages(id, range).await
    }
    async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.0.delete(id).await
    }
}
