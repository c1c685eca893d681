//! The harness every bench binary shares: concurrent runners, the baselines, and the results
//! file that `cargo xtask bench` turns into `target/bench-report.md`.
//!
//! Each binary measures lgadk and its baselines through the same runner in the same run, so a
//! ratio between two rows cancels most of the machine's noise. Criterion times every case
//! (`iter_custom`: the runner returns the wall time of `iters` operations spread over the
//! workers); after `final_summary` the binary reads criterion's `estimates.json` back and writes
//! `target/bench-results/<group>.tsv`:
//!
//! ```text
//! meta    <key>    <value>
//! table   <id>     <title>     <throughput|time|bytes>     <note>
//! result  <table>  <row>       <series>    <ns per op, or bytes>
//! ratio   <table>  <series>    <baseline series>
//! target  <what>   <measured>  <goal>      <PASS|MISS|n/a>
//! noise   <table>  <row>       <series>    <share of all CPU other processes used meanwhile>
//! note    <text>
//! ```
#![allow(dead_code, reason = "each bench binary uses part of the harness")]

pub(crate) mod naive;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};

/// How the binary was started: `--quick` (CI-sized), criterion's test mode (`cargo test
/// --benches`, one pass per case), or a full run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Full,
    Quick,
    Test,
}

impl Mode {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        if args.iter().any(|a| a == "--quick") {
            Self::Quick
        } else if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test") {
            Self::Full
        } else {
            Self::Test
        }
    }

    /// `full` in a full run, `small` otherwise (quick and test runs use the small sizes).
    pub(crate) fn size(self, full: usize, small: usize) -> usize {
        if self == Self::Full { full } else { small }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Quick => "quick",
            Self::Test => "test",
        }
    }
}

/// What a table's values are and how the report prints them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Display {
    /// Operations per second (values are ns per operation).
    Throughput,
    /// Time per call (values are ns per call).
    Time,
    /// Bytes (values are bytes).
    Bytes,
    /// A ratio between two measured cases (values are the ratio).
    Ratio,
}

impl Display {
    fn name(self) -> &'static str {
        match self {
            Self::Throughput => "throughput",
            Self::Time => "time",
            Self::Bytes => "bytes",
            Self::Ratio => "ratio",
        }
    }
}

/// Which way a target goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

struct Pending {
    table: String,
    row: String,
    series: String,
    full_id: String,
    elements: u64,
    /// Share of the machine's CPU that other processes used while the case ran.
    foreign: Option<f64>,
}

/// The results file of one bench binary.
#[derive(Debug, Default)]
pub(crate) struct Report {
    lines: Vec<String>,
    values: HashMap<(String, String, String), f64>,
}

fn clean(field: &str) -> String {
    field.replace(['\t', '\n'], " ")
}

impl Report {
    fn line(&mut self, fields: &[&str]) {
        self.lines.push(fields.iter().map(|f| clean(f)).collect::<Vec<_>>().join("\t"));
    }

    pub(crate) fn meta(&mut self, key: &str, value: &str) {
        self.line(&["meta", key, value]);
    }

    pub(crate) fn note(&mut self, text: &str) {
        self.line(&["note", text]);
    }

    /// Declares a table whose values are all recorded with [`Report::record`] (no criterion
    /// cases), such as ratios computed from other tables.
    pub(crate) fn table(&mut self, id: &str, title: &str, display: Display, note: &str) {
        self.line(&["table", id, title, display.name(), note]);
    }

    /// Records a value measured outside criterion (bytes, counts).
    pub(crate) fn record(&mut self, table: &str, row: &str, series: &str, value: f64) {
        self.line(&["result", table, row, series, &format!("{value:.3}")]);
        self.values.insert((table.into(), row.into(), series.into()), value);
    }

    /// Records the share of the machine's CPU other processes used while a case ran.
    pub(crate) fn record_noise(&mut self, table: &str, row: &str, series: &str, share: f64) {
        self.line(&["noise", table, row, series, &format!("{share:.3}")]);
    }

