//! `tool_loop`: what the prebuilt tool loop adds on top of the model and tool calls it makes.
//!
//! One turn of `ToolLoop`'s graph with a zero-cost scripted model and 1 or 8 zero-cost tools:
//! model call → tool node (the model's N calls, one per tool) → model call → end, i.e. 3 steps
//! (node runs). Baselines, measured in the same run: the same two model calls and the same N
//! tool calls made directly by hand (the same requests, the same messages appended), and for
//! the session-backed turn also the store operations `graph_overhead` subtracts for a first
//! turn (create, put the turn's checkpoint, track the interaction).
//!
//! - `invoke`: the graph without a session vs the calls made directly, with typed tools
//!   (`FunctionTool`: serde deserializes the arguments into a struct, part of what users pay)
//!   and with hand-written `Tool` impls (no deserialization).
//! - `turn`: `graph.run` on a new session of the in-memory backend (a graph whose cache is
//!   full of other sessions, as `graph_overhead`'s first turn) vs the calls made directly plus
//!   the store operations, typed tools.
//! - `overhead`: (loop − direct) ÷ 3 steps, and per tool call
//!   ((loop(8) − direct(8)) − (loop(1) − direct(1))) ÷ 7.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "bench code"
)]

mod support;

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::SamplingMode;
use lgadk::SessionManager;
use lgadk::core::tool::schema_for;
use lgadk::core::{
    ChatModel, ChatRequest, ChatResponse, ChatState, Error, FunctionTool, Message, NewCheckpoint, NewSession, Role,
    SessionId, Tool, ToolCall, ToolContext, ToolError, ToolOutput, ToolSet, ToolSpec, Usage,
};
use lgadk::graph::prebuilt::ToolLoop;
use lgadk::graph::{CompiledGraph, DEFAULT_CACHE_CAPACITY, RunRequest};
use lgadk::serde_json::json;
use lgadk::session::InMemoryStore;
use support::{Bench, Display, Goal, Report, nanos};

const LOOP: &str = "tool loop";
const DIRECT: &str = "called directly";
const TURN: &str = "tool loop turn";
const DIRECT_OPS: &str = "called directly + store ops";
const PER_STEP_1: &str = "per step, 1 tool";
const PER_STEP_8: &str = "per step, 8 tools";
const PER_CALL: &str = "per tool call";

/// Node runs in one turn: model, tools, model.
const STEPS: f64 = 3.0;
/// The user's message of every measured turn.
const INPUT: &str = "What now?";
/// The scripted model's usage per call.
const USAGE: Usage = Usage { prompt_tokens: 5, completion_tokens: 2 };

/// The zero-cost scripted model: calls every tool once when the last message is the user's,
/// answers when the last messages are the tools' results.
#[derive(Debug)]
struct ScriptedModel {
    calls: Vec<ToolCall>,
}

impl ScriptedModel {
    fn new(tools: usize) -> Self {
        let calls = (0..tools)
            .map(|n| ToolCall { id: format!("call_{n}"), name: format!("tool_{n}"), arguments: json!({ "n": n }) })
            .collect();
        Self { calls }
    }
}

#[async_trait]
impl ChatModel for ScriptedModel {
    fn id(&self) -> &str {
        "bench/scripted"
    }

    async fn chat(&self, request: ChatRequest) -> lgadk::Result<ChatResponse> {
        let message = match request.messages.last().map(|m| m.role) {
            Some(Role::User) => Message { tool_calls: self.calls.clone(), ..Message::assistant("") },
            Some(Role::Tool) => Message::assistant("done"),
            other => return Err(Error::InvalidConfig { reason: format!("unexpected last message: {other:?}") }),
        };
        Ok(ChatResponse { message, usage: USAGE, finish_reason: None })
    }
}

/// The typed tools' argument.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Args {
    /// Any number.
    n: u32,
}

/// A typed tool: the arguments are deserialized into [`Args`].
fn typed_tool(name: String) -> FunctionTool {
    FunctionTool::new(name, "Returns ok.", |args: Args, _ctx| async move {
        black_box(args.n);
        Ok::<_, Infallible>("ok")
    })
}

/// A hand-written tool with the typed tool's schema: no deserialization.
struct PlainTool {
    spec: ToolSpec,
}

