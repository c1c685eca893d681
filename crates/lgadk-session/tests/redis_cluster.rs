//! `RedisStore` on a 3-master Redis Cluster: slots of the key layout, and how listing and
//! purge repair index entries that the non-atomic cluster paths can leave behind.
#![cfg(all(feature = "redis-cluster", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::time::Duration;

use lgadk_core::{
    Checkpointer, Interaction, ManualClock, Message, NewCheckpoint, NewSession, Page, SessionId, SessionStore, Timeout,
    UserId,
};
use lgadk_session::RedisStore;
use lgadk_session::testing::{Monitor, MonitoredCommand, RedisCluster};

async fn start() -> Option<(RedisCluster, RedisStore, ManualClock, redis::cluster::ClusterConnection)> {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap()?;
    let clock = ManualClock::starting_now();
    let store =
        RedisStore::cluster_builder(cluster.urls()).with_prefix("c").with_clock(clock.clone()).connect().await.unwrap();
    let raw = redis::cluster::ClusterClient::new(cluster.urls()).unwrap().get_connection().unwrap();
    Some((cluster, store, clock, raw))
}

fn user(raw: &str) -> UserId {
    UserId::parse(raw).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_keys_share_one_slot_and_indexes_live_elsewhere() {
    let Some((cluster, store, _clock, _raw)) = start().await else { return };
    let id = SessionId::parse("slot-test").unwrap();
    store.create(NewSession::for_user(user("alice")).with_id(id.clone())).await.unwrap();
    let checkpoint = NewCheckpoint { messages: vec![Message::user("hi")], ..NewCheckpoint::default() };
    store.put(&id, checkpoint, 0).await.unwrap();
    let slot = cluster.slot_of("c:{slot-test}:s");
    for suffix in ["m", "cp", "h"] {
        assert_eq!(cluster.slot_of(&format!("c:{{slot-test}}:{suffix}")), slot, "{suffix}");
    }
    assert_ne!(cluster.slot_of("c:u:{alice}"), slot);
    assert_ne!(cluster.slot_of("c:x"), slot);
    assert_eq!(store.messages(&id, 0..5).await.unwrap(), [Message::user("hi")]);
}

/// An entry whose session is missing is left alone while its `create` may be in flight, and
/// removed after the repair grace; an entry pointing at someone else's session goes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_repairs_entries_that_point_at_nothing() {
    let Some((_cluster, store, clock, mut raw)) = start().await else { return };
    let alice = user("alice");
    let kept = store.create(NewSession::for_user(alice.clone()).with_timeout(Timeout::Never)).await.unwrap().id;
    clock.advance(Duration::from_millis(1));
    let lost = store.create(NewSession::for_user(alice.clone()).with_timeout(Timeout::Never)).await.unwrap().id;
    // As if the session write had failed after its index entries were written.
    let _: () = redis::cmd("DEL").arg(format!("c:{{{lost}}}:s")).query(&mut raw).unwrap();
    // Bob's index claims alice's session.
    let alice_member: Vec<String> = redis::cmd("ZRANGE").arg("c:u:{alice}").arg(0).arg(0).query(&mut raw).unwrap();
    let _: () = redis::cmd("ZADD").arg("c:u:{bob}").arg(0).arg(&alice_member[0]).query(&mut raw).unwrap();

    let zcard = |raw: &mut redis::cluster::ClusterConnection, key: &str| -> i64 {
        redis::cmd("ZCARD").arg(key).query(raw).unwrap()
    };
    assert_eq!(store.list_user_sessions(&alice, Page::first(10)).await.unwrap().ids, std::slice::from_ref(&kept));
    assert_eq!(zcard(&mut raw, "c:u:{alice}"), 2, "a recent entry may belong to a create in flight");
    assert!(store.list_user_sessions(&user("bob"), Page::first(10)).await.unwrap().ids.is_empty());
    assert_eq!(zcard(&mut raw, "c:u:{bob}"), 0, "an entry for another user's session goes at once");

    clock.advance(Duration::from_secs(61));
    assert_eq!(store.list_user_sessions(&alice, Page::first(10)).await.unwrap().ids, [kept]);
    assert_eq!(zcard(&mut raw, "c:u:{alice}"), 1, "after the grace the dangling entry is removed");
}

