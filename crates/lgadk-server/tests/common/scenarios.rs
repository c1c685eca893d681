//! The API matrix as scenarios over a running server, run on every backend.
#![allow(unreachable_pub, reason = "shared by the test files")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use reqwest::Method;
use serde_json::{Value, json};

use super::{SLOW, TestServer, user_input};

/// Assistants: search lists the three, get finds one, an unknown one is 404 with `detail`.
pub async fn assistants_search_and_get(server: &TestServer) {
    let (status, found) = server.post("/assistants/search", None, json!({})).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = found.as_array().unwrap().iter().map(|a| a["assistant_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["agent", "approval", "slow"]);
    let (status, one) = server.post("/assistants/search", None, json!({"graph_id": "slow", "limit": 5})).await;
    assert_eq!((status, one.as_array().unwrap().len()), (200, 1));
    assert_eq!(server.get("/assistants/agent", None).await.1["graph_id"], "agent");
    let (status, missing) = server.get("/assistants/nobody", None).await;
    assert_eq!(status, 404);
    assert!(missing["detail"].as_str().unwrap().contains("nobody"));
}

/// Threads: create (with metadata, with an id, `if_exists`), get, patch, search, delete.
pub async fn threads_lifecycle(server: &TestServer) {
    let id = uuid::Uuid::new_v4().to_string();
    let (status, created) =
        server.post("/threads", None, json!({"thread_id": id, "metadata": {"team": "red", "n": 1}})).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!((created["thread_id"].as_str(), created["status"].as_str()), (Some(id.as_str()), Some("idle")));
    assert_eq!(created["values"], json!({}));
    let (status, ttl) = server.post("/threads", None, json!({"ttl": {"ttl": 30, "strategy": "delete"}})).await;
    assert_eq!(status, 200, "{ttl}");
    let (status, ttl) = server.post("/threads", None, json!({"ttl": {"ttl": 30, "strategy": "keep"}})).await;
    assert_eq!((status, ttl["detail"].as_str().unwrap().contains("ttl.strategy")), (422, true));
    let (status, again) = server.post("/threads", None, json!({"thread_id": id})).await;
    assert_eq!(status, 409, "{again}");
    let (status, same) = server.post("/threads", None, json!({"thread_id": id, "if_exists": "do_nothing"})).await;
    assert_eq!((status, &same["metadata"]["team"]), (200, &json!("red")));

    let (status, patched) =
        server.send(Method::PATCH, &format!("/threads/{id}"), None, Some(json!({"metadata": {"n": 2}}))).await;
    assert_eq!(status, 200);
    assert_eq!(patched["metadata"], json!({"team": "red", "n": 2}));
    assert_eq!(server.get(&format!("/threads/{id}"), None).await.1["metadata"]["n"], 2);

    let other = server.thread(None).await;
    let (_, red) = server.post("/threads/search", None, json!({"metadata": {"team": "red"}})).await;
    let red: Vec<&str> = red.as_array().unwrap().iter().map(|t| t["thread_id"].as_str().unwrap()).collect();
    assert_eq!(red, [id.as_str()]);
    let (_, all) = server.post("/threads/search", None, json!({"limit": 1, "offset": 0})).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let (_, page2) = server.post("/threads/search", None, json!({"limit": 1, "offset": 1})).await;
    assert_ne!(all[0]["thread_id"], page2[0]["thread_id"], "offset moves the page");
    let (_, by_id) = server.post("/threads/search", None, json!({"ids": [other]})).await;
    assert_eq!(by_id.as_array().unwrap().len(), 1);

    let (status, _) = server.send(Method::DELETE, &format!("/threads/{id}"), None, None).await;
    assert_eq!(status, 204);
    let (status, gone) = server.get(&format!("/threads/{id}"), None).await;
    assert_eq!(status, 404);
    assert!(gone["detail"].is_string());
}

/// Streaming in each mode: `metadata` first with the run id, then the mode's events, in
/// order; several modes at once.
pub async fn stream_modes(server: &TestServer) {
    let thread = server.thread(None).await;
    let path = format!("/threads/{thread}/runs/stream");
    let body =
        |modes: Value| json!({"assistant_id": "agent", "input": user_input("Hello there"), "stream_mode": modes});

    let (status, events) = server.stream(&path, None, body(json!("values"))).await;
    assert_eq!(status, 200);
    assert_eq!(events[0].event, "metadata");
    assert!(events[0].data["run_id"].is_string());
    // The first values carry the input (the user's message), the last the turn's result.
    let first = events.iter().find(|e| e.event == "values").unwrap();
    assert_eq!(first.data["messages"].as_array().unwrap().len(), 1, "{:?}", first.data);
    assert_eq!(first.data["messages"][0]["type"], "human");
    let values = events.iter().rfind(|e| e.event == "values").unwrap();
    assert_eq!(values.data["messages"][0]["id"], first.data["messages"][0]["id"], "one message, one id");
    let messages = values.data["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!((messages[0]["type"].as_str(), messages[1]["type"].as_str()), (Some("human"), Some("ai")));
    assert_eq!(messages[0]["content"], "Hello there");
    assert!(messages[1]["id"].is_string());

    let (_, events) = server.stream(&path, None, body(json!(["updates", "messages-tuple", "messages"]))).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names[0], "metadata");
    assert!(names.contains(&"messages"), "{names:?}");
    assert!(names.contains(&"messages/partial") && names.contains(&"messages/complete"), "{names:?}");
    assert!(!names.contains(&"values"), "values were not asked for: {names:?}");
    let update = events.iter().find(|e| e.event == "updates").unwrap();
    let new = update.data["assistant"]["messages"].as_array().unwrap();
    assert_eq!(new.last().unwrap()["type"], "ai");
    assert!(new.last().unwrap()["usage_metadata"]["total_tokens"].as_u64().unwrap() > 0);
    // Tokens in order add up to the final message.
    let streamed: String = events
        .iter()
        .filter(|e| e.event == "messages")
        .map(|e| e.data[0]["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, new.last().unwrap()["content"].as_str().unwrap());
    // SSE ids grow.
    let ids: Vec<usize> = events.iter().map(|e| e.id.as_ref().unwrap().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let (status, bad) = server.stream(&path, None, body(json!(["debug"]))).await;
    assert_eq!(status, 422);
    let _ = bad;
}

/// `wait`, state, history and analytics after two turns.
pub async fn wait_state_history_analytics(server: &TestServer) {
    let thread = server.thread(None).await;
    let path = format!("/threads/{thread}/runs/wait");
    let (status, first) = server.post(&path, None, json!({"assistant_id": "agent", "input": user_input("one")})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["messages"].as_array().unwrap().len(), 2);
    let content = json!({"assistant_id": "agent", "input": {"messages": [{"type": "human", "content": [{"type": "text", "text": "two ✓ 日本"}]}]}});
    let (_, second) = server.post(&path, None, content).await;
    assert_eq!(second["messages"][2]["content"], "two ✓ 日本");

    let (status, state) = server.get(&format!("/threads/{thread}/state"), None).await;
    assert_eq!(status, 200);
    assert_eq!(state["values"]["messages"].as_array().unwrap().len(), 4);
    assert_eq!(state["next"], json!([]));
    assert_eq!(state["checkpoint"]["thread_id"], thread.as_str());
    let (_, history) = server.post(&format!("/threads/{thread}/history"), None, json!({"limit": 10})).await;
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["values"]["messages"].as_array().unwrap().len(), 2, "older first turn comes second");
    let before = history[0]["checkpoint"].clone();
    let (_, older) =
        server.post(&format!("/threads/{thread}/history"), None, json!({"limit": 10, "before": before})).await;
    assert_eq!(older.as_array().unwrap().len(), 1);

    let (status, analytics) = server.get(&format!("/threads/{thread}/analytics"), None).await;
    assert_eq!(status, 200);
    assert_eq!(analytics["interactions"], 2);
    assert!(analytics["total_tokens_in"].as_u64().unwrap() > 0);
    let (_, thread_json) = server.get(&format!("/threads/{thread}"), None).await;
    assert_eq!(thread_json["values"]["messages"].as_array().unwrap().len(), 4);
    assert_eq!(thread_json["metadata"]["graph_id"], "agent");
    let (status, mine) = server.get("/users/me/analytics", None).await;
    assert_eq!(status, 200);
    assert_eq!((mine["threads"].as_u64(), mine["interactions"].as_u64()), (Some(1), Some(2)));
    assert_eq!(mine["total_tokens_in"], analytics["total_tokens_in"]);
}

/// A background run: create answers at once with the run; join waits for its values; get
/// and list show it finished.
pub async fn create_join_get_list(server: &TestServer) {
    let thread = server.thread(None).await;
    let response = server
        .client
        .post(server.url(&format!("/threads/{thread}/runs")))
        .header("content-type", "application/json")
        .body(json!({"assistant_id": "slow", "input": user_input("bg")}).to_string())
        .send()
        .await
        .unwrap();
    let location = response.headers()["content-location"].to_str().unwrap().to_owned();
    let (status, run) = super::decode(response).await;
    assert_eq!(status, 200);
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(location, format!("/threads/{thread}/runs/{run_id}"));
    assert!(matches!(run["status"].as_str(), Some("pending" | "running")), "{run}");
    assert_eq!(server.get(&format!("/threads/{thread}"), None).await.1["status"], "busy");

    let (status, joined) = server.get(&format!("/threads/{thread}/runs/{run_id}/join"), None).await;
    assert_eq!(status, 200);
    assert_eq!(joined["output"], "slow answer to bg");
    assert_eq!(server.get(&format!("/threads/{thread}/runs/{run_id}"), None).await.1["status"], "success");
    let (_, list) = server.get(&format!("/threads/{thread}/runs"), None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Joining the finished run's stream replays its values.
    let response =
        server.client.get(server.url(&format!("/threads/{thread}/runs/{run_id}/stream"))).send().await.unwrap();
    let events = super::parse_sse(&response.text().await.unwrap());
    assert_eq!(events.first().unwrap().event, "metadata");
    assert_eq!(events.last().unwrap().event, "values");
    // The query shapes langgraph-sdk sends: an empty mode (None), repeated modes, a reconnect.
    for query in [
        "stream_mode=&cancel_on_disconnect=false",
        "stream_mode=values&stream_mode=updates",
        "stream_mode=values,updates",
    ] {
        let response = server
            .client
            .get(server.url(&format!("/threads/{thread}/runs/{run_id}/stream?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{query}");
        let events = super::parse_sse(&response.text().await.unwrap());
        assert_eq!(events.last().unwrap().event, "values", "{query}");
    }
    let response = server
        .client
        .get(server.url(&format!("/threads/{thread}/runs/{run_id}/stream")))
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    let events = super::parse_sse(&response.text().await.unwrap());
    assert_ne!(events[0].event, "metadata", "a reconnect resumes after the last event it saw");
    let response = server
        .client
        .get(server.url(&format!("/threads/{thread}/runs/{run_id}/stream?stream_mode=debug")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(server.get(&format!("/threads/{thread}"), None).await.1["status"], "idle");
}

/// An interrupt, then `command.resume`: the thread is interrupted in between.
pub async fn interrupt_then_resume(server: &TestServer) {
    let thread = server.thread(None).await;
    let path = format!("/threads/{thread}/runs/wait");
    let (status, paused) =
        server.post(&path, None, json!({"assistant_id": "approval", "input": user_input("deploy")})).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["__interrupt__"][0]["value"], json!({"question": "go ahead?"}));
    let (_, thread_json) = server.get(&format!("/threads/{thread}"), None).await;
    assert_eq!(thread_json["status"], "interrupted");
    let (_, state) = server.get(&format!("/threads/{thread}/state"), None).await;
    assert_eq!(state["next"], json!(["approve"]));
    assert_eq!(state["tasks"][0]["interrupts"][0]["value"]["question"], "go ahead?");

    let resume =
        json!({"assistant_id": "approval", "command": {"resume": "yes"}, "stream_mode": ["values", "updates"]});
    let (status, events) = server.stream(&format!("/threads/{thread}/runs/stream"), None, resume).await;
    assert_eq!(status, 200);
    let last = events.iter().rfind(|e| e.event == "values").unwrap();
    assert_eq!(last.data["output"], "approved: \"yes\"");
    let update = events.iter().find(|e| e.event == "updates").unwrap();
    assert_eq!(update.data["approve"]["messages"].as_array().unwrap().last().unwrap()["type"], "ai");
    let (_, thread_json) = server.get(&format!("/threads/{thread}"), None).await;
    assert_eq!(thread_json["status"], "idle");
    // Resuming a thread that is not interrupted fails the run.
    let (status, err) = server.post(&path, None, json!({"assistant_id": "approval", "command": {"resume": 1}})).await;
    assert_eq!(status, 400, "{err}");
}

/// A second run on a busy thread: `reject` is 409, `enqueue` runs after the first, in order.
pub async fn multitask_reject_and_enqueue(server: &TestServer) {
    let thread = server.thread(None).await;
    let runs = format!("/threads/{thread}/runs");
    let (status, _) = server.post(&runs, None, json!({"assistant_id": "slow", "input": user_input("first")})).await;
    assert_eq!(status, 200);
    let (status, refused) =
        server.post(&runs, None, json!({"assistant_id": "slow", "input": user_input("second")})).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("already running"));
    let (status, queued) = server
        .post(
            &runs,
            None,
            json!({"assistant_id": "slow", "input": user_input("third"), "multitask_strategy": "enqueue"}),
        )
        .await;
    assert_eq!(status, 200);
    let run_id = queued["run_id"].as_str().unwrap();
    let (_, joined) = server.get(&format!("{runs}/{run_id}/join"), None).await;
    let contents: Vec<&str> =
        joined["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["first", "slow answer to first", "third", "slow answer to third"]);
}

/// Cancelling a run: it stops, saves nothing, and reads as interrupted.
pub async fn cancel_saves_nothing(server: &TestServer) {
    let thread = server.thread(None).await;
    let runs = format!("/threads/{thread}/runs");
    let (_, run) = server.post(&runs, None, json!({"assistant_id": "slow", "input": user_input("doomed")})).await;
    let run_id = run["run_id"].as_str().unwrap();
    tokio::time::sleep(SLOW / 4).await;
    // langgraph-sdk sends `wait=1&action=interrupt`.
    let (status, _) = server.post(&format!("{runs}/{run_id}/cancel?wait=1&action=interrupt"), None, json!({})).await;
    assert_eq!(status, 204);
    let (status, body) = server.post(&format!("{runs}/{run_id}/cancel?wait=maybe"), None, json!({})).await;
    assert_eq!((status, body["detail"].as_str().unwrap().contains("wait")), (422, true));
    let (status, body) = server.get(&format!("{runs}?limit=many"), None).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("limit"), "{body}");
    assert_eq!(server.get(&format!("{runs}/{run_id}"), None).await.1["status"], "interrupted");
    let (_, state) = server.get(&format!("/threads/{thread}/state"), None).await;
    assert_eq!(state["values"], json!({}), "nothing of the cancelled turn was saved");
}

/// Stateless runs make a thread of their own and delete it afterwards.
pub async fn stateless_wait(server: &TestServer) {
    let (status, values) =
        server.post("/runs/wait", None, json!({"assistant_id": "agent", "input": user_input("hi")})).await;
    assert_eq!(status, 200, "{values}");
    assert_eq!(values["messages"].as_array().unwrap().len(), 2);
    // Its thread is deleted once the run is done.
    let mut left = json!(null);
    for _ in 0..50 {
        left = server.post("/threads/search", None, json!({})).await.1;
        if left == json!([]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(left, json!([]));
    let keep = json!({"assistant_id": "agent", "input": user_input("keep"), "on_completion": "keep"});
    assert_eq!(server.post("/runs/wait", None, keep).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(server.post("/threads/search", None, json!({})).await.1.as_array().unwrap().len(), 1);
}