#[async_trait]
impl Tool for PlainTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: lgadk::serde_json::Value, _ctx: ToolContext) -> Result<ToolOutput, ToolError> {
        black_box(&arguments);
        Ok(ToolOutput::Text("ok".to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Typed,
    Plain,
}

impl Kind {
    fn tools(self, n: usize) -> ToolSet {
        let mut set = ToolSet::new();
        for i in 0..n {
            let name = format!("tool_{i}");
            let tool: Arc<dyn Tool> = match self {
                Self::Typed => Arc::new(typed_tool(name)),
                Self::Plain => Arc::new(PlainTool { spec: ToolSpec::new(name, "Returns ok.", schema_for::<Args>()) }),
            };
            set.insert(tool).unwrap();
        }
        set
    }

    fn row(self, n: usize) -> String {
        let kind = match self {
            Self::Typed => "typed",
            Self::Plain => "hand-written",
        };
        format!("{n} {kind} tool{}", if n == 1 { "" } else { "s" })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Typed => "typed tools",
            Self::Plain => "hand-written tools",
        }
    }
}

/// One case: the model, its tools, and the loop's graph over them.
struct Case {
    model: Arc<dyn ChatModel>,
    tools: ToolSet,
    specs: Vec<ToolSpec>,
    graph: CompiledGraph<ChatState>,
}

impl Case {
    fn new(kind: Kind, n: usize, sessions: Option<&SessionManager>) -> Self {
        let model: Arc<dyn ChatModel> = Arc::new(ScriptedModel::new(n));
        let tools = kind.tools(n);
        let mut graph = ToolLoop::new(Arc::clone(&model)).with_tools(tools.clone()).graph::<ChatState>();
        if let Some(sessions) = sessions {
            graph = graph.with_sessions(sessions.clone());
        }
        let specs = tools.specs();
        Self { model, tools, specs, graph: graph.compile().unwrap() }
    }

    /// The loop's turn without a session.
    async fn invoke(&self) -> ChatState {
        let state = ChatState { input: INPUT.to_owned(), ..ChatState::default() };
        self.graph.invoke(state).await.unwrap()
    }

    /// The same model and tool calls by hand: the same requests, the same messages appended,
    /// the calls one after the other.
    async fn direct(&self) -> (Vec<Message>, Usage) {
        let mut messages = vec![Message::user(INPUT)];
        let mut usage = Usage::default();
        let request = ChatRequest::new(messages.clone()).with_tools(self.specs.clone());
        let reply = self.model.chat(request).await.unwrap();
        usage += reply.usage;
        let calls = reply.message.tool_calls.clone();
        messages.push(reply.message);
        for call in &calls {
            // Through `dyn Tool`: `Arc`'s forwarding impl would box a second future per call.
            let tool = self.tools.get(&call.name).unwrap().as_ref();
            let output = tool.call(call.arguments.clone(), ToolContext::new(call.id.clone())).await.unwrap();
            messages.push(Message {
                name: Some(call.name.clone()),
                ..Message::tool(call.id.clone(), output.into_content())
            });
        }
        let request = ChatRequest::new(messages.clone()).with_tools(self.specs.clone());
        let reply = self.model.chat(request).await.unwrap();
        usage += reply.usage;
        messages.push(reply.message);
        (messages, usage)
    }
}

fn invoke(bench: &mut Bench, rt: &tokio::runtime::Runtime) {
    let mut table = bench.table(
        "invoke",
        "one tool-loop turn without a session: graph invoke vs the same calls made directly",
        Display::Time,
        "time per turn (model → N tool calls → model: 3 steps); rows: N zero-cost tools, one call each",
    );
    table.ratio(LOOP, DIRECT);
    for kind in [Kind::Typed, Kind::Plain] {
        for n in [1, 8] {
            let case = Case::new(kind, n, None);
            // The baseline does what the loop does: the same messages, in the same order.
            let (state, (messages, _)) = rt.block_on(async { (case.invoke().await, case.direct().await) });
            assert_eq!(state.messages, messages);
            assert_eq!((state.output.as_str(), messages.len()), ("done", n + 3));
            let row = kind.row(n);
            table.bench(LOOP, &row, 1, |iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(case.invoke().await);
                    }
                    start.elapsed()
                })
            });
            table.bench(DIRECT, &row, 1, |iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(case.direct().await);
                    }
                    start.elapsed()
                })
            });
        }
    }
}

/// What the turn's checkpoint carries, read back from a turn the graph saved.
async fn turn_checkpoint(sessions: &SessionManager, case: &Case) -> NewCheckpoint {
    let id = case.graph.run(RunRequest::new(INPUT)).await.unwrap().session_id;
    let checkpointer = sessions.checkpointer();
    let latest = checkpointer.latest(&id).await.unwrap().unwrap();
    let messages = checkpointer.messages(&id, latest.log_range()).await.unwrap();
    let (direct, _) = case.direct().await;
    assert_eq!(messages, direct);
    sessions.end_session(&id).await.unwrap();
    NewCheckpoint { state: latest.state, step: latest.step, node: latest.node, messages, op: None, log_start: 0 }
}

