//! JSON nested 100,000 levels deep, built in code, is refused with a typed error by the
//! manager and by each store used directly, on a 2 MiB thread: the checks and the drop of the
//! refused value never recurse per level. The scenario runs in a child process, so a stack
//! overflow (which aborts) fails this test instead of killing the test runner.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::env;
use std::process::Command;

use lgadk_core::{
    Checkpointer, Error, Message, Metadata, MetadataUpdate, NewCheckpoint, NewSession, SessionStore, ToolCall,
};
use lgadk_session::{InMemoryStore, SessionManager};
use serde_json::Value;

const CHILD: &str = "LGADK_DEEP_JSON_CHILD";
const LEVELS: usize = 100_000;
const STACK: usize = 2 * 1024 * 1024;

fn nested(levels: usize) -> Value {
    (0..levels).fold(Value::Null, |inner, _| Value::Array(vec![inner]))
}

fn deep_metadata() -> Metadata {
    Metadata::from_iter([("deep".to_owned(), nested(LEVELS))])
}

fn deep_checkpoint() -> NewCheckpoint {
    let mut call = Message::assistant("");
    call.tool_calls.push(ToolCall { id: "c".into(), name: "t".into(), arguments: nested(LEVELS) });
    NewCheckpoint { state: nested(LEVELS), step: 1, node: None, messages: vec![call], op: None, log_start: 0 }
}

fn assert_too_deep<T: std::fmt::Debug>(result: lgadk_core::Result<T>, what: &str) {
    match result {
        Err(Error::NestingTooDeep { .. }) => {}
        other => panic!("{what}: expected NestingTooDeep, got {other:?}"),
    }
}

/// Every write path that takes user JSON, against `store` directly.
async fn refuse_on_store<S: SessionStore + Checkpointer>(store: &S) {
    assert_too_deep(store.create(NewSession::default().with_metadata(deep_metadata())).await, "store create");
    let id = store.create(NewSession::default()).await.unwrap().id;
    assert_too_deep(store.update_metadata(&id, MetadataUpdate::Merge(deep_metadata())).await, "store merge");
    assert_too_deep(store.update_metadata(&id, MetadataUpdate::Replace(deep_metadata())).await, "store replace");
    assert_too_deep(store.put(&id, deep_checkpoint(), 0).await, "checkpoint put");
    let state = NewCheckpoint { state: nested(LEVELS), ..NewCheckpoint::default() };
    assert_too_deep(store.put(&id, state, 0).await, "checkpoint put of a deep state");
    assert_eq!(store.version(&id).await.unwrap(), 0, "nothing was written");
    assert!(store.get(&id).await.unwrap().unwrap().metadata.is_empty());
}

async fn refuse_on_manager(sessions: &SessionManager) {
    assert_too_deep(sessions.create_session(None, deep_metadata()).await, "manager create");
    let id = sessions.create_session(None, Metadata::new()).await.unwrap();
    assert_too_deep(sessions.update_session_metadata(&id, deep_metadata(), true).await, "manager merge");
    assert_too_deep(sessions.update_session_metadata(&id, deep_metadata(), false).await, "manager replace");
}

async fn scenario() {
    refuse_on_manager(&SessionManager::in_memory()).await;
    refuse_on_store(&InMemoryStore::new()).await;
    #[cfg(feature = "redis")]
    if let Some(server) = lgadk_session::testing::RedisServer::start() {
        let store = lgadk_session::RedisStore::builder(server.url()).connect().await.unwrap();
        refuse_on_store(&store).await;
        refuse_on_manager(&SessionManager::redis(&server.url()).await.unwrap()).await;
    }
}

#[test]
fn json_nested_100k_deep_is_refused_on_a_2_mib_stack() {
    if env::var_os(CHILD).is_some() {
        let worker = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(scenario());
            })
            .unwrap();
        if worker.join().is_err() {
            panic!("the scenario failed on the 2 MiB thread");
        }
        return;
    }
    let output = Command::new(env::current_exe().unwrap())
        .args(["--exact", "json_nested_100k_deep_is_refused_on_a_2_mib_stack", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the child process failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("1 passed"), "the child ran the scenario:\n{stdout}");
}
