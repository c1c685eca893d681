//! `RedisStore` on a 3-master Redis Cluster: slots of the key layout, and how listing and
//! purge repair index entries that the non-atomic cluster paths can leave behind.
#![cfg(all(feature = "redis-cluster", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::time::Duration;

use lgadk_core::{
    Checkpointer, ManualClock, Message, NewCheckpoint, NewSession, Page, SessionId, SessionStore, Timeout, UserId,
};
use lgadk_session::RedisStore;
use lgadk_session::testing::RedisCluster;

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