    /// The value of a case: ns per operation, or what [`Report::record`] stored.
    pub(crate) fn value(&self, table: &str, row: &str, series: &str) -> Option<f64> {
        self.values.get(&(table.into(), row.into(), series.into())).copied()
    }

    /// Operations per second of a throughput case.
    pub(crate) fn ops(&self, table: &str, row: &str, series: &str) -> Option<f64> {
        self.value(table, row, series).map(|ns| 1e9 / ns)
    }

    /// Records a target: `measured` against `goal`, printed with `unit`.
    pub(crate) fn target(&mut self, what: &str, measured: Option<f64>, goal: Goal, unit: fn(f64) -> String) {
        let (verdict, goal_text) = match goal {
            Goal::AtLeast(want) => (measured.map(|m| m >= want), format!("≥ {}", unit(want))),
            Goal::AtMost(want) => (measured.map(|m| m <= want), format!("≤ {}", unit(want))),
        };
        let measured = measured.map_or_else(|| "not measured".to_owned(), unit);
        let verdict = match verdict {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a",
        };
        self.line(&["target", what, &measured, &goal_text, verdict]);
    }
}

/// Formats a ratio: `1.73×`.
pub(crate) fn times(ratio: f64) -> String {
    format!("{ratio:.2}×")
}

/// Formats a throughput: `4.52 M ops/s`.
pub(crate) fn per_second(ops: f64) -> String {
    if ops >= 1e6 { format!("{:.2} M ops/s", ops / 1e6) } else { format!("{:.1} k ops/s", ops / 1e3) }
}

/// Formats a duration in ns: `3.4 µs`.
pub(crate) fn nanos(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Formats a byte count.
pub(crate) fn bytes(n: f64) -> String {
    format!("{n:.0} B")
}

/// One bench binary's criterion instance and results.
pub(crate) struct Bench {
    group: &'static str,
    criterion: Criterion,
    pending: Vec<Pending>,
    pub(crate) report: Report,
    pub(crate) mode: Mode,
}

impl Bench {
    /// Criterion with this project's defaults (overridable on the command line: `--quick`,
    /// `--measurement-time`, a filter, …).
    pub(crate) fn new(group: &'static str) -> Self {
        let mode = Mode::from_args();
        let criterion = Criterion::default()
            .warm_up_time(Duration::from_millis(800))
            .measurement_time(Duration::from_secs(3))
            .sample_size(30)
            .nresamples(20_000)
            .configure_from_args();
        let mut report = Report::default();
        report.meta("mode", mode.name());
        report.meta("load", &load_average());
        Self { group, criterion, pending: Vec::new(), report, mode }
    }

    /// A table of the report, benchmarked as one criterion group `<group>/<id>`.
    pub(crate) fn table(&mut self, id: &str, title: &str, display: Display, note: &str) -> Table<'_> {
        self.report.table(id, title, display, note);
        let group = self.criterion.benchmark_group(format!("{}/{id}", self.group));
        Table {
            id: id.to_owned(),
            group_id: format!("{}/{id}", self.group),
            group,
            pending: &mut self.pending,
            report: &mut self.report,
            watch_noise: true,
        }
    }

    /// Lets criterion finish, reads its estimates back, records the targets and writes
    /// `target/bench-results/<group>.tsv`.
    pub(crate) fn finish(mut self, targets: impl FnOnce(&mut Report)) {
        self.criterion.final_summary();
        let index = criterion_index(&criterion_dir());
        for case in std::mem::take(&mut self.pending) {
            let Some(dir) = index.get(&case.full_id) else { continue };
            let Some(ns) = typical_ns(dir) else { continue };
            self.report.record(&case.table, &case.row, &case.series, ns / case.elements as f64);
            if let Some(foreign) = case.foreign {
                self.report.record_noise(&case.table, &case.row, &case.series, foreign);
            }
        }
        targets(&mut self.report);
        self.report.meta("load_after", &load_average());
        let dir = target_dir().join("bench-results");
        let path = dir.join(format!("{}.tsv", self.group));
        let mut text = String::new();
        for line in &self.report.lines {
            let _ = writeln!(text, "{line}");
        }
        let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text));
        match written {
            Ok(()) => println!("bench results: {}", path.display()),
            Err(err) => eprintln!("could not write {}: {err}", path.display()),
        }
    }
}

