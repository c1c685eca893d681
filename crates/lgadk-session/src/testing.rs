//! Test support (feature `testing`; not semver-stable): throwaway `redis-server` processes,
//! and with `postgres` throwaway PostgreSQL clusters.
//!
//! [`RedisServer`] runs its own `redis-server --port <free> --bind 127.0.0.1 --save ""
//! --appendonly no` in a temporary directory and kills it by pid (and waits for it) on drop;
//! [`RedisCluster`] does the same for a 3-master cluster on loopback; [`Monitor`] records what
//! a server executes (`MONITOR`), script commands included. None of them ever uses port 6379
//! or sends FLUSHALL, so a developer's own Redis is never touched.
//!
//! The binary comes from `LGADK_REDIS_SERVER` (a path) or `PATH`; `redis-cli` (needed for
//! clusters) from `LGADK_REDIS_CLI` or next to the server or `PATH`. When the server binary is
//! missing, `start` panics if the `CI` environment variable is set, and otherwise prints
//! `SKIPPED: redis-server not found` to stderr and returns `None`, so the test can return
//! early, visibly.
//!
//! With `postgres`, [`PostgresServer`] runs `initdb` into a temporary directory and `postgres`
//! on a free loopback port with its socket in that directory (never 5432), as the `postgres` OS
//! user when the test runs as root (both refuse root), `fsync` off unless asked; it is stopped
//! by pid (SIGQUIT) on drop, and by a supervising shell whenever the test process ends.
//! [`TestDatabase::shared`] is one server per test process, or `LGADK_TEST_DATABASE_URL`
//! when that is set; tests isolate themselves with a [`unique_schema`]. The binaries come
//! from `LGADK_PG_BIN`, `pg_config --bindir` or `PATH`; missing, they make `start` skip or,
//! under `CI`, panic, as for Redis. [`WireCounter`] is a loopback proxy that counts the
//! round trips and statements clients send to a server.
//!
//! ```
//! # fn main() {
//! use lgadk_session::testing::RedisServer;
//! let Some(server) = RedisServer::start() else { return };
//! assert_eq!(server.url(), format!("redis://127.0.0.1:{}/", server.port()));
//! assert_eq!(server.command(&["PING"]), Ok("PONG".to_owned()));
//! # }
//! ```
#![allow(clippy::panic, clippy::expect_used, clippy::print_stderr, reason = "test support: a failure is a loud panic")]

mod monitor;
#[cfg(feature = "postgres")]
mod postgres_server;
mod redis_server;
#[cfg(feature = "postgres")]
mod wire;

pub use monitor::{Monitor, MonitoredCommand, ScriptCall};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres_server::{PgBouncer, PostgresOptions, PostgresServer, TestDatabase, TestPooler, unique_schema};
pub use redis_server::{RedisCluster, RedisServer};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use wire::{WireCounter, WireCounts};
