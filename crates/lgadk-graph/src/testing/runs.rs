//! The scenarios of runs bound to sessions: history across runs and graphs, two writers,
//! conflicts, failed runs, interrupt and resume, streaming, retention, state and history.

#[allow(clippy::wildcard_imports, reason = "the scenarios use the suite's models and helpers")]
use super::*;
/// A session's turns build one history: each run continues from the last saved state, the
/// prompt holds the whole conversation, and `state`, `history` and the session's counters
/// follow.
pub async fn history_continues_across_runs(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let graph = chat_graph(EchoModel::new(), &sessions);
    let id = new_session(&sessions).await;
    let first = graph.run(request("one", &id)).await.unwrap();
    let second = graph.run(request("two", &id)).await.unwrap();

    assert_eq!(contents(&second.state.messages), ["one", "echo #1: one", "two", "echo #2: two"]);
    assert_eq!(second.output, "echo #2: two");
    // The second prompt held the system message and the three messages before the answer.
    assert_eq!(second.usage, EchoModel::usage_for(4, "echo #2: two"));
    assert_eq!(graph.state(&id).await.unwrap().unwrap().messages, second.state.messages);

    let stats = sessions.get_session(&id).await.unwrap().unwrap().stats;
    let total = first.usage + second.usage;
    assert_eq!(
        (stats.interactions, stats.total_tokens_in, stats.total_tokens_out),
        (2, total.prompt_tokens, total.completion_tokens)
    );

    let history = graph.history(&id, 10).await.unwrap();
    assert_eq!(history.iter().map(|s| s.version).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(history.iter().map(|s| s.state.messages.len()).collect::<Vec<_>>(), [4, 2]);
    assert_eq!(history[0].node.as_deref(), Some("assistant"));
}

/// Graphs built separately, each on its own manager (processes sharing the backend), continue
/// one session's history: a graph whose cached state is stale reloads it, and a graph built
/// later with an empty cache starts from the saved history.
pub async fn history_continues_across_separately_built_graphs(fx: GraphFixture) {
    let (here, there) = (fx.manager().await, fx.manager().await);
    let a = chat_graph(EchoModel::new(), &here);
    let b = chat_graph(EchoModel::new(), &there);
    let alice = user("alice");
    let first = a.run(RunRequest::new("one").with_user(alice.clone())).await.unwrap();
    let id = first.session_id;
    b.run(request("two", &id)).await.unwrap();
    // `a` holds version 1 in its cache; the version check sees 2 and reloads.
    let third = a.run(request("three", &id)).await.unwrap();
    assert_eq!(user_messages(&third.state), ["one", "two", "three"]);
    assert_eq!(third.state.messages.len(), 6);
    assert_whole_turns(&third.state);
    assert_eq!(b.state(&id).await.unwrap().unwrap().messages, third.state.messages);
    assert_eq!(interactions(&there, &id).await, 3);
    let history = b.history(&id, 10).await.unwrap();
    assert_eq!(history.iter().map(|s| s.state.messages.len()).collect::<Vec<_>>(), [6, 4, 2]);

    let cold = chat_graph(EchoModel::new(), &fx.manager().await);
    let fourth = cold.run(request("four", &id)).await.unwrap();
    assert_eq!(fourth.state.messages[..6], third.state.messages[..]);
    assert_eq!(user_messages(&fourth.state), ["one", "two", "three", "four"]);
    assert_eq!(here.get_user_sessions(&alice).await.unwrap(), std::slice::from_ref(&id));
    assert_eq!(interactions(&here, &id).await, 4);
}

/// Twenty concurrent runs on one session through one graph take turns: every turn lands, whole
/// and in the order the model answered them, and every one is counted.
pub async fn concurrent_runs_in_one_process_take_turns(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let graph = chat_graph(EchoModel::new(), &sessions);
    let id = new_session(&sessions).await;
    let runs: Vec<_> = (0..20)
        .map(|i| {
            let (graph, id) = (graph.clone(), id.clone());
            tokio::spawn(async move { graph.run(RunRequest::new(format!("msg {i}")).with_session(id)).await })
        })
        .collect();
    let mut usage = Usage::default();
    for run in runs {
        usage += run.await.unwrap().unwrap().usage;
    }
    let state = graph.state(&id).await.unwrap().unwrap();
    assert_eq!(state.messages.len(), 40);
    assert_whole_turns(&state);
    for (turn, pair) in state.messages.chunks(2).enumerate() {
        assert_eq!(pair[1].content, format!("echo #{}: {}", turn + 1, pair[0].content), "turns saved out of order");
    }
    let mut seen = user_messages(&state);
    seen.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("msg {i}")).collect();
    expected.sort();
    assert_eq!(seen, expected, "no turn lost");
    let stats = sessions.get_session(&id).await.unwrap().unwrap().stats;
    assert_eq!(
        (stats.interactions, stats.total_tokens_in, stats.total_tokens_out),
        (20, usage.prompt_tokens, usage.completion_tokens)
    );
}