/// Purge on a cluster: expired sessions are removed with both index entries; an entry whose
/// session Redis already dropped is cleaned without being counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_cleans_both_indexes_across_slots() {
    let Some((_cluster, store, clock, mut raw)) = start().await else { return };
    let alice = user("alice");
    let short = NewSession::for_user(alice.clone()).with_timeout(Timeout::After(Duration::from_secs(1)));
    let mut doomed = Vec::new();
    for _ in 0..5 {
        doomed.push(store.create(short.clone()).await.unwrap().id);
    }
    let _: () = redis::cmd("DEL").arg(format!("c:{{{}}}:s", doomed[0])).query(&mut raw).unwrap();
    clock.advance(Duration::from_secs(120));
    assert_eq!(store.purge_expired().await.unwrap(), 4);
    for key in ["c:x", "c:u:{alice}"] {
        let left: i64 = redis::cmd("ZCARD").arg(key).query(&mut raw).unwrap();
        assert_eq!(left, 0, "{key}");
    }
    for id in &doomed {
        let exists: i64 = redis::cmd("EXISTS").arg(format!("c:{{{id}}}:s")).query(&mut raw).unwrap();
        assert_eq!(exists, 0);
    }
}

/// Each key the script commands among `commands` touched (per `COMMAND GETKEYS`) that the
/// EVALSHA running them did not declare.
fn undeclared_keys(conn: &mut redis::Connection, op: &str, commands: &[MonitoredCommand]) -> (usize, Vec<String>) {
    let calls = Monitor::script_calls(commands);
    let mut found = Vec::new();
    for call in &calls {
        let declared = call.call.declared_keys().unwrap_or_default();
        for command in &call.commands {
            let mut getkeys = redis::cmd("COMMAND");
            getkeys.arg("GETKEYS").arg(&command.args);
            let keys: Vec<String> = getkeys.query(conn).unwrap_or_default();
            for key in keys.into_iter().filter(|key| !declared.contains(key)) {
                found.push(format!("{op}: {} {key} (declared {declared:?})", command.args[0]));
            }
        }
    }
    (calls.len(), found)
}

