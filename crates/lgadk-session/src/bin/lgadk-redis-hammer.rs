//! Test helper for `tests/redis_cross_process.rs` (features `redis` + `testing`): one OS
//! process that hammers one session through its own [`RedisStore`].
//!
//! `lgadk-redis-hammer <url> <prefix> <session-id> <worker> <interactions> <metadata-keys>`
//! calls `track_interaction` `<interactions>` times (3 tokens in, 5 out, 2 ms each) and merges
//! `<metadata-keys>` distinct keys `w<worker>-k<n>`, interleaved, then exits 0. Any error
//! exits 1 with the error chain on stderr.
#![allow(clippy::print_stderr, reason = "a command-line helper reports errors on stderr")]

use std::process::ExitCode;
use std::time::Duration;

use lgadk_core::{Interaction, Metadata, MetadataUpdate, SessionId, SessionStore};
use lgadk_session::RedisStore;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lgadk-redis-hammer: no runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut message = err.to_string();
            let mut source = err.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("lgadk-redis-hammer: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [url, prefix, id, worker, interactions, keys] = args else {
        return Err(
            "usage: lgadk-redis-hammer <url> <prefix> <session-id> <worker> <interactions> <metadata-keys>".into()
        );
    };
    let (interactions, keys): (usize, usize) = (interactions.parse()?, keys.parse()?);
    let id = SessionId::parse(id)?;
    let store = RedisStore::builder(url.as_str())
        .with_prefix(prefix.as_str())
        .with_response_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let every = interactions.checked_div(keys).unwrap_or(usize::MAX).max(1);
    let mut merged = 0;
    for n in 0..interactions {
        let turn = Interaction::tokens(3, 5).with_response_time(Duration::from_millis(2));
        store.track_interaction(&id, turn).await?;
        if n % every == 0 && merged < keys {
            merge(&store, &id, worker, merged).await?;
            merged += 1;
        }
    }
    while merged < keys {
        merge(&store, &id, worker, merged).await?;
        merged += 1;
    }
    Ok(())
}

async fn merge(store: &RedisStore, id: &SessionId, worker: &str, n: usize) -> lgadk_core::Result<()> {
    let mut update = Metadata::new();
    update.insert(format!("w{worker}-k{n}"), serde_json::json!({ "worker": worker, "n": n }));
    store.update_metadata(id, MetadataUpdate::Merge(update)).await.map(drop)
}
