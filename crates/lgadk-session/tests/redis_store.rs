//! `RedisStore` on a single `redis-server`: what the shared suite cannot see (round trips, key
//! layout, exact metadata sizes, damaged data, prefixes, real expiry, connection settings).
#![cfg(all(feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]
#![allow(clippy::print_stderr, reason = "the round-trip test prints its table")]

use std::error::Error as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use lgadk_core::session::metadata_size;
use lgadk_core::{
    Checkpointer, Clock, Error, Interaction, ManualClock, Message, Metadata, MetadataUpdate, NewCheckpoint, NewSession,
    Page, SessionId, SessionStore, SystemClock, Timeout, UserId,
};
use lgadk_session::RedisStore;
use lgadk_session::testing::RedisServer;
use serde_json::json;

fn sid(raw: &str) -> SessionId {
    SessionId::parse(raw).unwrap()
}

fn user(raw: &str) -> UserId {
    UserId::parse(raw).unwrap()
}

fn meta(value: serde_json::Value) -> Metadata {
    let serde_json::Value::Object(map) = value else { panic!("not an object: {value}") };
    map
}

async fn store(server: &RedisServer, prefix: &str, clock: impl Clock) -> RedisStore {
    RedisStore::builder(server.url()).with_prefix(prefix).with_clock(clock).connect().await.unwrap()
}

fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url()).unwrap().get_connection().unwrap()
}

fn cmd<T: redis::FromRedisValue>(conn: &mut redis::Connection, args: &[&str]) -> T {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query(conn).unwrap()
}

fn snapshot(step: u64, messages: Vec<Message>) -> NewCheckpoint {
    NewCheckpoint { state: json!({"step": step}), step, node: Some("chat".into()), messages, op: None }
}

/// Watches every command the server executes (MONITOR on its own connection).
struct Monitor {
    lines: mpsc::Receiver<String>,
    markers: usize,
}

impl Monitor {
    fn start(server: &RedisServer) -> Self {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        stream.write_all(b"*1\r\n$7\r\nMONITOR\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let mut ok = String::new();
        reader.read_line(&mut ok).unwrap();
        assert_eq!(ok.trim_end(), "+OK");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { lines, markers: 0 }
    }

    /// The top-level commands (not those run inside scripts) executed since the last call.
    fn commands_since_last(&mut self, server: &RedisServer) -> Vec<String> {
        self.markers += 1;
        let marker = format!("lgadk-marker-{}", self.markers);
        server.command(&["ECHO", &marker]).unwrap();
        let mut commands = Vec::new();
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(5)).expect("MONITOR went quiet");
            if line.contains(&marker) {
                return commands;
            }
            if line.contains("[0 lua]") {
                continue;
            }
            // `+<time> [<db> <client>] "<command>" "<arg>" …`
            let Some((_, rest)) = line.split_once("] \"") else { continue };
            let name = rest.split('"').next().unwrap_or_default().to_lowercase();
            if !matches!(name.as_str(), "echo" | "info" | "ping") {
                commands.push(name);
            }
        }
    }
}

