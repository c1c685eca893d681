//! `session_scale`: costs that must not grow with the number of stored sessions.
//!
//! - `get_user_sessions` for a user with 100 sessions, the store holding 10k vs 1M sessions;
//! - `purge_expired` when 1% of 100k vs 1% of 1M sessions expired (and 1k of 1M, to separate
//!   the expired count from the total);
//! - resident bytes per idle session at 1M sessions, measured as the RSS delta (`VmRSS` of
//!   `/proc/self/status`) of a fresh child process that creates them; `unsafe_code` is
//!   forbidden in the workspace, so there is no counting global allocator.
//!
//! `--quick` divides the sizes of the listing and memory cases by 10 (the purge cases are cheap
//! enough to keep). Every timed purge starts with cold caches (64 MiB streamed through them
//! first), as a purge of sessions idle for a timeout does. The baseline is `NaiveStore`
//! (`Mutex<HashMap<SessionId, Session>>`, LG-ADK's kind, which scans for both operations).
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
use std::time::{Duration, Instant};

use lgadk::SessionManager;
use lgadk::core::{ManualClock, NewSession, SessionStore, Timeout, UserId};
use lgadk::session::InMemoryStore;
use support::naive::NaiveStore;
use support::{Bench, CacheEvictor, Display, Goal, Report, bytes, times};

const STORE: &str = "InMemoryStore";
const NAIVE: &str = "NaiveStore";
/// Sessions per user in every store built here.
const PER_USER: usize = 100;
/// The environment variable that turns this binary into the memory probe.
const PROBE: &str = "LGADK_BENCH_MEMORY_PROBE";
const T0: i64 = 1_700_000_000_000;
/// Streamed through the caches before each timed purge: twice this machine's L3 (32 MiB).
const EVICT_BYTES: usize = 64 << 20;

fn users(n: usize) -> Vec<UserId> {
    (0..n.div_ceil(PER_USER)).map(|u| UserId::parse(&format!("user-{u:06}")).unwrap()).collect()
}

/// Fills `store` with `n` sessions, `PER_USER` per user, all live for an hour.
fn fill(rt: &tokio::runtime::Runtime, store: &dyn SessionStore, users: &[UserId], n: usize) {
    rt.block_on(async {
        for i in 0..n {
            let new = NewSession::for_user(users[i % users.len()].clone())
                .with_timeout(Timeout::After(Duration::from_secs(3600)));
            store.create(new).await.unwrap();
        }
    });
}

fn label(n: usize) -> String {
    match n {
        1_000_000.. => format!("{}M", n / 1_000_000),
        1_000.. => format!("{}k", n / 1_000),
        _ => n.to_string(),
    }
}

fn user_sessions(bench: &mut Bench, rt: &tokio::runtime::Runtime, sizes: &[usize]) {
    let mut table = bench.table(
        "get_user_sessions",
        "get_user_sessions (SessionManager) for a user with 100 sessions",
        Display::Time,
        "rows: sessions in the store (100 per user)",
    );
    table.ratio(STORE, NAIVE);
    for &n in sizes {
        let users = users(n);
        let who = users[0].clone();
        let managers =
            [(STORE, SessionManager::new(InMemoryStore::new())), (NAIVE, SessionManager::new(NaiveStore::new()))];
        for (series, manager) in managers {
            fill(rt, manager.store(), &users, n);
            assert_eq!(rt.block_on(manager.get_user_sessions(&who)).unwrap().len(), PER_USER);
            table.bench(series, &format!("{} sessions", label(n)), 1, |iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(manager.get_user_sessions(&who).await.unwrap());
                    }
                    start.elapsed()
                })
            });
        }
    }
}

fn purge_row(expired: usize, total: usize) -> String {
    format!("{} of {}", label(expired), label(total))
}

