//! What a graph turn costs on PostgreSQL, counted on the wire: a proxy between the store and
//! the server counts the protocol's round trips (`Sync`) and statements (`Execute`) that real
//! [`CompiledGraph::run`](lgadk::CompiledGraph::run) calls send.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]
#![allow(clippy::print_stderr, reason = "the test prints what it counted")]

use lgadk::core::{ChatState, Message, Usage};
use lgadk::session::PostgresStore;
use lgadk::session::testing::{PostgresServer, WireCounter, WireCounts};
use lgadk::{CompiledGraph, RunRequest, SessionManager, StateGraph, metadata};

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

/// The wire counts of a warm turn, a cold turn (a fresh graph: another process, or an evicted
/// cache), a warm turn with request metadata, and a turn whose cached state is stale.
async fn measure(wire: &WireCounter, sessions: SessionManager) -> [WireCounts; 4] {
    let first_graph = graph(sessions.clone());
    let id = first_graph.run(RunRequest::new("one")).await.unwrap().session_id;
    // Not measured: the statements of a turn are prepared on the connection by the first ones.
    let warmup = graph(sessions.clone());
    warmup.run(RunRequest::new("warm-up").with_session(id.clone())).await.unwrap();
    first_graph.run(RunRequest::new("warm-up").with_session(id.clone())).await.unwrap();
    wire.take();

    let second = first_graph.run(RunRequest::new("two").with_session(id.clone())).await.unwrap();
    assert_eq!(second.state.messages.len(), 8);
    let warm = wire.take();

    let other_graph = graph(sessions.clone());
    let third = other_graph.run(RunRequest::new("three").with_session(id.clone())).await.unwrap();
    assert_eq!(third.state.messages.len(), 10, "the cold turn loaded the whole history");
    let cold = wire.take();

    let request = RunRequest::new("four").with_session(id.clone()).with_metadata(metadata! {"plan" => "pro"});
    assert_eq!(other_graph.run(request).await.unwrap().state.metadata.get("plan"), Some(&"pro".into()));
    let with_metadata = wire.take();

    let fifth = first_graph.run(RunRequest::new("five").with_session(id.clone())).await.unwrap();
    assert_eq!(fifth.state.messages.len(), 14, "the stale cache was replaced by the latest state");
    let stale = wire.take();

    let session = sessions.get_session(&id).await.unwrap().unwrap();
    assert_eq!(session.stats.interactions, 7, "every turn was tracked");
    [warm, cold, with_metadata, stale]
}

/// A turn is one statement to read and one to commit, each one round trip on a connection
/// that has them prepared, warm or cold, with or without metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_turn_is_two_statements_in_two_round_trips() {
    let Some(server) = PostgresServer::start() else { return };
    let wire = WireCounter::start(server.port());
    let store = PostgresStore::builder(wire.url_for(&server.url()))
        .with_schema("round_trips")
        .with_max_connections(1)
        .connect()
        .await
        .unwrap();
    let [warm, cold, with_metadata, stale] = measure(&wire, SessionManager::new(store)).await;
    eprintln!("cached statements: warm {warm:?}, cold {cold:?}, with metadata {with_metadata:?}, stale {stale:?}");
    let two = WireCounts { round_trips: 2, statements: 2, prepares: 0 };
    assert_eq!(warm, two, "warm turn: begin_turn + commit_turn");
    assert_eq!(cold, two, "cold turn: begin_turn with the log + commit_turn");
    assert_eq!(with_metadata, two, "the metadata merge rides on the commit");
    assert_eq!(stale, two, "a stale cache reloads in the same read");
}

/// Without the prepared-statement cache (as through PgBouncer in transaction mode), each
/// statement is one simple query with its values inline: still two statements in two round
/// trips, nothing prepared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_statement_cache_a_turn_is_still_two_round_trips() {
    let Some(server) = PostgresServer::start() else { return };
    let wire = WireCounter::start(server.port());
    let store = PostgresStore::builder(wire.url_for(&server.url()))
        .with_schema("round_trips")
        .with_max_connections(1)
        .with_statement_cache_capacity(0)
        .connect()
        .await
        .unwrap();
    let [warm, cold, with_metadata, stale] = measure(&wire, SessionManager::new(store)).await;
    eprintln!("no statement cache: warm {warm:?}, cold {cold:?}, with metadata {with_metadata:?}, stale {stale:?}");
    let two = WireCounts { round_trips: 2, statements: 2, prepares: 0 };
    for counts in [warm, cold, with_metadata, stale] {
        assert_eq!(counts, two);
    }
}