fn evalsha_calls(server: &RedisServer) -> u64 {
    let stats = server.command(&["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// Every operation is one round trip; the table is printed for the notes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_one_round_trip() {
    let Some(server) = RedisServer::start() else { return };
    let clock = ManualClock::starting_now();
    let store = store(&server, "rt", clock.clone()).await;
    let alice = user("alice");

    // Warm up: load every script once, so NOSCRIPT reloads do not count.
    let warm = store.create(NewSession::for_user(alice.clone()).with_id(sid("warm"))).await.unwrap().id;
    store.get(&warm).await.unwrap();
    store.exists(&warm).await.unwrap();
    store.touch(&warm).await.unwrap();
    store.track_interaction(&warm, Interaction::tokens(1, 1)).await.unwrap();
    store.update_metadata(&warm, MetadataUpdate::Merge(meta(json!({"a": 1})))).await.unwrap();
    store.list_user_sessions(&alice, Page::first(10)).await.unwrap();
    store.version(&warm).await.unwrap();
    store.put(&warm, snapshot(1, vec![Message::user("hi")]), 0).await.unwrap();
    store.latest(&warm).await.unwrap();
    store.messages(&warm, 0..10).await.unwrap();
    store.purge_expired().await.unwrap();
    store.end(&warm).await.unwrap();

    let mut monitor = Monitor::start(&server);
    monitor.commands_since_last(&server);
    let mut table = Vec::new();
    macro_rules! measure {
        ($name:literal, $call:expr) => {{
            let before = evalsha_calls(&server);
            let result = $call;
            let after = evalsha_calls(&server);
            let commands = monitor.commands_since_last(&server);
            table.push(($name, commands.clone(), after - before));
            result
        }};
    }
    let new = NewSession::for_user(alice.clone())
        .with_metadata(meta(json!({"device": "laptop"})))
        .with_timeout(Timeout::After(Duration::from_secs(10)));
    let id = measure!("create", store.create(new).await.unwrap().id);
    measure!("get", store.get(&id).await.unwrap());
    measure!("exists", store.exists(&id).await.unwrap());
    measure!("touch", store.touch(&id).await.unwrap());
    measure!("track_interaction", store.track_interaction(&id, Interaction::tokens(3, 5)).await.unwrap());
    measure!(
        "update_metadata merge",
        store.update_metadata(&id, MetadataUpdate::Merge(meta(json!({"k": 1})))).await.unwrap()
    );
    measure!(
        "update_metadata replace",
        store.update_metadata(&id, MetadataUpdate::Replace(Metadata::new())).await.unwrap()
    );
    measure!("list_user_sessions", store.list_user_sessions(&alice, Page::first(10)).await.unwrap());
    measure!("checkpoint version", store.version(&id).await.unwrap());
    let messages = vec![Message::user("q"), Message::assistant("a")];
    measure!("checkpoint put (2 messages)", store.put(&id, snapshot(1, messages), 0).await.unwrap());
    measure!("checkpoint latest", store.latest(&id).await.unwrap());
    measure!("checkpoint by version", store.checkpoint(&id, 1).await.unwrap());
    measure!("checkpoint list", store.list(&id, 10).await.unwrap());
    measure!("checkpoint messages", store.messages(&id, 0..2).await.unwrap());
    measure!("checkpoint delete", store.delete(&id).await.unwrap());
    measure!("end", store.end(&id).await.unwrap());
    for _ in 0..3 {
        store.create(NewSession::for_user(alice.clone()).with_timeout(Timeout::After(Duration::ZERO))).await.unwrap();
    }
    clock.advance(Duration::from_millis(1));
    monitor.commands_since_last(&server); // not measured: the creates above
    let purged = measure!("purge_expired (3 due)", store.purge_expired().await.unwrap());
    assert_eq!(purged, 3);
    measure!("purge_expired (none due)", store.purge_expired().await.unwrap());

    eprintln!("| operation | top-level commands | EVALSHA (commandstats) |");
    for (name, commands, evalsha) in &table {
        eprintln!("| {name} | {} | {evalsha} |", commands.join(" "));
    }
    for (name, commands, evalsha) in &table {
        assert_eq!(commands.len(), 1, "{name}: {commands:?}");
        if *name == "checkpoint delete" {
            assert_eq!((commands[0].as_str(), *evalsha), ("del", 0), "{name}");
        } else {
            assert_eq!((commands[0].as_str(), *evalsha), ("evalsha", 1), "{name}");
        }
    }
}

/// The documented key layout, TTLs and index entries, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_follow_the_documented_layout() {
    let Some(server) = RedisServer::start() else { return };
    let clock = ManualClock::new(1_700_000_000_000);
    let store = store(&server, "app", clock.clone()).await;
    let new = NewSession::for_user(user("alice"))
        .with_id(sid("s:1"))
        .with_metadata(meta(json!({"plan": "pro"})))
        .with_timeout(Timeout::After(Duration::from_secs(30)));
    let id = store.create(new).await.unwrap().id;
    store
        .track_interaction(&id, Interaction::tokens(2, 3).with_response_time(Duration::from_micros(1500)))
        .await
        .unwrap();
    store.put(&id, snapshot(1, vec![Message::user("hi")]), 0).await.unwrap();
    store.create(NewSession::default().with_id(sid("forever")).with_timeout(Timeout::Never)).await.unwrap();

    let mut conn = raw(&server);
    let mut keys: Vec<String> = cmd(&mut conn, &["KEYS", "*"]);
    keys.sort();
    assert_eq!(
        keys,
        ["app:u:{alice}", "app:x", "app:{forever}:s", "app:{s:1}:cp", "app:{s:1}:h", "app:{s:1}:m", "app:{s:1}:s"]
    );
    for (key, kind) in [("app:{s:1}:s", "hash"), ("app:{s:1}:m", "hash"), ("app:{s:1}:cp", "hash")] {
        assert_eq!(cmd::<String>(&mut conn, &["TYPE", key]), kind, "{key}");
    }
    assert_eq!(cmd::<String>(&mut conn, &["TYPE", "app:{s:1}:h"]), "list");
    assert_eq!(cmd::<String>(&mut conn, &["TYPE", "app:u:{alice}"]), "zset");
    let record: std::collections::BTreeMap<String, String> = cmd(&mut conn, &["HGETALL", "app:{s:1}:s"]);
    let created = "1700000000000";
    let member = format!("{:020}|s:1", 1_700_000_000_000_i64.cast_unsigned() ^ (1 << 63));
    let expected: std::collections::BTreeMap<String, String> = [
        ("c", created),
        ("l", created),
        ("t", "30000"),
        ("u", "alice"),
        ("n", "1"),
        ("ti", "2"),
        ("to", "3"),
        ("rt", "1500"),
        ("ix", &member),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(record, expected);
    assert_eq!(cmd::<Vec<String>>(&mut conn, &["HGETALL", "app:{s:1}:m"]), ["plan", "\"pro\""]);
    assert_eq!(cmd::<Vec<String>>(&mut conn, &["ZRANGE", "app:u:{alice}", "0", "-1"]), std::slice::from_ref(&member));
    let entry = format!("{member}|alice");
    assert_eq!(cmd::<f64>(&mut conn, &["ZSCORE", "app:x", &entry]), 1_700_000_030_000.0);
    assert_eq!(cmd::<Vec<String>>(&mut conn, &["ZRANGE", "app:x", "0", "-1"]), [entry], "Never is not indexed");
    // Garbage-collection TTLs: timeout + 10 minutes grace, on every key of the session.
    for key in ["app:{s:1}:s", "app:{s:1}:m", "app:{s:1}:cp", "app:{s:1}:h"] {
        let ttl: i64 = cmd(&mut conn, &["PTTL", key]);
        assert!((600_000..=630_000).contains(&ttl), "{key}: {ttl}");
    }
    assert_eq!(cmd::<i64>(&mut conn, &["PTTL", "app:{forever}:s"]), -1);
    assert_eq!(cmd::<i64>(&mut conn, &["PTTL", "app:u:{alice}"]), -1);
}

/// The size the script computes for merged metadata is exactly `metadata_size`, escapes
/// and non-ASCII included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_metadata_size_matches_metadata_size_exactly() {
    let Some(server) = RedisServer::start() else { return };
    let tricky = meta(json!({
        "plain": "x",
        "quote\"and\\backslash": "v\"\\",
        "ctrl\u{1}\u{1f}\n\t\r\u{8}\u{c}": "\u{0}\u{7f}",
        "é-ünï-✓-🦀": {"nested": ["é", 1.5, null, true, -3]},
        "": "",
        "/slash": "</script>",
    }));
    let update = meta(json!({"added": [1, 2, 3]}));
    let mut merged = tricky.clone();
    merged.extend(update.clone());
    let size = metadata_size(&merged);

    let at_limit = RedisStore::builder(server.url()).with_metadata_limit(size).connect().await.unwrap();
    let below = RedisStore::builder(server.url()).with_metadata_limit(size - 1).connect().await.unwrap();
    let id = at_limit.create(NewSession::default().with_metadata(tricky.clone())).await.unwrap().id;
    let err = below.update_metadata(&id, MetadataUpdate::Merge(update.clone())).await.unwrap_err();
    assert!(matches!(err, Error::MetadataTooLarge { size: got, limit } if got == size && limit == size - 1), "{err:?}");
    assert_eq!(at_limit.get(&id).await.unwrap().unwrap().metadata, tricky, "nothing written");
    let stored = at_limit.update_metadata(&id, MetadataUpdate::Merge(update)).await.unwrap();
    assert_eq!(stored, merged);
    assert_eq!(at_limit.get(&id).await.unwrap().unwrap().metadata, merged);
}

/// Garbage written with raw commands is `Error::Corrupt` naming the session, never a panic,
/// and a failed write leaves the data as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_data_is_corrupt_naming_the_session() {
    let Some(server) = RedisServer::start() else { return };
    let store = store(&server, "bad", SystemClock).await;
    let mut conn = raw(&server);
    let fresh = |name: &'static str| {
        let store = store.clone();
        async move { store.create(NewSession::default().with_id(sid(name))).await.unwrap().id }
    };
    fn is_corrupt(err: &Error, id: &SessionId) -> bool {
        matches!(err, Error::Corrupt { id: got, .. } if got == id) && err.to_string().contains(id.as_str())
    }

    let id = fresh("counter").await;
    let _: () = cmd(&mut conn, &["HSET", "bad:{counter}:s", "ti", "lots"]);
    assert!(is_corrupt(&store.get(&id).await.unwrap_err(), &id));
    let err = store.track_interaction(&id, Interaction::tokens(1, 1)).await.unwrap_err();
    assert!(is_corrupt(&err, &id), "{err:?}");
    assert!(err.source().unwrap().to_string().contains("total_tokens_in"), "{:?}", err.source());
    assert_eq!(
        cmd::<Vec<String>>(&mut conn, &["HMGET", "bad:{counter}:s", "n", "ti"]),
        ["0", "lots"],
        "nothing written"
    );

    let id = fresh("negative").await;
    let _: () = cmd(&mut conn, &["HSET", "bad:{negative}:s", "n", "-4"]);
    assert!(is_corrupt(&store.get(&id).await.unwrap_err(), &id));
    assert!(is_corrupt(&store.track_interaction(&id, Interaction::tokens(1, 1)).await.unwrap_err(), &id));

    let id = fresh("time").await;
    let _: () = cmd(&mut conn, &["HSET", "bad:{time}:s", "l", "yesterday"]);
    assert!(is_corrupt(&store.get(&id).await.unwrap_err(), &id));
    assert!(is_corrupt(&store.exists(&id).await.unwrap_err(), &id));
    assert!(is_corrupt(&store.touch(&id).await.unwrap_err(), &id));
    assert!(store.end(&id).await.unwrap(), "a damaged session can still be ended");

    let id = fresh("meta").await;
    let _: () = cmd(&mut conn, &["HSET", "bad:{meta}:m", "k", "{not json"]);
    assert!(is_corrupt(&store.get(&id).await.unwrap_err(), &id));

    let id = fresh("checkpoint").await;
    store.put(&id, snapshot(1, vec![Message::user("hi")]), 0).await.unwrap();
    let _: () = cmd(&mut conn, &["HSET", "bad:{checkpoint}:cp", "1", "{\"version\":1,"]);
    assert!(is_corrupt(&store.latest(&id).await.unwrap_err(), &id));
    assert!(is_corrupt(&store.checkpoint(&id, 1).await.unwrap_err(), &id));
    assert!(is_corrupt(&store.list(&id, 5).await.unwrap_err(), &id));
    let _: () = cmd(&mut conn, &["RPUSH", "bad:{checkpoint}:h", "not a message"]);
    assert!(is_corrupt(&store.messages(&id, 0..5).await.unwrap_err(), &id));
    let _: () = cmd(&mut conn, &["HSET", "bad:{checkpoint}:cp", "v", "one"]);
    assert!(is_corrupt(&store.version(&id).await.unwrap_err(), &id));
    assert!(is_corrupt(&store.put(&id, snapshot(2, Vec::new()), 1).await.unwrap_err(), &id));

    let id = fresh("owner").await;
    let _: () = cmd(&mut conn, &["HSET", "bad:{owner}:s", "u", "not a user"]);
    assert!(is_corrupt(&store.get(&id).await.unwrap_err(), &id));
}

