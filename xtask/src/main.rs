//! `cargo xtask <task>`: project automation, in the cargo-xtask convention.
//!
//! Tasks: `ci` (lint, then test: what `.ci/run` and the README run), `lint`, `test`,
//! `bench [--quick] [--peers] [--runs N] [GROUP…]`, `redis up|down|status`.
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command-line tool reports on the terminal")]

mod bench;
mod msrv;
mod redis;
mod venv;

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail, ensure};

const USAGE: &str =
    "usage: cargo xtask <ci | lint | test | bench [--quick] [--peers] [--runs N] [GROUP…] | redis up|down|status>";

fn main() -> ExitCode {
    let owned: Vec<String> = env::args().skip(1).collect();
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["ci"] => lint().and_then(|()| test()),
        ["lint"] => lint(),
        ["test"] => test(),
        ["bench", rest @ ..] => bench::run(rest),
        ["redis", action] => redis::run(action),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's directory.
fn project_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Runs `cargo ARGS` from the workspace root with extra environment, echoing the command.
fn cargo_with_env(args: &[&str], envs: &[(&str, &str)]) -> Result<()> {
    let shown: Vec<String> = envs.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!("$ {}cargo {}", shown.concat(), args.join(" "));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(project_root())
        .status()
        .context("could not start cargo")?;
    ensure!(status.success(), "`cargo {}` failed: {status}", args.join(" "));
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    cargo_with_env(args, &[])
}

fn cargo_output(args: &[&str]) -> Result<String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output =
        Command::new(cargo).args(args).current_dir(project_root()).output().context("could not start cargo")?;
    ensure!(output.status.success(), "`cargo {}` failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Formatting, clippy on the whole workspace and on feature sets that unification would hide,
/// docs with warnings denied, the guard that keeps `lgadk-core` free of I/O dependencies, and
/// the `rust-version` guard.
fn lint() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["clippy", "--locked", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"])?;
    for (package, features) in [
        ("lgadk-core", "--no-default-features"),
        ("lgadk-session", "--no-default-features"),
        ("lgadk-session", "--features=redis"),
        ("lgadk-session", "--features=postgres"),
        ("lgadk-llm", "--no-default-features"),
        ("lgadk-graph", "--no-default-features"),
        // The graph suite on its own: the workspace run turns lgadk-core's `testing` on for it.
        ("lgadk-graph", "--features=testing"),
    ] {
        cargo(&["clippy", "--locked", "--package", package, features, "--", "-D", "warnings"])?;
    }
    cargo_with_env(
        &["doc", "--locked", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    core_dependency_guard()?;
    msrv::check()
}

/// `lgadk-core` must build without a runtime, Redis or HTTP client in its normal dependencies.
fn core_dependency_guard() -> Result<()> {
    eprintln!("$ cargo tree -p lgadk-core -e normal --prefix none   (core dependency guard)");
    let tree = cargo_output(&["tree", "--package", "lgadk-core", "--edges", "normal", "--prefix", "none"])?;
    let forbidden = ["tokio", "redis", "hyper", "reqwest", "async-openai", "mio"];
    let found: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| forbidden.contains(name))
        .collect();
    ensure!(found.is_empty(), "lgadk-core must not depend on {found:?} (see ARCHITECTURE.md)");
    Ok(())
}

/// Every test: unit, integration (Redis ones against servers the tests start themselves) and
/// doc tests, plus a compile of the benches.
fn test() -> Result<()> {
    ensure_redis_server()?;
    ensure_postgres()?;
    let sdk = sdk_python()?;
    let envs: Vec<(&str, &str)> = sdk.iter().filter_map(|path| path.to_str()).map(|path| (SDK_PYTHON, path)).collect();
    if has_nextest() {
        cargo_with_env(&["nextest", "run", "--locked", "--workspace", "--all-features", "--no-fail-fast"], &envs)?;
    } else {
        eprintln!("cargo-nextest not found: running the tests with cargo test");
        cargo_with_env(
            &["test", "--locked", "--workspace", "--all-features", "--lib", "--bins", "--tests", "--examples"],
            &envs,
        )?;
    }
    cargo(&["test", "--locked", "--workspace", "--all-features", "--doc"])?;
    cargo(&["bench", "--locked", "--workspace", "--all-features", "--no-run"])
}

/// The variable that tells the server's client tests which Python has `langgraph-sdk`.
const SDK_PYTHON: &str = "LGADK_SDK_PYTHON";

/// The official `langgraph-sdk` client, pinned in `crates/lgadk-server/tests/sdk/requirements.txt`,
/// in a venv at `target/sdk-venv`: its interpreter, or `None` (the tests then say SKIPPED)
/// when Python or PyPI is not there. Under `CI` that is a failure.
fn sdk_python() -> Result<Option<PathBuf>> {
    let python = env::var_os("LGADK_PYTHON").unwrap_or_else(|| "python3".into());
    let requirements = project_root().join("crates/lgadk-server/tests/sdk/requirements.txt");
    match venv::ensure(&python, &bench::target_dir().join("sdk-venv"), &requirements) {
        Ok(path) => Ok(Some(path)),
        Err(venv::VenvError::Unavailable(why)) if env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: no langgraph-sdk venv ({why}); the client tests will say SKIPPED");
            Ok(None)
        }
        Err(venv::VenvError::Unavailable(why)) => bail!("the langgraph-sdk client tests need Python in CI: {why}"),
        Err(venv::VenvError::Failed(err)) => Err(err.context("could not make the langgraph-sdk venv")),
    }
}

fn has_nextest() -> bool {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo).args(["nextest", "--version"]).output().is_ok_and(|out| out.status.success())
}

/// The Redis tests need a `redis-server` binary (they start their own on free ports). Finds it
/// on `LGADK_REDIS_SERVER` or PATH, or installs Debian's package when running as root.
fn ensure_redis_server() -> Result<()> {
    if redis::server_binary().is_some() {
        return Ok(());
    }
    eprintln!("redis-server not found: installing it with apt-get");
    apt_install(&["redis-server"], "the Redis tests")
}

/// The PostgreSQL tests start their own clusters (`initdb`, `postgres`) and a `pgbouncer` in
/// front of one: installs Debian's `postgresql` and `pgbouncer` when they are missing.
fn ensure_postgres() -> Result<()> {
    let mut missing = Vec::new();
    if postgres_bin_dir().is_none() {
        missing.push("postgresql");
    }
    let pgbouncer = env::var_os("LGADK_PGBOUNCER").unwrap_or_else(|| "pgbouncer".into());
    if !runs(&pgbouncer) && !Path::new("/usr/sbin/pgbouncer").is_file() {
        missing.push("pgbouncer");
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("{} not found: installing with apt-get", missing.join(" and "));
    apt_install(&missing, "the PostgreSQL tests")
}

/// Where `initdb` and `postgres` are: `LGADK_PG_BIN`, `pg_config --bindir`, or Debian's
/// `/usr/lib/postgresql/<version>/bin` (as the test harness looks for them).
fn postgres_bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = env::var_os("LGADK_PG_BIN").filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(dir)).filter(|dir| has_server(dir));
    }
    let from_config = Command::new("pg_config").arg("--bindir").output().ok().filter(|out| out.status.success());
    if let Some(out) = from_config {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|dir| has_server(dir))
        .collect();
    versions.sort();
    versions.pop()
}

