//! `RedisStore` on a single `redis-server`: what the shared suite cannot see (round trips, key
//! layout, exact metadata sizes, damaged data, prefixes, real expiry, connection settings).
#![cfg(all(feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]
#![allow(clippy::print_stderr, reason = "the round-trip test prints its table")]

use std::error::Error as _;
use std::time::Duration;

use lgadk_core::session::metadata_size;
use lgadk_core::{
    Checkpointer, Clock, Error, Interaction, ManualClock, Message, Metadata, MetadataUpdate, NewCheckpoint, NewSession,
    OpId, Page, SessionId, SessionStore, SystemClock, Timeout, TurnCommit, TurnStore, UserId,
};
use lgadk_session::RedisStore;
use lgadk_session::testing::{Monitor, MonitoredCommand, RedisServer};
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
    NewCheckpoint { state: json!({"step": step}), step, node: Some("chat".into()), messages, op: None, log_start: 0 }
}

/// The top-level commands (not those scripts ran) executed since the last call, by name.
/// A turn's commit: a checkpoint with two messages on `expected`, an interaction, a merge.
fn turn(step: u64, expected: u64) -> TurnCommit {
    TurnCommit {
        checkpoint: snapshot(step, vec![Message::user("q"), Message::assistant("a")]).with_op_id(OpId::new()),
        expected_version: expected,
        interaction: Some(Interaction::tokens(3, 5).with_op_id(OpId::new())),
        merge_metadata: Some(meta(json!({"turn": step}))),
    }
}

