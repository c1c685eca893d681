//! `server`: what `lgadk-server` adds to a run, and what an open stream costs it.
//!
//! The graph is one `ChatAgent` node over a zero-cost model (a fixed reply, fixed usage) on the
//! in-memory backend. The server runs in this process on its own 2-worker runtime, on a
//! loopback port, without API keys; the clients are `reqwest` on keep-alive connections.
//!
//! Every run is the first turn of a thread made (over HTTP, untimed) just for it, so a thread's
//! history never grows across iterations and both sides do the same work per run.
//!
//! - `run`: one run, created and waited for in one request (`POST /threads/{id}/runs/wait`),
//!   vs the same `graph.run` called directly, one after the other.
//! - `p50`: the median of 2,000 single runs each way (500 in quick and test runs), and their
//!   difference: what the HTTP layer adds per run at p50.
//! - `clients`: runs per second with 1 and 64 concurrent clients over HTTP vs `graph.run`
//!   directly with the same concurrency.
//! - `streams`: the resident memory an open SSE stream costs (a run whose node waits, streamed
//!   with `stream_mode=values`), against the same number of idle TCP connections to a plain
//!   acceptor (the clients' sockets are in both).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "bench code"
)]

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::SamplingMode;
use lgadk::SessionManager;
use lgadk::core::{ChatModel, ChatRequest, ChatResponse, ChatState, Message, RunContext, SessionId, Usage};
use lgadk::graph::{CompiledGraph, GraphBuilder, RunRequest};
use lgadk::serde_json::{self, json};
use lgadk_server::{Limits, Server};
use support::{Bench, Display, Goal, Report, nanos};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;

const HTTP: &str = "HTTP: POST /threads/{id}/runs/wait";
const DIRECT: &str = "graph.run called directly";
const SSE: &str = "open SSE stream";
const TCP: &str = "idle TCP connection";
const INPUT: &str = "hello";

/// The zero-cost model: the same reply and usage every time.
#[derive(Debug)]
struct FixedModel;

#[async_trait]
impl ChatModel for FixedModel {
    fn id(&self) -> &str {
        "bench/fixed"
    }

    async fn chat(&self, _request: ChatRequest) -> lgadk::Result<ChatResponse> {
        Ok(ChatResponse {
            message: Message::assistant("ok"),
            usage: Usage { prompt_tokens: 5, completion_tokens: 2 },
            finish_reason: None,
        })
    }
}

/// The server and a client of it, and the same graph to call directly.
struct Setup {
    server_rt: Runtime,
    url: String,
    client: reqwest::Client,
    graph: CompiledGraph<ChatState>,
    /// Releases the runs of the `hold` assistant.
    gate: watch::Sender<bool>,
}

impl Setup {
    fn start() -> Self {
        let server_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let sessions = SessionManager::in_memory();
        let model: Arc<dyn ChatModel> = Arc::new(FixedModel);
        let graph = GraphBuilder::new("bench")
            .add_agent(lgadk::llm::ChatAgent::new("assistant", model))
            .configure_session_management(sessions.clone())
            .build()
            .unwrap();
        let (gate, opened) = watch::channel(false);
        let hold = GraphBuilder::new("hold")
            .add_node_fn("hold", move |mut state: ChatState, ctx: Arc<RunContext>| {
                let mut opened = opened.clone();
                async move {
                    while !*opened.borrow_and_update() && !ctx.is_cancelled() {
                        let _ = tokio::time::timeout(Duration::from_millis(100), opened.changed()).await;
                    }
                    state.messages.push(Message::assistant("released"));
                    Ok(state)
                }
            })
            .configure_session_management(sessions.clone())
            .build()
            .unwrap();
        // Every open stream is a run in flight of the one anonymous user: lift the per-user cap.
        let limits = Limits::default().with_max_concurrent_runs_per_user(1 << 20);
        let server = Server::builder()
            .assistant("bench", graph.clone())
            .assistant("hold", hold)
            .sessions(sessions)
            .limits(limits)
            .build()
            .unwrap();
        let listener = server_rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        server_rt.spawn(server.serve(listener, std::future::pending()));
        Self { server_rt, url, client: reqwest::Client::new(), graph, gate }
    }

