//! `cargo xtask bench [--quick] [--peers] [--runs N] [GROUP…]`: runs the criterion benches of
//! the root package and writes `target/bench-report.md` next to criterion's HTML report
//! (`target/criterion/`).
//!
//! Every bench binary writes its own results to `target/bench-results/<group>.tsv` (see
//! `benches/support/mod.rs` for the format); this task runs them and renders the files as
//! markdown: one table per benchmarked table with the throughput (or time, or bytes) of each
//! series, the ratio of each series to its baseline, and the targets with PASS or MISS.
//!
//! - `--quick` passes criterion's `--quick` and makes the benches use their smaller sizes.
//! - `--peers` also measures the peers (LangGraph, Google ADK) on the same workloads, after the
//!   Rust groups of the same run: `benches/peers/peers.py` in a venv at `target/peers-venv`
//!   holding the pinned `benches/peers/requirements.txt` (made with `python3 -m venv`, rebuilt
//!   when that file changes). Its results (`target/bench-results/peers.tsv`) carry `compare`
//!   lines naming the lgadk cell each peer cell mirrors; the report's first section prints
//!   lgadk ÷ peer from them. Without a usable Python the report says the peers were not run
//!   and why; there is no built-in peer figure.
//! - `--runs N` runs everything N times (each run's files are kept under
//!   `target/bench-results/runs/<n>/`) and reports each cell's median with how far it moved
//!   across the runs: (max − min) ÷ median.

use std::collections::BTreeMap;
use std::env;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::venv::{self, VenvError};
use crate::{cargo, project_root};

/// The bench groups in report order (each is a `[[bench]]` of the root package).
const GROUPS: [&str; 8] = [
    "session_concurrency",
    "session_scale",
    "redis_store",
    "postgres_store",
    "graph_overhead",
    "tool_loop",
    "cold_turn",
    "server",
];

/// The group the peer script writes.
const PEERS: &str = "peers";

/// Goals on lgadk ÷ peer: (lgadk group, table, row or `*`, at least).
const PEER_GOALS: [(&str, &str, &str, f64); 4] = [
    ("graph_overhead", "turn", "first turn (new session, cache full)", 100.0),
    ("graph_overhead", "per_node", "*", 100.0),
    // A warm graph turn on PostgreSQL against LangGraph's PostgresSaver.
    ("postgres_store", "graph_turn", "turn 100", 6.0),
    // lgadk-server against LangGraph's own server, both through langgraph-sdk (peers.py runs both).
    (PEERS, "server/clients", "16 clients", 20.0),
];

/// What the command line asked for.
struct Options {
    quick: bool,
    peers: bool,
    runs: usize,
    groups: Vec<String>,
}

fn options(args: &[&str]) -> Result<Options> {
    let mut options = Options { quick: false, peers: false, runs: 1, groups: Vec::new() };
    let mut args = args.iter();
    while let Some(&arg) = args.next() {
        match arg {
            "--quick" => options.quick = true,
            "--peers" => options.peers = true,
            "--runs" => {
                let n = args.next().context("--runs needs a number")?;
                options.runs = n.parse().with_context(|| format!("--runs {n}: not a number"))?;
            }
            _ if arg.starts_with("--runs=") => {
                let n = &arg["--runs=".len()..];
                options.runs = n.parse().with_context(|| format!("--runs={n}: not a number"))?;
            }
            _ if arg.starts_with("--") => bail!("unknown bench option `{arg}`"),
            group => {
                ensure!(GROUPS.contains(&group), "unknown bench group `{group}` (groups: {})", GROUPS.join(", "));
                options.groups.push(group.to_owned());
            }
        }
    }
    ensure!((1..=20).contains(&options.runs), "--runs takes 1 to 20");
    if options.groups.is_empty() {
        options.groups = GROUPS.iter().map(|g| (*g).to_owned()).collect();
    }
    Ok(options)
}

/// Whether the peers ran, and if not, why.
enum PeerStatus {
    NotAsked,
    NotRun(String),
    Ran,
}

