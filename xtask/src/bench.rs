//! `cargo xtask bench [--quick] [GROUP…]`: runs the criterion benches of the root package and
//! writes `target/bench-report.md` next to criterion's HTML report (`target/criterion/`).
//!
//! Every bench binary writes its own results to `target/bench-results/<group>.tsv` (see
//! `benches/support/mod.rs` for the format); this task only runs them and renders the files as
//! markdown: one table per benchmarked table with the throughput (or time, or bytes) of each
//! series, the ratio of each series to its baseline, and the targets with PASS or MISS.
//! `--quick` passes criterion's `--quick` and makes the benches use their smaller sizes.

use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::{cargo, project_root};

/// The bench groups in report order (each is a `[[bench]]` of the root package).
const GROUPS: [&str; 4] = ["session_concurrency", "session_scale", "redis_store", "graph_overhead"];

pub(crate) fn run(args: &[&str]) -> Result<()> {
    let quick = args.contains(&"--quick");
    let chosen: Vec<&str> = args.iter().copied().filter(|arg| !arg.starts_with("--")).collect();
    let target = target_dir();
    let results = target.join("bench-results");
    for group in if chosen.is_empty() { GROUPS.to_vec() } else { chosen.clone() } {
        let _ = fs::remove_file(results.join(format!("{group}.tsv")));
    }
    let load_before = load_average();
    // Named bench targets only: `--benches` would include the lib's test harness, which
    // rejects criterion's arguments.
    let mut cmd = vec!["bench", "--package", "lgadk", "--all-features", "--no-fail-fast"];
    for group in if chosen.is_empty() { &GROUPS[..] } else { &chosen[..] } {
        cmd.extend(["--bench", group]);
    }
    if quick {
        cmd.extend(["--", "--quick"]);
    }
    // The report is written even when a bench failed, from whatever groups finished.
    let ran = cargo(&cmd);
    let report = render(&results, quick, &load_before)?;
    let path = target.join("bench-report.md");
    fs::write(&path, report).with_context(|| format!("could not write {}", path.display()))?;
    eprintln!("bench report: {}", path.display());
    eprintln!("criterion plots: {}", target.join("criterion").join("report").join("index.html").display());
    ran
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| project_root().join("target"), PathBuf::from)
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// One `table` line and what belongs to it.
#[derive(Default)]
struct Table {
    title: String,
    display: String,
    note: String,
    rows: Vec<String>,
    series: Vec<String>,
    values: BTreeMap<(String, String), f64>,
    /// Share of the machine's CPU other processes used while a case ran.
    noise: BTreeMap<(String, String), f64>,
    ratios: Vec<(String, String)>,
}

/// A case during which other processes used at least this share of the CPU is marked.
const NOISY: f64 = 0.15;

/// The parsed results file of one group.
#[derive(Default)]
struct Group {
    meta: Vec<(String, String)>,
    notes: Vec<String>,
    order: Vec<String>,
    tables: BTreeMap<String, Table>,
    targets: Vec<[String; 4]>,
}

fn parse(text: &str) -> Group {
    let mut group = Group::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["meta", key, value] => group.meta.push(((*key).into(), (*value).into())),
            ["note", text] => group.notes.push((*text).into()),
            ["table", id, title, display, note] => {
                group.order.push((*id).into());
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
                table.values.insert(((*row).into(), (*series).into()), value);
            }
            ["noise", id, row, series, share] => {
                let Ok(share) = share.parse::<f64>() else { continue };
                group.tables.entry((*id).into()).or_default().noise.insert(((*row).into(), (*series).into()), share);
            }
            ["ratio", id, series, baseline] => {
                group.tables.entry((*id).into()).or_default().ratios.push(((*series).into(), (*baseline).into()));
            }
            ["target", what, measured, goal, verdict] => {
                group.targets.push([(*what).into(), (*measured).into(), (*goal).into(), (*verdict).into()]);
            }
            _ => {}
        }
    }
    group
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
        _ => format!("{value:.3}"),
    }
}

