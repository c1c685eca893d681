//! [`PostgresServer`]: a PostgreSQL cluster owned by a test, and the per-binary shared one.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use std::{env, fmt, fs, thread};

use tempfile::TempDir;

use super::redis_server::is_ci;

/// The port the machine's own PostgreSQL listens on: never used here.
const RESERVED_PORT: u16 = 5432;
/// How long a starting server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The superuser `initdb` creates; connections are trusted (loopback and the socket only).
const USER: &str = "lgadk";

/// `None` after saying so loudly, or a panic under CI.
fn missing<T>(what: &str, variable: &str) -> Option<T> {
    if is_ci() {
        panic!("{what} not found: install it or set {variable} (CI is set, so PostgreSQL tests may not be skipped)");
    }
    eprintln!("SKIPPED: {what} not found (install it or set {variable}); this PostgreSQL test did not run");
    None
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// The directory of `initdb` and `postgres`: `$LGADK_PG_BIN`, `pg_config --bindir`, where
/// `initdb` is on `PATH`, or the newest of Debian's `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = env::var_os("LGADK_PG_BIN").filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(dir)).filter(|dir| dir.join("postgres").is_file());
    }
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    from_config.filter(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file()).or_else(|| {
        let initdb = on_path("initdb")?.canonicalize().ok()?;
        initdb.parent().map(Path::to_path_buf).filter(|dir| dir.join("postgres").is_file())
    })
}

/// Whether this process runs as root: `initdb`, `postgres` and `pgbouncer` refuse to, so they
/// are run as the `postgres` OS user then.
pub(super) fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A command run as the `postgres` OS user when this process is root, as itself otherwise.
pub(super) fn unprivileged(program: &Path, root: bool) -> Command {
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A loopback port that is free right now (never 5432).
pub(super) fn free_port() -> u16 {
    for _ in 0..200 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("bind an ephemeral loopback port");
        if port != RESERVED_PORT && port != 6432 {
            return port;
        }
    }
    panic!("found no free loopback port");
}

/// A directory the `postgres` user may write to when we are root.
pub(super) fn owned_tempdir(prefix: &str, root: bool) -> TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("create a temporary directory");
    if root {
        let status = Command::new("chown").arg("-R").arg("postgres").arg(dir.path()).status().expect("run chown");
        assert!(status.success(), "chown postgres {} failed", dir.path().display());
    }
    dir
}

/// The shell that runs a server in the background and stops it (with its stop signal, then
/// waits) when its standard input closes: when the test drops the server, or when the test
/// process ends in any way, so no server outlives its test binary. `$1` is the log file, `$2` a
/// directory to remove once the process has stopped (`""` for none), `$3` the stop signal; the
/// server's pid is the first line it prints.
pub(super) const SUPERVISOR: &str = r#"log=$1; cleanup=$2; sig=$3; shift 3; "$@" >>"$log" 2>&1 & pid=$!; echo "$pid"; cat >/dev/null; kill -s "$sig" "$pid" 2>/dev/null; wait "$pid"; if [ -n "$cleanup" ]; then rm -rf "$cleanup"; fi"#;

/// The signal that stops a process at once: SIGQUIT for `postgres` (an immediate stop, like
/// `pg_ctl -m immediate`), SIGTERM for `pgbouncer` (which ignores SIGQUIT).
#[derive(Debug, Clone, Copy)]
pub(super) enum StopSignal {
    Quit,
    Term,
}

impl StopSignal {
    fn name(self) -> &'static str {
        match self {
            Self::Quit => "QUIT",
            Self::Term => "TERM",
        }
    }
}

/// A supervised background process: the supervisor shell and the process's pid.
pub(super) struct Supervised {
    shell: Child,
    pid: u32,
    stop: StopSignal,
}

