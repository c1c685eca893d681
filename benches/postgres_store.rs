//! `postgres_store` (feature `postgres`): `PostgresStore` against a PostgreSQL cluster the
//! harness starts on a free loopback port (never 5432; `fsync` off, as for every series here).
//!
//! `track_interaction`, `get_session` and `create_session` at 1 and 50 concurrent tasks over
//! one `PostgresStore` (its pool sized 50), on a 2-worker runtime. Baseline in the same run and
//! the same runner: raw sqlx, one `PgConnection` per task, sending the very statement the store
//! sends (same text, same parameters, prepared and cached), rows left undecoded. When `pgbench`
//! is installed, its figures for `-c 1` and `-c 50` (prepared mode) on an equivalent custom
//! script are recorded as the server's ceiling. Round trips per call are counted on the wire
//! (`WireCounter`). A graph turn (one node, zero-cost model) is timed at turn 1 and turn 100 of
//! a session, with its round trips.
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
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lgadk::core::{
    ChatState, Clock, Interaction, Message, NewSession, SessionId, SessionStore, SystemClock, Timeout, Usage, UserId,
};
use lgadk::session::PostgresStore;
use lgadk::session::testing::{PostgresServer, WireCounter};
use lgadk::{CompiledGraph, RunRequest, SessionManager, StateGraph};
use sqlx::{Connection, PgConnection};
use support::{Bench, Display, Goal, Op, Report, run_tasks, times};

const SESSIONS: usize = 1_000;
const USERS: usize = 10;
/// Operations per criterion iteration.
const BATCH: u64 = 100;
const TASKS: [usize; 2] = [1, 50];
const SCHEMA: &str = "lgadk";

const STORE: &str = "PostgresStore";
const RAW: &str = "raw sqlx";
const CEILING: &str = "pgbench";

/// The store's statements for these three operations (`crates/lgadk-session/src/postgres/
/// statements.rs`, schema `lgadk`), sent by the baseline as they are.
const LIVE: &str = "(s.timeout_ms IS NULL OR $2 - s.last_active_ms <= s.timeout_ms)";
fn track_sql() -> String {
    let dup = "$6 <> '' AND $6 = ANY (s.ops)";
    format!(
        "UPDATE lgadk.sessions AS s SET \
         interactions = CASE WHEN {dup} THEN s.interactions ELSE lgadk.lgadk_add(s.interactions, 1) END, \
         tokens_in = CASE WHEN {dup} THEN s.tokens_in ELSE lgadk.lgadk_add(s.tokens_in, $3) END, \
         tokens_out = CASE WHEN {dup} THEN s.tokens_out ELSE lgadk.lgadk_add(s.tokens_out, $4) END, \
         response_us = CASE WHEN {dup} THEN s.response_us ELSE lgadk.lgadk_add(s.response_us, $5) END, \
         last_active_ms = CASE WHEN {dup} THEN s.last_active_ms ELSE GREATEST(s.last_active_ms, $2) END, \
         ops = CASE WHEN {dup} THEN s.ops ELSE lgadk.lgadk_remember(s.ops, $6) END \
         WHERE s.id = $1 AND {LIVE} \
         RETURNING s.interactions, s.tokens_in, s.tokens_out, s.response_us"
    )
}
fn get_sql() -> String {
    format!(
        "SELECT s.user_id, s.created_ms, s.last_active_ms, s.timeout_ms, s.metadata::text, s.interactions, \
         s.tokens_in, s.tokens_out, s.response_us FROM lgadk.sessions s WHERE s.id = $1 AND {LIVE}"
    )
}
const CREATE_SQL: &str = "SELECT o_status, o_created_ms, o_last_active_ms FROM lgadk.lgadk_create($1, $2, $3, $4, \
                          $5::jsonb, $6::jsonb, $7)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Track,
    Get,
    Create,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Track => "track_interaction",
            Self::Get => "get_session",
            Self::Create => "create_session",
        }
    }
}

enum Client {
    Store(Arc<dyn SessionStore>),
    /// One connection per task (task `t` uses connection `t`).
    Raw(Vec<tokio::sync::Mutex<PgConnection>>),
}