    /// A new thread, made over HTTP (so it belongs to the server's anonymous user).
    async fn thread(&self) -> SessionId {
        let body = self.post("/threads", &json!({})).await;
        SessionId::parse(body["thread_id"].as_str().unwrap()).unwrap()
    }

    async fn post(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        assert!(status.is_success(), "{path}: {status}: {}", String::from_utf8_lossy(&bytes));
        serde_json::from_slice(&bytes).unwrap()
    }

    /// One run over HTTP, created and waited for in one request.
    async fn http_run(&self, thread: &SessionId) {
        let body = json!({"assistant_id": "bench", "input": {"messages": [{"role": "user", "content": INPUT}]}});
        let values = self.post(&format!("/threads/{thread}/runs/wait"), &body).await;
        black_box(values);
    }

    /// The same run, called directly.
    async fn direct_run(&self, thread: &SessionId) {
        let response = self.graph.run(RunRequest::new(INPUT).with_session(thread.clone())).await.unwrap();
        black_box(response);
    }
}

/// `n` new threads, made over HTTP (untimed by the callers).
fn threads(rt: &Runtime, setup: &Setup, n: usize) -> Vec<SessionId> {
    rt.block_on(async {
        let mut made = Vec::with_capacity(n);
        for _ in 0..n {
            made.push(setup.thread().await);
        }
        made
    })
}

