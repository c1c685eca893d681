//! Test helper for `tests/postgres_cross_process.rs` (features `postgres` + `testing`): one OS
//! process that hammers one session through its own [`PostgresStore`].
//!
//! `lgadk-pg-hammer <url> <schema> <session-id> <worker> <interactions> <metadata-keys>`
//! connects (applying the migrations the schema lacks), then calls `track_interaction`
//! `<interactions>` times (3 tokens in, 5 out, 2 ms each, each with its own op id, repeated
//! with it after an outcome-unknown failure, as `SessionManager` does) and merges
//! `<metadata-keys>` distinct keys `w<worker>-k<n>`, interleaved, then exits 0. A session id
//! of `-` only connects. Any other error exits 1 with the error chain on stderr.
#![allow(clippy::print_stderr, reason = "a command-line helper reports errors on stderr")]

use std::process::ExitCode;
use std::time::Duration;

use lgadk_core::{Interaction, Metadata, MetadataUpdate, OpId, Outcome, SessionId, SessionStore};
use lgadk_session::PostgresStore;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lgadk-pg-hammer: no runtime: {err}");
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
            eprintln!("lgadk-pg-hammer: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [url, schema, id, worker, interactions, keys] = args else {
        return Err("usage: lgadk-pg-hammer <url> <schema> <session-id> <worker> <interactions> <metadata-keys>".into());
    };
    let (interactions, keys): (usize, usize) = (interactions.parse()?, keys.parse()?);
    let store = PostgresStore::builder(url.as_str())
        .with_schema(schema.as_str())
        .with_max_connections(2)
        .with_acquire_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    if id == "-" {
        return Ok(());
    }
    let id = SessionId::parse(id)?;
    let every = interactions.checked_div(keys).unwrap_or(usize::MAX).max(1);
    let mut merged = 0;
    for n in 0..interactions {
        let turn = Interaction::tokens(3, 5).with_response_time(Duration::from_millis(2)).with_op_id(OpId::new());
        track(&store, &id, turn).await?;
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

/// Tracks `turn`, repeating it with its op id while the outcome is unknown (a few times).
async fn track(store: &PostgresStore, id: &SessionId, turn: Interaction) -> lgadk_core::Result<()> {
    let mut tries = 0;
    loop {
        match store.track_interaction(id, turn.clone()).await {
            Err(err) if err.outcome() == Some(Outcome::Unknown) && tries < 5 => tries += 1,
            other => return other.map(drop),
        }
    }
}

async fn merge(store: &PostgresStore, id: &SessionId, worker: &str, n: usize) -> lgadk_core::Result<()> {
    let mut update = Metadata::new();
    update.insert(format!("w{worker}-k{n}"), serde_json::json!({ "worker": worker, "n": n }));
    store.update_metadata(id, MetadataUpdate::Merge(update)).await.map(drop)
}