pub(crate) fn run(args: &[&str]) -> Result<()> {
    let options = options(args)?;
    let target = target_dir();
    let results = target.join("bench-results");
    let runs_dir = results.join("runs");
    let _ = fs::remove_dir_all(&runs_dir);
    let load_before = load_average();
    let mut failures = Vec::new();
    let mut peers = if options.peers { PeerStatus::Ran } else { PeerStatus::NotAsked };
    let mut dirs = Vec::new();
    for n in 1..=options.runs {
        if options.runs > 1 {
            eprintln!("== bench run {n} of {}", options.runs);
        }
        // Results from an earlier invocation must not pass for this run's.
        for group in options.groups.iter().map(String::as_str).chain([PEERS]) {
            let _ = fs::remove_file(results.join(format!("{group}.tsv")));
        }
        // Named bench targets only: `--benches` would include the lib's test harness, which
        // rejects criterion's arguments.
        let mut cmd = vec!["bench", "--package", "lgadk", "--all-features", "--no-fail-fast"];
        for group in &options.groups {
            cmd.extend(["--bench", group.as_str()]);
        }
        if options.quick {
            cmd.extend(["--", "--quick"]);
        }
        // The report is written even when a bench failed, from whatever groups finished.
        if let Err(err) = cargo(&cmd) {
            failures.push(format!("run {n}: {err:#}"));
        }
        if options.peers {
            let python = env::var_os("LGADK_PYTHON").unwrap_or_else(|| "python3".into());
            match run_peers(&python, &target, options.quick, &results.join(format!("{PEERS}.tsv"))) {
                Ok(()) => {}
                Err(VenvError::Unavailable(why)) => {
                    eprintln!("peers not run: {why}");
                    peers = PeerStatus::NotRun(why);
                }
                Err(VenvError::Failed(err)) => {
                    eprintln!("peers failed: {err:#}");
                    peers = PeerStatus::NotRun(format!("the peer script failed: {err:#}"));
                    failures.push(format!("run {n}: peers: {err:#}"));
                }
            }
        }
        if options.runs > 1 {
            let dir = runs_dir.join(n.to_string());
            let ran: Vec<&str> = options.groups.iter().map(String::as_str).chain([PEERS]).collect();
            copy_results(&results, &dir, &ran)?;
            dirs.push(dir);
        }
    }
    if options.runs == 1 {
        dirs.push(results);
    }
    let report = render(&dirs, &options, &load_before, &peers);
    let path = target.join("bench-report.md");
    fs::write(&path, report).with_context(|| format!("could not write {}", path.display()))?;
    eprintln!("bench report: {}", path.display());
    eprintln!("criterion plots: {}", target.join("criterion").join("report").join("index.html").display());
    ensure!(failures.is_empty(), "{}", failures.join("; "));
    Ok(())
}

/// Keeps one run's results files of `groups` (those that exist: a failed group wrote none).
fn copy_results(from: &Path, to: &Path, groups: &[&str]) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("could not create {}", to.display()))?;
    for group in groups {
        let path = from.join(format!("{group}.tsv"));
        if path.exists() {
            fs::copy(&path, to.join(format!("{group}.tsv")))
                .with_context(|| format!("could not copy {}", path.display()))?;
        }
    }
    Ok(())
}

/// Where cargo builds: `CARGO_TARGET_DIR` or the workspace's `target/`.
pub(crate) fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| project_root().join("target"), PathBuf::from)
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Makes (or reuses) the peers' venv with `python` and runs the peer script, which writes `out`.
fn run_peers(python: &OsStr, target: &Path, quick: bool, out: &Path) -> Result<(), VenvError> {
    let peers_dir = project_root().join("benches").join("peers");
    let venv_python = venv::ensure(python, &target.join("peers-venv"), &peers_dir.join("requirements.txt"))?;
    // LangGraph's server is measured against the release build of ours.
    cargo(&["build", "--release", "--locked", "--package", "lgadk-server", "--bin", "lgadk-server"])
        .map_err(VenvError::Failed)?;
    let script = peers_dir.join("peers.py");
    let mut cmd = Command::new(&venv_python);
    cmd.env("LGADK_SERVER_BIN", target.join("release").join("lgadk-server"));
    cmd.arg(&script).arg("--out").arg(out);
    if quick {
        cmd.arg("--quick");
    }
    eprintln!(
        "$ {} {} --out {}{}",
        venv_python.display(),
        script.display(),
        out.display(),
        if quick { " --quick" } else { "" }
    );
    let status = cmd.current_dir(project_root()).status().map_err(|err| VenvError::Failed(err.into()))?;
    if !status.success() {
        return Err(VenvError::Failed(anyhow::anyhow!("`{}` failed: {status}", script.display())));
    }
    Ok(())
}