/// One table: a criterion group whose cases are `series/row`.
pub(crate) struct Table<'a> {
    id: String,
    group_id: String,
    group: BenchmarkGroup<'a, WallTime>,
    pending: &'a mut Vec<Pending>,
    report: &'a mut Report,
    watch_noise: bool,
}

impl Table<'_> {
    /// Stops recording the CPU other processes use during each case (for tables whose cases
    /// drive another process, such as `redis-server`).
    pub(crate) fn ignore_other_processes(&mut self) -> &mut Self {
        self.watch_noise = false;
        self
    }

    /// Adds a column to the report: throughput of `series` over that of `baseline`, per row.
    pub(crate) fn ratio(&mut self, series: &str, baseline: &str) -> &mut Self {
        let id = self.id.clone();
        self.report.line(&["ratio", &id, series, baseline]);
        self
    }

    /// Overrides criterion's settings for this table (slow cases).
    pub(crate) fn configure(&mut self, samples: usize, measurement: Duration) -> &mut Self {
        self.group.sample_size(samples).measurement_time(measurement);
        self
    }

    /// Benchmarks one case. `run(iters)` performs `iters × elements` operations and returns
    /// the time they took.
    pub(crate) fn bench(&mut self, series: &str, row: &str, elements: u64, run: impl FnMut(u64) -> Duration) {
        self.bench_with(series, row, elements, SamplingMode::Auto, run);
    }

    /// [`bench`](Self::bench) with a sampling mode: `Flat` keeps every sample the same size,
    /// for cases whose untimed setup grows with the sample.
    pub(crate) fn bench_with(
        &mut self,
        series: &str,
        row: &str,
        elements: u64,
        mode: SamplingMode,
        mut run: impl FnMut(u64) -> Duration,
    ) {
        self.group.sampling_mode(mode).throughput(Throughput::Elements(elements));
        let mut ran = false;
        let before = CpuTimes::now();
        self.group.bench_function(BenchmarkId::new(series, row), |b| {
            ran = true;
            b.iter_custom(&mut run);
        });
        let after = CpuTimes::now();
        let foreign = before.zip(after).filter(|_| self.watch_noise).map(|(a, b)| b.foreign_share(&a));
        if ran {
            self.pending.push(Pending {
                table: self.id.clone(),
                row: row.to_owned(),
                series: series.to_owned(),
                full_id: format!("{}/{series}/{row}", self.group_id),
                elements,
                foreign,
            });
        }
    }

    /// Records a value measured outside criterion.
    pub(crate) fn record(&mut self, series: &str, row: &str, value: f64) {
        let id = self.id.clone();
        self.report.record(&id, row, series, value);
    }
}

/// Runs `f` and returns what it returned with the share of the machine's CPU that other
/// processes used meanwhile (`None` without `/proc`).
pub(crate) fn with_foreign_share<T>(f: impl FnOnce() -> T) -> (T, Option<f64>) {
    let before = CpuTimes::now();
    let out = f();
    let after = CpuTimes::now();
    (out, before.zip(after).map(|(a, b)| b.foreign_share(&a)))
}

/// CPU time counters, in clock ticks: the whole machine's (`/proc/stat`) and this process's
/// (`/proc/self/stat`), to tell how much CPU other processes took while a case ran.
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    /// Busy time of all CPUs, steal included.
    busy: u64,
    /// All time of all CPUs.
    total: u64,
    /// This process's user + system time.
    own: u64,
}