fn purge(bench: &mut Bench, rt: &tokio::runtime::Runtime, cases: &[(usize, usize)]) {
    let mut table = bench.table(
        "purge_expired",
        "purge_expired (clear_expired_sessions) when some of the stored sessions expired",
        Display::Time,
        "rows: expired of stored sessions; the expired ones are re-created (untimed) before each call",
    );
    table.ratio(STORE, NAIVE).configure(10, Duration::from_secs(2));
    // Expired sessions were last touched a timeout ago: out of every cache. Without this the
    // smaller cases run from the caches their setup just filled, and the ratio between rows
    // measures the cache sizes rather than the purge.
    let mut evictor = CacheEvictor::new(EVICT_BYTES);
    for &(expired, total) in cases {
        let users = users(total);
        let clock = ManualClock::new(T0);
        let in_memory = InMemoryStore::builder().with_clock(clock.clone()).build();
        let naive = NaiveStore::with_clock(Arc::new(clock.clone()));
        let managers = [(STORE, SessionManager::new(in_memory)), (NAIVE, SessionManager::new(naive))];
        for (series, manager) in managers {
            clock.set_ms(T0);
            fill(rt, manager.store(), &users, total - expired);
            table.bench(series, &purge_row(expired, total), 1, |iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    clock.set_ms(T0);
                    rt.block_on(async {
                        for i in 0..expired {
                            let new = NewSession::for_user(users[i % users.len()].clone())
                                .with_timeout(Timeout::After(Duration::from_secs(1)));
                            manager.store().create(new).await.unwrap();
                        }
                    });
                    clock.set_ms(T0 + 5_000);
                    evictor.evict();
                    let start = Instant::now();
                    let removed = rt.block_on(manager.clear_expired_sessions()).unwrap();
                    timed += start.elapsed();
                    assert_eq!(removed, expired);
                }
                timed
            });
        }
    }
}

/// Resident set size of this process in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// The child side: `<store> <sessions> <with users>` → prints bytes per session.
fn probe(spec: &str) {
    let mut parts = spec.split(' ');
    let (kind, n, with_users) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let n: usize = n.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let users = if with_users == "1" { users(n) } else { Vec::new() };
    let store: Arc<dyn SessionStore> = match kind {
        "naive" => Arc::new(NaiveStore::new()),
        _ => Arc::new(InMemoryStore::new()),
    };
    let before = rss();
    rt.block_on(async {
        for i in 0..n {
            let mut new = NewSession::default();
            if !users.is_empty() {
                new.user_id = Some(users[i % users.len()].clone());
            }
            store.create(new).await.unwrap();
        }
    });
    let after = rss();
    println!("{}", (after.saturating_sub(before)) as f64 / n as f64);
    black_box(store);
}

fn memory(bench: &mut Bench, n: usize) {
    let mut table = bench.table(
        "bytes_per_session",
        "resident bytes per idle session (RSS delta of a fresh process)",
        Display::Bytes,
        "no metadata, one-hour timeout; rows: sessions created",
    );
    table.ratio(STORE, NAIVE);
    let exe = std::env::current_exe().unwrap();
    for (row, with_users) in
        [(format!("{} sessions, no user", label(n)), "0"), (format!("{} sessions, 100 per user", label(n)), "1")]
    {
        for (series, kind) in [(STORE, "memory"), (NAIVE, "naive")] {
            let out = Command::new(&exe).env(PROBE, format!("{kind} {n} {with_users}")).output().unwrap();
            assert!(out.status.success(), "memory probe failed: {}", String::from_utf8_lossy(&out.stderr));
            let per_session: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            table.record(series, &row, per_session);
        }
    }
}

