//! `session_concurrency`: the in-memory store under concurrent access.
//!
//! `track_interaction`, `get_session`, `update_session_metadata(merge)` and `create_session` at
//! 1, 2, 4 and 16 tokio tasks on 2 worker threads (and `track_interaction` on as many OS
//! threads), over 10k distinct sessions and over one hot session. Each worker thread owns a
//! current-thread runtime and task `t` always runs on thread `t mod 2` (`support::Workers`): a
//! work-stealing runtime placed 2 tasks on one worker in some runs and on both in others, and
//! the 2-task figure moved 3× between runs. The `scaling` table divides the 2-worker throughput
//! by the 1-worker one, measured in back-to-back pairs of runs. Each row compares, in the same run and through the same runner:
//! - `InMemoryStore`: lgadk's store through `Arc<dyn SessionStore>`;
//! - `SessionManager`: the same store through the manager (its validation and tracing spans);
//! - `NaiveStore`: `Mutex<HashMap<SessionId, Session>>` behind the same trait (LG-ADK's kind);
//! - `floor` (`track_interaction` only): one `AtomicU64::fetch_add` per session in a pre-built
//!   `Vec` plus the one clock read every timestamped update needs.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lgadk::SessionManager;
use lgadk::core::{
    Clock, Interaction, Metadata, MetadataUpdate, NewSession, SessionId, SessionStore, SystemClock, Timeout, UserId,
};
use lgadk::session::InMemoryStore;
use support::naive::NaiveStore;
use support::{Bench, Display, Goal, Mode, Op, Report, Workers, per_second, run_threads, times};

/// Distinct sessions in the "10k" cases.
const SESSIONS: usize = 10_000;
/// Users owning them (100 sessions each).
const USERS: usize = 100;
/// Operations per criterion iteration (so that even one iteration is worth timing).
const BATCH: u64 = 1024;
const WORKERS: [usize; 4] = [1, 2, 4, 16];

const STORE: &str = "InMemoryStore";
const MANAGER: &str = "SessionManager";
const NAIVE: &str = "NaiveStore";
const FLOOR: &str = "floor";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Track,
    Get,
    Merge,
    Create,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Track => "track_interaction",
            Self::Get => "get_session",
            Self::Merge => "update_session_metadata",
            Self::Create => "create_session",
        }
    }
}

/// One pre-built target: the same sessions in each.
#[derive(Clone)]
enum Target {
    Store(Arc<dyn SessionStore>),
    Manager(SessionManager),
    Floor(Arc<Floor>),
}

struct Floor {
    counters: Vec<AtomicU64>,
    clock: SystemClock,
}

struct Workload {
    target: Target,
    kind: Kind,
    /// The sessions the operations address (one for the hot case).
    ids: Arc<[SessionId]>,
    /// The users new sessions belong to (one for the hot case).
    users: Arc<[UserId]>,
}

impl Workload {
    fn index(&self, worker: usize, i: u64, len: usize) -> usize {
        // Workers start far apart and walk the keys in order; the table places them at random.
        ((worker as u64 * 7919 + i) % len as u64) as usize
    }

    fn new_session(&self, worker: usize, i: u64) -> NewSession {
        let user = self.users[self.index(worker, i, self.users.len())].clone();
        // A 1 ms timeout: the runner purges the new sessions after the timed part.
        NewSession::for_user(user).with_timeout(Timeout::After(Duration::from_millis(1)))
    }
}

fn merge_update(i: u64) -> Metadata {
    let mut map = Metadata::new();
    map.insert("turn".into(), i.into());
    map
}

