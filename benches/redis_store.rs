//! `redis_store` (feature `redis`): `RedisStore` against a `redis-server` the harness starts on
//! a free loopback port (never 6379).
//!
//! `track_interaction`, `get_session` and `create_session` at 1 and 50 concurrent tasks over
//! one `RedisStore` (one multiplexed connection), on a 2-worker runtime. Baseline in the same
//! run and the same runner: raw redis-rs on a `ConnectionManager` sending the equivalent single
//! EVALSHA (the very same Lua script, so the server does the same work) or a plain HGETALL, at
//! the same concurrency. When `redis-benchmark` is installed, its figures for `-c 1` and
//! `-c 50` on the same EVALSHA are recorded as the ceiling. Round trips per call are counted
//! with `MONITOR`.
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
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lgadk::core::{Clock, Interaction, NewSession, SessionId, SessionStore, SystemClock, Timeout, UserId};
use lgadk::session::RedisStore;
use lgadk::session::testing::RedisServer;
use redis::aio::ConnectionManager;
use support::{Bench, Display, Goal, Op, Report, run_tasks, times};

const SESSIONS: usize = 1_000;
const USERS: usize = 10;
/// Operations per criterion iteration.
const BATCH: u64 = 100;
const TASKS: [usize; 2] = [1, 50];
/// The store's default prefix and GC grace (see `lgadk_session::redis`).
const PREFIX: &str = "lgadk";
const GRACE_MS: i64 = 10 * 60 * 1000;

const STORE: &str = "RedisStore";
const RAW: &str = "raw EVALSHA";
const RAW_HGETALL: &str = "raw HGETALL";
const CEILING: &str = "redis-benchmark";

macro_rules! lua {
    ($file:literal) => {
        concat!(
            include_str!("../crates/lgadk-session/src/redis/lua/common.lua"),
            include_str!(concat!("../crates/lgadk-session/src/redis/lua/", $file))
        )
    };
}

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
    Raw(ConnectionManager),
    RawHgetall(ConnectionManager),
}

struct Scripts {
    track: redis::Script,
    get: redis::Script,
    create: redis::Script,
}

struct Workload {
    client: Client,
    kind: Kind,
    ids: Arc<[SessionId]>,
    users: Arc<[UserId]>,
    scripts: Arc<Scripts>,
    fresh: AtomicU64,
}

fn key(id: &str, suffix: &str) -> String {
    format!("{PREFIX}:{{{id}}}:{suffix}")
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
            (Client::Raw(conn), Kind::Track) => {
                let id = id.as_str();
                let mut invocation = self.scripts.track.prepare_invoke();
                invocation.key(key(id, "s")).key(key(id, "m")).key(key(id, "cp")).key(key(id, "h"));
                // As the store sends it for an interaction without an op id.
                invocation.arg(now).arg(GRACE_MS).arg(3).arg(5).arg(0).arg("");
                let reply: redis::Value = invocation.invoke_async(&mut conn.clone()).await.unwrap();
                black_box(reply);
            }
            (Client::Raw(conn), Kind::Get) => {
                let id = id.as_str();
                let mut invocation = self.scripts.get.prepare_invoke();
                invocation.key(key(id, "s")).key(key(id, "m")).arg(now);
                let reply: redis::Value = invocation.invoke_async(&mut conn.clone()).await.unwrap();
                black_box(reply);
            }
            (Client::RawHgetall(conn), _) => {
                let reply: redis::Value =
                    redis::cmd("HGETALL").arg(key(id.as_str(), "s")).query_async(&mut conn.clone()).await.unwrap();
                black_box(reply);
            }
            (Client::Raw(conn), Kind::Create) => {
                let fresh = format!("raw-{}", self.fresh.fetch_add(1, Ordering::Relaxed));
                let member = format!("{:020}|{fresh}", now.cast_unsigned() ^ (1 << 63));
                let mut invocation = self.scripts.create.prepare_invoke();
                invocation.key(key(&fresh, "s")).key(key(&fresh, "m")).key(key(&fresh, "cp")).key(key(&fresh, "h"));
                invocation.key(format!("{PREFIX}:u:{{{user}}}")).key(format!("{PREFIX}:x"));
                invocation.arg(now).arg(GRACE_MS).arg(&member).arg(user.as_str()).arg(1).arg(PREFIX).arg("");
                let reply: redis::Value = invocation.invoke_async(&mut conn.clone()).await.unwrap();
                black_box(reply);
            }
        }
    }
}

