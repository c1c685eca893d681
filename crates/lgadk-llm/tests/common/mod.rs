//! A loopback HTTP/1.1 server speaking `/v1/chat/completions` and `/v1/embeddings`, hand-rolled on a tokio
//! `TcpListener` so that tests control every byte: JSON replies, SSE streams sent event by
//! event, streams cut mid-way, slow answers, error statuses in the shapes OpenAI and the
//! compatible servers send, and connections that are dropped without an answer.
//!
//! Like OpenAI, the server refuses a malformed tool conversation with a 400 before the test's
//! handler sees it ([`check_chat_request`]): an assistant tool call without a `tool` message
//! answering it, a `tool` message answering no call, `tool_choice`/`parallel_tool_calls`
//! without tools, a `tool_choice` naming a tool not offered, and a `strict` function whose
//! schema breaks strict mode's rules.
//!
//! An embeddings request is checked the same way ([`check_embeddings_request`]): a model, an
//! `input` that is a non-empty string or a list of 1 to 2048 non-empty strings, `float` (or no)
//! encoding format, a positive `dimensions`. [`embeddings`] answers a valid one with real
//! vectors: [`test_vector`] of each text, a deterministic unit vector.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test harness: a failure is a panic")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request the server received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Value,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// A complete response with `Content-Length`.
    Body { status: u16, content_type: &'static str, headers: Vec<(String, String)>, body: String },
    /// `text/event-stream`, chunked: one chunk per event, 5 ms apart; `[DONE]` if `done`;
    /// if `cut`, the connection drops in the middle of a chunk instead of ending the body;
    /// if `stall`, the connection stays open and silent after the events.
    Sse { events: Vec<Value>, done: bool, cut: bool, stall: bool },
    /// Reads the request, then closes the connection without answering (a proxy or a
    /// crashing server that accepted the request).
    HangUp,
    /// Waits, then sends the inner reply.
    Delayed(Duration, Box<Self>),
}

impl Reply {
    pub(crate) fn json(status: u16, body: &Value) -> Self {
        Self::Body { status, content_type: "application/json", headers: Vec::new(), body: body.to_string() }
    }

    pub(crate) fn raw(status: u16, content_type: &'static str, body: &str) -> Self {
        Self::Body { status, content_type, headers: Vec::new(), body: body.to_owned() }
    }

    pub(crate) fn error(status: u16, message: &str) -> Self {
        Self::json(status, &json!({"error": {"message": message, "type": "test_error", "param": null, "code": null}}))
    }

    /// An OpenAI-style error body with `type` and `code`.
    pub(crate) fn api_error(status: u16, message: &str, kind: Option<&str>, code: Option<&str>) -> Self {
        Self::json(status, &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))
    }

    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Self::Body { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    pub(crate) fn sse(events: Vec<Value>) -> Self {
        Self::Sse { events, done: true, cut: false, stall: false }
    }

    pub(crate) fn sse_cut(events: Vec<Value>) -> Self {
        Self::Sse { events, done: false, cut: true, stall: false }
    }

    pub(crate) fn sse_without_done(events: Vec<Value>) -> Self {
        Self::Sse { events, done: false, cut: false, stall: false }
    }

    pub(crate) fn sse_stalled(events: Vec<Value>) -> Self {
        Self::Sse { events, done: false, cut: false, stall: true }
    }

    pub(crate) fn delayed(self, delay: Duration) -> Self {
        Self::Delayed(delay, Box::new(self))
    }
}

type Handler = dyn Fn(usize, &Recorded) -> Reply + Send + Sync;