fn render_table(out: &mut String, table: &Table) {
    let _ = writeln!(out, "### {}\n", table.title);
    if !table.note.is_empty() {
        let unit = match table.display.as_str() {
            "throughput" => "operations per second",
            "time" => "time per call",
            "bytes" => "bytes",
            _ => "values",
        };
        let _ = writeln!(
            out,
            "{unit}; {}. Ratio = series ÷ baseline in throughput (> 1: the series is faster or smaller).\n",
            table.note
        );
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
            let cell = table.values.get(&key).map_or_else(|| "–".into(), |v| format_value(&table.display, *v));
            let mark = if table.noise.get(&key).is_some_and(|share| *share >= NOISY) { " †" } else { "" };
            let _ = write!(line, " {cell}{mark} |");
        }
        for (series, baseline) in &ratios {
            let value = table.values.get(&(row.clone(), series.clone()));
            let base = table.values.get(&(row.clone(), baseline.clone()));
            let cell = value.zip(base).map_or_else(|| "–".into(), |(v, b)| format!("{:.2}×", b / v));
            let _ = write!(line, " {cell} |");
        }
        let _ = writeln!(out, "{line}");
    }
    if table.noise.values().any(|share| *share >= NOISY) {
        let _ = writeln!(
            out,
            "\n† other processes used ≥ {:.0}% of the machine's CPU while this case ran: treat it with care.",
            NOISY * 100.0
        );
    }
    out.push('\n');
}

fn render(results: &std::path::Path, quick: bool, load_before: &str) -> Result<String> {
    let mut out = String::from("# lgadk benchmark report\n\n");
    let mode = if quick { "`--quick` (criterion's quick mode, smaller sizes)" } else { "full" };
    let _ = writeln!(
        out,
        "Mode: {mode}. Load average (1, 5, 15 min) before the run: {load_before}; after: {}.",
        load_average()
    );
    let _ = writeln!(
        out,
        "Every ratio compares two cases measured in the same run. Plots: `target/criterion/report/index.html`.\n"
    );
    let mut names: Vec<String> = GROUPS.iter().map(|g| (*g).to_owned()).collect();
    if let Ok(entries) = fs::read_dir(results) {
        let mut extra: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".tsv").map(str::to_owned))
            .filter(|name| !names.contains(name))
            .collect();
        extra.sort();
        names.extend(extra);
    }
    let mut summary = String::new();
    for name in names {
        let path = results.join(format!("{name}.tsv"));
        let Ok(text) = fs::read_to_string(&path) else {
            let _ = writeln!(out, "## {name}\n\nNot run (no `{}`).\n", path.display());
            continue;
        };
        let group = parse(&text);
        let _ = writeln!(out, "## {name}\n");
        let meta: Vec<String> = group.meta.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        if !meta.is_empty() {
            let _ = writeln!(out, "_{}_\n", meta.join(" · "));
        }
        for note in &group.notes {
            let _ = writeln!(out, "{note}\n");
        }
        for id in &group.order {
            if let Some(table) = group.tables.get(id) {
                render_table(&mut out, table);
            }
        }
        if !group.targets.is_empty() {
            let _ = writeln!(out, "### Targets\n\n| target | measured | goal | result |\n|---|---:|---:|---|");
            for [what, measured, goal, verdict] in &group.targets {
                let _ = writeln!(out, "| {what} | {measured} | {goal} | {verdict} |");
                let _ = writeln!(summary, "| {name} | {what} | {measured} | {goal} | {verdict} |");
            }
            out.push('\n');
        }
    }
    if !summary.is_empty() {
        let _ = write!(
            out,
            "## All targets\n\n| group | target | measured | goal | result |\n|---|---|---:|---:|---|\n{summary}"
        );
    }
    Ok(out)
}
