//! `RedisMemoryStore` beyond the shared suite: its key layout, one call per operation, every
//! key a script touches declared, listing that reads what it lists, puts that sweep expired
//! items, and damaged records reported as such.
#![cfg(all(feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::time::Duration;

use lgadk_core::memory::{ListRequest, MemoryKey, MemoryStore, Namespace, SearchRequest};
use lgadk_core::serde_json::json;
use lgadk_core::{Error, ManualClock};
use lgadk_session::testing::{Monitor, MonitoredCommand, RedisServer};
use lgadk_session::{RedisMemoryStore, RedisStore};

fn ns(segments: &[&str]) -> Namespace {
    Namespace::new(segments).unwrap()
}

fn key(raw: &str) -> MemoryKey {
    MemoryKey::parse(raw).unwrap()
}

async fn store_on(server: &RedisServer, clock: &ManualClock) -> RedisMemoryStore {
    let sessions =
        RedisStore::builder(server.url()).with_prefix("app").with_clock(clock.clone()).connect().await.unwrap();
    RedisMemoryStore::on(&sessions).build()
}

const KEYS: [&str; 4] = ["app:mem:{app}:i", "app:mem:{app}:r", "app:mem:{app}:e", "app:mem:{app}:x"];

/// The commands sent by the client (not from inside a script), by name.
fn client_calls(commands: &[MonitoredCommand]) -> Vec<String> {
    commands.iter().filter(|c| !c.from_script).map(MonitoredCommand::name).collect()
}

/// Each operation is one call (warm: the scripts are loaded on first use); every command a
/// script runs names a key the call declared; the store writes only its four keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_per_operation_on_declared_keys() {
    let Some(server) = RedisServer::start() else { return };
    let clock = ManualClock::starting_now();
    let store = store_on(&server, &clock).await;
    let prefs = ns(&["users", "alice", "prefs"]);
    // Load every script once (NOSCRIPT, SCRIPT LOAD, EVALSHA on first use).
    store.put(&prefs, &key("warm"), json!(1), Some(Duration::from_secs(1))).await.unwrap();
    store.delete(&prefs, &key("warm")).await.unwrap();
    store.list(ListRequest::everything()).await.unwrap();
    store.search(SearchRequest::everywhere()).await.unwrap();
    store.purge_expired().await.unwrap();

    let mut monitor = Monitor::start(&server);
    monitor.commands_since_last(&server);
    let mut report = Vec::new();
    macro_rules! check {
        ($op:literal, $call:expr) => {{
            let result = $call;
            let commands = monitor.commands_since_last(&server);
            report.push(($op, client_calls(&commands)));
            for call in Monitor::script_calls(&commands) {
                let declared = call.call.declared_keys().unwrap().to_vec();
                for command in &call.commands {
                    let touched = command.args.get(1).cloned().unwrap_or_default();
                    assert!(declared.contains(&touched), "{}: {command:?} touches an undeclared key", $op);
                }
            }
            result
        }};
    }
    check!("put", store.put(&prefs, &key("theme"), json!({"v": "dark"}), Some(Duration::from_secs(60))).await.unwrap());
    check!("get", store.get(&prefs, &key("theme")).await.unwrap());
    check!("list", store.list(ListRequest::under(ns(&["users"]))).await.unwrap());
    check!("search", store.search(SearchRequest::under(ns(&["users"])).with_query("dark")).await.unwrap());
    check!("delete", store.delete(&prefs, &key("theme")).await.unwrap());
    check!("purge_expired", store.purge_expired().await.unwrap());
    let expected = [
        ("put", vec!["evalsha"]),
        ("get", vec!["hget"]),
        ("list", vec!["evalsha"]),
        ("search", vec!["evalsha"]),
        ("delete", vec!["evalsha"]),
        ("purge_expired", vec!["evalsha"]),
    ];
    let expected: Vec<(&str, Vec<String>)> =
        expected.into_iter().map(|(op, calls)| (op, calls.into_iter().map(str::to_owned).collect())).collect();
    assert_eq!(report, expected);

    store.put(&prefs, &key("theme"), json!({"v": "dark"}), Some(Duration::from_secs(60))).await.unwrap();
    let exists: Vec<String> = KEYS.iter().map(|name| server.command(&["EXISTS", name]).unwrap()).collect();
    assert_eq!(exists, ["1", "1", "0", "1"], "index, records, expiry (no embedder: no embeddings)");
    assert_eq!(server.command(&["DBSIZE"]).unwrap(), "3", "nothing else");
}