impl CpuTimes {
    fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> =
            stat.lines().next()?.split_whitespace().skip(1).take(8).map(|n| n.parse().unwrap_or(0)).collect();
        let [user, nice, system, idle, iowait, irq, softirq, steal] = cpu[..] else { return None };
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // After `(comm)`: field 3 (state) comes first, utime is field 14 and stime 15.
        let fields: Vec<&str> = own_stat.rsplit_once(')')?.1.split_whitespace().collect();
        let own = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let busy = user + nice + system + irq + softirq + steal;
        Some(Self { busy, total: busy + idle + iowait, own })
    }

    /// Share of all CPU time since `earlier` that went to other processes (or the hypervisor).
    fn foreign_share(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        let own = self.own.saturating_sub(earlier.own);
        let foreign = self.busy.saturating_sub(earlier.busy).saturating_sub(own);
        foreign as f64 / total
    }
}

/// The cargo target directory the benches write to (criterion's rule, without `cargo metadata`).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from)
}

fn criterion_dir() -> PathBuf {
    std::env::var_os("CRITERION_HOME").map_or_else(|| target_dir().join("criterion"), PathBuf::from)
}

/// Maps criterion's full benchmark ids to their directories (from each `new/benchmark.json`).
fn criterion_index(root: &Path) -> HashMap<String, PathBuf> {
    let mut index = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "benchmark.json")
                && path.parent().and_then(Path::file_name).is_some_and(|n| n == "new")
            {
                let id = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                    .and_then(|json| json["full_id"].as_str().map(str::to_owned));
                if let (Some(id), Some(new)) = (id, path.parent()) {
                    index.insert(id, new.to_path_buf());
                }
            }
        }
    }
    index
}

