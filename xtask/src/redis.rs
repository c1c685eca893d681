//! `cargo xtask redis up|down|status`: a loopback `redis-server` for manual runs and examples.
//!
//! `up` starts one on a free port (never 6379) with nothing persisted, records its pid and port
//! under `target/xtask/`, and prints `REDIS_URL=…`; `down` stops exactly that pid.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{project_root, runs};

/// The `redis-server` to use: `LGADK_REDIS_SERVER`, else the one on PATH.
pub(crate) fn server_binary() -> Option<OsString> {
    let candidate = env::var_os("LGADK_REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
    runs(&candidate).then_some(candidate)
}

fn state_dir() -> PathBuf {
    project_root().join("target").join("xtask")
}

pub(crate) fn run(action: &str) -> Result<()> {
    match action {
        "up" => up(),
        "down" => down(),
        "status" => status(),
        other => bail!("unknown redis action `{other}`: use up, down or status"),
    }
}

fn recorded() -> Option<(u32, u16)> {
    let text = fs::read_to_string(state_dir().join("redis.pid")).ok()?;
    let (pid, port) = text.trim().split_once(':')?;
    Some((pid.parse().ok()?, port.parse().ok()?))
}

fn alive(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

fn up() -> Result<()> {
    if let Some((pid, port)) = recorded().filter(|(pid, _)| alive(*pid)) {
        println!("REDIS_URL=redis://127.0.0.1:{port}   (already running, pid {pid})");
        return Ok(());
    }
    let binary = server_binary().context("redis-server not found (set LGADK_REDIS_SERVER or install redis-server)")?;
    let port = free_port()?;
    let dir = state_dir();
    fs::create_dir_all(&dir)?;
    let child = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("could not start redis-server")?;
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(5) {
            bail!("redis-server did not answer on port {port} within 5 s");
        }
        sleep(Duration::from_millis(20));
    }
    fs::write(dir.join("redis.pid"), format!("{}:{port}", child.id()))?;
    println!("REDIS_URL=redis://127.0.0.1:{port}");
    Ok(())
}

fn down() -> Result<()> {
    let Some((pid, _)) = recorded() else {
        println!("no redis-server started by xtask");
        return Ok(());
    };
    if alive(pid) {
        let status = Command::new("kill").arg(pid.to_string()).status()?;
        if !status.success() {
            bail!("could not stop redis-server pid {pid}");
        }
    }
    fs::remove_file(state_dir().join("redis.pid"))?;
    println!("stopped redis-server pid {pid}");
    Ok(())
}

fn status() -> Result<()> {
    match recorded() {
        Some((pid, port)) if alive(pid) => println!("running: pid {pid}, REDIS_URL=redis://127.0.0.1:{port}"),
        _ => println!("not running"),
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    for _ in 0..16 {
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        if port != 6379 {
            return Ok(port);
        }
    }
    bail!("no free loopback port")
}