/// One `table` line and what belongs to it, over every run.
#[derive(Default)]
struct Table {
    title: String,
    display: String,
    note: String,
    rows: Vec<String>,
    series: Vec<String>,
    /// Each run's value of a cell, in run order.
    values: BTreeMap<(String, String), Vec<f64>>,
    /// Share of the machine's CPU other processes used while a case ran (the most of any run).
    noise: BTreeMap<(String, String), f64>,
    ratios: Vec<(String, String)>,
}

impl Table {
    fn median(&self, row: &str, series: &str) -> Option<f64> {
        self.values.get(&(row.to_owned(), series.to_owned())).and_then(|v| median(v))
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// How far a cell moved across runs: (max − min) ÷ median.
fn spread(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let (min, max) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    median(values).filter(|m| *m > 0.0).map(|m| (max - min) / m)
}

/// A case during which other processes used at least this share of the CPU is marked.
const NOISY: f64 = 0.15;

/// One `target` line over every run.
#[derive(Default)]
struct Target {
    measured: Vec<String>,
    goal: String,
    verdicts: Vec<String>,
}

/// One `compare` line of the peers' file.
struct Compare {
    workload: String,
    group: String,
    table: String,
    row: String,
    series: String,
    peer_table: String,
    peer_row: String,
    peer_series: String,
}

/// The parsed results files of one group, over every run.
#[derive(Default)]
struct Group {
    meta: Vec<(String, Vec<String>)>,
    notes: Vec<String>,
    order: Vec<String>,
    tables: BTreeMap<String, Table>,
    targets: Vec<(String, Target)>,
    compares: Vec<Compare>,
}

fn parse(group: &mut Group, text: &str) {
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["meta", key, value] => match group.meta.iter_mut().find(|(k, _)| k == key) {
                Some((_, values)) => values.push((*value).into()),
                None => group.meta.push(((*key).into(), vec![(*value).into()])),
            },
            ["note", text] if !group.notes.iter().any(|n| n == text) => group.notes.push((*text).into()),
            ["table", id, title, display, note] => {
                if !group.order.iter().any(|o| o == id) {
                    group.order.push((*id).into());
                }
                let table = group.tables.entry((*id).into()).or_default();
                (table.title, table.display, table.note) = ((*title).into(), (*display).into(), (*note).into());
            }
            ["result", id, row, series, value] => {
                let Ok(value) = value.parse::<f64>() else { continue };
                let table = group.tables.entry((*id).into()).or_default();
                if !table.rows.iter().any(|r| r == row) {
                    table.rows.push((*row).into());
                }
                if !table.series.iter().any(|s| s == series) {
                    table.series.push((*series).into());
                }
                table.values.entry(((*row).into(), (*series).into())).or_default().push(value);
            }
            ["noise", id, row, series, share] => {
                let Ok(share) = share.parse::<f64>() else { continue };
                let noise =
                    group.tables.entry((*id).into()).or_default().noise.entry(((*row).into(), (*series).into()));
                let worst = noise.or_insert(share);
                *worst = worst.max(share);
            }
            ["ratio", id, series, baseline] => {
                let ratios = &mut group.tables.entry((*id).into()).or_default().ratios;
                let pair = ((*series).into(), (*baseline).into());
                if !ratios.contains(&pair) {
                    ratios.push(pair);
                }
            }
            ["target", what, measured, goal, verdict] => {
                let index = match group.targets.iter().position(|(w, _)| w == what) {
                    Some(index) => index,
                    None => {
                        group.targets.push(((*what).into(), Target::default()));
                        group.targets.len() - 1
                    }
                };
                let target = &mut group.targets[index].1;
                target.measured.push((*measured).into());
                target.goal = (*goal).into();
                target.verdicts.push((*verdict).into());
            }
            ["compare", workload, g, table, row, series, peer_table, peer_row, peer_series]
                if !group.compares.iter().any(|c| c.workload == *workload) =>
            {
                group.compares.push(Compare {
                    workload: (*workload).into(),
                    group: (*g).into(),
                    table: (*table).into(),
                    row: (*row).into(),
                    series: (*series).into(),
                    peer_table: (*peer_table).into(),
                    peer_row: (*peer_row).into(),
                    peer_series: (*peer_series).into(),
                });
            }
            _ => {}
        }
    }
}