/// Criterion's typical time per iteration: the regression slope when it sampled linearly,
/// the mean otherwise (what its own report prints).
fn typical_ns(new_dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(new_dir.join("estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["slope"]["point_estimate"].as_f64().or_else(|| json["mean"]["point_estimate"].as_f64())
}

/// `/proc/loadavg`'s first three fields, or `unknown`.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The tokio runtime the concurrent cases run on: multi-thread with 2 workers.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// One operation of a workload, called by every worker of a runner.
pub(crate) trait Op: Send + Sync + 'static {
    /// The `i`-th operation of worker `worker`.
    fn call(&self, worker: usize, i: u64) -> impl Future<Output = ()> + Send;
}

/// How many of `total` operations worker `worker` of `workers` performs.
fn share(total: u64, workers: usize, worker: usize) -> u64 {
    let workers = workers as u64;
    total / workers + u64::from((worker as u64) < total % workers)
}

/// Runs `total` operations spread over `tasks` tokio tasks on `rt` and returns the wall time
/// from the first spawn to the last completion. Where the multi-thread runtime places the tasks
/// is up to its scheduler (two tasks may share a worker for a whole sample), so figures from
/// this runner can move between runs; [`Workers`] places them deterministically.
pub(crate) fn run_tasks<O: Op>(rt: &tokio::runtime::Runtime, op: &Arc<O>, tasks: usize, total: u64) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|worker| {
                let op = Arc::clone(op);
                let n = share(total, tasks, worker);
                tokio::spawn(async move {
                    for i in 0..n {
                        op.call(worker, i).await;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
        start.elapsed()
    })
}

/// A job for one of the [`Workers`]: runs on the worker's thread with its runtime.
type Job = Box<dyn FnOnce(&tokio::runtime::Runtime) + Send>;

/// A fixed pool of OS threads, each owning a current-thread tokio runtime: tokio tasks spread
/// over them stay where they were put. Task `t` of a run goes to thread `t % threads`, which
/// drives its tasks concurrently on its own runtime, so 2 tasks are always one per thread and
/// 16 are always 8 per thread: the placement (and with it the figure) does not depend on a
/// work-stealing scheduler's choices from one run to the next.
pub(crate) struct Workers {
    senders: Vec<std::sync::mpsc::Sender<Job>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `threads` worker threads.
    pub(crate) fn new(threads: usize) -> Self {
        let (senders, handles) = (0..threads)
            .map(|n| {
                let (tx, rx) = std::sync::mpsc::channel::<Job>();
                let handle = std::thread::Builder::new()
                    .name(format!("bench-worker-{n}"))
                    .spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                        for job in rx {
                            job(&rt);
                        }
                    })
                    .unwrap();
                (tx, handle)
            })
            .unzip();
        Self { senders, handles }
    }

    /// How many worker threads the pool has.
    pub(crate) fn threads(&self) -> usize {
        self.senders.len()
    }

    /// Runs `total` operations spread over `tasks` tokio tasks placed round-robin on the worker
    /// threads, and returns the wall time from the first thread's start to the last one's end.
    /// The threads read the clock themselves: a third thread timing them would wake late when
    /// the workers hold both cores, and report a rate they never reached.
    pub(crate) fn run<O: Op>(&self, op: &Arc<O>, tasks: usize, total: u64) -> Duration {
        let used = tasks.clamp(1, self.threads());
        let ready = Arc::new(std::sync::Barrier::new(used));
        let (done_tx, done_rx) = std::sync::mpsc::channel::<(Instant, Instant)>();
        for (thread, sender) in self.senders.iter().enumerate().take(used) {
            let mine: Vec<(usize, u64)> =
                (thread..tasks).step_by(used).map(|task| (task, share(total, tasks, task))).collect();
            let (op, ready, done) = (Arc::clone(op), Arc::clone(&ready), done_tx.clone());
            let job: Job = Box::new(move |rt| {
                ready.wait();
                let start = Instant::now();
                drive_tasks(rt, &op, mine);
                let _ = done.send((start, Instant::now()));
            });
            sender.send(job).unwrap();
        }
        drop(done_tx);
        let spans: Vec<(Instant, Instant)> = (0..used).map(|_| done_rx.recv().unwrap()).collect();
        let start = spans.iter().map(|(start, _)| *start).min().unwrap();
        let end = spans.iter().map(|(_, end)| *end).max().unwrap();
        end - start
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.senders.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// One worker thread's share of a run: its tasks, spawned on its current-thread runtime.
#[inline(never)]
fn drive_tasks<O: Op>(rt: &tokio::runtime::Runtime, op: &Arc<O>, tasks: Vec<(usize, u64)>) {
    rt.block_on(async {
        let handles: Vec<_> = tasks
            .into_iter()
            .map(|(task, n)| {
                let op = Arc::clone(op);
                tokio::spawn(async move {
                    for i in 0..n {
                        op.call(task, i).await;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
    });
}

/// Runs `total` operations spread over `threads` OS threads (each operation polled to
/// completion on its thread) and returns the wall time.
pub(crate) fn run_threads<O: Op>(op: &O, threads: usize, total: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..threads {
            let n = share(total, threads, worker);
            scope.spawn(move || {
                for i in 0..n {
                    poll_to_end(op.call(worker, i));
                }
            });
        }
    });
    start.elapsed()
}

/// Polls a future on the current thread until it completes. The in-memory stores never wait,
/// so this is one poll per call.
pub(crate) fn poll_to_end<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

/// A buffer larger than the per-core caches: [`evict`](Self::evict) streams through it so that
/// what an untimed setup just touched is no longer in L1/L2 when the timed part starts.
pub(crate) struct CacheEvictor(Vec<u64>);

impl CacheEvictor {
    pub(crate) fn new(bytes: usize) -> Self {
        Self(vec![0; bytes / 8])
    }

    pub(crate) fn evict(&mut self) {
        // One write per 64-byte line.
        for word in self.0.iter_mut().step_by(8) {
            *word = word.wrapping_add(1);
        }
        std::hint::black_box(&mut self.0);
    }
}