/// Two prefixes on one server never see each other's sessions; bad prefixes are refused
/// before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_isolate_applications() {
    let Some(server) = RedisServer::start() else { return };
    let clock = ManualClock::starting_now();
    let one = store(&server, "one", clock.clone()).await;
    let two = store(&server, "two", clock.clone()).await;
    let alice = user("alice");
    let shared = sid("shared");
    let expiring = |id: &str| {
        NewSession::for_user(alice.clone()).with_id(sid(id)).with_timeout(Timeout::After(Duration::from_secs(5)))
    };
    one.create(expiring("shared")).await.unwrap();
    two.create(expiring("shared")).await.unwrap();
    one.create(expiring("only-one")).await.unwrap();
    one.track_interaction(&shared, Interaction::tokens(7, 7)).await.unwrap();
    one.update_metadata(&shared, MetadataUpdate::Merge(meta(json!({"app": 1})))).await.unwrap();
    let two_view = two.get(&shared).await.unwrap().unwrap();
    assert_eq!((two_view.stats.interactions, two_view.metadata.len()), (0, 0));
    assert!(two.get(&sid("only-one")).await.unwrap().is_none());
    assert_eq!(one.list_user_sessions(&alice, Page::first(10)).await.unwrap().ids.len(), 2);
    assert_eq!(two.list_user_sessions(&alice, Page::first(10)).await.unwrap().ids, std::slice::from_ref(&shared));
    assert!(two.end(&shared).await.unwrap());
    assert!(one.exists(&shared).await.unwrap());
    clock.advance(Duration::from_secs(6));
    assert_eq!(two.purge_expired().await.unwrap(), 0);
    assert_eq!(one.purge_expired().await.unwrap(), 2);

    // Anything that could open a hash tag or a pattern is refused without connecting: the
    // port below has no server, so reaching it would be a `Backend` error.
    for bad in ["", "a{b", "b}", "sp ace", "st*r", "nl\n"] {
        let err = RedisStore::builder("redis://127.0.0.1:1/").with_prefix(bad).connect().await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{bad:?}: {err:?}");
    }
    // Ids with such characters never become ids at all.
    for bad in ["{x}", "a}", "*", "a b", "\n"] {
        assert!(SessionId::parse(bad).is_err() && UserId::parse(bad).is_err(), "{bad:?}");
    }
    let mut conn = raw(&server);
    let keys: Vec<String> = cmd(&mut conn, &["KEYS", "*"]);
    assert!(keys.iter().all(|key| key.starts_with("one:")), "{keys:?}");
}