/// The running server; stops when dropped.
pub(crate) struct TestServer {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Answers request `n` (0-based) with `handler(n, &request)`.
    pub(crate) async fn start(handler: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                let (log, handler) = (Arc::clone(&log), Arc::clone(&handler));
                tokio::spawn(async move {
                    let _ = serve(socket, &log, &*handler).await;
                });
            }
        });
        Self { addr, requests, task }
    }

    /// Answers request `n` with `replies[n]`, repeating the last one.
    pub(crate) async fn sequence(replies: Vec<Reply>) -> Self {
        assert!(!replies.is_empty());
        Self::start(move |n, _| replies[n.min(replies.len() - 1)].clone()).await
    }

    /// Always answers with `reply`.
    pub(crate) async fn always(reply: Reply) -> Self {
        Self::sequence(vec![reply]).await
    }

    /// `http://127.0.0.1:<port>/v1`
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `127.0.0.1:<port>`
    pub(crate) fn host(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub(crate) fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

async fn read_request(socket: &mut TcpStream) -> std::io::Result<Option<Recorded>> {
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 4096];
    let header_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let method = start.next().unwrap_or_default().to_owned();
    let path = start.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize =
        headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[header_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok(Some(Recorded { method, path, headers, body }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        529 => "Site Overloaded",
        _ => "Status",
    }
}

async fn serve(mut socket: TcpStream, log: &Mutex<Vec<Recorded>>, handler: &Handler) -> std::io::Result<()> {
    let Some(request) = read_request(&mut socket).await? else { return Ok(()) };
    let index = {
        let mut log = log.lock().unwrap();
        log.push(request.clone());
        log.len() - 1
    };
    let mut reply = match check_chat_request(&request).or_else(|| check_embeddings_request(&request)) {
        Some(refusal) => refusal,
        None => handler(index, &request),
    };
    while let Reply::Delayed(delay, inner) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    match reply {
        Reply::Body { status, content_type, headers, body } => {
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
                reason(status),
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            socket.write_all(head.as_bytes()).await?;
            socket.write_all(body.as_bytes()).await?;
        }
        Reply::Sse { events, done, cut, stall } => {
            socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                      Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                )
                .await?;
            let mut payloads: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
            if done {
                payloads.push("data: [DONE]\n\n".to_owned());
            }
            for payload in payloads {
                socket.write_all(format!("{:x}\r\n{payload}\r\n", payload.len()).as_bytes()).await?;
                socket.flush().await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if stall {
                tokio::time::sleep(Duration::from_secs(10)).await;
                return Ok(());
            }
            if cut {
                // Announce 256 bytes, send a few, and hang up: the body can never complete.
                socket.write_all(b"100\r\ndata: {\"id\":\"chatcmpl-").await?;
                socket.flush().await?;
                return Ok(());
            }
            socket.write_all(b"0\r\n\r\n").await?;
        }
        Reply::HangUp => {
            // Close without a byte of answer; the client sees the connection end.
            drop(socket);
            return Ok(());
        }
        Reply::Delayed(..) => unreachable!(),
    }
    socket.flush().await?;
    socket.shutdown().await
}

// ---- OpenAI's request checks -----------------------------------------------------------------

/// OpenAI's 400 for an invalid request: `invalid_request_error` naming the parameter.
fn invalid_request(message: &str, param: &str, code: Option<&str>) -> Reply {
    Reply::json(
        400,
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}),
    )
}

/// The 400 OpenAI answers a chat-completions request with, if it breaks a rule of tool
/// calling; `None` for a request it accepts (or one that is not a chat completion).
pub(crate) fn check_chat_request(request: &Recorded) -> Option<Reply> {
    if request.method != "POST" || !request.path.ends_with("/chat/completions") {
        return None;
    }
    check_tool_options(&request.body).or_else(|| check_tool_sequence(&request.body))
}

fn check_tool_options(body: &Value) -> Option<Reply> {
    let tools = body.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty());
    for param in ["tool_choice", "parallel_tool_calls"] {
        if body.get(param).is_some() && tools.is_none() {
            let message = format!("Invalid value for '{param}': '{param}' is only allowed when 'tools' are specified.");
            return Some(invalid_request(&message, param, None));
        }
    }
    let tools = tools?;
    if let Some(Value::String(mode)) = body.get("tool_choice")
        && !["auto", "none", "required"].contains(&mode.as_str())
    {
        let message = format!("Invalid value: '{mode}'. Supported values are: 'none', 'auto', and 'required'.");
        return Some(invalid_request(&message, "tool_choice", Some("invalid_value")));
    }
    if let Some(Value::Object(named)) = body.get("tool_choice") {
        let name = named.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
        let offered = |n: &str| tools.iter().any(|t| t["function"]["name"] == n);
        if named.get("type").and_then(Value::as_str) != Some("function") || !name.is_some_and(offered) {
            let message = format!("Invalid value for 'tool_choice': function {name:?} is not among the tools.");
            return Some(invalid_request(&message, "tool_choice", None));
        }
    }
    for (i, tool) in tools.iter().enumerate() {
        let function = &tool["function"];
        if function["strict"] == true
            && let Some(problem) = strict_problem(&function["parameters"], "()")
        {
            let name = function["name"].as_str().unwrap_or_default();
            let message = format!("Invalid schema for function '{name}': {problem}");
            let param = format!("tools[{i}].function.parameters");
            return Some(invalid_request(&message, &param, Some("invalid_function_parameters")));
        }
    }
    None
}

/// Why `schema` breaks strict mode: every object closed, every property required.
fn strict_problem(schema: &Value, context: &str) -> Option<String> {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = map.get("properties") {
                if map.get("additionalProperties") != Some(&Value::Bool(false)) {
                    return Some(format!(
                        "In context={context}, 'additionalProperties' is required to be supplied and to be false."
                    ));
                }
                let required: Vec<&str> = map
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if let Some(missing) = properties.keys().find(|k| !required.contains(&k.as_str())) {
                    return Some(format!(
                        "In context={context}, 'required' is required to be supplied and to be an array including \
                         every key in properties. Missing '{missing}'."
                    ));
                }
            }
            map.iter().find_map(|(key, value)| strict_problem(value, &format!("{context}.{key}")))
        }
        Value::Array(items) => items.iter().find_map(|item| strict_problem(item, context)),
        _ => None,
    }
}

