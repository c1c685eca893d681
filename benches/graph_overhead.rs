//! `graph_overhead`: what a graph adds on top of the session store, on the in-memory backend.
//!
//! - One full turn (load the session's state, one node with a zero-cost model, save the
//!   checkpoint, track the interaction) vs the same store operations called directly; the
//!   difference is the turn's pure overhead. Rows: a first turn (new session), and a turn on a
//!   session that already holds 10, 100 and 200 earlier turns (its state cached by the graph,
//!   as in a long-running process; and at 200 with the cache off, which loads the checkpoint
//!   and the whole message log).
//! - Per-node overhead: a 100-node chain and 50 layers of a 10-way conditional router (100
//!   nodes run), through `invoke` (no session), vs calling the same no-op agents directly.
//!
//! Each measured turn runs on its own session, prepared untimed from a template session (its
//! latest checkpoint and log copied, then one turn to warm the graph's cache), so every timed
//! turn sees exactly the stated history. `cargo xtask bench --peers` measures LangGraph +
//! InMemorySaver on the same workloads in the same run (`benches/peers/peers.py`) and reports
//! lgadk ÷ LangGraph.
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
use lgadk::core::{Agent, ChatState, Message, NewCheckpoint, NewSession, RunContext, SessionId, Usage};
use lgadk::graph::{CompiledGraph, DEFAULT_CACHE_CAPACITY, END, RunRequest, START, StateGraph};
use lgadk::session::InMemoryStore;
use support::{Bench, Display, Goal, Report, nanos, times};

const TURN: &str = "graph turn";
const OPS: &str = "store operations only";
const OVERHEAD: &str = "overhead (turn − store ops)";
const GRAPH: &str = "graph";
const DIRECT: &str = "agents called directly";

/// The zero-cost model: appends the user's message and a fixed answer, reports usage.
struct ZeroCostModel;

#[async_trait]
impl Agent<ChatState> for ZeroCostModel {
    fn name(&self) -> &str {
        "model"
    }

    async fn call(&self, state: &mut ChatState, ctx: &RunContext) -> lgadk::Result<()> {
        state.messages.push(Message::user(state.input.clone()));
        state.output = "ok".into();
        state.messages.push(Message::assistant("ok"));
        ctx.add_usage(Usage::new(5, 2));
        Ok(())
    }
}

/// A node that does nothing: what remains is the graph's cost per node.
struct Noop;

#[async_trait]
impl Agent<ChatState> for Noop {
    fn name(&self) -> &str {
        "noop"
    }

    async fn call(&self, _state: &mut ChatState, _ctx: &RunContext) -> lgadk::Result<()> {
        Ok(())
    }
}

fn chat_graph(sessions: &SessionManager, cache: usize) -> CompiledGraph<ChatState> {
    StateGraph::new("turn")
        .add_node("model", ZeroCostModel)
        .add_edge(START, "model")
        .add_edge("model", END)
        .with_sessions(sessions.clone())
        .with_cache_capacity(cache)
        .compile()
        .unwrap()
}

/// A session's latest checkpoint and log, to copy into fresh sessions.
struct Template {
    checkpoint: NewCheckpoint,
    log_len: u64,
}

async fn template(sessions: &SessionManager, turns: usize) -> Template {
    let graph = chat_graph(sessions, 0);
    let id = graph.run(RunRequest::new("hello")).await.unwrap().session_id;
    for n in 1..turns {
        graph.run(RunRequest::new(format!("message {n}")).with_session(id.clone())).await.unwrap();
    }
    let checkpointer = sessions.checkpointer();
    let latest = checkpointer.latest(&id).await.unwrap().unwrap();
    let messages = checkpointer.messages(&id, latest.log_range()).await.unwrap();
    assert_eq!(messages.len(), 2 * turns);
    let checkpoint =
        NewCheckpoint { state: latest.state, step: latest.step, node: latest.node, messages, op: None, log_start: 0 };
    Template { checkpoint, log_len: latest.log_len }
}

/// A new session holding the template's history.
async fn copy(sessions: &SessionManager, template: &Template) -> SessionId {
    let id = sessions.create_session_with(NewSession::default()).await.unwrap().id;
    sessions.checkpointer().put(&id, template.checkpoint.clone(), 0).await.unwrap();
    id
}

fn next_turn(id: &SessionId) -> RunRequest {
    RunRequest::new("and now?").with_session(id.clone())
}