/// Round trips per call of `op` on one task: the commands clients sent, as `MONITOR` shows them
/// (commands a Lua script runs show as `[0 lua]` and are not counted; `total_commands_processed`
/// would count them).
fn round_trips_per_call(rt: &tokio::runtime::Runtime, server: &RedisServer, op: &Arc<Workload>, calls: u64) -> f64 {
    const END: &str = "lgadk-bench-monitor-end";
    let mut monitor = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    monitor.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    monitor.write_all(b"*1\r\n$7\r\nMONITOR\r\n").unwrap();
    let mut lines = BufReader::new(monitor).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "+OK");
    run_tasks(rt, op, 1, calls);
    server.command(&["ECHO", END]).unwrap();
    let mut sent = 0u64;
    for line in lines {
        let line = line.unwrap();
        if line.contains(END) {
            break;
        }
        if !line.contains(" lua]") {
            sent += 1;
        }
    }
    sent as f64 / calls as f64
}

/// `redis-benchmark`'s requests per second for one command, or `None` when it is missing.
fn redis_benchmark(port: u16, clients: usize, requests: usize, command: &[&str]) -> Option<f64> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-c", &clients.to_string()])
        .args(["-n", &requests.to_string(), "--csv"])
        .args(command)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
    last.split(',').nth(1)?.trim_matches('"').parse().ok()
}

