//! Graphs sharing one Redis, as processes of a fleet would: history continues across them,
//! concurrent turns on one session are never lost.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code: a failure is a panic")]

mod graph_common;

use std::sync::Arc;

use graph_common::{RecordingModel, assistant_graph};
use lgadk::SessionManager;
use lgadk::core::{ChatState, Error, Metadata, Role};
use lgadk::graph::{CompiledGraph, RunOptions, RunRequest};
use lgadk::session::testing::RedisServer;
use lgadk_llm::OfflineModel;

/// A graph with its own connection, cache and locks: what a separate process would have.
async fn process(server: &RedisServer) -> (CompiledGraph<ChatState>, SessionManager) {
    let sessions = SessionManager::redis(&server.url()).await.unwrap();
    let model = RecordingModel::new(Arc::new(OfflineModel::new()));
    (assistant_graph(model, sessions.clone()), sessions)
}

fn user_messages(state: &ChatState) -> Vec<String> {
    state.messages.iter().filter(|m| m.role == Role::User).map(|m| m.content.clone()).collect()
}

#[tokio::test]
async fn history_continues_across_two_graphs_sharing_one_redis() {
    let Some(server) = RedisServer::start() else { return };
    let (a, sessions) = process(&server).await;
    let (b, _) = process(&server).await;
    let first = a.run(RunRequest::new("one")).await.unwrap();
    let id = first.session_id;
    b.run(RunRequest::new("two").with_session(id.clone())).await.unwrap();
    // `a` holds version 1 in its cache; the version check sees 2 and reloads.
    let third = a.run(RunRequest::new("three").with_session(id.clone())).await.unwrap();
    assert_eq!(user_messages(&third.state), ["one", "two", "three"]);
    assert_eq!(third.state.messages.len(), 6);
    assert_eq!(b.state(&id).await.unwrap().unwrap().messages, third.state.messages);
    assert_eq!(sessions.summary(&id).await.unwrap().unwrap().interactions, 3);
    let history = b.history(&id, 10).await.unwrap();
    assert_eq!(history.iter().map(|s| s.state.messages.len()).collect::<Vec<_>>(), [6, 4, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_runs_on_one_session_all_land() {
    let Some(server) = RedisServer::start() else { return };
    let (graph, sessions) = process(&server).await;
    let id = sessions.create_session(None, Metadata::new()).await.unwrap();
    let runs: Vec<_> = (0..20)
        .map(|i| {
            let (graph, id) = (graph.clone(), id.clone());
            tokio::spawn(async move { graph.run(RunRequest::new(format!("msg {i}")).with_session(id)).await })
        })
        .collect();
    for run in runs {
        run.await.unwrap().unwrap();
    }
    let state = graph.state(&id).await.unwrap().unwrap();
    assert_eq!(state.messages.len(), 40);
    for pair in state.messages.chunks(2) {
        assert_eq!((pair[0].role, pair[1].role), (Role::User, Role::Assistant), "turns interleaved");
    }
    let mut seen = user_messages(&state);
    seen.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("msg {i}")).collect();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(sessions.summary(&id).await.unwrap().unwrap().interactions, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_graphs_racing_on_one_session_commit_or_conflict_and_lose_nothing() {
    let Some(server) = RedisServer::start() else { return };
    let (a, sessions) = process(&server).await;
    let (b, _) = process(&server).await;
    let id = sessions.create_session(None, Metadata::new()).await.unwrap();
    let runs: Vec<_> = (0..20)
        .map(|i| {
            let graph = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = id.clone();
            tokio::spawn(async move { graph.run(RunRequest::new(format!("msg {i}")).with_session(id)).await })
        })
        .collect();
    let (mut committed, mut conflicts) = (Vec::new(), 0);
    for run in runs {
        match run.await.unwrap() {
            Ok(response) => committed.push(response.state.input.clone()),
            Err(Error::Conflict { .. }) => conflicts += 1,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(committed.len() + conflicts, 20);
    eprintln!("racing graphs: {} committed, {conflicts} rejected with Conflict", committed.len());
    let state = a.state(&id).await.unwrap().unwrap();
    let mut saved = user_messages(&state);
    saved.sort();
    committed.sort();
    assert_eq!(saved, committed, "every committed turn is in the history, and only those");
    assert_eq!(state.messages.len(), 2 * committed.len());
    assert_eq!(sessions.summary(&id).await.unwrap().unwrap().interactions, committed.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_graphs_with_retry_commit_more_and_still_lose_nothing() {
    let Some(server) = RedisServer::start() else { return };
    let (a, sessions) = process(&server).await;
    let (b, _) = process(&server).await;
    let retry = RunOptions::default().with_retry_on_conflict(true);
    let (a, b) = (a.with_options(retry), b.with_options(retry));
    let id = sessions.create_session(None, Metadata::new()).await.unwrap();
    let runs: Vec<_> = (0..10)
        .map(|i| {
            let graph = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = id.clone();
            tokio::spawn(async move { graph.run(RunRequest::new(format!("msg {i}")).with_session(id)).await })
        })
        .collect();
    let mut committed = 0;
    for run in runs {
        match run.await.unwrap() {
            Ok(_) => committed += 1,
            Err(Error::Conflict { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    let state = b.state(&id).await.unwrap().unwrap();
    assert_eq!(state.messages.len(), 2 * committed);
    assert_eq!(sessions.summary(&id).await.unwrap().unwrap().interactions, committed as u64);
}