impl Supervised {
    /// Runs `program args` under [`SUPERVISOR`] (as `postgres` when `root`), its output
    /// appended to `log`.
    pub(super) fn spawn(
        program: &Path,
        args: &[String],
        log: &Path,
        cleanup: Option<&Path>,
        stop: StopSignal,
        root: bool,
    ) -> Result<Self, String> {
        let sh = PathBuf::from("/bin/sh");
        let mut command = unprivileged(&sh, root);
        command
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("sh")
            .arg(log)
            .arg(cleanup.unwrap_or(Path::new("")))
            .arg(stop.name())
            .arg(program)
            .args(args);
        let mut shell = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot run {}: {err}", program.display()))?;
        let mut line = String::new();
        if let Some(out) = shell.stdout.take() {
            BufReader::new(out).read_line(&mut line).map_err(|err| format!("no pid from the supervisor: {err}"))?;
        }
        let pid = line.trim().parse().map_err(|_| format!("no pid from the supervisor: {line:?}"))?;
        Ok(Self { shell, pid, stop })
    }

    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process is still there.
    pub(super) fn running(&self) -> bool {
        Command::new("kill")
            .args(["-0", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Sends `signal` to the process.
    pub(super) fn signal(&self, signal: &str) {
        let _ = Command::new("kill").arg(signal).arg(self.pid.to_string()).stderr(Stdio::null()).status();
    }

    /// Stops the process with its stop signal (for `postgres` an immediate stop: no
    /// checkpoint, like a crash) and waits for it and its supervisor.
    pub(super) fn stop(mut self) {
        self.signal(&format!("-{}", self.stop.name()));
        drop(self.shell.stdin.take());
        let _ = self.shell.wait();
        let started = Instant::now();
        while self.running() && started.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(10));
        }
        if self.running() {
            self.signal("-KILL");
        }
    }
}

/// Options of a [`PostgresServer`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Keep `fsync`, `synchronous_commit` and `full_page_writes` on (off by default: tests
    /// that do not crash the server need no durability).
    pub durable: bool,
    /// More `-c name=value` settings, e.g. `"log_statement=all"`.
    pub settings: Vec<String>,
}

impl PostgresOptions {
    /// With `fsync`, `synchronous_commit` and `full_page_writes` on.
    #[must_use]
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }

    /// With one more `name=value` setting.
    #[must_use]
    pub fn setting(mut self, setting: impl Into<String>) -> Self {
        self.settings.push(setting.into());
        self
    }
}

/// A PostgreSQL cluster owned by a test: `initdb` into a temporary directory, then `postgres`
/// on a free loopback port with its socket in that directory, run as the `postgres` OS user
/// when the test runs as root; stopped with SIGQUIT (by pid) on drop, and also when the test
/// process ends however it ends.
pub struct PostgresServer {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    root: bool,
    options: PostgresOptions,
    process: Option<Supervised>,
    /// Set for the per-process server, which is never dropped: its supervisor removes the
    /// directory once the process ends.
    cleanup_on_exit: bool,
}

impl fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresServer")
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .field("options", &self.options)
            .finish()
    }
}

impl PostgresServer {
    /// Starts a fresh cluster with `fsync` off.
    ///
    /// `None` (after printing `SKIPPED: …`) when PostgreSQL is not installed, unless `CI` is
    /// set, in which case it panics. Panics when an installed server will not start.
    pub fn start() -> Option<Self> {
        Self::start_with(PostgresOptions::default())
    }

    /// Starts a fresh cluster with these options; `None` or a panic as for
    /// [`start`](Self::start).
    pub fn start_with(options: PostgresOptions) -> Option<Self> {
        Self::launch(options, false)
    }