/// Installs Debian packages (as root, or through sudo); a failure is fatal under `CI` and
/// otherwise leaves `needed_by` to print SKIPPED.
fn apt_install(packages: &[&str], needed_by: &str) -> Result<()> {
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0"));
    let apt = |args: &[&str]| -> Result<()> {
        let (program, args): (&str, Vec<&str>) =
            if is_root { ("apt-get", args.to_vec()) } else { ("sudo", [&["apt-get"], args].concat()) };
        eprintln!("$ {program} {}", args.join(" "));
        let status = Command::new(program).args(&args).env("DEBIAN_FRONTEND", "noninteractive").status()?;
        ensure!(status.success(), "`{program} {}` failed: {status}", args.join(" "));
        Ok(())
    };
    let install = [&["install", "-y", "-q"][..], packages].concat();
    let installed = apt(&["update", "-q"]).and_then(|()| apt(&install));
    if let Err(err) = installed {
        if env::var_os("CI").is_some() {
            bail!("{} is required in CI and could not be installed: {err:#}", packages.join(", "));
        }
        eprintln!("SKIPPED: {} could not be installed ({err:#}); {needed_by} will say SKIPPED", packages.join(", "));
    }
    Ok(())
}

/// Whether `program` runs (`program --version` succeeds).
fn runs(program: &OsStr) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|out| out.status.success())
}
