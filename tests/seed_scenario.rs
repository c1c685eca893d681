//! The seed scenario (LG-ADK's enhanced session management example) with exact figures, on
//! every session backend.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code: a failure is a panic")]

mod graph_common;

use std::sync::Arc;
use std::time::Duration;

use graph_common::{RecordingModel, assistant_graph};
use lgadk::core::{Role, Usage, UserId};
use lgadk::graph::RunRequest;
use lgadk::{SessionManager, metadata};
use lgadk_llm::OfflineModel;

async fn seed_scenario(sessions: SessionManager) {
    let model = RecordingModel::new(Arc::new(OfflineModel::new()));
    let graph = assistant_graph(Arc::clone(&model) as _, sessions.clone());
    let (alice, bob) = (UserId::parse("alice").unwrap(), UserId::parse("bob").unwrap());

    // Alice creates her session, then talks; Bob's session is created by `run`.
    let alice_meta = metadata! {"device" => "laptop", "location" => "New York", "language" => "en-US"};
    let alice_session = sessions.create_session("alice", alice_meta).await.unwrap();
    let a1 = graph
        .run(RunRequest::new("Hello! Can you tell me about machine learning?").with_session(alice_session.clone()))
        .await
        .unwrap();
    let bob_meta = metadata! {"device" => "mobile", "location" => "London", "language" => "en-GB"};
    let b1 = graph
        .run(
            RunRequest::new("Hi there! What's the weather like today?")
                .with_user(bob.clone())
                .with_metadata(bob_meta.clone()),
        )
        .await
        .unwrap();
    let bob_session = b1.session_id.clone();
    let a2 = graph
        .run(RunRequest::new("Can you explain neural networks specifically?").with_session(alice_session.clone()))
        .await
        .unwrap();
    let b2 = graph
        .run(RunRequest::new("And what about tomorrow's forecast?").with_session(bob_session.clone()))
        .await
        .unwrap();

    // Every answer is a real one, and each follow-up saw the earlier turn.
    for response in [&a1, &b1, &a2, &b2] {
        assert!(response.output.starts_with(lgadk_llm::OFFLINE_LABEL), "{}", response.output);
        assert!(response.usage.prompt_tokens > 0 && response.usage.completion_tokens > 0);
    }
    let roles: Vec<Role> = a2.state.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::User, Role::Assistant]);
    assert_eq!(a2.state.messages[0].content, "Hello! Can you tell me about machine learning?");
    assert_eq!(b2.state.messages.len(), 4);

    // The usages `run` tracked are exactly those the model reported, call by call.
    let reported = model.usages();
    assert_eq!(reported, [a1.usage, b1.usage, a2.usage, b2.usage]);
    let alice_usage = reported[0] + reported[2];

    assert_eq!(sessions.get_user_sessions(&alice).await.unwrap(), std::slice::from_ref(&alice_session));
    assert_eq!(sessions.get_user_sessions(&bob).await.unwrap(), std::slice::from_ref(&bob_session));
    let bob_record = sessions.get_session_metadata(&bob_session).await.unwrap().unwrap();
    assert_eq!(bob_record.user_id, Some(bob.clone()));
    assert_eq!(bob_record.metadata, bob_meta);

    let summary = sessions.get_session_summary(&alice_session).await.unwrap().unwrap();
    assert_eq!(summary.interactions, 2);
    assert_eq!(
        Usage::new(summary.total_tokens_in, summary.total_tokens_out),
        alice_usage,
        "token totals are the sum of the usages the model reported"
    );
    // The measured wall times of the two turns (backends may store them at ms or µs precision).
    let measured = (a1.response_time + a2.response_time) / 2;
    assert!(summary.avg_response_time.abs_diff(measured) < Duration::from_millis(1), "{summary:?} vs {measured:?}");
    assert!(summary.duration >= a2.response_time);
    assert_eq!(summary.user_id, Some(alice.clone()));
    let bob_summary = sessions.get_session_summary(&bob_session).await.unwrap().unwrap();
    assert_eq!(
        (bob_summary.interactions, bob_summary.total_tokens_in),
        (2, reported[1].prompt_tokens + reported[3].prompt_tokens)
    );

    let update = metadata! {"subscription" => "premium", "last_topic" => "neural networks"};
    sessions.update_session_metadata(&alice_session, update, true).await.unwrap();
    let merged = sessions.get_session_metadata(&alice_session).await.unwrap().unwrap();
    assert_eq!(merged["subscription"], "premium");
    assert_eq!(
        merged.into_metadata(),
        metadata! {
            "device" => "laptop",
            "location" => "New York",
            "language" => "en-US",
            "subscription" => "premium",
            "last_topic" => "neural networks",
        }
    );

    assert!(sessions.end_session(&alice_session).await.unwrap());
    assert!(sessions.end_session(&bob_session).await.unwrap());
    assert!(!sessions.session_exists(&alice_session).await.unwrap());
    assert!(!sessions.session_exists(&bob_session).await.unwrap());
    assert!(sessions.get_user_sessions(&alice).await.unwrap().is_empty());
    assert!(sessions.get_session_summary(&alice_session).await.unwrap().is_none(), "an ended session reads as absent");
    let err = graph.run(RunRequest::new("still there?").with_session(alice_session)).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn seed_scenario_in_memory_gives_exact_figures() {
    seed_scenario(SessionManager::in_memory()).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn seed_scenario_on_redis_gives_exact_figures() {
    let Some(server) = lgadk::session::testing::RedisServer::start() else { return };
    seed_scenario(SessionManager::redis(&server.url()).await.unwrap()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn seed_scenario_on_postgres_gives_exact_figures() {
    let Some(server) = lgadk::session::testing::PostgresServer::start() else { return };
    seed_scenario(SessionManager::postgres(&server.url()).await.unwrap()).await;
}