impl Op for Workload {
    // Stores are called through `&dyn SessionStore` (`as_ref`): a method called on the
    // `Arc<dyn SessionStore>` itself resolves to lgadk-core's forwarding impl for `Arc<T>`,
    // which boxes a second future per call (see the report's notes).
    async fn call(&self, worker: usize, i: u64) {
        let id = &self.ids[self.index(worker, i, self.ids.len())];
        match (&self.target, self.kind) {
            (Target::Store(store), Kind::Track) => {
                black_box(store.as_ref().track_interaction(id, Interaction::tokens(3, 5)).await.unwrap());
            }
            (Target::Manager(manager), Kind::Track) => {
                black_box(manager.track_interaction(id, 3, 5, Duration::ZERO).await.unwrap());
            }
            (Target::Store(store), Kind::Get) => {
                black_box(store.as_ref().get(id).await.unwrap().unwrap());
            }
            (Target::Manager(manager), Kind::Get) => {
                black_box(manager.get_session(id).await.unwrap().unwrap());
            }
            (Target::Store(store), Kind::Merge) => {
                black_box(store.as_ref().update_metadata(id, MetadataUpdate::Merge(merge_update(i))).await.unwrap());
            }
            (Target::Manager(manager), Kind::Merge) => {
                black_box(manager.update_session_metadata(id, merge_update(i), true).await.unwrap());
            }
            (Target::Store(store), Kind::Create) => {
                black_box(store.as_ref().create(self.new_session(worker, i)).await.unwrap());
            }
            (Target::Manager(manager), Kind::Create) => {
                black_box(manager.create_session_with(self.new_session(worker, i)).await.unwrap());
            }
            (Target::Floor(floor), _) => {
                let index = self.index(worker, i, floor.counters.len().min(self.ids.len()));
                floor.counters[index].fetch_add(1, Ordering::Relaxed);
                black_box(floor.clock.now_ms());
            }
        }
    }
}

/// The store behind a target, to purge the sessions a `create` case made.
fn purge(rt: &tokio::runtime::Runtime, target: &Target) {
    std::thread::sleep(Duration::from_millis(2));
    let removed = match target {
        Target::Store(store) => rt.block_on(store.purge_expired()),
        Target::Manager(manager) => rt.block_on(manager.clear_expired_sessions()),
        Target::Floor(_) => Ok(0),
    };
    black_box(removed.unwrap());
}

