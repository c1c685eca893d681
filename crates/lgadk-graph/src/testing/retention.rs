//! The scenarios of bounded session logs: a session's [`LogRetention`] cuts its log in the turn's
//! commit, every process applies it, a cold turn loads only what was kept, and `history` says
//! where the log was cut.

use lgadk_core::{ContextSummary, LogRetention};

#[allow(clippy::wildcard_imports, reason = "the scenarios use the suite's models and helpers")]
use super::*;

/// A session that set `LastMessages(4)` keeps its last four messages, in its state and in
/// storage, turn after turn; a graph built on another manager (another process, with the
/// graph's default `KeepAll`) applies the session's retention too, and its cold turn's prompt
/// carries only what was kept.
pub async fn a_session_log_keeps_its_window_in_every_process(fx: GraphFixture) {
    let (here, there) = (fx.manager().await, fx.manager().await);
    let graph = chat_graph(EchoModel::new(), &here);
    let id = new_session(&here).await;
    let window = LogRetention::LastMessages(4);
    graph.run(request("t0", &id).with_log_retention(window)).await.unwrap();
    let mut last = None;
    for turn in 1..5 {
        last = Some(graph.run(request(&format!("t{turn}"), &id)).await.unwrap());
    }
    let last = last.unwrap();
    assert_eq!(contents(&last.state.messages), ["t3", "echo #4: t3", "t4", "echo #5: t4"]);
    let checkpointer = here.checkpointer();
    assert_eq!(checkpointer.messages(&id, 0..10_000).await.unwrap(), last.state.messages, "storage keeps the window");
    let latest = checkpointer.latest(&id).await.unwrap().unwrap();
    assert_eq!(latest.log_range(), 6..10, "positions stay absolute");
    assert_eq!(graph.state(&id).await.unwrap().unwrap(), *last.state);

    let elsewhere = chat_graph(EchoModel::new(), &there);
    let cold = elsewhere.run(request("t5", &id)).await.unwrap();
    // The system prompt, the four kept messages and the new question.
    assert_eq!(cold.usage, EchoModel::usage_for(6, "echo #1: t5"));
    assert_eq!(contents(&cold.state.messages), ["t4", "echo #5: t4", "t5", "echo #1: t5"]);
    assert_eq!(there.checkpointer().messages(&id, 0..10_000).await.unwrap(), cold.state.messages);
    let warm = graph.run(request("t6", &id)).await.unwrap();
    assert_eq!(contents(&warm.state.messages), ["t5", "echo #1: t5", "t6", "echo #6: t6"]);
    assert_eq!(interactions(&here, &id).await, 7);

    // A request can set another retention: from then on the log grows again.
    let all = graph.run(request("t7", &id).with_log_retention(LogRetention::KeepAll)).await.unwrap();
    let more = elsewhere.run(request("t8", &id)).await.unwrap();
    assert_eq!(all.state.messages.len(), 6);
    assert_eq!(more.state.messages.len(), 8);
    assert_eq!(checkpointer.latest(&id).await.unwrap().unwrap().log_range(), 10..18);
}

/// `history` says where the log was cut: each snapshot's `log_start..log_len`, and an older
/// checkpoint whose range began before a later cut reads what remains of it.
pub async fn history_says_where_the_log_was_cut(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let graph = chat_graph(EchoModel::new(), &sessions)
        .with_options(RunOptions::default().with_log_retention(LogRetention::LastMessages(4)));
    let id = new_session(&sessions).await;
    for message in ["one", "two", "three"] {
        graph.run(request(message, &id)).await.unwrap();
    }
    let history = graph.history(&id, 10).await.unwrap();
    let spans: Vec<_> = history.iter().map(|s| (s.version, s.log_start, s.log_len)).collect();
    let kept = fx.checkpoint_retention.min(3);
    assert_eq!(spans, [(3, 2, 6), (2, 2, 4), (1, 2, 2)][..kept]);
    assert_eq!(contents(&history[0].state.messages), ["two", "echo #2: two", "three", "echo #3: three"]);
    if kept > 1 {
        assert_eq!(contents(&history[1].state.messages), ["two", "echo #2: two"], "what remains of 0..4");
    }
    if kept > 2 {
        assert!(history[2].state.messages.is_empty(), "0..2 was cut whole");
    }
    // A graph without the retention (another process) reads the same.
    let other = chat_graph(EchoModel::new(), &fx.manager().await);
    let seen = other.history(&id, 1).await.unwrap();
    assert_eq!((seen[0].log_start, &seen[0].state), (2, &history[0].state));
}

/// A node that writes three exchanges per turn and a running summary covering all but the
/// last one.
fn summarizing_graph(sessions: &SessionManager) -> CompiledGraph<ChatState> {
    StateGraph::<ChatState>::new("summarizing")
        .add_node_fn("talk", |mut state: ChatState, _| async move {
            for n in 0..3 {
                state.messages.push(Message::user(format!("{} q{n}", state.input)));
                state.messages.push(Message::assistant(format!("{} a{n}", state.input)));
            }
            let covers = state.messages.len() - 2;
            let text =
                format!("{} messages summarized", covers + state.context_summary.as_ref().map_or(0, |s| s.text.len()));
            state.context_summary = Some(ContextSummary::new(text, covers));
            state.output = "ok".into();
            Ok(state)
        })
        .set_entry_point("talk")
        .set_finish_point("talk")
        .with_sessions(sessions.clone())
        .compile()
        .unwrap()
}

/// `AfterSummary` drops what the state's running summary covers, in the same commit, and the
/// summary then counts from the first message kept; a turn that added more than it keeps
/// stores only what it keeps.
pub async fn after_summary_keeps_what_follows_the_summary(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let graph = summarizing_graph(&sessions);
    let id = new_session(&sessions).await;
    let first = graph.run(request("t1", &id).with_log_retention(LogRetention::AfterSummary)).await.unwrap();
    assert_eq!(contents(&first.state.messages), ["t1 q2", "t1 a2"]);
    assert_eq!(first.state.context_summary.as_ref().map(|s| s.covers), Some(0), "shifted to the kept log");
    let checkpointer = sessions.checkpointer();
    assert_eq!(checkpointer.latest(&id).await.unwrap().unwrap().log_range(), 4..6);
    assert_eq!(checkpointer.messages(&id, 0..100).await.unwrap(), first.state.messages);

    let other = summarizing_graph(&fx.manager().await);
    let second = other.run(request("t2", &id)).await.unwrap();
    assert_eq!(contents(&second.state.messages), ["t2 q2", "t2 a2"]);
    assert_eq!(checkpointer.latest(&id).await.unwrap().unwrap().log_range(), 10..12);
    let state = graph.state(&id).await.unwrap().unwrap();
    assert_eq!(state, *second.state);
    assert_eq!(state.context_summary.map(|s| s.covers), Some(0));
}