fn targets(report: &mut Report, big: usize, small: usize, purge: &[(usize, usize)]) {
    let ratio = |report: &Report, a: (&str, &str), b: (&str, &str)| {
        report.value(a.0, a.1, STORE).zip(report.value(b.0, b.1, STORE)).map(|(a, b)| a / b)
    };
    let (big_row, small_row) = (format!("{} sessions", label(big)), format!("{} sessions", label(small)));
    let measured = ratio(report, ("get_user_sessions", &big_row), ("get_user_sessions", &small_row));
    report.target(
        &format!("get_user_sessions: time at {} / time at {} sessions", label(big), label(small)),
        measured,
        Goal::AtMost(1.5),
        times,
    );
    let rows: Vec<String> = purge.iter().map(|&(e, t)| purge_row(e, t)).collect();
    let measured = ratio(report, ("purge_expired", &rows[1]), ("purge_expired", &rows[0]));
    report.target(
        &format!("purge_expired: time for {} / time for {} (10× the expired count)", rows[1], rows[0]),
        measured,
        Goal::AtMost(12.0),
        times,
    );
    let measured = ratio(report, ("purge_expired", &rows[2]), ("purge_expired", &rows[0]));
    report.target(
        &format!("purge_expired: time for {} / time for {} (same expired count, 10× stored; added)", rows[2], rows[0]),
        measured,
        Goal::AtMost(1.5),
        times,
    );
    let row = format!("{} sessions, no user", label(big));
    report.target(
        &format!("bytes per idle session without metadata at {} sessions", label(big)),
        report.value("bytes_per_session", &row, STORE),
        Goal::AtMost(400.0),
        bytes,
    );
}

/// `LGADK_BENCH_PROFILE=purge <expired> <stored> <rounds>`: the `purge_expired` case without
/// criterion, for `valgrind --tool=callgrind --toggle-collect='*purge_expired*'`.
fn profile(spec: &str) {
    let parts: Vec<usize> = spec.split_whitespace().skip(1).map(|n| n.parse().unwrap()).collect();
    let [expired, total, rounds] = parts[..] else {
        panic!("LGADK_BENCH_PROFILE: expected `purge <expired> <stored> <rounds>`")
    };
    let rt = support::runtime();
    let users = users(total);
    let clock = ManualClock::new(T0);
    let store = InMemoryStore::builder().with_clock(clock.clone()).build();
    fill(&rt, &store, &users, total - expired);
    let mut timed = Duration::ZERO;
    let mut evictor = CacheEvictor::new(EVICT_BYTES);
    for _ in 0..rounds {
        clock.set_ms(T0);
        rt.block_on(async {
            for i in 0..expired {
                let new = NewSession::for_user(users[i % users.len()].clone())
                    .with_timeout(Timeout::After(Duration::from_secs(1)));
                store.create(new).await.unwrap();
            }
        });
        clock.set_ms(T0 + 5_000);
        evictor.evict();
        let start = Instant::now();
        assert_eq!(rt.block_on(store.purge_expired()).unwrap(), expired);
        timed += start.elapsed();
    }
    println!("{spec}: {:?} per purge", timed / u32::try_from(rounds).unwrap());
}

fn main() {
    if let Ok(spec) = std::env::var(PROBE) {
        probe(&spec);
        return;
    }
    if let Ok(spec) = std::env::var("LGADK_BENCH_PROFILE") {
        profile(&spec);
        return;
    }
    let mut bench = Bench::new("session_scale");
    let big = bench.mode.size(1_000_000, 100_000);
    let small = 10_000;
    // The purge rows keep the sizes in quick runs too (they are cheap: few calls).
    let full = if bench.mode == support::Mode::Test { 10_000 } else { 1_000_000 };
    let purge_cases = [(full / 1000, full / 10), (full / 100, full), (full / 1000, full)];
    bench.report.meta(
        "sizes",
        &format!(
            "{} / {} sessions; purge: {}",
            label(small),
            label(big),
            purge_cases.map(|(e, t)| purge_row(e, t)).join(", ")
        ),
    );
    let rt = support::runtime();
    memory(&mut bench, big);
    user_sessions(&mut bench, &rt, &[small, big]);
    purge(&mut bench, &rt, &purge_cases);
    bench.finish(|report| targets(report, big, small, &purge_cases));
}