/// Times `iters` turns, each on a new session; ends them untimed.
fn time_turns(rt: &tokio::runtime::Runtime, sessions: &SessionManager, case: &Case, iters: u64) -> Duration {
    rt.block_on(async {
        let mut created = Vec::new();
        let start = Instant::now();
        for _ in 0..iters {
            created.push(black_box(case.graph.run(RunRequest::new(INPUT)).await.unwrap()).session_id);
        }
        let elapsed = start.elapsed();
        for id in &created {
            sessions.end_session(id).await.unwrap();
        }
        elapsed
    })
}

/// Times `iters` rounds of the calls made directly plus the store operations of a first turn
/// (as `graph_overhead` counts them), each on a new session; ends them untimed.
fn time_direct_ops(
    rt: &tokio::runtime::Runtime,
    sessions: &SessionManager,
    case: &Case,
    checkpoint: &NewCheckpoint,
    iters: u64,
) -> Duration {
    rt.block_on(async {
        let checkpointer = sessions.checkpointer();
        let mut created = Vec::new();
        let start = Instant::now();
        for _ in 0..iters {
            let new = NewSession::default().with_id(SessionId::new());
            let id = sessions.create_session_with(new).await.unwrap().id;
            let (messages, usage) = black_box(case.direct().await);
            // The snapshot as the graph writes it, with this turn's messages (not a clone of the
            // template's: the graph moves its messages into the checkpoint).
            let turn = NewCheckpoint {
                state: checkpoint.state.clone(),
                step: checkpoint.step,
                node: checkpoint.node.clone(),
                messages,
                op: None,
                log_start: 0,
            };
            black_box(checkpointer.put(&id, turn, 0).await.unwrap());
            let tracked = sessions.track_interaction(
                &id,
                usage.prompt_tokens,
                usage.completion_tokens,
                Duration::from_micros(30),
            );
            black_box(tracked.await.unwrap());
            created.push(id);
        }
        let elapsed = start.elapsed();
        for id in &created {
            sessions.end_session(id).await.unwrap();
        }
        elapsed
    })
}

fn turns(bench: &mut Bench, rt: &tokio::runtime::Runtime) {
    let sessions = SessionManager::new(InMemoryStore::new());
    let mut table = bench.table(
        "turn",
        "one tool-loop turn on the in-memory backend (new session): graph run vs the same calls made directly + its store operations",
        Display::Time,
        "time per turn (model → N tool calls → model: 3 steps); rows: N zero-cost typed tools, one call each",
    );
    table.ratio(TURN, DIRECT_OPS);
    for n in [1, 8] {
        let case = Case::new(Kind::Typed, n, Some(&sessions));
        let checkpoint = rt.block_on(async {
            // A graph that has served more sessions than its cache holds.
            for _ in 0..DEFAULT_CACHE_CAPACITY {
                let id = case.graph.run(RunRequest::new(INPUT)).await.unwrap().session_id;
                sessions.end_session(&id).await.unwrap();
            }
            turn_checkpoint(&sessions, &case).await
        });
        let row = Kind::Typed.row(n);
        table.bench_with(TURN, &row, 1, SamplingMode::Flat, |iters| time_turns(rt, &sessions, &case, iters));
        table.bench_with(DIRECT_OPS, &row, 1, SamplingMode::Flat, |iters| {
            time_direct_ops(rt, &sessions, &case, &checkpoint, iters)
        });
    }
}

/// Records the derived overheads of one variant: per step with 1 and with 8 tools, per call.
fn derive(report: &mut Report, table: &str, kind: Kind, label: &str, series: (&str, &str)) {
    let overhead = |report: &Report, n: usize| {
        let row = kind.row(n);
        Some(report.value(table, &row, series.0)? - report.value(table, &row, series.1)?)
    };
    let (one, eight) = (overhead(report, 1), overhead(report, 8));
    if let Some(one) = one {
        report.record("overhead", label, PER_STEP_1, one / STEPS);
    }
    if let Some(eight) = eight {
        report.record("overhead", label, PER_STEP_8, eight / STEPS);
    }
    if let (Some(one), Some(eight)) = (one, eight) {
        report.record("overhead", label, PER_CALL, (eight - one) / 7.0);
    }
}