fn format_value(display: &str, value: f64) -> String {
    match display {
        "throughput" => {
            let ops = 1e9 / value;
            if ops >= 1e6 { format!("{:.2} M/s", ops / 1e6) } else { format!("{:.1} k/s", ops / 1e3) }
        }
        "time" if value >= 1e6 => format!("{:.2} ms", value / 1e6),
        "time" if value >= 1e3 => format!("{:.2} µs", value / 1e3),
        "time" => format!("{value:.0} ns"),
        "bytes" => format!("{value:.0} B"),
        "ratio" => format!("{value:.2}×"),
        _ => format!("{value:.3}"),
    }
}

fn render_table(out: &mut String, table: &Table, runs: usize) {
    let _ = writeln!(out, "### {}\n", table.title);
    if !table.note.is_empty() {
        let unit = match table.display.as_str() {
            "throughput" => "operations per second",
            "time" => "time per call",
            "bytes" => "bytes",
            "ratio" => "ratios",
            _ => "values",
        };
        let _ = write!(out, "{unit}; {}.", table.note);
        if !table.ratios.is_empty() {
            out.push_str(" Ratio = series ÷ baseline in throughput (> 1: the series is faster or smaller).");
        }
        if runs > 1 {
            let _ = write!(
                out,
                " Each cell: median of {runs} runs, ↕ how far it moved across them ((max − min) ÷ median)."
            );
        }
        out.push_str("\n\n");
    }
    let ratios: Vec<&(String, String)> =
        table.ratios.iter().filter(|(s, b)| table.series.contains(s) && table.series.contains(b)).collect();
    let mut header = String::from("| |");
    let mut rule = String::from("|---|");
    for series in &table.series {
        let _ = write!(header, " {series} |");
        rule.push_str("---:|");
    }
    for (series, baseline) in &ratios {
        let _ = write!(header, " {series} ÷ {baseline} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for row in &table.rows {
        let mut line = format!("| {row} |");
        for series in &table.series {
            let key = (row.clone(), series.clone());
            let values = table.values.get(&key).map_or(&[][..], Vec::as_slice);
            let cell = median(values).map_or_else(|| "–".into(), |v| format_value(&table.display, v));
            let moved = spread(values).map_or_else(String::new, |s| format!(" ↕{:.0}%", s * 100.0));
            let mark = if table.noise.get(&key).is_some_and(|share| *share >= NOISY) { " †" } else { "" };
            let _ = write!(line, " {cell}{moved}{mark} |");
        }
        for (series, baseline) in &ratios {
            let value = table.median(row, series);
            let base = table.median(row, baseline);
            let cell = value.zip(base).map_or_else(|| "–".into(), |(v, b)| format!("{:.2}×", b / v));
            let _ = write!(line, " {cell} |");
        }
        let _ = writeln!(out, "{line}");
    }
    if table.noise.values().any(|share| *share >= NOISY) {
        let _ = writeln!(
            out,
            "\n† other processes used ≥ {:.0}% of the machine's CPU while this case ran (in at least one run): \
             treat it with care.",
            NOISY * 100.0
        );
    }
    out.push('\n');
}

/// Renders a target's runs: one value, or each run's.
fn joined(values: &[String]) -> String {
    match values {
        [one] => one.clone(),
        _ if values.iter().all(|v| *v == values[0]) => format!("{} ×{}", values[0], values.len()),
        _ => values.join(" · "),
    }
}

/// The first section: lgadk ÷ each peer, from the peers measured in this run.
fn render_peers(
    out: &mut String,
    summary: &mut String,
    groups: &BTreeMap<String, Group>,
    ran: &[String],
    status: &PeerStatus,
) {
    let _ = writeln!(out, "## lgadk ÷ peers\n");
    let peers = groups.get(PEERS).filter(|g| !g.compares.is_empty());
    let (peers, why) = match (status, peers) {
        (PeerStatus::Ran, Some(peers)) => (peers, None),
        (PeerStatus::Ran, None) => (&Group::default(), Some("the peer script wrote no comparisons".to_owned())),
        (PeerStatus::NotRun(why), _) => (&Group::default(), Some(why.clone())),
        (PeerStatus::NotAsked, _) => {
            (&Group::default(), Some("not asked for (`cargo xtask bench --peers`)".to_owned()))
        }
    };
    if let Some(why) = why {
        let _ = writeln!(out, "Peers not run: {why}. No peer figure is reported.\n");
        return;
    }
    let packages = peers.meta.iter().find(|(k, _)| k == "packages").and_then(|(_, v)| v.first());
    let _ = writeln!(
        out,
        "Measured in this run by `benches/peers/peers.py` ({}) on the same workloads and sizes as the lgadk \
         groups. lgadk ÷ peer is lgadk's throughput over the peer's (the peer's time over lgadk's): > 1 means lgadk \
         is faster. Raw peer tables: section `peers` below.\n",
        packages.map_or("pinned packages", String::as_str)
    );
    let _ = writeln!(
        out,
        "| workload | lgadk | peer | figure | lgadk ÷ peer | goal | result |\n|---|---|---|---:|---:|---:|---|"
    );
    for compare in &peers.compares {
        // Only a group of this invocation (the peer script's own cells are): an older results file is not "the same run".
        let table = groups
            .get(&compare.group)
            .filter(|_| compare.group == PEERS || ran.contains(&compare.group))
            .and_then(|g| g.tables.get(&compare.table));
        let peer_table = peers.tables.get(&compare.peer_table);
        let lgadk = table.and_then(|t| t.median(&compare.row, &compare.series));
        let peer = peer_table.and_then(|t| t.median(&compare.peer_row, &compare.peer_series));
        let display = table.or(peer_table).map_or("time", |t| t.display.as_str());
        let figure = |v: Option<f64>| v.map_or_else(|| "not measured".to_owned(), |v| format_value(display, v));
        let ratio = lgadk.zip(peer).map(|(l, p)| p / l);
        let goal = PEER_GOALS
            .iter()
            .find(|(g, t, r, _)| *g == compare.group && *t == compare.table && (*r == "*" || *r == compare.row))
            .map(|(.., want)| *want);
        let verdict = match (goal, ratio) {
            (Some(want), Some(r)) if r >= want => "PASS",
            (Some(_), Some(_)) => "MISS",
            (Some(_), None) => "n/a",
            (None, _) => "",
        };
        let ratio_text = ratio.map_or_else(|| "–".to_owned(), |r| format!("{r:.1}×"));
        let goal_text = goal.map_or_else(String::new, |g| format!("≥ {g:.0}×"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} vs {} | {ratio_text} | {goal_text} | {verdict} |",
            compare.workload,
            compare.series,
            compare.peer_series,
            figure(lgadk),
            figure(peer)
        );
        if goal.is_some() {
            let _ = writeln!(
                summary,
                "| {PEERS} | {}: lgadk ÷ {} | {ratio_text} | {goal_text} | {verdict} |",
                compare.workload, compare.peer_series
            );
        }
    }
    out.push('\n');
}

/// The cells that moved most across the runs.
fn render_spread(out: &mut String, groups: &BTreeMap<String, Group>, runs: usize) {
    let mut cells: Vec<(f64, String)> = Vec::new();
    for (name, group) in groups {
        for (id, table) in &group.tables {
            for ((row, series), values) in &table.values {
                if let Some(s) = spread(values) {
                    cells.push((s, format!("{name} · {id} · {row} · {series}")));
                }
            }
        }
    }
    if cells.is_empty() {
        return;
    }
    cells.sort_by(|a, b| b.0.total_cmp(&a.0));
    let all: Vec<f64> = cells.iter().map(|(s, _)| *s).collect();
    let _ = writeln!(
        out,
        "## Spread across {runs} runs\n\n{} cells; how far a cell moved, (max − min) ÷ median: median {:.1}%, \
         {} cells above 10%. The ten that moved most:\n\n| cell | moved |\n|---|---:|",
        cells.len(),
        median(&all).unwrap_or(0.0) * 100.0,
        all.iter().filter(|s| **s > 0.10).count()
    );
    for (s, cell) in cells.iter().take(10) {
        let _ = writeln!(out, "| {cell} | {:.1}% |", s * 100.0);
    }
    out.push('\n');
}

fn render(dirs: &[PathBuf], options: &Options, load_before: &str, peers: &PeerStatus) -> String {
    let mut out = String::from("# lgadk benchmark report\n\n");
    let mode = if options.quick { "`--quick` (criterion's quick mode, smaller sizes)" } else { "full" };
    let runs = dirs.len();
    let _ = writeln!(
        out,
        "Mode: {mode}; {runs} run{}. Load average (1, 5, 15 min) before: {load_before}; after: {}.",
        if runs == 1 { "" } else { "s" },
        load_average()
    );
    let _ = writeln!(
        out,
        "Every ratio compares two cases measured in the same run. Plots: `target/criterion/report/index.html`.\n"
    );
    let mut names: Vec<String> = GROUPS.iter().map(|g| (*g).to_owned()).collect();
    let mut missing: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for dir in dirs {
        if let Ok(entries) = fs::read_dir(dir) {
            let mut extra: Vec<String> = entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".tsv").map(str::to_owned))
                .filter(|name| !names.contains(name))
                .collect();
            extra.sort();
            names.extend(extra);
        }
        for name in &names {
            let path = dir.join(format!("{name}.tsv"));
            match fs::read_to_string(&path) {
                Ok(text) => parse(groups.entry(name.clone()).or_default(), &text),
                Err(_) => {
                    missing.entry(name.clone()).or_insert(path);
                }
            }
        }
    }
    let mut summary = String::new();
    render_peers(&mut out, &mut summary, &groups, &options.groups, peers);
    for name in &names {
        let Some(group) = groups.get(name) else {
            if name != PEERS {
                let path = missing.get(name).map_or_else(String::new, |p| p.display().to_string());
                let _ = writeln!(out, "## {name}\n\nNot run (no `{path}`).\n");
            }
            continue;
        };
        let _ = writeln!(out, "## {name}\n");
        let meta: Vec<String> = group.meta.iter().map(|(k, v)| format!("{k}: {}", v.join(" / "))).collect();
        if !meta.is_empty() {
            let _ = writeln!(out, "_{}_\n", meta.join(" · "));
        }
        if missing.contains_key(name) && runs > 1 {
            let _ = writeln!(out, "Missing from at least one of the runs.\n");
        }
        for note in &group.notes {
            let _ = writeln!(out, "{note}\n");
        }
        for id in &group.order {
            if let Some(table) = group.tables.get(id) {
                render_table(&mut out, table, runs);
            }
        }
        if !group.targets.is_empty() {
            let _ = writeln!(out, "### Targets\n\n| target | measured | goal | result |\n|---|---:|---:|---|");
            for (what, target) in &group.targets {
                let (measured, verdict) = (joined(&target.measured), joined(&target.verdicts));
                let _ = writeln!(out, "| {what} | {measured} | {} | {verdict} |", target.goal);
                let _ = writeln!(summary, "| {name} | {what} | {measured} | {} | {verdict} |", target.goal);
            }
            out.push('\n');
        }
    }
    if runs > 1 {
        render_spread(&mut out, &groups, runs);
    }
    if !summary.is_empty() {
        let _ = write!(
            out,
            "## All targets\n\n| group | target | measured | goal | result |\n|---|---|---:|---:|---|\n{summary}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use super::*;

    const TURN_ROW: &str = "first turn (new session, cache full)";

    /// A directory under the system's temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A fresh directory under the system's temp dir holding `files`.
    fn temp(name: &str, files: &[(&str, String)]) -> TempDir {
        let dir = env::temp_dir().join(format!("xtask-bench-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            fs::write(dir.join(file), text).unwrap();
        }
        TempDir(dir)
    }

    fn graph_tsv(turn_ns: f64) -> String {
        format!(
            "meta\tmode\tquick\ntable\tturn\tone turn\ttime\trows\nresult\tturn\t{TURN_ROW}\tgraph turn\t{turn_ns}\n"
        )
    }

    fn peers_tsv(peer_ns: f64) -> String {
        format!(
            "meta\tpackages\tlanggraph 1.2.24\ntable\tlanggraph/turn\tLangGraph turn\ttime\trows\n\
             result\tlanggraph/turn\tfirst turn (new thread)\tLangGraph\t{peer_ns}\n\
             compare\tone turn, first\tgraph_overhead\tturn\t{TURN_ROW}\tgraph turn\tlanggraph/turn\t\
             first turn (new thread)\tLangGraph\n"
        )
    }

    fn opts(groups: &[&str]) -> Options {
        Options { quick: true, peers: true, runs: 1, groups: groups.iter().map(|g| (*g).to_owned()).collect() }
    }

    fn peer_section(report: &str) -> &str {
        let start = report.find("## lgadk ÷ peers").unwrap();
        let end = report[start + 1..].find("\n## ").map_or(report.len(), |n| start + 1 + n);
        &report[start..end]
    }

    #[test]
    fn peers_not_run_are_said_so_without_a_figure() {
        let results = temp("not-run", &[("graph_overhead.tsv", graph_tsv(10_000.0))]);
        let status = PeerStatus::NotRun("`python3` could not be started".into());
        let report = render(std::slice::from_ref(&results.0), &opts(&["graph_overhead"]), "0 0 0", &status);
        let section = peer_section(&report);
        assert!(section.contains("Peers not run: `python3` could not be started"), "{section}");
        assert!(!section.contains('×'), "{section}");
        let not_asked = render(&[temp("not-asked", &[]).0.clone()], &opts(&[]), "0 0 0", &PeerStatus::NotAsked);
        assert!(peer_section(&not_asked).contains("Peers not run: not asked for"), "{not_asked}");
    }

    #[test]
    fn lgadk_over_peer_comes_from_the_files_of_the_run() {
        let results =
            temp("ratio", &[("graph_overhead.tsv", graph_tsv(10_000.0)), ("peers.tsv", peers_tsv(3_000_000.0))]);
        let report = render(std::slice::from_ref(&results.0), &opts(&["graph_overhead"]), "0 0 0", &PeerStatus::Ran);
        let section = peer_section(&report);
        assert!(section.contains("| 10.00 µs vs 3.00 ms | 300.0× | ≥ 100× | PASS |"), "{section}");
        assert!(report.contains("| peers | one turn, first: lgadk ÷ LangGraph | 300.0× | ≥ 100× | PASS |"), "{report}");
        // A peer twice as fast halves the ratio and misses the goal.
        let slower =
            temp("ratio-miss", &[("graph_overhead.tsv", graph_tsv(10_000.0)), ("peers.tsv", peers_tsv(500e3))]);
        let report = render(std::slice::from_ref(&slower.0), &opts(&["graph_overhead"]), "0 0 0", &PeerStatus::Ran);
        assert!(peer_section(&report).contains("| 50.0× | ≥ 100× | MISS |"), "{report}");
    }

    #[test]
    fn a_group_from_an_earlier_invocation_is_not_compared() {
        let results = temp("stale", &[("graph_overhead.tsv", graph_tsv(10_000.0)), ("peers.tsv", peers_tsv(3e6))]);
        let report =
            render(std::slice::from_ref(&results.0), &opts(&["session_concurrency"]), "0 0 0", &PeerStatus::Ran);
        let section = peer_section(&report);
        assert!(section.contains("not measured vs 3.00 ms | – |"), "{section}");
    }

    #[test]
    fn runs_report_the_median_and_how_far_each_cell_moved() {
        let runs: Vec<TempDir> = [90.0, 110.0, 100.0]
            .iter()
            .enumerate()
            .map(|(n, ns)| temp(&format!("run-{n}"), &[("graph_overhead.tsv", graph_tsv(*ns))]))
            .collect();
        let dirs: Vec<PathBuf> = runs.iter().map(|d| d.0.clone()).collect();
        let mut options = opts(&["graph_overhead"]);
        options.runs = 3;
        let report = render(&dirs, &options, "0 0 0", &PeerStatus::NotAsked);
        assert!(report.contains(&format!("| {TURN_ROW} | 100 ns ↕20% |")), "{report}");
        assert!(report.contains("## Spread across 3 runs"), "{report}");
        assert!(
            report.contains("| graph_overhead · turn · first turn (new session, cache full) · graph turn | 20.0% |")
        );
    }

    #[test]
    fn without_python_the_peers_are_skipped_with_the_reason() {
        let target = temp("no-python", &[]);
        let out = target.0.join("peers.tsv");
        let missing = OsStr::new("/nonexistent/python3");
        match run_peers(missing, &target.0, true, &out) {
            Err(VenvError::Unavailable(why)) => assert!(why.contains("could not be started"), "{why}"),
            Err(VenvError::Failed(err)) => panic!("expected Unavailable, got Failed({err:#})"),
            Ok(()) => panic!("expected Unavailable, got Ok"),
        }
        assert!(!out.exists());
        assert!(!target.0.join("peers-venv").exists());
    }

    /// The `name`s of the root manifest's `[[bench]]` sections, in order.
    fn manifest_benches(manifest: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut in_bench = false;
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bench = line == "[[bench]]";
            } else if in_bench && let Some(value) = line.strip_prefix("name") {
                let value = value.trim_start().trim_start_matches('=').trim();
                names.push(value.trim_matches('"').to_owned());
            }
        }
        names
    }

    #[test]
    fn every_bench_of_the_root_package_is_a_group() {
        let manifest = fs::read_to_string(project_root().join("Cargo.toml")).unwrap();
        let mut benches = manifest_benches(&manifest);
        let mut groups: Vec<String> = GROUPS.iter().map(|g| (*g).to_owned()).collect();
        benches.sort();
        groups.sort();
        assert_eq!(benches, groups, "`[[bench]]` sections of Cargo.toml vs GROUPS");
    }

    #[test]
    fn a_group_renders_its_tables_ratios_and_targets() {
        let tsv = "meta\tmode\tquick\n\
                   table\tinvoke\tone turn\ttime\trows: tools\n\
                   ratio\tinvoke\ttool loop\tcalled directly\n\
                   result\tinvoke\t1 typed tool\ttool loop\t12000\n\
                   result\tinvoke\t1 typed tool\tcalled directly\t3000\n\
                   table\toverhead\tper step\ttime\trows: variant\n\
                   result\toverhead\tinvoke, typed tools\tper step, 1 tool\t3000\n\
                   target\tper step, invoke\t3.00 µs\t≤ 5.00 µs\tPASS\n\
                   target\tper tool call, invoke\t1.50 µs\t≤ 1.00 µs\tMISS\n";
        let results = temp("tool-loop", &[("tool_loop.tsv", tsv.to_owned())]);
        let report = render(std::slice::from_ref(&results.0), &opts(&["tool_loop"]), "0 0 0", &PeerStatus::NotAsked);
        assert!(report.contains("## tool_loop"), "{report}");
        assert!(report.contains("| | tool loop | called directly | tool loop ÷ called directly |"), "{report}");
        assert!(report.contains("| 1 typed tool | 12.00 µs | 3.00 µs | 0.25× |"), "{report}");
        assert!(report.contains("| invoke, typed tools | 3.00 µs |"), "{report}");
        assert!(report.contains("| tool_loop | per tool call, invoke | 1.50 µs | ≤ 1.00 µs | MISS |"), "{report}");
    }

    #[test]
    fn options_parse() {
        let parsed = options(&["--quick", "--peers", "--runs", "3", "graph_overhead"]).unwrap();
        assert!(parsed.quick && parsed.peers);
        assert_eq!((parsed.runs, parsed.groups), (3, vec!["graph_overhead".to_owned()]));
        assert_eq!(options(&["--runs=2"]).unwrap().groups.len(), GROUPS.len());
        assert!(options(&["--runs", "0"]).is_err());
        assert!(options(&["--peer"]).is_err());
        assert!(options(&["graph"]).is_err());
    }
}