struct Workload {
    client: Client,
    kind: Kind,
    ids: Arc<[SessionId]>,
    users: Arc<[UserId]>,
    sql: Arc<(String, String)>,
    fresh: AtomicU64,
}

impl Op for Workload {
    async fn call(&self, worker: usize, i: u64) {
        let index = ((worker as u64 * 7919 + i) % self.ids.len() as u64) as usize;
        let id = &self.ids[index];
        let user = &self.users[index % self.users.len()];
        let now = SystemClock.now_ms();
        match (&self.client, self.kind) {
            (Client::Store(store), Kind::Track) => {
                black_box(store.as_ref().track_interaction(id, Interaction::tokens(3, 5)).await.unwrap());
            }
            (Client::Store(store), Kind::Get) => {
                black_box(store.as_ref().get(id).await.unwrap().unwrap());
            }
            (Client::Store(store), Kind::Create) => {
                let new = NewSession::for_user(user.clone()).with_timeout(Timeout::After(Duration::from_millis(1)));
                black_box(store.as_ref().create(new).await.unwrap());
            }
            (Client::Raw(conns), kind) => {
                let mut conn = conns[worker].lock().await;
                let rows = match kind {
                    // As the store sends it for an interaction without an op id.
                    Kind::Track => sqlx::query(sqlx::AssertSqlSafe(self.sql.0.as_str()))
                        .bind(id.as_str())
                        .bind(now)
                        .bind(3i64)
                        .bind(5i64)
                        .bind(0i64)
                        .bind("")
                        .fetch_all(&mut *conn)
                        .await
                        .unwrap(),
                    Kind::Get => sqlx::query(sqlx::AssertSqlSafe(self.sql.1.as_str()))
                        .bind(id.as_str())
                        .bind(now)
                        .fetch_all(&mut *conn)
                        .await
                        .unwrap(),
                    Kind::Create => {
                        let fresh = format!("raw-{}", self.fresh.fetch_add(1, Ordering::Relaxed));
                        sqlx::query(CREATE_SQL)
                            .bind(fresh.as_str())
                            .bind(user.as_str())
                            .bind(now)
                            .bind(1i64)
                            .bind("{}")
                            .bind("{}")
                            .bind("")
                            .fetch_all(&mut *conn)
                            .await
                            .unwrap()
                    }
                };
                assert_eq!(rows.len(), 1);
                black_box(rows);
            }
        }
    }
}

/// `pgbench`'s transactions per second for `script` at `clients`, or `None` without pgbench.
fn pgbench(server: &PostgresServer, script: &str, clients: usize, seconds: u64) -> Option<f64> {
    let dir = tempfile_dir();
    let path = dir.join(format!("lgadk-{}-{clients}.sql", std::process::id()));
    std::fs::write(&path, script).ok()?;
    let out = Command::new(server.bin_dir().join("pgbench"))
        .args(["-n", "-M", "prepared", "-h", "127.0.0.1", "-p", &server.port().to_string(), "-U", "lgadk"])
        .args(["-c", &clients.to_string(), "-j", "2", "-T", &seconds.to_string(), "-f"])
        .arg(&path)
        .arg("postgres")
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|line| line.starts_with("tps = "))?;
    line.trim_start_matches("tps = ").split_whitespace().next()?.parse().ok()
}

fn tempfile_dir() -> std::path::PathBuf {
    std::env::temp_dir()
}

/// The pgbench script equivalent to one call: a random bench session, the caller's clock.
fn pgbench_script(kind: Kind) -> String {
    let setup = "\\set n random(0, 999)\n";
    let id = "'bench-' || lpad(:n::text, 4, '0')";
    let now = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
    let sql = match kind {
        Kind::Track => track_sql(),
        _ => get_sql(),
    };
    let sql = sql.replace("$1", id).replace("$2", now);
    let sql = match kind {
        Kind::Track => sql.replace("$3", "3").replace("$4", "5").replace("$5", "0").replace("$6", "''"),
        _ => sql,
    };
    format!("{setup}{sql};\n")
}