    fn launch(options: PostgresOptions, cleanup_on_exit: bool) -> Option<Self> {
        let bin = bin_dir().or_else(|| missing("PostgreSQL (initdb, postgres)", "LGADK_PG_BIN"))?;
        let root = is_root();
        let dir = owned_tempdir("lgadk-pg-", root);
        let data = dir.path().join("data");
        let output = unprivileged(&bin.join("initdb"), root)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", USER, "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("cannot run initdb: {err}"));
        assert!(
            output.status.success(),
            "initdb failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let mut server = Self { bin, dir, port: 0, root, options, process: None, cleanup_on_exit };
        let mut last_error = String::new();
        // A port found free may be taken before the server binds it: try a few.
        for _ in 0..8 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return Some(server),
                Err(err) => last_error = err,
            }
        }
        panic!("postgres would not start: {last_error}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut args: Vec<String> = vec![
            "-D".into(),
            self.dir.path().join("data").display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-k".into(),
            self.dir.path().display().to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "max_connections=200".into(),
            "-c".into(),
            "shared_buffers=32MB".into(),
            "-c".into(),
            "autovacuum=off".into(),
        ];
        if !self.options.durable {
            for setting in ["fsync=off", "synchronous_commit=off", "full_page_writes=off"] {
                args.push("-c".into());
                args.push(setting.into());
            }
        }
        for setting in &self.options.settings {
            args.push("-c".into());
            args.push(setting.clone());
        }
        let log = self.log_path();
        let cleanup = self.cleanup_on_exit.then(|| self.dir.path());
        let process = Supervised::spawn(&self.bin.join("postgres"), &args, &log, cleanup, StopSignal::Quit, self.root)?;
        let started = Instant::now();
        loop {
            if !process.running() {
                process.stop();
                let log = fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("postgres on port {} exited; log:\n{log}", self.port));
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-d", "postgres", "-t", "1"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                self.process = Some(process);
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                process.stop();
                let log = fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("postgres on port {} did not accept connections; log:\n{log}", self.port));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `postgres://lgadk@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    /// The loopback port it listens on (never 5432).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// Its temporary directory (data directory `data/`, the socket, `postgres.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The directory of the PostgreSQL binaries it runs (`pgbench` is there too).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Stops the server as `pg_ctl -m immediate` does (SIGQUIT to the postmaster: no shutdown
    /// checkpoint, clients cut off) and waits for it. Does nothing if it is not running.
    pub fn stop_immediate(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts the server again on the same port with the same data and options (stopping it
    /// first if it runs). Data survives; with `durable` even what a crash would lose.
    ///
    /// # Panics
    /// When it does not come back within 30 s.
    pub fn restart(&mut self) {
        self.stop_immediate();
        let mut last_error = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                Err(err) => last_error = err,
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("postgres did not restart on port {}: {last_error}", self.port);
    }

    /// Runs SQL with `psql` as the superuser and returns its unaligned, tuples-only output.
    ///
    /// # Panics
    /// When `psql` cannot be run or the SQL fails.
    pub fn psql(&self, sql: &str) -> String {
        let mut child = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", USER, "-d", "postgres"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run psql: {err}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes()).expect("write to psql");
        }
        let output = child.wait_with_output().expect("wait for psql");
        assert!(output.status.success(), "psql failed on {sql:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop_immediate();
    }
}

/// A database for tests: `LGADK_TEST_DATABASE_URL` when set, otherwise a [`PostgresServer`]
/// started once per test binary (process) and stopped when the process ends.
#[derive(Debug)]
pub enum TestDatabase {
    /// A database given by `LGADK_TEST_DATABASE_URL`; tests isolate themselves by schema.
    External(String),
    /// The process's own server.
    Owned(PostgresServer),
}

impl TestDatabase {
    /// The shared database of this test process, started on first use.
    ///
    /// `None` or a panic as for [`PostgresServer::start`].
    pub fn shared() -> Option<&'static Self> {
        static SHARED: OnceLock<Option<TestDatabase>> = OnceLock::new();
        SHARED
            .get_or_init(|| match env::var("LGADK_TEST_DATABASE_URL") {
                Ok(url) if !url.is_empty() => Some(Self::External(url)),
                // Never dropped: its supervisor removes its directory when the process ends.
                _ => PostgresServer::launch(PostgresOptions::default(), true).map(Self::Owned),
            })
            .as_ref()
    }

    /// Its connection URL.
    pub fn url(&self) -> String {
        match self {
            Self::External(url) => url.clone(),
            Self::Owned(server) => server.url(),
        }
    }
}

/// PostgreSQL with PgBouncer in front, started once per test process (both stopped, and their
/// directories removed, when the process ends), for tests of the store through a pooler in
/// transaction mode.
#[derive(Debug)]
pub struct TestPooler {
    /// The server behind the pooler.
    pub server: PostgresServer,
    /// The pooler; connect through [`PgBouncer::url`].
    pub pgbouncer: PgBouncer,
}

impl TestPooler {
    /// The process's server and pooler, started on first use.
    ///
    /// `None` or a panic as for [`PostgresServer::start`] and [`PgBouncer::start`].
    pub fn shared() -> Option<&'static Self> {
        static SHARED: OnceLock<Option<TestPooler>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let server = PostgresServer::launch(PostgresOptions::default(), true)?;
                let pgbouncer = PgBouncer::launch(&server, true)?;
                Some(Self { server, pgbouncer })
            })
            .as_ref()
    }
}