/// Two processes racing on one session: each run commits or fails with `Conflict`, every
/// committed turn is in the history (whole) and counted, and no rejected one is.
pub async fn racing_processes_commit_or_conflict_and_lose_nothing(fx: GraphFixture) {
    let (here, there) = (fx.manager().await, fx.manager().await);
    let graphs = [chat_graph(EchoModel::new(), &here), chat_graph(EchoModel::new(), &there)];
    let id = new_session(&here).await;
    let runs: Vec<_> = (0..20)
        .map(|i| {
            let (graph, id) = (graphs[i % 2].clone(), id.clone());
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
    assert!(!committed.is_empty(), "some run committed");
    tracing::info!(committed = committed.len(), conflicts, "racing processes");
    let state = graphs[1].state(&id).await.unwrap().unwrap();
    assert_whole_turns(&state);
    let mut saved = user_messages(&state);
    saved.sort();
    committed.sort();
    assert_eq!(saved, committed, "every committed turn is in the history, and only those");
    assert_eq!(interactions(&here, &id).await, committed.len() as u64);
}

/// Racing processes that retry once on `Conflict` still lose nothing: every run that returns
/// `Ok` is in the history and counted, every other one returned `Conflict` and wrote nothing.
pub async fn racing_processes_with_retry_lose_nothing(fx: GraphFixture) {
    let retry = RunOptions::default().with_retry_on_conflict(true);
    let (here, there) = (fx.manager().await, fx.manager().await);
    let a = chat_graph(EchoModel::new(), &here).with_options(retry);
    let b = chat_graph(EchoModel::new(), &there).with_options(retry);
    let id = new_session(&here).await;
    let runs: Vec<_> = (0..10)
        .map(|i| {
            let graph = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = id.clone();
            tokio::spawn(async move { graph.run(RunRequest::new(format!("msg {i}")).with_session(id)).await })
        })
        .collect();
    let mut committed = Vec::new();
    for run in runs {
        match run.await.unwrap() {
            Ok(response) => committed.push(response.state.input.clone()),
            Err(Error::Conflict { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    let state = b.state(&id).await.unwrap().unwrap();
    assert_whole_turns(&state);
    let mut saved = user_messages(&state);
    saved.sort();
    committed.sort();
    assert_eq!(saved, committed);
    assert_eq!(interactions(&there, &id).await, committed.len() as u64);
}

/// A process whose turn was overtaken by another's gets `Conflict` and writes nothing; running
/// the turn again commits it on top of the other's, and with `retry_on_conflict` the run
/// reloads and commits by itself.
pub async fn conflict_writes_nothing_and_a_retry_commits(fx: GraphFixture) {
    let (here, there) = (fx.manager().await, fx.manager().await);
    let gate = Arc::new(Gate::default());
    let slow = chat_graph(Arc::new(GatedModel { gate: Arc::clone(&gate), inner: EchoModel::new() }), &here);
    let fast = chat_graph(EchoModel::new(), &there);
    let id = new_session(&here).await;
    slow.run(request("zero", &id)).await.unwrap();

    // `slow` loads version 1 and waits in its model while `fast` saves version 2.
    gate.armed.store(true, Ordering::SeqCst);
    let overtaken = tokio::spawn({
        let (slow, id) = (slow.clone(), id.clone());
        async move { slow.run(request("from slow", &id)).await }
    });
    gate.entered.notified().await;
    fast.run(request("from fast", &id)).await.unwrap();
    let before = Written::of(&here, &id).await;
    gate.release.notify_one();
    let err = overtaken.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert_eq!(Written::of(&here, &id).await, before, "the rejected turn wrote nothing");
    assert_eq!(user_messages(&slow.state(&id).await.unwrap().unwrap()), ["zero", "from fast"]);

    // Running it again commits it after the turn that won.
    let again = slow.run(request("from slow", &id)).await.unwrap();
    assert_eq!(user_messages(&again.state), ["zero", "from fast", "from slow"]);

    // With retry_on_conflict the overtaken run reloads and runs again by itself.
    let retrying = slow.clone().with_options(RunOptions::default().with_retry_on_conflict(true));
    gate.armed.store(true, Ordering::SeqCst);
    let overtaken = tokio::spawn({
        let id = id.clone();
        async move { retrying.run(request("retried", &id)).await }
    });
    gate.entered.notified().await;
    fast.run(request("fast again", &id)).await.unwrap();
    gate.release.notify_one();
    let retried = overtaken.await.unwrap().unwrap();
    assert_eq!(user_messages(&retried.state), ["zero", "from fast", "from slow", "fast again", "retried"]);
    assert_whole_turns(&retried.state);
    assert_eq!(fast.state(&id).await.unwrap().unwrap().messages, retried.state.messages);
    assert_eq!(interactions(&there, &id).await, 5);
}

/// A run whose model fails after its first node has run writes nothing: no checkpoint, no
/// logged message, no interaction, and the next turn starts from the last saved state. A
/// streamed run that fails saves nothing either, and a failed run that would have created its
/// session leaves none.
pub async fn failed_run_writes_nothing(fx: GraphFixture) {
    let sessions = fx.manager().await;
    // Turn 1 makes calls 1 and 2; turn 2 makes call 3 (first node), then call 4 fails.
    let model = EchoModel::failing(4..5);
    let graph = two_step_graph(Arc::clone(&model) as _, &sessions);
    let id = new_session(&sessions).await;
    let ok = graph.run(request("one", &id)).await.unwrap();
    let before = Written::of(&sessions, &id).await;

    let err = graph.run(request("two", &id)).await.unwrap_err();
    assert!(matches!(err, Error::Model { status: Some(500), .. }), "{err:?}");
    assert_eq!(model.calls(), 4, "turn 2 got past its first node before failing");
    assert_eq!(Written::of(&sessions, &id).await, before);
    assert_eq!(graph.state(&id).await.unwrap().unwrap().messages, ok.state.messages);
    let other = fx.manager().await;
    assert_eq!(Written::of(&other, &id).await, before, "another process reads the same");

    // The failed turn left nothing in the graph's cache: the next turn continues turn 1.
    let three = graph.run(request("three", &id)).await.unwrap();
    assert_eq!(three.state.messages[..ok.state.messages.len()], ok.state.messages[..]);
    assert_eq!(user_messages(&three.state), ["one", "one", "three", "three"]);
    assert_eq!(graph.history(&id, 10).await.unwrap().len(), 2);

    // A streamed run that fails ends with the error and saves nothing.
    let before = Written::of(&sessions, &id).await;
    let failing = chat_graph(EchoModel::failing(1..usize::MAX), &sessions);
    let events: Vec<_> = failing.stream(request("four", &id)).collect().await;
    assert!(matches!(events.first(), Some(Ok(RunEvent::NodeStarted { .. }))), "{events:?}");
    assert!(matches!(events.last(), Some(Err(Error::Model { .. }))), "{events:?}");
    assert_eq!(Written::of(&sessions, &id).await, before);

    // A failed run without a session creates none.
    let bob = user("bob");
    let err = failing.run(RunRequest::new("hi").with_user(bob.clone())).await.unwrap_err();
    assert!(matches!(err, Error::Model { .. }), "{err:?}");
    assert!(sessions.get_user_sessions(&bob).await.unwrap().is_empty());
}

/// A node that interrupts saves the checkpoint with the node to resume; a graph built later
/// on another manager (another process, empty cache) resumes it without running the earlier
/// nodes again, and a finished run cannot be resumed.
pub async fn interrupt_then_resume_from_a_cold_graph(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let model = EchoModel::new();
    let graph = approval_graph(Arc::clone(&model) as _, &sessions);
    let id = new_session(&sessions).await;
    let err = graph.run(request("write a post", &id)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Interrupted { node, session_id: Some(got), .. } if node == "approval" && *got == id),
        "{err:?}"
    );
    let saved = graph.history(&id, 1).await.unwrap().remove(0);
    assert_eq!(saved.next, ["approval"]);
    assert_eq!(saved.node.as_deref(), Some("approval"));
    assert_eq!(saved.state.messages.len(), 2);

    let cold = approval_graph(Arc::clone(&model) as _, &fx.manager().await);
    let resumed = cold.resume(&id, serde_json::json!("yes")).await.unwrap();
    assert_eq!(resumed.output, "published after 3 messages");
    assert_eq!(resumed.session_id, id);
    assert_eq!(contents(&resumed.state.messages), ["write a post", "echo #1: write a post", "approved: \"yes\""]);
    assert_eq!(model.calls(), 1, "the draft node did not run again");
    let latest = graph.history(&id, 10).await.unwrap();
    assert_eq!(latest.len(), 2);
    assert!(latest[0].next.is_empty());
    assert_eq!(graph.state(&id).await.unwrap().unwrap().messages, resumed.state.messages);
    assert_eq!(interactions(&sessions, &id).await, 2, "the interrupted turn and the resumed one");

    let err = graph.resume(&id, serde_json::json!("again")).await.unwrap_err();
    assert!(matches!(err, Error::Graph(GraphError::Invalid { .. })), "{err:?}");
    assert_eq!(graph.history(&id, 10).await.unwrap().len(), 2, "the refused resume wrote nothing");
}

/// `stream` yields node and token events in order, then the response `run` would have
/// returned, and leaves the session exactly as `run` leaves another one: the same state, the
/// same history, the same counters.
pub async fn stream_ends_in_the_same_state_as_run(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let streamed = chat_graph(EchoModel::new(), &sessions);
    let ran = chat_graph(EchoModel::new(), &sessions);
    let (mut streamed_id, mut ran_id) = (None::<SessionId>, None::<SessionId>);
    for message in ["stream me", "and again"] {
        let with = |id: &Option<SessionId>| match id {
            Some(id) => request(message, id),
            None => RunRequest::new(message),
        };
        let mut events: Vec<RunEvent<ChatState>> =
            streamed.stream(with(&streamed_id)).map(|event| event.unwrap()).collect().await;
        let by_run = ran.run(with(&ran_id)).await.unwrap();

        let mut tokens = String::new();
        let mut kinds = Vec::new();
        for event in &events {
            match event {
                RunEvent::NodeStarted { node, step } => kinds.push(format!("start {node} {step}")),
                RunEvent::NodeFinished { node, step } => kinds.push(format!("finish {node} {step}")),
                RunEvent::Token { node, text } => {
                    assert_eq!(node, "assistant");
                    tokens.push_str(text);
                    if kinds.last().is_none_or(|k| k != "tokens") {
                        kinds.push("tokens".into());
                    }
                }
                RunEvent::Finished(_) => kinds.push("finished".into()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(kinds, ["start assistant 1", "tokens", "finish assistant 1", "finished"]);
        let Some(RunEvent::Finished(response)) = events.pop() else { panic!("no final event") };
        assert_eq!(tokens, response.output);
        assert_eq!(response.output, by_run.output);
        assert_eq!(response.usage, by_run.usage);
        let normalize = |mut state: ChatState| {
            state.session_id = None;
            state
        };
        assert_eq!(normalize((*response.state).clone()), normalize((*by_run.state).clone()));
        assert_eq!(streamed.state(&response.session_id).await.unwrap().unwrap(), *response.state);
        streamed_id = Some(response.session_id);
        ran_id = Some(by_run.session_id);
    }
    let (streamed_id, ran_id) = (streamed_id.unwrap(), ran_id.unwrap());

    // Read back through another process: the same saved state, history and counters.
    let reader = chat_graph(EchoModel::new(), &fx.manager().await);
    let normalize = |mut state: ChatState| {
        state.session_id = None;
        state
    };
    let (s, r) = (reader.state(&streamed_id).await.unwrap().unwrap(), reader.state(&ran_id).await.unwrap().unwrap());
    assert_eq!(normalize(s), normalize(r));
    let shape = |history: Vec<crate::StateSnapshot<ChatState>>| {
        history.into_iter().map(|s| (s.version, s.step, s.node, s.next, s.state.messages)).collect::<Vec<_>>()
    };
    assert_eq!(
        shape(reader.history(&streamed_id, 10).await.unwrap()),
        shape(reader.history(&ran_id, 10).await.unwrap())
    );
    let (s, r) = (
        sessions.get_session_summary(&streamed_id).await.unwrap().unwrap(),
        sessions.get_session_summary(&ran_id).await.unwrap().unwrap(),
    );
    assert_eq!((s.interactions, s.total_tokens_in, s.total_tokens_out), (2, r.total_tokens_in, r.total_tokens_out));
    assert_eq!(r.interactions, 2);
}

/// `history` keeps only the backend's configured number of latest checkpoints, newest first,
/// while the latest state still holds the whole conversation.
pub async fn history_keeps_only_the_latest_checkpoints(fx: GraphFixture) {
    let keep = fx.checkpoint_retention;
    assert!(keep >= 1, "a backend keeps at least one checkpoint");
    let sessions = fx.manager().await;
    let graph = chat_graph(EchoModel::new(), &sessions);
    let id = new_session(&sessions).await;
    let turns = keep + 2;
    for turn in 1..=turns {
        graph.run(request(&format!("turn {turn}"), &id)).await.unwrap();
    }
    let expected: Vec<u64> = (turns - keep + 1..=turns).rev().map(|v| v as u64).collect();
    for reader in [graph.clone(), chat_graph(EchoModel::new(), &fx.manager().await)] {
        let history = reader.history(&id, turns + 10).await.unwrap();
        assert_eq!(history.iter().map(|s| s.version).collect::<Vec<_>>(), expected);
        for snapshot in &history {
            assert_eq!(snapshot.state.messages.len() as u64, 2 * snapshot.version, "each kept version has its history");
        }
        let state = reader.state(&id).await.unwrap().unwrap();
        assert_eq!(state.messages.len(), 2 * turns, "retention drops checkpoints, never the conversation");
    }
    // The next turn still continues the whole conversation.
    let next = graph.run(request("one more", &id)).await.unwrap();
    assert_eq!(next.state.messages.len(), 2 * turns + 2);
    assert_eq!(graph.history(&id, turns + 10).await.unwrap().len(), keep);
}

/// `state` is `None` before the first checkpoint and then the latest saved state; `history`
/// lists checkpoints newest first, up to its limit, each with the conversation as it was; an
/// unknown session is `SessionNotFound` for both.
pub async fn state_and_history_read_newest_first(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let graph = chat_graph(EchoModel::new(), &sessions);
    let id = new_session(&sessions).await;
    assert!(graph.state(&id).await.unwrap().is_none());
    assert!(graph.history(&id, 10).await.unwrap().is_empty());

    let mut last = None;
    for message in ["one", "two", "three"] {
        last = Some(graph.run(request(message, &id)).await.unwrap());
    }
    let last = last.unwrap();
    assert_eq!(graph.state(&id).await.unwrap().unwrap(), *last.state);

    let two = graph.history(&id, 2).await.unwrap();
    assert_eq!(two.iter().map(|s| s.version).collect::<Vec<_>>(), [3, 2]);
    let all = graph.history(&id, 10).await.unwrap();
    assert_eq!(all.iter().map(|s| s.version).collect::<Vec<_>>(), [3, 2, 1]);
    for snapshot in &all {
        let len = 2 * snapshot.version as usize;
        assert_eq!(snapshot.state.messages, last.state.messages[..len], "version {}", snapshot.version);
        assert_eq!(snapshot.node.as_deref(), Some("assistant"));
        assert!(snapshot.next.is_empty());
    }
    assert!(all.windows(2).all(|w| w[0].created_at >= w[1].created_at), "newest first");

    let other = chat_graph(EchoModel::new(), &fx.manager().await);
    assert_eq!(other.state(&id).await.unwrap().unwrap(), *last.state);
    assert_eq!(other.history(&id, 10).await.unwrap().iter().map(|s| s.version).collect::<Vec<_>>(), [3, 2, 1]);

    let unknown = SessionId::parse("never-created").unwrap();
    assert!(graph.state(&unknown).await.unwrap_err().is_not_found());
    assert!(graph.history(&unknown, 10).await.unwrap_err().is_not_found());
}

/// `update_state` saves a change made from outside a turn as a new checkpoint that every
/// process then starts from, without counting an interaction; a change that shrinks the
/// history, a failing change and a change to an interrupted session write nothing.
pub async fn update_state_saves_a_checkpoint_the_next_turn_continues(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let graph = chat_graph(EchoModel::new(), &sessions);
    let id = new_session(&sessions).await;
    graph.run(request("one", &id)).await.unwrap();

    let saved = graph
        .update_state(&id, Some("editor"), |state| {
            state.messages.push(Message::user("added by hand"));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((saved.version, saved.node.as_deref()), (2, Some("editor")));
    assert_eq!(contents(&saved.state.messages), ["one", "echo #1: one", "added by hand"]);
    assert_eq!(interactions(&sessions, &id).await, 1, "an update is not an interaction");

    // Another process continues from the updated state.
    let other = chat_graph(EchoModel::new(), &fx.manager().await);
    let next = other.run(request("two", &id)).await.unwrap();
    assert_eq!(user_messages(&next.state), ["one", "added by hand", "two"]);

    let versions = graph.history(&id, 10).await.unwrap().len();
    let err = graph
        .update_state(&id, None, |state| {
            state.messages.pop();
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Graph(GraphError::State { .. })), "{err:?}");
    let err =
        graph.update_state(&id, None, |_| Err(Error::InvalidConfig { reason: "refused".into() })).await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    assert_eq!(graph.history(&id, 10).await.unwrap().len(), versions, "refused updates wrote nothing");
    assert_eq!(graph.state(&id).await.unwrap().unwrap().messages, next.state.messages);

    let unknown = SessionId::new();
    let err = graph.update_state(&unknown, None, |_| Ok(())).await.unwrap_err();
    assert!(matches!(err, Error::SessionNotFound(_)), "{err:?}");

    let approval = approval_graph(EchoModel::new() as _, &sessions);
    let waiting = new_session(&sessions).await;
    approval.run(request("write a post", &waiting)).await.unwrap_err();
    let err = approval.update_state(&waiting, None, |_| Ok(())).await.unwrap_err();
    assert!(matches!(err, Error::Graph(GraphError::Invalid { .. })), "{err:?}");
    assert_eq!(approval.history(&waiting, 10).await.unwrap().len(), 1);
}