/// A one-node chat graph over `sessions` whose node answers at no cost.
fn graph(sessions: SessionManager) -> CompiledGraph<ChatState> {
    StateGraph::<ChatState>::new("bench")
        .add_node_fn("reply", |mut state: ChatState, ctx| async move {
            state.messages.push(Message::user(state.input.clone()));
            state.messages.push(Message::assistant("ok"));
            ctx.add_usage(Usage::new(7, 3));
            Ok(state)
        })
        .set_entry_point("reply")
        .set_finish_point("reply")
        .with_sessions(sessions)
        .compile()
        .unwrap()
}

fn main() {
    let mut bench = Bench::new("postgres_store");
    let Some(server) = PostgresServer::start() else {
        bench.report.note("SKIPPED: PostgreSQL not found, nothing measured.");
        bench.finish(|_| {});
        return;
    };
    let rt = support::runtime();
    let ids: Arc<[SessionId]> = (0..SESSIONS).map(|n| SessionId::parse(&format!("bench-{n:04}")).unwrap()).collect();
    let users: Arc<[UserId]> = (0..USERS).map(|n| UserId::parse(&format!("user-{n}")).unwrap()).collect();
    let wire = WireCounter::start(server.port());
    let (store, counted) = rt.block_on(async {
        let store =
            PostgresStore::builder(server.url()).with_schema(SCHEMA).with_max_connections(50).connect().await.unwrap();
        for (n, id) in ids.iter().enumerate() {
            store.create(NewSession::for_user(users[n % USERS].clone()).with_id(id.clone())).await.unwrap();
        }
        let counted = PostgresStore::builder(wire.url_for(&server.url()))
            .with_schema(SCHEMA)
            .with_max_connections(1)
            .connect()
            .await
            .unwrap();
        (Arc::new(store) as Arc<dyn SessionStore>, Arc::new(counted) as Arc<dyn SessionStore>)
    });
    let raw_conns = |n: usize| -> Vec<tokio::sync::Mutex<PgConnection>> {
        rt.block_on(async {
            let mut conns = Vec::new();
            for _ in 0..n {
                conns.push(tokio::sync::Mutex::new(PgConnection::connect(&server.url()).await.unwrap()));
            }
            conns
        })
    };
    let sql = Arc::new((track_sql(), get_sql()));
    let workload = |client: Client, kind: Kind| {
        Arc::new(Workload {
            client,
            kind,
            ids: Arc::clone(&ids),
            users: Arc::clone(&users),
            sql: Arc::clone(&sql),
            fresh: AtomicU64::new(0),
        })
    };
    bench.report.meta("server", &format!("PostgreSQL on 127.0.0.1:{} (fsync off)", server.port()));
    bench.report.note(
        "raw sqlx = one PgConnection per task sending the statement PostgresStore sends (same text and \
         parameters, prepared once per connection, rows left undecoded); pgbench = PostgreSQL's C client on an \
         equivalent script (prepared mode, `-c 1` / `-c 50`, 2 threads), the server's ceiling for that many \
         connections. PostgresStore's pool holds up to 50 connections.",
    );

    let mode = bench.mode;
    let mut round_trips = Vec::new();
    for kind in [Kind::Track, Kind::Get, Kind::Create] {
        // Round trips per call on a warm connection, counted on the wire.
        let counted_op = workload(Client::Store(Arc::clone(&counted)), kind);
        run_tasks(&rt, &counted_op, 1, 20);
        wire.take();
        run_tasks(&rt, &counted_op, 1, 100);
        round_trips.push((kind, wire.take().round_trips as f64 / 100.0));

        let title = format!("{} — PostgresStore vs raw sqlx", kind.name());
        let mut table = bench.table(kind.name(), &title, Display::Throughput, "rows: concurrent tasks");
        table.ignore_other_processes().ratio(STORE, RAW);
        if kind != Kind::Create {
            table.ratio(STORE, CEILING);
        }
        for tasks in TASKS {
            let ops = [
                (STORE, workload(Client::Store(Arc::clone(&store)), kind)),
                (RAW, workload(Client::Raw(raw_conns(tasks)), kind)),
            ];
            for (series, op) in &ops {
                // Warm: connections opened, statements prepared.
                run_tasks(&rt, op, tasks, tasks as u64 * 4);
                table.bench(series, &tasks.to_string(), BATCH, |iters| {
                    let elapsed = run_tasks(&rt, op, tasks, iters * BATCH);
                    if kind == Kind::Create {
                        std::thread::sleep(Duration::from_millis(2));
                        black_box(rt.block_on(store.purge_expired()).unwrap());
                    }
                    elapsed
                });
            }
            if kind != Kind::Create {
                let seconds = mode.size(10, 3) as u64;
                if let Some(tps) = pgbench(&server, &pgbench_script(kind), tasks, seconds) {
                    table.record(CEILING, &tasks.to_string(), 1e9 / tps);
                }
            }
        }
    }

    // A graph turn: turn 1 of a session and turn 100, each with its round trips.
    bench.report.table(
        "graph_turn",
        "graph turn on PostgreSQL — one node, zero-cost model (median)",
        Display::Time,
        "rows: the turn's place in its session; one connection, statements prepared",
    );
    let (turn_ns, turn_round_trips) = rt.block_on(async {
        let connect = |url: String| async move {
            let store =
                PostgresStore::builder(url).with_schema(SCHEMA).with_max_connections(1).connect().await.unwrap();
            graph(SessionManager::new(store))
        };
        // Timed on a direct connection; the same turns counted through the wire counter.
        let (chat, counted) = (connect(server.url()).await, connect(wire.url_for(&server.url())).await);
        for chat in [&chat, &counted] {
            // Warm the connection's statements.
            let warm = chat.run(RunRequest::new("hello")).await.unwrap().session_id;
            chat.run(RunRequest::new("again").with_session(warm)).await.unwrap();
        }
        let samples = mode.size(20, 5);
        let (mut first, mut hundredth) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            let started = Instant::now();
            let id = chat.run(RunRequest::new("turn 1")).await.unwrap().session_id;
            first.push(started.elapsed());
            for n in 2..100 {
                chat.run(RunRequest::new(format!("turn {n}")).with_session(id.clone())).await.unwrap();
            }
            let started = Instant::now();
            chat.run(RunRequest::new("turn 100").with_session(id.clone())).await.unwrap();
            hundredth.push(started.elapsed());
        }
        let id = counted.run(RunRequest::new("turn 1")).await.unwrap().session_id;
        for n in 2..100 {
            counted.run(RunRequest::new(format!("turn {n}")).with_session(id.clone())).await.unwrap();
        }
        wire.take();
        counted.run(RunRequest::new("turn 100").with_session(id.clone())).await.unwrap();
        let trips = wire.take().round_trips as f64;
        let median = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2].as_nanos() as f64
        };
        ((median(first), median(hundredth)), trips)
    });
    bench.report.record("graph_turn", "turn 1 (creates the session)", STORE, turn_ns.0);
    bench.report.record("graph_turn", "turn 100", STORE, turn_ns.1);

    bench.finish(|report: &mut Report| {
        let ratio = |report: &Report, table: &str, row: &str| {
            report.ops(table, row, STORE).zip(report.ops(table, row, RAW)).map(|(a, b)| a / b)
        };
        report.target(
            "track_interaction, 50 tasks: PostgresStore / raw sqlx",
            ratio(report, "track_interaction", "50"),
            Goal::AtLeast(0.7),
            times,
        );
        for kind in [Kind::Track, Kind::Get, Kind::Create] {
            for tasks in TASKS {
                report.target(
                    &format!("{}, {tasks} task(s): PostgresStore / raw sqlx (within 2× of the statement)", kind.name()),
                    ratio(report, kind.name(), &tasks.to_string()),
                    Goal::AtLeast(0.5),
                    times,
                );
            }
        }
        for (kind, per_call) in round_trips {
            report.target(
                &format!("{}, 1 task: round trips per call (on the wire)", kind.name()),
                Some(per_call),
                Goal::AtMost(1.0),
                |n| format!("{n:.2}"),
            );
        }
        report.target("graph turn 100: round trips (on the wire)", Some(turn_round_trips), Goal::AtMost(2.0), |n| {
            format!("{n:.2}")
        });
        report.target("graph turn 100 / turn 1", Some(turn_ns.1 / turn_ns.0), Goal::AtMost(1.2), times);
    });
}
