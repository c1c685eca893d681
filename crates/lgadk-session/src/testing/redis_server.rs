//! [`RedisServer`] and [`RedisCluster`]: `redis-server` processes owned by a test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fmt, fs, thread};

use tempfile::TempDir;

/// The port a developer's own Redis listens on: never used here.
const RESERVED_PORT: u16 = 6379;
/// Cluster nodes also listen on `port + 10000` (the cluster bus).
const BUS_OFFSET: u16 = 10_000;
/// How long a starting server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether the `CI` environment variable asks for no skipped tests.
pub(super) fn is_ci() -> bool {
    env::var("CI").is_ok_and(|value| !value.is_empty() && value != "0" && value != "false")
}

/// `None` after saying so loudly, or a panic under CI.
fn missing<T>(what: &str, variable: &str) -> Option<T> {
    if is_ci() {
        panic!("{what} not found: install it or set {variable} (CI is set, so Redis tests may not be skipped)");
    }
    eprintln!("SKIPPED: {what} not found (install it or set {variable}); this Redis test did not run");
    None
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

fn server_binary() -> Option<PathBuf> {
    match env::var_os("LGADK_REDIS_SERVER") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)).filter(|path| path.is_file()),
        _ => on_path("redis-server"),
    }
}

fn cli_binary(server: &Path) -> Option<PathBuf> {
    if let Some(path) = env::var_os("LGADK_REDIS_CLI").filter(|path| !path.is_empty()) {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    server.parent().map(|dir| dir.join("redis-cli")).filter(|path| path.is_file()).or_else(|| on_path("redis-cli"))
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A loopback port that is free right now (never 6379); with `bus`, `port + 10000` is free too.
fn free_port(bus: bool) -> u16 {
    for _ in 0..200 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("bind an ephemeral loopback port");
        if port == RESERVED_PORT {
            continue;
        }
        if bus {
            match port.checked_add(BUS_OFFSET) {
                Some(bus_port) if bus_port != RESERVED_PORT && bindable(bus_port) => {}
                _ => continue,
            }
        }
        return port;
    }
    panic!("found no free loopback port");
}

/// Sends one command in RESP and returns the reply as text (`Err` for an error reply).
fn query(port: u16, args: &[&str]) -> std::io::Result<Result<String, String>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(line.len().min(1));
    Ok(match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(rest.to_owned()),
        "$" => {
            let len: usize = rest.parse().map_err(|_| std::io::Error::other("bad bulk length"))?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        _ => Err(format!("unexpected reply {line:?}")),
    })
}

/// A `redis-server` owned by a test: started on a free loopback port in a temporary
/// directory, killed (SIGKILL) and reaped on drop.
pub struct RedisServer {
    binary: PathBuf,
    dir: TempDir,
    port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .field("extra", &self.extra)
            .finish()
    }
}

impl RedisServer {
    /// Starts a server with `--save "" --appendonly no` (nothing touches the disk).
    ///
    /// `None` (after printing `SKIPPED: …`) when `redis-server` is not installed, unless `CI`
    /// is set, in which case it panics. Panics when an installed server will not start.
    pub fn start() -> Option<Self> {
        Self::start_with_args(&[])
    }

    /// Starts a server with extra command-line arguments, which override the defaults, e.g.
    /// `&["--appendonly", "yes", "--appendfsync", "always"]`. The same arguments are used by
    /// [`restart`](Self::restart).
    ///
    /// `None` or a panic as for [`start`](Self::start).
    pub fn start_with_args(args: &[&str]) -> Option<Self> {
        let binary = server_binary().or_else(|| missing("redis-server", "LGADK_REDIS_SERVER"))?;
        Some(Self::launch(&binary, args, false))
    }