/// Every assistant tool call answered by a `tool` message right after it, and no `tool`
/// message that answers nothing.
fn check_tool_sequence(body: &Value) -> Option<Reply> {
    let messages = body.get("messages").and_then(Value::as_array)?;
    // Calls of the latest assistant message not answered yet, and where that message was.
    let mut open: Vec<String> = Vec::new();
    let mut opened_at = 0;
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        if role == "tool" {
            let id = message["tool_call_id"].as_str().unwrap_or_default();
            match open.iter().position(|open_id| open_id == id) {
                Some(at) => {
                    open.remove(at);
                }
                None => {
                    return Some(invalid_request(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message \
                         with 'tool_calls'.",
                        &format!("messages.[{i}].role"),
                        None,
                    ));
                }
            }
            continue;
        }
        if !open.is_empty() {
            return Some(unanswered(&open, opened_at));
        }
        if role == "assistant"
            && let Some(calls) = message.get("tool_calls").and_then(Value::as_array)
        {
            open = calls.iter().map(|c| c["id"].as_str().unwrap_or_default().to_owned()).collect();
            opened_at = i;
        }
    }
    (!open.is_empty()).then(|| unanswered(&open, opened_at))
}

fn unanswered(open: &[String], at: usize) -> Reply {
    let message = format!(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each \
         'tool_call_id'. The following tool_call_ids did not have response messages: {}",
        open.join(", ")
    );
    invalid_request(&message, &format!("messages.[{at}].role"), None)
}

// ---- Embeddings ------------------------------------------------------------------------------

/// The 400 OpenAI answers an embeddings request with when it breaks the API's rules; `None`
/// for a request it accepts (or one that is not an embeddings request).
pub(crate) fn check_embeddings_request(request: &Recorded) -> Option<Reply> {
    if request.method != "POST" || !request.path.ends_with("/embeddings") {
        return None;
    }
    let body = &request.body;
    if body.get("model").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Some(invalid_request("you must provide a model parameter", "model", None));
    }
    let texts = match body.get("input") {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= 2048 => {
            let texts: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            if texts.len() != items.len() {
                return Some(invalid_request("'input' must be a string or an array of strings", "input", None));
            }
            texts
        }
        _ => return Some(invalid_request("'input' must hold 1 to 2048 strings", "input", None)),
    };
    if texts.iter().any(|t| t.is_empty()) {
        return Some(invalid_request("'$.input' is invalid: an input cannot be an empty string", "input", None));
    }
    match body.get("encoding_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(format)) if format == "float" => {}
        Some(other) => {
            let message = format!("this server sends only float embeddings, not {other}");
            return Some(invalid_request(&message, "encoding_format", None));
        }
    }
    match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(d) if d.as_u64().is_some_and(|d| (1..=4096).contains(&d)) => None,
        Some(d) => Some(invalid_request(&format!("invalid 'dimensions': {d}"), "dimensions", None)),
    }
}

/// The texts of a (checked) embeddings request, in order.
pub(crate) fn embedding_inputs(body: &Value) -> Vec<String> {
    match body.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// A deterministic unit vector of `dimensions` values for `text`: each value from the FNV-1a
/// hash of the text and the coordinate, so different texts get different vectors.
pub(crate) fn test_vector(text: &str, dimensions: usize) -> Vec<f32> {
    let raw: Vec<f32> = (0..dimensions)
        .map(|i| {
            let hash = format!("{i}:{text}")
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            (hash % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|v| v * v).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    raw.into_iter().map(|v| v / norm).collect()
}

/// The answer to an embeddings request: [`test_vector`] of each input at the requested
/// `dimensions` (else `default_dimensions`), listed in reverse order of their `index` (OpenAI
/// promises no order), with usage counting one token per word.
pub(crate) fn embeddings(request: &Recorded, default_dimensions: usize) -> Reply {
    let dimensions = request.body.get("dimensions").and_then(Value::as_u64).map_or(default_dimensions, |d| d as usize);
    let texts = embedding_inputs(&request.body);
    let tokens: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .rev()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": test_vector(text, dimensions)}))
        .collect();
    Reply::json(
        200,
        &json!({
            "object": "list",
            "model": request.body["model"],
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
        }),
    )
}

// ---- OpenAI wire payloads ------------------------------------------------------------------

pub(crate) fn completion(content: &str, usage: Option<(u32, u32)>) -> Value {
    let mut body = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-test",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }]
    });
    if let Some((prompt, completion)) = usage {
        body["usage"] =
            json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
    }
    body
}

pub(crate) fn tool_completion(calls: &[(&str, &str, &str)]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
        .collect();
    json!({
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-test",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": calls},
            "finish_reason": "tool_calls"
        }],
        "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62}
    })
}

pub(crate) fn chunk(delta: Value, finish_reason: Option<&str>) -> Value {
    let mut body = json!({
        "id": "chatcmpl-3",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}],
        "usage": null
    });
    body["choices"][0]["delta"] = delta;
    body
}

pub(crate) fn text_chunk(text: &str) -> Value {
    chunk(json!({"content": text}), None)
}

pub(crate) fn usage_chunk(prompt: u32, completion: u32) -> Value {
    json!({
        "id": "chatcmpl-3",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-test",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    })
}