/// What the turn's checkpoint carries: the (message-free) state and the turn's two messages.
fn turn_checkpoint(template: &Template) -> NewCheckpoint {
    NewCheckpoint {
        state: template.checkpoint.state.clone(),
        step: 1,
        node: Some("model".into()),
        messages: vec![Message::user("and now?"), Message::assistant("ok")],
        op: None,
        log_start: 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    /// A new session, on a graph whose cache is full of other sessions (the steady state of a
    /// process that has served more sessions than the cache holds).
    First,
    /// A session with this many earlier turns, its state in the graph's cache.
    Warm(usize),
    /// A session with this many earlier turns, the graph's cache off.
    Cold(usize),
}

impl Row {
    fn label(self) -> String {
        match self {
            Self::First => "first turn (new session, cache full)".into(),
            Self::Warm(n) => format!("{n} earlier turns (cached state)"),
            Self::Cold(n) => format!("{n} earlier turns (cache off)"),
        }
    }

    fn history(self) -> usize {
        match self {
            Self::First => 0,
            Self::Warm(n) | Self::Cold(n) => n,
        }
    }
}

/// Times `iters` graph turns of `row`, each on its own prepared session.
fn time_turns(
    rt: &tokio::runtime::Runtime,
    sessions: &SessionManager,
    template: &Template,
    row: Row,
    iters: u64,
    steady: &CompiledGraph<ChatState>,
) -> Duration {
    let n = usize::try_from(iters).unwrap();
    rt.block_on(async {
        let (graph, ids) = match row {
            Row::First => (steady.clone(), Vec::new()),
            Row::Warm(_) => {
                let graph = chat_graph(sessions, n + 1);
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = copy(sessions, template).await;
                    graph.run(RunRequest::new("warm up").with_session(id.clone())).await.unwrap();
                    ids.push(id);
                }
                (graph, ids)
            }
            Row::Cold(_) => {
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(copy(sessions, template).await);
                }
                (chat_graph(sessions, 0), ids)
            }
        };
        let mut created = Vec::new();
        let start = Instant::now();
        if ids.is_empty() {
            for _ in 0..n {
                created.push(black_box(graph.run(RunRequest::new("hello")).await.unwrap()).session_id);
            }
        } else {
            for id in &ids {
                black_box(graph.run(next_turn(id)).await.unwrap());
            }
        }
        let elapsed = start.elapsed();
        for id in ids.iter().chain(&created) {
            sessions.end_session(id).await.unwrap();
        }
        elapsed
    })
}

/// Times `iters` rounds of the store operations a turn of `row` performs, called directly,
/// each on its own session prepared like the graph's (same history).
fn time_ops(
    rt: &tokio::runtime::Runtime,
    sessions: &SessionManager,
    template: &Template,
    row: Row,
    iters: u64,
) -> Duration {
    rt.block_on(async {
        let checkpointer = sessions.checkpointer();
        let mut existing = Vec::new();
        if row.history() > 0 {
            for _ in 0..iters {
                let id = copy(sessions, template).await;
                if let Row::Warm(_) = row {
                    // The graph's sessions had one untimed turn to fill its cache: match it.
                    let version = checkpointer.version(&id).await.unwrap();
                    checkpointer.put(&id, turn_checkpoint(template), version).await.unwrap();
                    sessions.track_interaction(&id, 5, 2, Duration::from_micros(3)).await.unwrap();
                }
                existing.push(id);
            }
        }
        let mut created = Vec::new();
        let start = Instant::now();
        if existing.is_empty() {
            for _ in 0..iters {
                let new = NewSession::default().with_id(SessionId::new());
                let id = sessions.create_session_with(new).await.unwrap().id;
                black_box(checkpointer.put(&id, turn_checkpoint(template), 0).await.unwrap());
                black_box(sessions.track_interaction(&id, 5, 2, Duration::from_micros(3)).await.unwrap());
                created.push(id);
            }
        } else {
            for id in &existing {
                black_box(sessions.get_session(id).await.unwrap().unwrap());
                let version = checkpointer.version(id).await.unwrap();
                if let Row::Cold(_) = row {
                    black_box(checkpointer.latest(id).await.unwrap());
                    black_box(checkpointer.messages(id, 0..template.log_len).await.unwrap());
                }
                black_box(checkpointer.put(id, turn_checkpoint(template), version).await.unwrap());
                black_box(sessions.track_interaction(id, 5, 2, Duration::from_micros(3)).await.unwrap());
            }
        }
        let elapsed = start.elapsed();
        for id in existing.iter().chain(&created) {
            sessions.end_session(id).await.unwrap();
        }
        elapsed
    })
}