/// Runs one run on each of `threads` with `clients` concurrent clients (client `c` takes
/// every `clients`-th thread from `c`), and returns the wall time.
fn concurrent(rt: &Runtime, setup: &Arc<Setup>, threads: Vec<SessionId>, clients: usize, http: bool) -> Duration {
    let threads = Arc::new(threads);
    rt.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(clients);
        for client in 0..clients {
            let (setup, threads) = (Arc::clone(setup), Arc::clone(&threads));
            tasks.push(tokio::spawn(async move {
                for thread in threads.iter().skip(client).step_by(clients) {
                    if http {
                        setup.http_run(thread).await;
                    } else {
                        setup.direct_run(thread).await;
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        start.elapsed()
    })
}

fn runs(bench: &mut Bench, rt: &Runtime, setup: &Arc<Setup>) {
    let mut table = bench.table(
        "run",
        "one run of a one-node graph (zero-cost model, in-memory backend): over HTTP vs graph.run directly",
        Display::Time,
        "time per run, one client, runs one after the other, each the first turn of its own thread",
    );
    table.ratio(HTTP, DIRECT).ignore_other_processes();
    for (series, http) in [(HTTP, true), (DIRECT, false)] {
        table.bench_with(series, "1 client", 1, SamplingMode::Flat, |iters| {
            let made = threads(rt, setup, usize::try_from(iters).unwrap());
            concurrent(rt, setup, made, 1, http)
        });
    }
}

/// The median of `n` single runs each way, measured one by one, alternating.
fn p50(report: &mut Report, rt: &Runtime, setup: &Setup, n: usize) {
    report.table(
        "p50",
        "median time of one run: over HTTP vs graph.run directly, and what HTTP adds",
        Display::Time,
        &format!("{n} runs each way, alternating, each the first turn of its own thread"),
    );
    let (mut http, mut direct) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let made = threads(rt, setup, 2 * n);
    rt.block_on(async {
        for pair in made.chunks(2) {
            let start = Instant::now();
            setup.http_run(&pair[0]).await;
            http.push(start.elapsed());
            let start = Instant::now();
            setup.direct_run(&pair[1]).await;
            direct.push(start.elapsed());
        }
    });
    let median = |times: &mut Vec<Duration>| {
        times.sort_unstable();
        times[times.len() / 2].as_nanos() as f64
    };
    let (http, direct) = (median(&mut http), median(&mut direct));
    report.record("p50", "1 client", HTTP, http);
    report.record("p50", "1 client", DIRECT, direct);
    report.record("p50", "1 client", "added by HTTP", http - direct);
}

fn clients(bench: &mut Bench, rt: &Runtime, setup: &Arc<Setup>) {
    let mut table = bench.table(
        "clients",
        "runs per second with concurrent clients: over HTTP vs graph.run directly",
        Display::Throughput,
        "each run the first turn of its own thread; the server and the direct runs have 2 workers",
    );
    table.ratio(HTTP, DIRECT).ignore_other_processes().configure(20, Duration::from_secs(3));
    for clients in [1usize, 64] {
        let row = format!("{clients} client{}", if clients == 1 { "" } else { "s" });
        let per_iter = clients as u64;
        for (series, http) in [(HTTP, true), (DIRECT, false)] {
            table.bench_with(series, &row, per_iter, SamplingMode::Flat, |iters| {
                let made = threads(rt, setup, usize::try_from(iters * per_iter).unwrap());
                concurrent(rt, setup, made, clients, http)
            });
        }
    }
}

/// The process's resident memory in bytes.
fn rss() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0
}

/// Opens `n` SSE streams of runs that wait, and returns the growth of resident memory per
/// stream once every stream has its first event; then releases the runs and reads the streams
/// to their end.
fn sse_memory(rt: &Runtime, setup: &Setup, n: usize) -> f64 {
    let addr = setup.url.trim_start_matches("http://").to_owned();
    rt.block_on(async {
        let mut threads = Vec::with_capacity(n);
        for _ in 0..n {
            threads.push(setup.thread().await);
        }
        let _ = setup.gate.send(false);
        let before = rss();
        let mut streams = Vec::with_capacity(n);
        for thread in &threads {
            let body = r#"{"assistant_id":"hold","input":{"messages":[{"role":"user","content":"hi"}]},"stream_mode":"values"}"#;
            let request = format!(
                "POST /threads/{thread}/runs/stream HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            // Up to the first event (the run's metadata): the stream is open.
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            const FIRST: &[u8] = b"event: metadata";
            while !seen.windows(FIRST.len()).any(|w| w == FIRST) {
                let read = stream.read(&mut buf).await.unwrap();
                assert!(read > 0, "the stream closed early: {}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..read]);
                assert!(seen.starts_with(b"HTTP/1.1 200"), "no stream: {}", String::from_utf8_lossy(&seen));
            }
            streams.push(stream);
        }
        let grown = (rss() - before) / n as f64;
        let _ = setup.gate.send(true);
        // Each run ends and the server closes its connection (`connection: close`).
        for mut stream in streams {
            let mut rest = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest)).await;
            assert!(read.is_ok(), "a stream did not end after its run was released");
        }
        grown
    })
}

/// The same number of idle TCP connections to a plain acceptor that holds them.
fn tcp_memory(rt: &Runtime, n: usize) -> f64 {
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let before = rss();
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let grown = (rss() - before) / n as f64;
        acceptor.abort();
        drop(clients);
        grown
    })
}

fn streams(report: &mut Report, rt: &Runtime, setup: &Setup, n: usize) {
    report.table(
        "streams",
        "resident memory per open SSE stream (server and client side) vs per idle TCP connection",
        Display::Bytes,
        &format!("{n} streams of runs that wait, each past its first event; the same number of idle connections"),
    );
    // A first round lets the allocator and the runtime reach their working size.
    let _ = sse_memory(rt, setup, n / 4);
    let row = format!("{n} at once");
    report.record("streams", &row, SSE, sse_memory(rt, setup, n));
    report.record("streams", &row, TCP, tcp_memory(rt, n));
}

fn targets(report: &mut Report) {
    let added = report.value("p50", "1 client", "added by HTTP");
    report.target("HTTP adds per run at p50", added, Goal::AtMost(100e3), nanos);
}

fn main() {
    let mut bench = Bench::new("server");
    // reqwest is built without a TLS crypto provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let setup = Arc::new(Setup::start());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    bench.report.note(
        "The server runs in this process on a 2-worker runtime; the clients on one current-thread runtime, so on \
         2 cores client and server share the CPU, as they would on one machine. The model is zero-cost (a fixed \
         reply, 5+2 tokens), the backend in memory, no API keys. `graph.run called directly` runs the same \
         compiled graph on threads made the same way.",
    );
    runs(&mut bench, &rt, &setup);
    let n = bench.mode.size(2_000, 500);
    p50(&mut bench.report, &rt, &setup, n);
    clients(&mut bench, &rt, &setup);
    let n = bench.mode.size(1_000, 200);
    streams(&mut bench.report, &rt, &setup, n);
    bench.finish(targets);
    let Setup { server_rt, .. } = Arc::into_inner(setup).unwrap();
    server_rt.shutdown_timeout(Duration::from_secs(1));
}