/// On a cluster too, scripts touch only their KEYS (which share the session's slot); the
/// cluster-only script (`purge_one`) included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scripts_touch_only_the_keys_they_declare() {
    let Some((cluster, store, clock, mut raw)) = start().await else { return };
    let mut getkeys = redis::Client::open(cluster.urls()[0].as_str()).unwrap().get_connection().unwrap();
    let mut monitors: Vec<Monitor> = cluster.nodes().iter().map(Monitor::start).collect();
    let drain = |monitors: &mut Vec<Monitor>| -> Vec<MonitoredCommand> {
        monitors.iter_mut().zip(cluster.nodes()).flat_map(|(monitor, node)| monitor.commands_since_last(node)).collect()
    };
    let mut report: Vec<(&str, usize, Vec<String>)> = Vec::new();
    macro_rules! check {
        ($op:literal, $call:expr) => {{
            drain(&mut monitors);
            let result = $call;
            let commands = drain(&mut monitors);
            let (calls, found) = undeclared_keys(&mut getkeys, $op, &commands);
            report.push(($op, calls, found));
            result
        }};
    }
    let alice = user("alice");
    let short = Timeout::After(Duration::from_secs(1));
    let id = check!("create", store.create(NewSession::for_user(alice.clone()).with_timeout(short)).await.unwrap().id);
    check!("track_interaction", store.track_interaction(&id, Interaction::tokens(1, 1)).await.unwrap());
    let commit = lgadk_core::TurnCommit {
        checkpoint: NewCheckpoint {
            state: serde_json::json!({"s": 1}),
            step: 1,
            node: None,
            messages: vec![Message::user("q")],
            op: Some(lgadk_core::OpId::new()),
            log_start: 0,
        },
        expected_version: 0,
        interaction: Some(Interaction::tokens(1, 1).with_op_id(lgadk_core::OpId::new())),
        merge_metadata: Some(lgadk_core::Metadata::from_iter([("k".to_owned(), serde_json::json!(1))])),
    };
    check!("commit_turn", lgadk_core::TurnStore::commit_turn(&store, &id, commit).await.unwrap());
    check!("begin_turn", lgadk_core::TurnStore::begin_turn(&store, &id, None).await.unwrap());
    check!("list_user_sessions", store.list_user_sessions(&alice, Page::first(5)).await.unwrap());
    check!("end", store.end(&id).await.unwrap());
    let doomed = store.create(NewSession::for_user(alice.clone()).with_timeout(short)).await.unwrap().id;
    let extended = store.create(NewSession::for_user(alice.clone()).with_timeout(short)).await.unwrap().id;
    let dropped = store.create(NewSession::for_user(alice.clone()).with_timeout(short)).await.unwrap().id;
    let _: () = redis::cmd("DEL").arg(format!("c:{{{dropped}}}:s")).query(&mut raw).unwrap();
    clock.advance(Duration::from_millis(900));
    store.touch(&extended).await.unwrap();
    clock.advance(Duration::from_millis(200));
    assert_eq!(check!("purge_expired", store.purge_expired().await.unwrap()), 1);
    assert!(store.get(&doomed).await.unwrap().is_none());

    let mut failures = Vec::new();
    for (op, calls, found) in &report {
        // Listing on a cluster runs plain commands only.
        if *calls == 0 && *op != "list_user_sessions" {
            failures.push(format!("{op}: ran no script"));
        }
        failures.extend(found.iter().cloned());
    }
    assert!(failures.is_empty(), "scripts touched keys they did not declare:\n{}", failures.join("\n"));
}

/// Without a reaper, one create in 8 sweeps on a cluster too: entries whose session Redis
/// dropped leave the user index and the expiry index, and an idle user's index goes with
/// its last entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_sweep_indexes_across_slots() {
    let Some((_cluster, store, clock, mut raw)) = start().await else { return };
    let alice = user("alice");
    let hour = Timeout::After(Duration::from_secs(3600));
    let short = Timeout::After(Duration::from_secs(1));
    let dangling = store.create(NewSession::for_user(alice.clone()).with_timeout(hour)).await.unwrap().id;
    let carols = store.create(NewSession::for_user(user("carol")).with_timeout(short)).await.unwrap().id;
    for id in [&dangling, &carols] {
        let _: () = redis::cmd("DEL").arg(format!("c:{{{id}}}:s")).query(&mut raw).unwrap();
    }
    clock.advance(Duration::from_secs(11 * 60));
    for _ in 0..8 {
        store.create(NewSession::for_user(alice.clone()).with_timeout(hour)).await.unwrap();
    }
    let carol_index: i64 = redis::cmd("EXISTS").arg("c:u:{carol}").query(&mut raw).unwrap();
    assert_eq!(carol_index, 0, "carol's entry was swept with her expiry entry");
    let expiry: Vec<String> = redis::cmd("ZRANGE").arg("c:x").arg(0).arg(-1).query(&mut raw).unwrap();
    assert!(!expiry.iter().any(|entry| entry.contains(carols.as_str())), "{expiry:?}");
    let entries: Vec<String> = redis::cmd("ZRANGE").arg("c:u:{alice}").arg(0).arg(-1).query(&mut raw).unwrap();
    assert_eq!(entries.len(), 8, "the dangling entry went: {entries:?}");
}