fn turns(bench: &mut Bench, rt: &tokio::runtime::Runtime) {
    let sessions = SessionManager::new(InMemoryStore::new());
    let rows = [Row::First, Row::Warm(10), Row::Warm(100), Row::Warm(200), Row::Cold(200)];
    // A graph that has served more sessions than its cache holds.
    let steady = chat_graph(&sessions, DEFAULT_CACHE_CAPACITY);
    rt.block_on(async {
        for _ in 0..DEFAULT_CACHE_CAPACITY {
            steady.run(RunRequest::new("hello")).await.unwrap();
        }
    });
    let mut table = bench.table(
        "turn",
        "one turn on the in-memory backend: graph vs its store operations called directly",
        Display::Time,
        "rows: the session's history; each timed turn runs on its own prepared session",
    );
    table.ratio(TURN, OPS);
    table.configure(10, Duration::from_secs(1));
    for row in rows {
        // A warm row's sessions get one more (untimed) turn to fill the graph's cache.
        let turns = match row {
            Row::Warm(n) => n - 1,
            _ => row.history().max(1),
        };
        let template = rt.block_on(template(&sessions, turns));
        table.bench_with(TURN, &row.label(), 1, SamplingMode::Flat, |iters| {
            time_turns(rt, &sessions, &template, row, iters, &steady)
        });
        table.bench_with(OPS, &row.label(), 1, SamplingMode::Flat, |iters| {
            time_ops(rt, &sessions, &template, row, iters)
        });
    }
}

fn chain(nodes: usize) -> (CompiledGraph<ChatState>, Vec<Arc<dyn Agent<ChatState>>>) {
    let agents: Vec<Arc<dyn Agent<ChatState>>> = (0..nodes).map(|_| Arc::new(Noop) as _).collect();
    let mut graph = StateGraph::new("chain").with_recursion_limit(nodes + 10).add_edge(START, "n0");
    for (n, agent) in agents.iter().enumerate() {
        graph = graph.add_shared_node(format!("n{n}"), Arc::clone(agent));
        let next = if n + 1 == nodes { END.to_owned() } else { format!("n{}", n + 1) };
        graph = graph.add_edge(format!("n{n}"), next);
    }
    (graph.compile().unwrap(), agents)
}

/// `layers` routers, each choosing one of 10 workers, which lead to the next router.
fn router(layers: usize) -> (CompiledGraph<ChatState>, Vec<Arc<dyn Agent<ChatState>>>) {
    let mut graph = StateGraph::new("router").with_recursion_limit(2 * layers + 10).add_edge(START, "r0");
    let mut run = Vec::new();
    for layer in 0..layers {
        let chosen = (layer * 7) % 10;
        let router: Arc<dyn Agent<ChatState>> = Arc::new(Noop);
        let next = if layer + 1 == layers { END.to_owned() } else { format!("r{}", layer + 1) };
        graph = graph.add_shared_node(format!("r{layer}"), Arc::clone(&router));
        let mapping: Vec<(String, String)> = (0..10).map(|k| (k.to_string(), format!("w{layer}_{k}"))).collect();
        graph = graph.add_conditional_edges(format!("r{layer}"), move |_: &ChatState| chosen.to_string(), mapping);
        run.push(router);
        for k in 0..10 {
            let worker: Arc<dyn Agent<ChatState>> = Arc::new(Noop);
            graph = graph
                .add_shared_node(format!("w{layer}_{k}"), Arc::clone(&worker))
                .add_edge(format!("w{layer}_{k}"), next.clone());
            if k == chosen {
                run.push(worker);
            }
        }
    }
    (graph.compile().unwrap(), run)
}

