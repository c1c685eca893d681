//! Shared by the HTTP tests: a server on a free loopback port, the graphs it serves, and an
//! SSE reader.
#![allow(dead_code, unreachable_pub, reason = "each test file uses part of the helpers")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::Arc;
use std::time::Duration;

use lgadk_core::{ChatState, Error, Message, RunContext};
use lgadk_graph::{CompiledGraph, GraphBuilder};
use lgadk_server::{ApiKeys, Limits, Server};
use lgadk_session::SessionManager;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running on a loopback port until [`TestServer::shutdown`] (or the end of the test).
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub sessions: SessionManager,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<lgadk_core::Result<()>>>,
}

/// The node of the `approval` assistant: it asks before it answers, and answers with what
/// it was told on resume.
fn approval_graph(sessions: SessionManager) -> CompiledGraph<ChatState> {
    GraphBuilder::new("approval")
        .add_node_fn("approve", |mut state: ChatState, ctx: Arc<RunContext>| async move {
            match ctx.resume_value() {
                Some(value) => {
                    state.output = format!("approved: {value}");
                    state.messages.push(Message::assistant(state.output.clone()));
                    Ok(state)
                }
                None => {
                    state.messages.push(Message::user(state.input.clone()));
                    Err(Error::interrupt_with("approve", serde_json::json!({"question": "go ahead?"})))
                }
            }
        })
        .configure_session_management(sessions)
        .build()
        .unwrap()
}

/// The `slow` assistant: answers after `SLOW` unless the run is cancelled first (then it
/// stops without answering, as a well-behaved node does).
pub const SLOW: Duration = Duration::from_millis(600);

fn slow_graph(sessions: SessionManager) -> CompiledGraph<ChatState> {
    GraphBuilder::new("slow")
        .add_node_fn("wait", |mut state: ChatState, ctx: Arc<RunContext>| async move {
            tokio::select! {
                () = tokio::time::sleep(SLOW) => {}
                () = ctx.cancel_token().cancelled() => {
                    return Err(lgadk_core::GraphError::Cancelled { graph: "slow".into() }.into());
                }
            }
            state.messages.push(Message::user(state.input.clone()));
            state.output = format!("slow answer to {}", state.input);
            state.messages.push(Message::assistant(state.output.clone()));
            Ok(state)
        })
        .configure_session_management(sessions)
        .build()
        .unwrap()
}

impl TestServer {
    /// Serves `agent` (the conversational assistant on the offline model), `approval` and
    /// `slow` over `sessions`.
    pub async fn start(sessions: SessionManager, keys: Option<ApiKeys>, limits: Limits) -> Self {
        let agent = lgadk_server::conversational_graph(lgadk_server::offline_model(), sessions.clone()).unwrap();
        let mut builder = Server::builder()
            .assistant("agent", agent)
            .assistant("approval", approval_graph(sessions.clone()))
            .assistant("slow", slow_graph(sessions.clone()))
            .sessions(sessions.clone())
            .limits(limits);
        if let Some(keys) = keys {
            builder = builder.api_keys(keys);
        }
        let server = builder.build().unwrap();
        // A backlog for a thousand clients connecting at once (`bind` asks for 1024).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(4096).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self { base, client: client(), sessions, stop: Some(stop), task: Some(task) }
    }

    pub async fn memory() -> Self {
        Self::start(SessionManager::in_memory(), None, Limits::default()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Asks the server to shut down; `serve` returns once connections close.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        let mut request =
            self.client.post(self.url(path)).header("content-type", "application/json").body(body.to_string());
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        decode(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = self.client.get(self.url(path));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        decode(request.send().await.unwrap()).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        decode(request.send().await.unwrap()).await
    }

    /// Creates a thread and returns its id.
    pub async fn thread(&self, key: Option<&str>) -> String {
        let (status, thread) = self.post("/threads", key, serde_json::json!({})).await;
        assert_eq!(status, 200, "{thread}");
        thread["thread_id"].as_str().unwrap().to_owned()
    }

    /// Streams a run to its end; returns the status and the events.
    pub async fn stream(&self, path: &str, key: Option<&str>, body: Value) -> (u16, Vec<SseEvent>) {
        let mut request =
            self.client.post(self.url(path)).header("content-type", "application/json").body(body.to_string());
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, parse_sse(&text))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An HTTP client (reqwest needs a TLS provider installed even for plain HTTP).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub async fn decode(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, value)
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: Value,
    pub id: Option<String>,
}

/// Parses an SSE body (keep-alive comments skipped).
pub fn parse_sse(text: &str) -> Vec<SseEvent> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let (mut event, mut data, mut id) = (String::new(), String::new(), None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_owned());
            }
        }
        if !event.is_empty() || !data.is_empty() {
            events.push(SseEvent { event, data: serde_json::from_str(&data).unwrap_or(Value::Null), id });
        }
    }
    events
}

/// A user turn as LangGraph clients send it.
pub fn user_input(text: &str) -> Value {
    serde_json::json!({"messages": [{"role": "user", "content": text}]})
}

pub mod scenarios;
