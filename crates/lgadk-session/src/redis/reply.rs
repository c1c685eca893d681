//! Reading script replies: arrays whose first element is a status code.

use lgadk_core::{Error, SessionId};
use redis::Value;

use super::error::RedisFailure;
use super::scripts::status;

/// The operations whose scripts write.
const WRITES: &[&str] =
    &["create", "touch", "track_interaction", "update_metadata", "end", "purge_expired", "checkpoint_put"];

/// A script's reply, with the script's name for error messages.
pub(crate) struct Reply {
    script: &'static str,
    items: Vec<Value>,
}

/// The UTF-8 text of a bulk string (or the digits of an integer); `None` for nil or other kinds.
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Reply {
    pub(crate) fn new(script: &'static str, items: Vec<Value>) -> Self {
        Self { script, items }
    }

    /// The error for a reply of the wrong shape. The script did run: if it writes, it may
    /// have written, so the outcome is unknown.
    pub(crate) fn bad(&self, detail: &'static str) -> Error {
        let failure = RedisFailure::BadReply { script: self.script, detail };
        if WRITES.contains(&self.script) {
            Error::backend_unknown("redis", self.script, failure)
        } else {
            Error::backend("redis", self.script, failure)
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The integer at `index`.
    pub(crate) fn int(&self, index: usize) -> Result<i64, Error> {
        match self.items.get(index) {
            Some(Value::Int(n)) => Ok(*n),
            Some(other) => text(other).and_then(|t| t.parse().ok()).ok_or_else(|| self.bad("expected an integer")),
            None => Err(self.bad("reply too short")),
        }
    }

    /// The status code (first element).
    pub(crate) fn status(&self) -> Result<i64, Error> {
        self.int(0)
    }

    /// The text at `index`; `None` for nil.
    pub(crate) fn opt_text(&self, index: usize) -> Result<Option<String>, Error> {
        match self.items.get(index) {
            None | Some(Value::Nil) => Ok(None),
            Some(value) => text(value).map(Some).ok_or_else(|| self.bad("expected text")),
        }
    }

    /// The text at `index`.
    pub(crate) fn text(&self, index: usize) -> Result<String, Error> {
        self.opt_text(index)?.ok_or_else(|| self.bad("expected text, got nil"))
    }

    /// The texts from `from` to the end.
    pub(crate) fn texts_from(&self, from: usize) -> Result<Vec<String>, Error> {
        (from..self.items.len()).map(|i| self.text(i)).collect()
    }

    /// Maps the statuses every session script shares: `NOT_FOUND` becomes `SessionNotFound`,
    /// `CORRUPT` becomes `Corrupt` naming the session and the field. Other statuses are
    /// returned for the caller to handle.
    pub(crate) fn check(&self, id: &SessionId) -> Result<i64, Error> {
        match self.status()? {
            status::NOT_FOUND => Err(Error::SessionNotFound(id.clone())),
            status::CORRUPT => Err(self.corrupt(id, 1)),
            other => Ok(other),
        }
    }

    /// A `Corrupt` error for the field named at `index`.
    pub(crate) fn corrupt(&self, id: &SessionId, index: usize) -> Error {
        let field = self.opt_text(index).ok().flatten().unwrap_or_else(|| "?".into());
        Error::corrupt(id, RedisFailure::BadField { field, value: None })
    }
}

/// Parses a stored integer field, naming it when it does not decode.
pub(crate) fn parse_field<T: std::str::FromStr>(id: &SessionId, field: &str, raw: Option<&str>) -> Result<T, Error> {
    raw.and_then(|raw| raw.parse().ok()).ok_or_else(|| {
        Error::corrupt(id, RedisFailure::BadField { field: field.to_owned(), value: raw.map(str::to_owned) })
    })
}

#[cfg(test)]
mod tests {
    use lgadk_core::Outcome;

    use super::*;

    #[test]
    fn a_malformed_reply_of_a_write_leaves_its_outcome_unknown() {
        let write = Reply::new("track_interaction", Vec::new()).bad("reply too short");
        assert_eq!(write.outcome(), Some(Outcome::Unknown));
        let read = Reply::new("get", Vec::new()).bad("reply too short");
        assert_eq!(read.outcome(), Some(Outcome::NotApplied));
    }
}