fn nodes(bench: &mut Bench, rt: &tokio::runtime::Runtime) {
    let mut table = bench.table(
        "per_node",
        "per-node cost: graph invoke (no session) vs the same agents called directly",
        Display::Time,
        "time per node run; rows: graph shape (100 nodes run per invoke)",
    );
    table.ratio(GRAPH, DIRECT);
    let shapes = [("100-node chain", chain(100)), ("10-way router × 50 layers", router(50))];
    for (row, (graph, agents)) in shapes {
        let nodes = agents.len() as u64;
        table.bench(GRAPH, row, nodes, |iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(graph.invoke(ChatState::default()).await.unwrap());
                }
                start.elapsed()
            })
        });
        table.bench(DIRECT, row, nodes, |iters| {
            rt.block_on(async {
                let ctx = RunContext::default();
                let start = Instant::now();
                for _ in 0..iters {
                    let mut state = ChatState::default();
                    for agent in &agents {
                        agent.call(&mut state, &ctx).await.unwrap();
                    }
                    black_box(state);
                }
                start.elapsed()
            })
        });
    }
}

fn targets(report: &mut Report) {
    let rows = [Row::First, Row::Warm(10), Row::Warm(100), Row::Warm(200), Row::Cold(200)];
    for row in rows {
        let label = row.label();
        if let (Some(turn), Some(ops)) = (report.value("turn", &label, TURN), report.value("turn", &label, OPS)) {
            report.record("turn", &label, OVERHEAD, turn - ops);
        }
    }
    let first = Row::First.label();
    let overhead = report.value("turn", &first, OVERHEAD);
    report.target("turn overhead (turn − store ops), first turn", overhead, Goal::AtMost(10e3), nanos);
    let warm = Row::Warm(200).label();
    report.target(
        "turn overhead (turn − store ops), 200 earlier turns",
        report.value("turn", &warm, OVERHEAD),
        Goal::AtMost(10e3),
        nanos,
    );
    let first_turn = report.value("turn", &first, TURN);
    let at_200 = report.value("turn", &warm, TURN);
    report.target(
        "turn with 200 earlier turns / first turn (aim)",
        at_200.zip(first_turn).map(|(a, b)| a / b),
        Goal::AtMost(2.0),
        times,
    );
    for row in ["100-node chain", "10-way router × 50 layers"] {
        let per_node = report.value("per_node", row, GRAPH);
        report.target(&format!("time per node, {row}"), per_node, Goal::AtMost(1e3), nanos);
    }
}

/// `LGADK_BENCH_PROFILE=<history> <turns>`: prepares `turns` sessions with `history` earlier
/// turns (cached), then runs one turn on each inside `profiled_turns`, for
/// `valgrind --tool=callgrind --toggle-collect='*profiled_turns*'`.
fn profile(rt: &tokio::runtime::Runtime, spec: &str) {
    let parts: Vec<usize> = spec.split_whitespace().map(|n| n.parse().unwrap()).collect();
    let [history, turns] = parts[..] else { panic!("LGADK_BENCH_PROFILE: expected `<history> <turns>`") };
    let sessions = SessionManager::new(InMemoryStore::new());
    let template = rt.block_on(template(&sessions, history.max(1)));
    let graph = chat_graph(&sessions, turns + 1);
    let ids: Vec<SessionId> = rt.block_on(async {
        let mut ids = Vec::new();
        for _ in 0..turns {
            let id = copy(&sessions, &template).await;
            graph.run(RunRequest::new("warm up").with_session(id.clone())).await.unwrap();
            ids.push(id);
        }
        ids
    });
    let elapsed = profiled_turns(rt, &graph, &ids);
    println!("{spec}: {:?} per turn", elapsed / u32::try_from(turns).unwrap());
}

#[inline(never)]
fn profiled_turns(rt: &tokio::runtime::Runtime, graph: &CompiledGraph<ChatState>, ids: &[SessionId]) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for id in ids {
            black_box(graph.run(next_turn(id)).await.unwrap());
        }
        start.elapsed()
    })
}

fn main() {
    let mut bench = Bench::new("graph_overhead");
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    if let Ok(spec) = std::env::var("LGADK_BENCH_PROFILE") {
        profile(&rt, &spec);
        return;
    }
    bench.report.note(
        "Single-threaded (current-thread runtime): these are latencies. The zero-cost model appends the user's \
         message and a fixed answer and reports 5+2 tokens. `store operations only` = the calls the turn makes, \
         made directly through SessionManager and its Checkpointer: create (first turn) or get_session + \
         version (+ latest + messages with the cache off), then put (the turn's checkpoint with its two \
         messages) and track_interaction.",
    );
    turns(&mut bench, &rt);
    nodes(&mut bench, &rt);
    bench.finish(targets);
}