/// Listing a small namespace next to a large one reads only what it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_reads_in_proportion_to_the_page() {
    let Some(server) = RedisServer::start() else { return };
    let clock = ManualClock::starting_now();
    let store = store_on(&server, &clock).await;
    for i in 0..300 {
        store.put(&ns(&["big"]), &key(&format!("k{i:03}")), json!(i), None).await.unwrap();
    }
    for i in 0..3 {
        store.put(&ns(&["small"]), &key(&format!("k{i}")), json!(i), None).await.unwrap();
    }
    store.list(ListRequest::everything().with_limit(1)).await.unwrap();
    let mut monitor = Monitor::start(&server);
    monitor.commands_since_last(&server);
    let page = store.list(ListRequest::under(ns(&["small"])).with_limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let commands = monitor.commands_since_last(&server);
    let in_script: Vec<&MonitoredCommand> = commands.iter().filter(|c| c.from_script).collect();
    let names: Vec<String> = in_script.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["zrangebylex", "hmget"], "one range read, one read of the two records");
    assert_eq!(in_script[1].args.len(), 2 + 2, "HMGET key plus the two members listed");
    let big_page = store.list(ListRequest::under(ns(&["big"])).with_limit(250)).await.unwrap();
    assert_eq!(big_page.items.len(), 250);
    let rest =
        store.list(ListRequest::under(ns(&["big"])).with_limit(250).after(big_page.next.unwrap())).await.unwrap();
    assert_eq!((rest.items.len(), rest.next), (50, None));
}

/// Without any purge, puts remove up to 16 expired items each, so storage follows the live set
/// while anything writes; reads never remove anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_sweep_expired_items() {
    let Some(server) = RedisServer::start() else { return };
    let clock = ManualClock::starting_now();
    let store = store_on(&server, &clock).await;
    let scratch = ns(&["scratch"]);
    for i in 0..40 {
        store.put(&scratch, &key(&format!("k{i}")), json!(i), Some(Duration::from_secs(1))).await.unwrap();
    }
    clock.advance(Duration::from_secs(2));
    assert!(store.list(ListRequest::under(scratch.clone())).await.unwrap().items.is_empty());
    assert_eq!(server.command(&["HLEN", KEYS[1]]).unwrap(), "40", "reads remove nothing");
    store.put(&ns(&["other"]), &key("a"), json!(1), None).await.unwrap();
    assert_eq!(server.command(&["HLEN", KEYS[1]]).unwrap(), "25", "40 - 16 swept + 1 put");
    store.put(&ns(&["other"]), &key("b"), json!(1), None).await.unwrap();
    assert_eq!(server.command(&["ZCARD", KEYS[3]]).unwrap(), "8");
    assert_eq!(store.purge_expired().await.unwrap(), 8);
    assert_eq!(server.command(&["ZCARD", KEYS[0]]).unwrap(), "2");
}

/// A record another program wrote in another format is `CorruptMemory` naming the item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_corrupt() {
    let Some(server) = RedisServer::start() else { return };
    let clock = ManualClock::starting_now();
    let store = store_on(&server, &clock).await;
    let space = ns(&["users", "bob"]);
    store.put(&space, &key("ok"), json!({"fine": true}), None).await.unwrap();
    let member = "users\u{1f}bob\u{1e}bad";
    server.command(&["HSET", KEYS[1], member, "not a record"]).unwrap();
    server.command(&["ZADD", KEYS[0], "0", member]).unwrap();
    let err = store.get(&space, &key("bad")).await.unwrap_err();
    assert!(
        matches!(&err, Error::CorruptMemory { namespace, key, .. } if namespace == "users/bob" && key == "bad"),
        "{err:?}"
    );
    let err = store.list(ListRequest::under(space.clone())).await.unwrap_err();
    assert!(matches!(err, Error::CorruptMemory { .. }), "{err:?}");
    assert!(store.delete(&space, &key("bad")).await.unwrap(), "a damaged item can still be deleted");
    assert_eq!(store.list(ListRequest::under(space)).await.unwrap().items.len(), 1);
}