    fn launch(binary: &Path, args: &[&str], bus: bool) -> Self {
        let extra: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let mut last_error = String::new();
        // A port found free may be taken before the server binds it: try a few.
        for _ in 0..8 {
            let dir = tempfile::Builder::new().prefix("lgadk-redis-").tempdir().expect("create a temporary directory");
            let mut server =
                Self { binary: binary.to_owned(), dir, port: free_port(bus), extra: extra.clone(), child: None };
            match server.spawn() {
                Ok(()) => return server,
                Err(err) => last_error = err,
            }
        }
        panic!("redis-server would not start: {last_error}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let log = self.dir.path().join("redis.log");
        let mut command = Command::new(&self.binary);
        command
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().map_err(|err| format!("cannot run {}: {err}", self.binary.display()))?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("redis-server on port {port} exited with {status}; log:\n{log}"));
            }
            if matches!(query(self.port, &["PING"]), Ok(Ok(ref pong)) if pong == "PONG") {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                self.kill();
                let log = fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("redis-server on port {port} did not answer PING; log:\n{log}"));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The loopback port it listens on (never 6379).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its working directory (where an AOF or RDB file would go).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server by pid with SIGKILL (a crash: no shutdown save) and waits for it.
    /// Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server with SIGSTOP: connections stay open, nothing is answered until
    /// [`resume`](Self::resume). Does nothing if it is not running.
    ///
    /// # Panics
    /// When `kill` cannot be run.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a server frozen by [`pause`](Self::pause) run again (SIGCONT).
    ///
    /// # Panics
    /// When `kill` cannot be run.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill").arg(signal).arg(pid.to_string()).status().expect("run kill");
            assert!(status.success(), "kill {signal} {pid} failed");
        }
    }

    /// Starts the server again on the same port, in the same directory, with the same
    /// arguments (killing it first if it still runs). Data survives only if persistence was
    /// turned on (e.g. `--appendonly yes`).
    ///
    /// # Panics
    /// When it does not come back within 15 s.
    pub fn restart(&mut self) {
        self.kill();
        let mut last_error = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                Err(err) => last_error = err,
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}: {last_error}", self.port);
    }

    /// Sends one command (RESP, over a fresh connection) and returns the reply as text:
    /// simple strings, integers and bulk strings; `Err` for an error reply.
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> Result<String, String> {
        query(self.port, args).unwrap_or_else(|err| panic!("redis-server on port {} unreachable: {err}", self.port))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-master Redis Cluster on loopback (no replicas), each node a [`RedisServer`] with
/// `cluster-enabled yes`, joined with `redis-cli --cluster create … --cluster-yes`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the three nodes, creates the cluster and waits until every node reports
    /// `cluster_state:ok`.
    ///
    /// `None` or a panic as for [`RedisServer::start`] (also when `redis-cli` is missing).
    pub fn start() -> Option<Self> {
        let binary = server_binary().or_else(|| missing("redis-server", "LGADK_REDIS_SERVER"))?;
        let cli = cli_binary(&binary).or_else(|| missing("redis-cli", "LGADK_REDIS_CLI"))?;
        let args =
            ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"];
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::launch(&binary, &args, true)).collect();
        let mut create = Command::new(&cli);
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", cli.display()));
        if !output.status.success() {
            panic!(
                "redis-cli --cluster create failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let cluster = Self { nodes };
        cluster.wait_until_ok();
        Some(cluster)
    }

    fn wait_until_ok(&self) {
        let started = Instant::now();
        for node in &self.nodes {
            loop {
                let info = query(node.port, &["CLUSTER", "INFO"]);
                if let Ok(Ok(info)) = &info
                    && info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                {
                    break;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    panic!("cluster on port {} never became ok: {info:?}", node.port);
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `redis://127.0.0.1:<port>/` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The cluster slot of `key` (`CLUSTER KEYSLOT`).
    ///
    /// # Panics
    /// When the first node does not answer.
    pub fn slot_of(&self, key: &str) -> u16 {
        let slot = self.nodes.first().map(|node| node.command(&["CLUSTER", "KEYSLOT", key]));
        match slot {
            Some(Ok(slot)) => slot.parse().unwrap_or_else(|_| panic!("bad CLUSTER KEYSLOT reply {slot:?}")),
            other => panic!("CLUSTER KEYSLOT failed: {other:?}"),
        }
    }
}
