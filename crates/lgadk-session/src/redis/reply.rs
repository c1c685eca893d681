//! The one decoder of script replies: arrays whose first element is a status code (see
//! `scripts::status`), read in order into each script's own type (see `replies.rs`).
//!
//! A reply of the wrong shape is `Error::Backend` whose outcome follows the script: unknown for
//! a script that writes (it ran, so it may have written), not applied for a read. Stored data
//! that does not decode is `Error::Corrupt` naming the session and the field.

use lgadk_core::{Error, Result, SessionId};
use redis::Value;

use super::error::RedisFailure;
use super::scripts::status;

/// The operations whose scripts write.
const WRITES: &[&str] = &[
    "create",
    "touch",
    "track_interaction",
    "update_metadata",
    "end",
    "purge_expired",
    "checkpoint_put",
    "commit_turn",
];

/// A script's reply as it came, with the operation's name for error messages.
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

/// A script's reply decoded into its own type. Implementations read the elements after the
/// status in order through [`Fields`]; they never index the reply.
pub(crate) trait FromScriptReply: Sized {
    /// What decoding needs besides the reply: the session the script ran on, or `()`.
    type Context: ?Sized + Sync;

    /// Decodes the reply whose status code is `status`; `fields` yields the elements after it.
    fn decode(status: i64, fields: &mut Fields<'_>, context: &Self::Context) -> Result<Self>;
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

    /// Decodes the reply: its status code, then what `T` reads of the rest.
    pub(crate) fn decode<T: FromScriptReply>(&self, context: &T::Context) -> Result<T> {
        let mut fields = Fields { reply: self, next: 0 };
        let status = fields.int()?;
        T::decode(status, &mut fields, context)
    }
}

/// The elements of a reply, read in order.
pub(crate) struct Fields<'a> {
    reply: &'a Reply,
    next: usize,
}

impl Fields<'_> {
    /// The error for a reply of the wrong shape (see [`Reply::bad`]).
    pub(crate) fn bad(&self, detail: &'static str) -> Error {
        self.reply.bad(detail)
    }

    /// How many elements are left.
    pub(crate) fn remaining(&self) -> usize {
        self.reply.items.len().saturating_sub(self.next)
    }

    fn take(&mut self) -> Option<&Value> {
        let value = self.reply.items.get(self.next);
        self.next += 1;
        value
    }

    /// The next element, an integer.
    pub(crate) fn int(&mut self) -> Result<i64> {
        let bad = |detail| self.reply.bad(detail);
        match self.reply.items.get(self.next) {
            Some(Value::Int(n)) => {
                self.next += 1;
                Ok(*n)
            }
            Some(other) => {
                let parsed = text(other).and_then(|t| t.parse().ok()).ok_or_else(|| bad("expected an integer"));
                self.next += 1;
                parsed
            }
            None => Err(bad("reply too short")),
        }
    }

    /// The next element as text; `None` for nil, and past the end.
    pub(crate) fn opt_text(&mut self) -> Result<Option<String>> {
        match self.take() {
            None | Some(Value::Nil) => Ok(None),
            Some(value) => text(value).map(Some).ok_or_else(|| self.reply.bad("expected text")),
        }
    }

    /// The next element as text.
    pub(crate) fn text(&mut self) -> Result<String> {
        self.opt_text()?.ok_or_else(|| self.reply.bad("expected text, got nil"))
    }

    /// The next element as text, `None` when it is empty (scripts answer `''` for "none").
    pub(crate) fn text_or_none(&mut self) -> Result<Option<String>> {
        Ok(Some(self.text()?).filter(|text| !text.is_empty()))
    }

    /// Every element left, as text.
    pub(crate) fn rest(&mut self) -> Result<Vec<String>> {
        (0..self.remaining()).map(|_| self.text()).collect()
    }

    /// Every element left, as text or nil.
    pub(crate) fn rest_or_nil(&mut self) -> Result<Vec<Option<String>>> {
        (0..self.remaining()).map(|_| self.opt_text()).collect()
    }

    /// The next element, a stored field of session `id` named `field` (`Corrupt` when it does
    /// not decode, or is nil).
    pub(crate) fn stored<T: std::str::FromStr>(&mut self, id: &SessionId, field: &str) -> Result<T> {
        parse_field(id, field, self.opt_text()?.as_deref())
    }

    /// The `Corrupt` error a `CORRUPT` status reports: the next element names the field.
    pub(crate) fn corrupt(&mut self, id: &SessionId) -> Error {
        let field = self.opt_text().ok().flatten().unwrap_or_else(|| "?".into());
        Error::corrupt(id, RedisFailure::BadField { field, value: None })
    }

    /// The statuses every session script shares: `NOT_FOUND` is `SessionNotFound`, `CORRUPT`
    /// is `Corrupt` naming the session and the field. `Ok` for any other status.
    pub(crate) fn session_status(&mut self, status: i64, id: &SessionId) -> Result<()> {
        match status {
            status::NOT_FOUND => Err(Error::SessionNotFound(id.clone())),
            status::CORRUPT => Err(self.corrupt(id)),
            _ => Ok(()),
        }
    }

    /// The error for a status this script does not answer.
    pub(crate) fn unknown_status(&self) -> Error {
        self.reply.bad("unknown status")
    }
}

/// Parses a stored integer field, naming it when it does not decode.
pub(crate) fn parse_field<T: std::str::FromStr>(id: &SessionId, field: &str, raw: Option<&str>) -> Result<T> {
    raw.and_then(|raw| raw.parse().ok()).ok_or_else(|| {
        Error::corrupt(id, RedisFailure::BadField { field: field.to_owned(), value: raw.map(str::to_owned) })
    })
}

#[cfg(test)]
mod tests {
    use lgadk_core::Outcome;

    use super::*;

    /// A reply type reading one integer after `OK`.
    struct Count(i64);

    impl FromScriptReply for Count {
        type Context = ();

        fn decode(status: i64, fields: &mut Fields<'_>, (): &()) -> Result<Self> {
            match status {
                status::OK => Ok(Self(fields.int()?)),
                _ => Err(fields.unknown_status()),
            }
        }
    }

    #[test]
    fn a_malformed_reply_of_a_write_leaves_its_outcome_unknown() {
        let write = Reply::new("track_interaction", Vec::new()).bad("reply too short");
        assert_eq!(write.outcome(), Some(Outcome::Unknown));
        let read = Reply::new("get", Vec::new()).bad("reply too short");
        assert_eq!(read.outcome(), Some(Outcome::NotApplied));
    }

    #[test]
    fn decoding_reads_in_order_and_classes_bad_shapes_by_script() {
        let ok = Reply::new("get", vec![Value::Int(status::OK), Value::BulkString(b"42".to_vec())]);
        assert!(matches!(ok.decode::<Count>(&()), Ok(Count(42))));

        let short = Reply::new("get", vec![Value::Int(status::OK)]).decode::<Count>(&());
        assert_eq!(short.err().and_then(|err| err.outcome()), Some(Outcome::NotApplied));
        let short = Reply::new("end", vec![Value::Int(status::OK)]).decode::<Count>(&());
        assert_eq!(short.err().and_then(|err| err.outcome()), Some(Outcome::Unknown));

        let unknown = Reply::new("checkpoint_put", vec![Value::Int(99), Value::Int(1)]).decode::<Count>(&());
        assert_eq!(unknown.err().and_then(|err| err.outcome()), Some(Outcome::Unknown));
        let empty = Reply::new("get", Vec::new()).decode::<Count>(&());
        assert!(matches!(empty.err(), Some(Error::Backend { .. })));
    }
}
