//! The stored formats of metadata values and checkpoints, as the scripts keep them.

use lgadk_core::session::timestamp;
use lgadk_core::{Checkpoint, Error, Metadata, Result, SessionId};
use serde::{Deserialize, Serialize};

use super::error::RedisFailure;

pub(super) fn corrupt_json(id: &SessionId, what: &'static str, source: serde_json::Error) -> Error {
    Error::corrupt(id, RedisFailure::BadJson { what, source })
}

pub(super) fn decode_metadata(id: &SessionId, pairs: &[String]) -> Result<Metadata> {
    let mut metadata = Metadata::new();
    for pair in pairs.chunks_exact(2) {
        if let [key, raw] = pair {
            let value = serde_json::from_str(raw).map_err(|source| corrupt_json(id, "a metadata value", source))?;
            metadata.insert(key.clone(), value);
        }
    }
    Ok(metadata)
}

/// What a checkpoint looks like in the `cp` hash. The script prepends `version`, `log_len` and
/// `log_start` (absent in checkpoints written before log cuts: 0) to the JSON of
/// [`StoredBody`].
#[derive(Deserialize)]
struct StoredCheckpoint {
    version: u64,
    log_len: u64,
    #[serde(default)]
    log_start: u64,
    step: u64,
    node: Option<String>,
    at: i64,
    state: serde_json::Value,
}

#[derive(Serialize)]
pub(super) struct StoredBody<'a> {
    pub(super) step: u64,
    pub(super) node: Option<&'a str>,
    pub(super) at: i64,
    pub(super) state: &'a serde_json::Value,
}

pub(super) fn decode_checkpoint(id: &SessionId, blob: &str) -> Result<Checkpoint> {
    let stored: StoredCheckpoint =
        serde_json::from_str(blob).map_err(|source| corrupt_json(id, "a checkpoint", source))?;
    Ok(Checkpoint {
        version: stored.version,
        step: stored.step,
        node: stored.node,
        created_at: timestamp(stored.at),
        log_len: stored.log_len,
        log_start: stored.log_start,
        state: stored.state,
    })
}