fn targets(report: &mut Report) {
    report.table(
        "overhead",
        "tool-loop overhead: (loop − direct) ÷ 3 steps; per tool call: ((loop − direct) at 8 tools − at 1 tool) ÷ 7",
        Display::Time,
        "rows: how the turn ran and which tools; a step is one node run (model node or tool node)",
    );
    let session = format!("turn on a session, {}", Kind::Typed.name());
    derive(report, "turn", Kind::Typed, &session, (TURN, DIRECT_OPS));
    for kind in [Kind::Typed, Kind::Plain] {
        derive(report, "invoke", kind, &format!("invoke, {}", kind.name()), (LOOP, DIRECT));
    }
    let invoke = format!("invoke, {}", Kind::Typed.name());
    for (label, what) in [(&session, "turn on the in-memory backend"), (&invoke, "invoke (no session)")] {
        let per_step = report.value("overhead", label, PER_STEP_1);
        report.target(
            &format!("tool-loop overhead per step, {what}, 1 typed tool"),
            per_step,
            Goal::AtMost(5e3),
            nanos,
        );
        let per_call = report.value("overhead", label, PER_CALL);
        report.target(
            &format!("tool-loop overhead per tool call, {what}, typed tools"),
            per_call,
            Goal::AtMost(1e3),
            nanos,
        );
    }
}

/// `LGADK_BENCH_PROFILE=<tools> <turns> [invoke|direct|run|run-direct]`: runs `turns` turns
/// with `tools` typed tools inside `profiled_turns` (`invoke`, the default: the graph without
/// a session; `direct`: the same calls by hand; `run`: the graph on new sessions of the
/// in-memory backend; `run-direct`: the calls by hand plus the store operations), for
/// `valgrind --tool=callgrind --toggle-collect='*profiled_turns*'` or `perf record`.
fn profile(rt: &tokio::runtime::Runtime, spec: &str) {
    let words: Vec<&str> = spec.split_whitespace().collect();
    let (tools, turns, mode) = match words[..] {
        [tools, turns] => (tools, turns, "invoke"),
        [tools, turns, mode] => (tools, turns, mode),
        _ => panic!("LGADK_BENCH_PROFILE: expected `<tools> <turns> [invoke|direct|run|run-direct]`"),
    };
    let (tools, turns) = (tools.parse::<usize>().unwrap(), turns.parse::<u64>().unwrap());
    let sessions = SessionManager::new(InMemoryStore::new());
    let case = Case::new(Kind::Typed, tools, Some(&sessions));
    let checkpoint = rt.block_on(turn_checkpoint(&sessions, &case));
    let elapsed = profiled_turns(rt, &sessions, &case, &checkpoint, mode, turns);
    println!("{spec}: {:?} per turn", elapsed / u32::try_from(turns).unwrap());
}

#[inline(never)]
fn profiled_turns(
    rt: &tokio::runtime::Runtime,
    sessions: &SessionManager,
    case: &Case,
    checkpoint: &NewCheckpoint,
    mode: &str,
    turns: u64,
) -> Duration {
    match mode {
        "invoke" => rt.block_on(async {
            let start = Instant::now();
            for _ in 0..turns {
                black_box(case.invoke().await);
            }
            start.elapsed()
        }),
        "direct" => rt.block_on(async {
            let start = Instant::now();
            for _ in 0..turns {
                black_box(case.direct().await);
            }
            start.elapsed()
        }),
        "run" => time_turns(rt, sessions, case, turns),
        "run-direct" => time_direct_ops(rt, sessions, case, checkpoint, turns),
        _ => panic!("LGADK_BENCH_PROFILE: unknown mode `{mode}`"),
    }
}

fn main() {
    let mut bench = Bench::new("tool_loop");
    // The tool node runs each call within a timeout: Tokio's timer is needed.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    if let Ok(spec) = std::env::var("LGADK_BENCH_PROFILE") {
        profile(&rt, &spec);
        return;
    }
    bench.report.note(
        "Single-threaded (current-thread runtime): these are latencies. The scripted model calls each of the N \
         tools once when the last message is the user's and answers when the last messages are tool results, \
         5+2 tokens per call; each tool returns `ok` (typed: `FunctionTool` deserializing `{\"n\": u32}`; \
         hand-written: a `Tool` impl with the same schema that does not look at its arguments). `called \
         directly` = the same two `ChatModel::chat` requests (history and tool specs) and the same N \
         `Tool::call`s (`ToolSet::get`, `ToolContext::new`, called on the `dyn Tool`, one after the other), appending the same messages. \
         `+ store ops` = what `graph_overhead` counts for a first turn: create_session_with, put (the turn's \
         checkpoint with its N + 3 messages), track_interaction.",
    );
    invoke(&mut bench, &rt);
    turns(&mut bench, &rt);
    bench.finish(targets);
}