/// A schema name no other test of any process uses: `<prefix>_<pid>_<n>_<random>`, so tests
/// sharing a database (or `LGADK_TEST_DATABASE_URL`) never see each other's data.
pub fn unique_schema(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{n}_{:08x}", std::process::id(), fastrand_u32())
}

fn fastrand_u32() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

/// A `pgbouncer` in transaction mode in front of a [`PostgresServer`], on its own free
/// loopback port, run as the `postgres` OS user when the test runs as root (it refuses root),
/// stopped by pid on drop. Pool size 10 per database; `extra_float_digits` and `options` are
/// ignored as startup parameters, as PgBouncer deployments usually configure.
pub struct PgBouncer {
    dir: TempDir,
    port: u16,
    upstream: u16,
    process: Option<Supervised>,
}

impl fmt::Debug for PgBouncer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBouncer")
            .field("port", &self.port)
            .field("upstream", &self.upstream)
            .field("pid", &self.process.as_ref().map(Supervised::pid))
            .finish()
    }
}

fn pgbouncer_binary() -> Option<PathBuf> {
    match env::var_os("LGADK_PGBOUNCER") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)).filter(|path| path.is_file()),
        _ => on_path("pgbouncer").or_else(|| Some(PathBuf::from("/usr/sbin/pgbouncer")).filter(|path| path.is_file())),
    }
}

impl PgBouncer {
    /// Starts `pgbouncer` (transaction pooling) in front of `server`.
    ///
    /// `None` (after printing `SKIPPED: …`) when `pgbouncer` is not installed, unless `CI` is
    /// set, in which case it panics. Panics when an installed one will not start.
    pub fn start(server: &PostgresServer) -> Option<Self> {
        Self::launch(server, false)
    }

    fn launch(server: &PostgresServer, cleanup_on_exit: bool) -> Option<Self> {
        let binary = pgbouncer_binary().or_else(|| missing("pgbouncer", "LGADK_PGBOUNCER"))?;
        let root = is_root();
        let dir = owned_tempdir("lgadk-pgbouncer-", root);
        let mut last_error = String::new();
        for _ in 0..8 {
            let port = free_port();
            let ini = dir.path().join("pgbouncer.ini");
            let users = dir.path().join("userlist.txt");
            let config = format!(
                "[databases]\n\
                 postgres = host=127.0.0.1 port={upstream} dbname=postgres user={USER}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 pool_mode = transaction\n\
                 default_pool_size = 10\n\
                 max_client_conn = 1000\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 admin_users = {USER}\n",
                upstream = server.port(),
                users = users.display(),
            );
            fs::write(&ini, config).expect("write pgbouncer.ini");
            fs::write(&users, format!("\"{USER}\" \"\"\n")).expect("write userlist.txt");
            if root {
                let _ = Command::new("chown").arg("-R").arg("postgres").arg(dir.path()).status();
            }
            let log = dir.path().join("pgbouncer.log");
            let cleanup = cleanup_on_exit.then(|| dir.path());
            let spawned =
                Supervised::spawn(&binary, &[ini.display().to_string()], &log, cleanup, StopSignal::Term, root);
            let process = match spawned {
                Ok(process) => process,
                Err(err) => {
                    last_error = err;
                    continue;
                }
            };
            let started = Instant::now();
            loop {
                if !process.running() {
                    last_error = fs::read_to_string(&log).unwrap_or_default();
                    process.stop();
                    break;
                }
                let ready = Command::new(server.bin_dir().join("pg_isready"))
                    .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER, "-d", "postgres", "-t", "1"])
                    .status()
                    .is_ok_and(|status| status.success());
                if ready {
                    return Some(Self { dir, port, upstream: server.port(), process: Some(process) });
                }
                if started.elapsed() > START_TIMEOUT {
                    last_error = fs::read_to_string(&log).unwrap_or_default();
                    process.stop();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("pgbouncer would not start: {last_error}");
    }

    /// `postgres://lgadk@127.0.0.1:<port>/postgres`, through the pooler.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop();
        }
    }
}
