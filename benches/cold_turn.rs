//! `cold_turn`: one graph turn on a session whose state is not cached (a second process, or an
//! evicted entry) when the session's conversation has reached 10,000 messages, with the log
//! kept whole (`LogRetention::KeepAll`) and with a window (`LogRetention::LastMessages(50)`),
//! in the same run, on the in-memory store, Redis and PostgreSQL (when their servers are
//! installed; the harness starts them on free loopback ports).
//!
//! Each sample seeds a fresh session with one turn that writes the 10,000 messages (untimed;
//! with the window the store keeps the last 50 of them), then times cold turns on it: a graph
//! with a zero-capacity state cache, so every turn reads the latest checkpoint with its log
//! and commits its two new messages. The ratio column is how many times faster the windowed
//! turn is.
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
use std::time::{Duration, Instant};

use criterion::SamplingMode;
use lgadk::core::{ChatState, LogRetention, Message};
use lgadk::session::testing::{PostgresServer, RedisServer};
use lgadk::session::{InMemoryStore, PostgresStore, RedisStore};
use lgadk::{CompiledGraph, RunRequest, SessionManager, StateGraph};
use support::{Bench, Display};

const KEEP_ALL: &str = "KeepAll";
const WINDOW: &str = "LastMessages(50)";
const SEED: &str = "seed";

/// A graph whose node appends the user's message and a fixed answer, or, on the seed turn,
/// `stored` messages at once.
fn graph(sessions: &SessionManager, stored: usize, cache: usize) -> CompiledGraph<ChatState> {
    StateGraph::<ChatState>::new("cold-turn")
        .add_node_fn("reply", move |mut state: ChatState, _| async move {
            if state.input == SEED {
                state.messages.extend((0..stored / 2).flat_map(|n| {
                    [
                        Message::user(format!("question {n} about the order")),
                        Message::assistant(format!("answer {n}: ok")),
                    ]
                }));
            } else {
                state.messages.push(Message::user(state.input.clone()));
                state.messages.push(Message::assistant("ok"));
            }
            state.output = "ok".into();
            Ok(state)
        })
        .set_entry_point("reply")
        .set_finish_point("reply")
        .with_sessions(sessions.clone())
        .with_cache_capacity(cache)
        .compile()
        .unwrap()
}

fn cold_turns(bench: &mut Bench, rt: &tokio::runtime::Runtime, backends: &[(&str, SessionManager)], stored: usize) {
    let mut table = bench.table(
        "cold_turn",
        &format!("Cold turn on a session of {stored} messages"),
        Display::Time,
        "one run on a graph without a state cache: begin_turn reads the latest checkpoint and the log it \
         covers, commit_turn writes two messages (and, with the window, cuts the log in the same call)",
    );
    table.ratio(WINDOW, KEEP_ALL);
    table.ignore_other_processes();
    table.configure(10, Duration::from_secs(2));
    for (row, sessions) in backends {
        for (series, retention) in [(KEEP_ALL, LogRetention::KeepAll), (WINDOW, LogRetention::LastMessages(50))] {
            let seeder = graph(sessions, stored, 0);
            let cold = graph(sessions, stored, 0);
            table.bench_with(series, row, 1, SamplingMode::Flat, |iters| {
                rt.block_on(async {
                    let seeded = seeder.run(RunRequest::new(SEED).with_log_retention(retention)).await.unwrap();
                    let id = seeded.session_id;
                    let start = Instant::now();
                    for n in 0..iters {
                        let request = RunRequest::new(format!("turn {n}")).with_session(id.clone());
                        black_box(cold.run(request).await.unwrap());
                    }
                    let took = start.elapsed();
                    sessions.end_session(&id).await.unwrap();
                    took
                })
            });
        }
    }
}

fn main() {
    let mut bench = Bench::new("cold_turn");
    let rt = support::runtime();
    let stored = bench.mode.size(10_000, 1_000);
    let mut backends = vec![("memory", SessionManager::new(InMemoryStore::new()))];
    let redis = RedisServer::start();
    let postgres = PostgresServer::start();
    rt.block_on(async {
        match &redis {
            Some(server) => {
                let store = RedisStore::builder(server.url()).connect().await.unwrap();
                backends.push(("redis", SessionManager::new(store)));
            }
            None => bench.report.note("redis-server not found: the Redis row was not measured."),
        }
        match &postgres {
            Some(server) => {
                let store = PostgresStore::builder(server.url()).with_schema("cold_turn").connect().await.unwrap();
                backends.push(("postgres", SessionManager::new(store)));
            }
            None => bench.report.note("PostgreSQL not found: the PostgreSQL row was not measured."),
        }
    });
    bench.report.note(
        "Every sample seeds a fresh session with one untimed turn of all its messages; the timed turns then \
         each add two. Single client, multi-threaded runtime.",
    );
    cold_turns(&mut bench, &rt, &backends, stored);
    bench.finish(|_| {});
}