/// With a real clock and a 300 ms timeout, everything of the session is gone after expiry
/// and a purge: record, metadata, checkpoints, log and index entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_expiry_removes_every_key() {
    let Some(server) = RedisServer::start() else { return };
    let store = store(&server, "exp", SystemClock).await;
    let alice = user("alice");
    let new = NewSession::for_user(alice.clone())
        .with_metadata(meta(json!({"k": "v"})))
        .with_timeout(Timeout::After(Duration::from_millis(300)));
    let id = store.create(new).await.unwrap().id;
    store.put(&id, snapshot(1, vec![Message::user("hi")]), 0).await.unwrap();
    assert_eq!(store.list_user_sessions(&alice, Page::first(5)).await.unwrap().ids, std::slice::from_ref(&id));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(store.get(&id).await.unwrap().is_none());
    assert!(store.latest(&id).await.unwrap().is_none());
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    let mut conn = raw(&server);
    let keys: Vec<String> = cmd(&mut conn, &["KEYS", "*"]);
    assert!(keys.is_empty(), "left behind: {keys:?}");
    assert!(store.list_user_sessions(&alice, Page::first(5)).await.unwrap().ids.is_empty());
}

/// A session whose keys Redis dropped by TTL (no purge ran) leaves index entries that listing
/// and purge clean up without counting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_recover_when_redis_dropped_the_session() {
    let Some(server) = RedisServer::start() else { return };
    let clock = ManualClock::starting_now();
    let store = store(&server, "gc", clock.clone()).await;
    let alice = user("alice");
    let timeout = Timeout::After(Duration::from_secs(1));
    let gone = store.create(NewSession::for_user(alice.clone()).with_timeout(timeout)).await.unwrap().id;
    let kept = store.create(NewSession::for_user(alice.clone()).with_timeout(Timeout::Never)).await.unwrap().id;
    let mut conn = raw(&server);
    let _: () = cmd(&mut conn, &["DEL", &format!("gc:{{{gone}}}:s")]);
    assert_eq!(store.list_user_sessions(&alice, Page::first(5)).await.unwrap().ids, [kept]);
    assert_eq!(cmd::<i64>(&mut conn, &["ZCARD", "gc:u:{alice}"]), 1, "listing removed the dangling entry");
    clock.advance(Duration::from_secs(2));
    assert_eq!(store.purge_expired().await.unwrap(), 0, "Redis removed it, not the purge");
    assert_eq!(cmd::<i64>(&mut conn, &["ZCARD", "gc:x"]), 0);
}

