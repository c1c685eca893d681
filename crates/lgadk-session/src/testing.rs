//! Test support (feature `testing`; not semver-stable): throwaway `redis-server` processes.
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
mod redis_server;

pub use monitor::{Monitor, MonitoredCommand, ScriptCall};
pub use redis_server::{RedisCluster, RedisServer};