struct Fixture {
    targets: Vec<(&'static str, Target)>,
    ids: Arc<[SessionId]>,
    users: Arc<[UserId]>,
}

/// Three stores holding the same 10k sessions (100 users × 100, one-hour timeout), and the floor.
fn fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    let ids: Arc<[SessionId]> = (0..SESSIONS).map(|n| SessionId::parse(&format!("session-{n:05}")).unwrap()).collect();
    let users: Arc<[UserId]> = (0..SESSIONS).map(|n| UserId::parse(&format!("user-{n:05}")).unwrap()).collect();
    let store: Arc<dyn SessionStore> = Arc::new(InMemoryStore::new());
    let naive: Arc<dyn SessionStore> = Arc::new(NaiveStore::new());
    let manager = SessionManager::new(InMemoryStore::new());
    rt.block_on(async {
        for (n, id) in ids.iter().enumerate() {
            let new = NewSession::for_user(users[n % USERS].clone()).with_id(id.clone());
            store.create(new.clone()).await.unwrap();
            naive.create(new.clone()).await.unwrap();
            manager.create_session_with(new).await.unwrap();
        }
    });
    let floor = Floor { counters: (0..SESSIONS).map(|_| AtomicU64::new(0)).collect(), clock: SystemClock };
    let targets = vec![
        (STORE, Target::Store(store)),
        (MANAGER, Target::Manager(manager)),
        (NAIVE, Target::Store(naive)),
        (FLOOR, Target::Floor(Arc::new(floor))),
    ];
    Fixture { targets, ids, users }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    Distinct,
    Hot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runner {
    Tasks,
    Threads,
}

fn table_id(kind: Kind, keys: Keys, runner: Runner) -> String {
    let keys = match keys {
        Keys::Distinct => "10k",
        Keys::Hot => "hot",
    };
    let runner = match runner {
        Runner::Tasks => "tasks",
        Runner::Threads => "threads",
    };
    format!("{}/{keys}/{runner}", kind.name())
}

fn run_table(
    bench: &mut Bench,
    rt: &tokio::runtime::Runtime,
    workers_pool: &Workers,
    fixture: &Fixture,
    kind: Kind,
    keys: Keys,
    runner: Runner,
) {
    let keys_title = match (keys, kind) {
        (Keys::Distinct, Kind::Create) => "new sessions for 10k distinct users",
        (Keys::Hot, Kind::Create) => "new sessions for one hot user",
        (Keys::Distinct, _) => "10k distinct sessions",
        (Keys::Hot, _) => "one hot session",
    };
    let runner_title = match runner {
        Runner::Tasks => "tokio tasks on 2 worker threads, a current-thread runtime each",
        Runner::Threads => "OS threads",
    };
    let id = table_id(kind, keys, runner);
    let title = format!("{} — {keys_title} — {runner_title}", kind.name());
    let mut table = bench.table(&id, &title, Display::Throughput, "rows: concurrent workers");
    table.ratio(STORE, NAIVE).ratio(MANAGER, NAIVE);
    if kind == Kind::Track {
        table.ratio(STORE, FLOOR).ratio(MANAGER, FLOOR);
    }
    if runner == Runner::Tasks {
        table.ratio(MANAGER, STORE);
    }
    let (ids, users) = match keys {
        Keys::Distinct => (Arc::clone(&fixture.ids), Arc::clone(&fixture.users)),
        Keys::Hot => (Arc::from(&fixture.ids[..1]), Arc::from(&fixture.users[..1])),
    };
    for workers in WORKERS {
        for (series, target) in &fixture.targets {
            let skip = match target {
                Target::Floor(_) => kind != Kind::Track,
                Target::Manager(_) => runner == Runner::Threads,
                Target::Store(_) => false,
            };
            if skip {
                continue;
            }
            let op =
                Arc::new(Workload { target: target.clone(), kind, ids: Arc::clone(&ids), users: Arc::clone(&users) });
            table.bench(series, &workers.to_string(), BATCH, |iters| {
                let elapsed = match runner {
                    Runner::Tasks => workers_pool.run(&op, workers, iters * BATCH),
                    Runner::Threads => run_threads(&*op, workers, iters * BATCH),
                };
                if kind == Kind::Create {
                    purge(rt, &op.target);
                }
                elapsed
            });
        }
    }
}

const KINDS: [Kind; 4] = [Kind::Track, Kind::Get, Kind::Merge, Kind::Create];

/// The `scaling` table: throughput with 2 workers over throughput with 1, per table and series.
///
/// Measured apart from the criterion cases, as the median ratio over back-to-back pairs of runs
/// (1 worker then 2, or 2 then 1, alternating): on a shared machine the load other processes
/// put on the cores changes over seconds, and a ratio of two criterion cases measured a minute
/// apart mostly measured that change. Within a pair, both halves see the same load.
fn scaling(bench: &mut Bench, rt: &tokio::runtime::Runtime, workers: &Workers, fixture: &Fixture) {
    let (pairs, batches) = match bench.mode {
        Mode::Full => (31, 256),
        Mode::Quick => (9, 64),
        Mode::Test => (1, 1),
    };
    let ops = batches * BATCH;
    bench.report.table(
        "scaling",
        "scaling: throughput with 2 workers ÷ throughput with 1 worker",
        Display::Ratio,
        &format!(
            "median over {pairs} back-to-back pairs of runs of {ops} operations on 1 and on 2 workers (which \
             goes first alternates), so that both halves of a pair see the same machine load; 2.00× is perfect \
             scaling on 2 cores"
        ),
    );
    let mut cases = Vec::new();
    for kind in KINDS {
        for keys in [Keys::Distinct, Keys::Hot] {
            cases.push((kind, keys, Runner::Tasks));
        }
    }
    cases.extend([(Kind::Track, Keys::Distinct, Runner::Threads), (Kind::Track, Keys::Hot, Runner::Threads)]);
    for (kind, keys, runner) in cases {
        let table = table_id(kind, keys, runner);
        let (ids, users) = match keys {
            Keys::Distinct => (Arc::clone(&fixture.ids), Arc::clone(&fixture.users)),
            Keys::Hot => (Arc::from(&fixture.ids[..1]), Arc::from(&fixture.users[..1])),
        };
        for (series, target) in &fixture.targets {
            let skip = match target {
                Target::Floor(_) => kind != Kind::Track,
                Target::Manager(_) => runner == Runner::Threads,
                Target::Store(_) => false,
            };
            if skip {
                continue;
            }
            let op =
                Arc::new(Workload { target: target.clone(), kind, ids: Arc::clone(&ids), users: Arc::clone(&users) });
            let time = |n: usize| {
                let elapsed = match runner {
                    Runner::Tasks => workers.run(&op, n, ops),
                    Runner::Threads => run_threads(&*op, n, ops),
                };
                if kind == Kind::Create {
                    purge(rt, &op.target);
                }
                elapsed.as_secs_f64()
            };
            // Warm-up: the first runs fault in memory the later ones reuse.
            time(1);
            time(2);
            let (mut ratios, foreign) = support::with_foreign_share(|| {
                (0..pairs)
                    .map(|pair| {
                        let (one, two) = if pair % 2 == 0 {
                            let one = time(1);
                            (one, time(2))
                        } else {
                            let two = time(2);
                            (time(1), two)
                        };
                        one / two
                    })
                    .collect::<Vec<f64>>()
            });
            ratios.sort_by(f64::total_cmp);
            bench.report.record("scaling", &table, series, ratios[ratios.len() / 2]);
            if let Some(foreign) = foreign {
                bench.report.record_noise("scaling", &table, series, foreign);
            }
        }
    }
}

fn scaling_targets(report: &mut Report) {
    for kind in [Kind::Track, Kind::Get] {
        let table = table_id(kind, Keys::Distinct, Runner::Tasks);
        for series in [STORE, MANAGER] {
            report.target(
                &format!("{}, 10k sessions: 2 workers / 1 worker ({series})", kind.name()),
                report.value("scaling", &table, series),
                Goal::AtLeast(1.6),
                times,
            );
        }
    }
}

fn targets(report: &mut Report) {
    scaling_targets(report);
    let track = table_id(Kind::Track, Keys::Distinct, Runner::Tasks);
    let hot = table_id(Kind::Track, Keys::Hot, Runner::Tasks);
    let store = report.ops(&track, "2", STORE);
    let manager = report.ops(&track, "2", MANAGER);
    let naive = report.ops(&track, "2", NAIVE);
    let floor = report.ops(&track, "2", FLOOR);
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    report.target(
        "track_interaction, 2 tasks, 10k sessions: InMemoryStore / NaiveStore",
        ratio(store, naive),
        Goal::AtLeast(1.5),
        times,
    );
    report.target(
        "track_interaction, 2 tasks, 10k sessions: floor / InMemoryStore (within 5× of the floor)",
        ratio(floor, store),
        Goal::AtMost(5.0),
        times,
    );
    report.target(
        "track_interaction, 2 tasks, 10k sessions, SessionManager",
        manager,
        Goal::AtLeast(4.5e6),
        per_second,
    );
    report.target(
        "track_interaction, 16 tasks: one hot session / 10k sessions (InMemoryStore)",
        ratio(report.ops(&hot, "16", STORE), report.ops(&track, "16", STORE)),
        Goal::AtLeast(0.5),
        times,
    );
    report.target(
        "track_interaction, 16 tasks: one hot session / 10k sessions (SessionManager)",
        ratio(report.ops(&hot, "16", MANAGER), report.ops(&track, "16", MANAGER)),
        Goal::AtLeast(0.5),
        times,
    );
}

/// `LGADK_BENCH_PROFILE=<op> <series> <ops>` (e.g. `track_interaction InMemoryStore 100000`): runs
/// that many operations on one task over the 10k sessions and exits, for
/// `valgrind --tool=callgrind --toggle-collect='*drive_tasks*'`, which counts instructions
/// (stable on a noisy machine).
fn profile(workers: &Workers, fixture: &Fixture, spec: &str) {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let [op, series, ops] = parts[..] else { panic!("LGADK_BENCH_PROFILE: expected `<op> <series> <ops>`") };
    let kind = KINDS.into_iter().find(|k| k.name() == op).unwrap();
    let target = fixture.targets.iter().find(|(name, _)| *name == series).map(|(_, t)| t.clone()).unwrap();
    let op = Arc::new(Workload { target, kind, ids: Arc::clone(&fixture.ids), users: Arc::clone(&fixture.users) });
    let elapsed = workers.run(&op, 1, ops.parse().unwrap());
    println!("{spec}: {elapsed:?}");
}

fn main() {
    let mut bench = Bench::new("session_concurrency");
    let rt = support::runtime();
    let fixture = fixture(&rt);
    let workers = Workers::new(2);
    if let Ok(spec) = std::env::var("LGADK_BENCH_PROFILE") {
        profile(&workers, &fixture, &spec);
        return;
    }
    bench.report.note(
        "NaiveStore = Mutex<HashMap<SessionId, Session>> behind the same SessionStore trait; floor = one \
         AtomicU64::fetch_add per session in a pre-built Vec plus one SystemClock read. InMemoryStore and \
         NaiveStore are called through `&dyn SessionStore`; SessionManager as it ships, which calls its \
         `Arc<dyn SessionStore>` with method syntax and so goes through lgadk-core's forwarding impl for `Arc<T>` \
         (a second boxed future per call). Each create_session case purges what it created after the timed part.",
    );
    for kind in KINDS {
        for keys in [Keys::Distinct, Keys::Hot] {
            run_table(&mut bench, &rt, &workers, &fixture, kind, keys, Runner::Tasks);
        }
    }
    for keys in [Keys::Distinct, Keys::Hot] {
        run_table(&mut bench, &rt, &workers, &fixture, Kind::Track, keys, Runner::Threads);
    }
    scaling(&mut bench, &rt, &workers, &fixture);
    bench.finish(targets);
}