/// Scripts come back by themselves after `SCRIPT FLUSH` (as after a restart or failover).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_reload_after_script_flush() {
    let Some(server) = RedisServer::start() else { return };
    let store = store(&server, "flush", SystemClock).await;
    let id = store.create(NewSession::default()).await.unwrap().id;
    server.command(&["SCRIPT", "FLUSH"]).unwrap();
    assert_eq!(store.track_interaction(&id, Interaction::tokens(1, 2)).await.unwrap().interactions, 1);
}

/// Counters saturate instead of failing or wrapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_saturate() {
    let Some(server) = RedisServer::start() else { return };
    let store = store(&server, "sat", SystemClock).await;
    let id = store.create(NewSession::default()).await.unwrap().id;
    let huge = Interaction::tokens(u64::MAX, i64::MAX as u64 - 1);
    store.track_interaction(&id, huge).await.unwrap();
    let stats = store.track_interaction(&id, huge).await.unwrap();
    assert_eq!(
        (stats.interactions, stats.total_tokens_in, stats.total_tokens_out),
        (2, i64::MAX as u64, i64::MAX as u64)
    );
}

/// Connection settings fail as documented: a malformed URL is `InvalidConfig`, a closed port
/// is `Backend` quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_are_typed() {
    let err = RedisStore::builder("definitely not a url").connect().await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    let started = std::time::Instant::now();
    let err = RedisStore::builder("redis://127.0.0.1:1/")
        .with_connection_timeout(Duration::from_millis(200))
        .with_response_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend { backend: "redis", op: "connect", .. }), "{err:?}");
    assert!(err.source().is_some());
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}