fn evalsha_calls(server: &RedisServer) -> u64 {
    let stats = server.command(&["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// Every operation costs the round trips the module docs state: one EVALSHA for reads and
/// writes of one session; listing and purge read the index first (their scripts must name
/// every key they touch); `end` of a session with an owner asks the script for the owner's
/// index first. The table is printed for the notes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_costs_its_documented_round_trips() {
    let Some(server) = RedisServer::start() else { return };
    let clock = ManualClock::starting_now();
    let store = store(&server, "rt", clock.clone()).await;
    let alice = user("alice");

    // Warm up: load every script once, so NOSCRIPT reloads do not count. The first create
    // through a store sweeps: a second store's sweeps alice's index, which holds `warm`.
    let warm = store.create(NewSession::for_user(alice.clone()).with_id(sid("warm"))).await.unwrap().id;
    let sweeper = self::store(&server, "rt", clock.clone()).await;
    sweeper.create(NewSession::for_user(alice.clone())).await.unwrap();
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
    store.begin_turn(&warm, None).await.unwrap();
    store.commit_turn(&warm, turn(2, 1)).await.unwrap();
    store.create(NewSession::default().with_timeout(Timeout::After(Duration::ZERO))).await.unwrap();
    clock.advance(Duration::from_millis(1));
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    store.end(&warm).await.unwrap();

    let mut monitor = Monitor::start(&server);
    monitor.client_commands_since_last(&server);
    let mut table = Vec::new();
    macro_rules! measure {
        ($name:literal, $call:expr) => {{
            let before = evalsha_calls(&server);
            let result = $call;
            let after = evalsha_calls(&server);
            let commands = monitor.client_commands_since_last(&server);
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
    // A graph turn: one read (with the latest checkpoint and log when the cache is stale or
    // empty), one commit (checkpoint, log, interaction and metadata merge).
    measure!("begin_turn (cache current)", store.begin_turn(&id, Some(1)).await.unwrap());
    measure!("begin_turn (no cache)", store.begin_turn(&id, None).await.unwrap());
    measure!("commit_turn", store.commit_turn(&id, turn(2, 1)).await.unwrap());
    measure!("checkpoint delete", store.delete(&id).await.unwrap());
    measure!("end (owner)", store.end(&id).await.unwrap());
    let anonymous = store.create(NewSession::default()).await.unwrap().id;
    monitor.client_commands_since_last(&server); // not measured: the create above
    measure!("end (no owner)", store.end(&anonymous).await.unwrap());
    for _ in 0..3 {
        store.create(NewSession::for_user(alice.clone()).with_timeout(Timeout::After(Duration::ZERO))).await.unwrap();
    }
    clock.advance(Duration::from_millis(1));
    monitor.client_commands_since_last(&server); // not measured: the creates above
    let purged = measure!("purge_expired (3 due)", store.purge_expired().await.unwrap());
    assert_eq!(purged, 3);
    measure!("purge_expired (none due)", store.purge_expired().await.unwrap());
    // Every 8th create through a store also reads both indexes for a sweep, and runs the sweep
    // script when they hold entries to check: first for users with no other session, then
    // for alice, who has one.
    for (name, owner) in
        [("create (every 8th: sweep, nothing found)", None), ("create (every 8th: sweep)", Some(&alice))]
    {
        if let Some(owner) = owner {
            store.create(NewSession::for_user(owner.clone())).await.unwrap();
            monitor.client_commands_since_last(&server); // not measured
        }
        let mut ticks = 0;
        for round in 0..8 {
            let owner = owner.cloned().unwrap_or_else(|| user(&format!("new-{round}")));
            let before = evalsha_calls(&server);
            store.create(NewSession::for_user(owner)).await.unwrap();
            let evalsha = evalsha_calls(&server) - before;
            let mut commands = monitor.client_commands_since_last(&server);
            commands.sort();
            if commands.len() > 1 {
                ticks += 1;
                table.push((name, commands, evalsha));
            } else {
                assert_eq!((commands, evalsha), (vec!["evalsha".to_owned()], 1));
            }
        }
        assert_eq!(ticks, 1, "one create in 8 sweeps");
    }

    eprintln!("| operation | top-level commands | EVALSHA (commandstats) |");
    for (name, commands, evalsha) in &table {
        eprintln!("| {name} | {} | {evalsha} |", commands.join(" "));
    }
    for (name, commands, evalsha) in &table {
        let expected: &[&str] = match *name {
            "checkpoint delete" => &["del"],
            "list_user_sessions" => &["zrevrangebylex", "evalsha"],
            "end (owner)" => &["evalsha", "evalsha"],
            "create (every 8th: sweep, nothing found)" => &["evalsha", "zrangebylex", "zrangebyscore"],
            "create (every 8th: sweep)" => &["evalsha", "evalsha", "zrangebylex", "zrangebyscore"],
            "purge_expired (3 due)" => &["zrangebyscore", "evalsha"],
            "purge_expired (none due)" => &["zrangebyscore"],
            _ => &["evalsha"],
        };
        assert_eq!(commands, expected, "{name}");
        let scripts = expected.iter().filter(|command| **command == "evalsha").count();
        assert_eq!(*evalsha, u64::try_from(scripts).unwrap(), "{name}: EVALSHA calls");
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
    store.track_interaction(&id, huge.clone()).await.unwrap();
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

/// The keys a command touches, as the server itself reads them (`COMMAND GETKEYS`); none for
/// commands without key arguments.
fn touched_keys(conn: &mut redis::Connection, command: &MonitoredCommand) -> Vec<String> {
    let mut getkeys = redis::cmd("COMMAND");
    getkeys.arg("GETKEYS");
    for arg in &command.args {
        getkeys.arg(arg);
    }
    getkeys.query(conn).unwrap_or_default()
}

/// Checks every script call among `commands`: each key a command inside the script touched
/// must be one of the KEYS of the EVALSHA that ran it. Returns the number of script calls
/// and one line per undeclared key.
fn undeclared_keys(conn: &mut redis::Connection, op: &str, commands: &[MonitoredCommand]) -> (usize, Vec<String>) {
    let calls = Monitor::script_calls(commands);
    let mut found = Vec::new();
    for call in &calls {
        let declared = call.call.declared_keys().unwrap_or_default();
        for command in &call.commands {
            for key in touched_keys(conn, command) {
                if !declared.contains(&key) {
                    found.push(format!("{op}: {} {key} (declared {declared:?})", command.args[0]));
                }
            }
        }
    }
    (calls.len(), found)
}

/// Redis' scripting contract: a script touches only the keys it receives in KEYS (servers and
/// proxies that route or check by key depend on it). Every script, on every path that reaches
/// another key (index entries, dangling entries, a recreated session, purge, sweeps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_touch_only_the_keys_they_declare() {
    let Some(server) = RedisServer::start() else { return };
    let clock = ManualClock::starting_now();
    let store = store(&server, "kd", clock.clone()).await;
    let mut conn = raw(&server);
    let (alice, bob) = (user("alice"), user("bob"));
    let ten = Timeout::After(Duration::from_secs(10));
    let mut monitor = Monitor::start(&server);
    let mut report: Vec<(&str, usize, Vec<String>)> = Vec::new();
    macro_rules! check {
        ($op:literal, $call:expr) => {{
            monitor.commands_since_last(&server);
            let result = $call;
            let commands = monitor.commands_since_last(&server);
            let (calls, found) = undeclared_keys(&mut conn, $op, &commands);
            report.push(($op, calls, found));
            result
        }};
    }

    let new = NewSession::for_user(alice.clone()).with_id(sid("a1")).with_metadata(meta(json!({"k": 1})));
    let a1 = check!("create (user)", store.create(new.with_timeout(ten)).await.unwrap().id);
    let anon = check!("create (no user)", store.create(NewSession::default().with_id(sid("n1"))).await.unwrap().id);
    check!("get", store.get(&a1).await.unwrap());
    check!("exists", store.exists(&a1).await.unwrap());
    check!("touch", store.touch(&a1).await.unwrap());
    check!("track_interaction", store.track_interaction(&a1, Interaction::tokens(1, 2)).await.unwrap());
    check!("update_metadata", store.update_metadata(&a1, MetadataUpdate::Merge(meta(json!({"x": 2})))).await.unwrap());
    check!("checkpoint version", store.version(&a1).await.unwrap());
    check!("checkpoint put", store.put(&a1, snapshot(1, vec![Message::user("hi")]), 0).await.unwrap());
    check!("checkpoint latest", store.latest(&a1).await.unwrap());
    check!("checkpoint list", store.list(&a1, 5).await.unwrap());
    check!("checkpoint messages", store.messages(&a1, 0..5).await.unwrap());
    check!("begin_turn (warm)", store.begin_turn(&a1, Some(1)).await.unwrap());
    check!("begin_turn (cold)", store.begin_turn(&a1, None).await.unwrap());
    check!("commit_turn", store.commit_turn(&a1, turn(2, 1)).await.unwrap());
    check!("commit_turn (no interaction, no metadata)", {
        store.commit_turn(&a1, TurnCommit { interaction: None, merge_metadata: None, ..turn(3, 2) }).await.unwrap()
    });

    // A dangling entry (as after Redis dropped the session by TTL) that listing must judge.
    let lost = store.create(NewSession::for_user(alice.clone()).with_timeout(ten)).await.unwrap().id;
    let _: () = cmd(&mut conn, &["DEL", &format!("kd:{{{lost}}}:s")]);
    let listed = check!("list_user_sessions", store.list_user_sessions(&alice, Page::first(10)).await.unwrap());
    assert_eq!(listed.ids, std::slice::from_ref(&a1));

    check!("end (user)", store.end(&a1).await.unwrap());
    check!("end (no user)", store.end(&anon).await.unwrap());

    // An expired session recreated with the same id for another user.
    let short = Timeout::After(Duration::from_secs(1));
    store.create(NewSession::for_user(alice.clone()).with_id(sid("re")).with_timeout(short)).await.unwrap();
    clock.advance(Duration::from_secs(2));
    check!("create (replaces another user's)", {
        store.create(NewSession::for_user(bob.clone()).with_id(sid("re")).with_timeout(ten)).await.unwrap()
    });

    // Purge: one expired, one extended (re-filed), one Redis already dropped.
    let doomed = store.create(NewSession::for_user(alice.clone()).with_timeout(short)).await.unwrap().id;
    let extended = store.create(NewSession::for_user(alice.clone()).with_timeout(short)).await.unwrap().id;
    let dropped = store.create(NewSession::for_user(bob.clone()).with_timeout(short)).await.unwrap().id;
    let _: () = cmd(&mut conn, &["DEL", &format!("kd:{{{dropped}}}:s")]);
    clock.advance(Duration::from_millis(900));
    store.touch(&extended).await.unwrap();
    clock.advance(Duration::from_millis(200));
    assert_eq!(check!("purge_expired", store.purge_expired().await.unwrap()), 1);
    assert!(store.get(&doomed).await.unwrap().is_none());

    // Sweeps: alice's index holds an entry whose session Redis dropped, carol's session is
    // gone too and overdue by more than the grace; one of the next 8 creates sweeps both.
    let dangling = store.create(NewSession::for_user(alice.clone()).with_timeout(ten)).await.unwrap().id;
    let carols = store.create(NewSession::for_user(user("carol")).with_timeout(short)).await.unwrap().id;
    for id in [&dangling, &carols] {
        let _: () = cmd(&mut conn, &["DEL", &format!("kd:{{{id}}}:s")]);
    }
    clock.advance(Duration::from_secs(11 * 60));
    check!("create (8, one sweeps)", {
        for _ in 0..8 {
            store.create(NewSession::for_user(alice.clone()).with_timeout(ten)).await.unwrap();
        }
    });
    assert_eq!(cmd::<i64>(&mut conn, &["EXISTS", "kd:u:{carol}"]), 0, "the sweep dropped carol's entry");
    let alice_entries: Vec<String> = cmd(&mut conn, &["ZRANGE", "kd:u:{alice}", "0", "-1"]);
    assert!(!alice_entries.iter().any(|entry| entry.ends_with(dangling.as_str())), "{alice_entries:?}");

    let mut failures = Vec::new();
    for (op, calls, found) in &report {
        eprintln!("{op}: {calls} script call(s), {} undeclared key(s)", found.len());
        if *calls == 0 && !op.starts_with("purge") {
            failures.push(format!("{op}: ran no script"));
        }
        failures.extend(found.iter().cloned());
    }
    assert!(failures.is_empty(), "scripts touched keys they did not declare:\n{}", failures.join("\n"));
}

/// Index growth without a reaper: sessions come and go (Redis drops their keys by TTL, as the
/// garbage-collection grace allows) while nothing lists or purges. The sweeps that every 8th
/// create runs keep both indexes near the sessions that still exist, and remove the indexes
/// of users who never come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_stay_bounded_without_a_reaper() {
    const ROUNDS: usize = 200;
    const STEP: Duration = Duration::from_secs(10);
    // Redis drops a session's keys `timeout + 10 min` (601 s) after its last write: 61 rounds.
    const KEPT_ROUNDS: usize = 61;
    let Some(server) = RedisServer::start() else { return };
    let clock = ManualClock::starting_now();
    let store = store(&server, "grow", clock.clone()).await;
    let mut conn = raw(&server);
    let alice = user("alice");
    let timeout = Timeout::After(Duration::from_secs(1));
    let mut created = Vec::new();
    for round in 0..ROUNDS {
        // Redis' TTL: everything of the sessions created KEPT_ROUNDS rounds ago is gone now.
        if let Some(expired) = round.checked_sub(KEPT_ROUNDS).and_then(|old| created.get(old)) {
            for id in expired {
                for suffix in ["s", "m", "cp", "h"] {
                    let _: () = cmd(&mut conn, &["DEL", &format!("grow:{{{id}}}:{suffix}")]);
                }
            }
        }
        let regular = store.create(NewSession::for_user(alice.clone()).with_timeout(timeout)).await.unwrap().id;
        let once = user(&format!("once-{round}"));
        let visitor = store.create(NewSession::for_user(once).with_timeout(timeout)).await.unwrap().id;
        created.push([regular, visitor]);
        clock.advance(STEP);
    }
    let present = 2 * KEPT_ROUNDS;
    let expiry: usize = cmd(&mut conn, &["ZCARD", "grow:x"]);
    let regular: usize = cmd(&mut conn, &["ZCARD", "grow:u:{alice}"]);
    let visitors = cmd::<Vec<String>>(&mut conn, &["KEYS", "grow:u:{once-*"]).len();
    eprintln!(
        "after {ROUNDS} rounds ({} sessions created, {present} still in Redis, none live): expiry index {expiry}, \
         alice's index {regular}, one-time users' indexes {visitors}",
        2 * ROUNDS
    );
    // Each sweep checks 16 entries per index, every 8 creates (4 rounds), and a round adds two
    // entries: what Redis dropped leaves the indexes within a few sweeps.
    assert!(expiry <= present + 16, "expiry index: {expiry} entries for {present} sessions");
    assert!(regular <= KEPT_ROUNDS + 16, "alice's index: {regular} entries");
    assert!(visitors <= KEPT_ROUNDS + 16, "{visitors} one-time users' indexes for {KEPT_ROUNDS} sessions");
    // Nothing live was lost on the way, and purge still counts what expired.
    let live = store.create(NewSession::for_user(alice.clone()).with_timeout(Timeout::Never)).await.unwrap().id;
    assert_eq!(store.list_user_sessions(&alice, Page::first(5)).await.unwrap().ids, [live]);
    clock.advance(STEP);
    let purged = store.purge_expired().await.unwrap();
    assert!(purged >= present - 2 && purged <= present, "purge removed {purged} of {present}");
}