fn main() {
    let mut bench = Bench::new("redis_store");
    let Some(server) = RedisServer::start() else {
        bench.report.note("SKIPPED: redis-server not found, nothing measured.");
        bench.finish(|_| {});
        return;
    };
    let rt = support::runtime();
    let ids: Arc<[SessionId]> = (0..SESSIONS).map(|n| SessionId::parse(&format!("bench-{n:04}")).unwrap()).collect();
    let users: Arc<[UserId]> = (0..USERS).map(|n| UserId::parse(&format!("user-{n}")).unwrap()).collect();
    let (store, conn) = rt.block_on(async {
        let store: Arc<dyn SessionStore> = Arc::new(RedisStore::builder(server.url()).connect().await.unwrap());
        for (n, id) in ids.iter().enumerate() {
            store.create(NewSession::for_user(users[n % USERS].clone()).with_id(id.clone())).await.unwrap();
        }
        let client = redis::Client::open(server.url()).unwrap();
        (store, ConnectionManager::new(client).await.unwrap())
    });
    let scripts = Arc::new(Scripts {
        track: redis::Script::new(lua!("track.lua")),
        get: redis::Script::new(lua!("get.lua")),
        create: redis::Script::new(lua!("create.lua")),
    });
    let workload = |client: Client, kind: Kind| {
        Arc::new(Workload {
            client,
            kind,
            ids: Arc::clone(&ids),
            users: Arc::clone(&users),
            scripts: Arc::clone(&scripts),
            fresh: AtomicU64::new(0),
        })
    };
    bench.report.meta("server", &format!("redis-server on 127.0.0.1:{}", server.port()));
    bench.report.note(
        "raw EVALSHA = redis-rs ConnectionManager invoking the same Lua script as RedisStore (same keys and \
         arguments, reply left undecoded); raw HGETALL = one HGETALL of the session hash; redis-benchmark = the \
         C client on the same EVALSHA (`-c 1` / `-c 50`), the server's ceiling for that many connections (at 50 \
         tasks RedisStore multiplexes one connection, so its commands reach the server in batches and can beat it).",
    );

    let mode = bench.mode;
    let mut round_trips = Vec::new();
    for kind in [Kind::Track, Kind::Get, Kind::Create] {
        let mut clients = vec![(STORE, Client::Store(Arc::clone(&store))), (RAW, Client::Raw(conn.clone()))];
        if kind == Kind::Get {
            clients.push((RAW_HGETALL, Client::RawHgetall(conn.clone())));
        }
        let ops: Vec<(&str, Arc<Workload>)> = clients.into_iter().map(|(name, c)| (name, workload(c, kind))).collect();
        // Warm the script cache (EVALSHA → NOSCRIPT → load) and count round trips.
        for (_, op) in &ops {
            run_tasks(&rt, op, 1, 10);
        }
        round_trips.push((kind, round_trips_per_call(&rt, &server, &ops[0].1, 100)));
        let title = format!("{} — RedisStore vs raw redis-rs", kind.name());
        let mut table = bench.table(kind.name(), &title, Display::Throughput, "rows: concurrent tasks");
        table.ignore_other_processes().ratio(STORE, RAW);
        if kind == Kind::Get {
            table.ratio(STORE, RAW_HGETALL);
        }
        if kind != Kind::Create {
            table.ratio(STORE, CEILING);
        }
        for tasks in TASKS {
            for (series, op) in &ops {
                table.bench(series, &tasks.to_string(), BATCH, |iters| {
                    let elapsed = run_tasks(&rt, op, tasks, iters * BATCH);
                    if kind == Kind::Create {
                        std::thread::sleep(Duration::from_millis(2));
                        black_box(rt.block_on(store.purge_expired()).unwrap());
                    }
                    elapsed
                });
            }
        }
        if kind != Kind::Create {
            let id = ids[0].as_str();
            let now = SystemClock.now_ms().to_string();
            let (script, tail): (&redis::Script, Vec<String>) = match kind {
                Kind::Track => {
                    let keys = ["s", "m", "cp", "h"].map(|s| key(id, s));
                    let mut tail = vec!["4".to_owned()];
                    tail.extend(keys);
                    tail.extend([now, GRACE_MS.to_string(), "3".into(), "5".into(), "0".into(), String::new()]);
                    (&scripts.track, tail)
                }
                _ => (&scripts.get, vec!["2".into(), key(id, "s"), key(id, "m"), now]),
            };
            let mut command = vec!["EVALSHA", script.get_hash()];
            command.extend(tail.iter().map(String::as_str));
            for tasks in TASKS {
                let requests = mode.size(100_000, 20_000) * if tasks == 1 { 1 } else { 5 };
                if let Some(rps) = redis_benchmark(server.port(), tasks, requests, &command) {
                    table.record(CEILING, &tasks.to_string(), 1e9 / rps);
                }
            }
        }
    }

    bench.finish(|report: &mut Report| {
        let ratio = |report: &Report, series: &str, base: &str| {
            report
                .ops("track_interaction", "50", series)
                .zip(report.ops("track_interaction", "50", base))
                .map(|(a, b)| a / b)
        };
        let measured = ratio(report, STORE, RAW);
        report.target("track_interaction, 50 tasks: RedisStore / raw EVALSHA", measured, Goal::AtLeast(0.7), times);
        for (kind, per_call) in round_trips {
            // Every 8th create also sweeps the indexes: two reads sent together, then one
            // EVALSHA when they found entries (see "Index growth without a reaper" in
            // `lgadk_session::redis`).
            let most = if kind == Kind::Create { 1.0 + 3.0 / 8.0 } else { 1.0 };
            report.target(
                &format!("{}, 1 task: round trips (client commands) per call", kind.name()),
                Some(per_call),
                Goal::AtMost(most),
                |n| format!("{n:.2}"),
            );
        }
    });
}
