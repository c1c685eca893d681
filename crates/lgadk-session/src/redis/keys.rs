//! Key names and index members (see the module docs for the layout).

use lgadk_core::{Cursor, Error, Result, SessionId, UserId};

/// Longest accepted key prefix, in bytes.
const MAX_PREFIX_LEN: usize = 64;

/// Builds every key name from one validated prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    expiry: String,
}

/// The four keys of one session, all in the slot of the `{<id>}` hash tag.
#[derive(Debug)]
pub(crate) struct SessionKeys {
    /// Hash: record fields and counters.
    pub(crate) record: String,
    /// Hash: metadata, one field per top-level key (values are JSON).
    pub(crate) metadata: String,
    /// Hash: checkpoints by version, plus the latest version under `v`.
    pub(crate) checkpoints: String,
    /// List: the conversation log (JSON messages).
    pub(crate) log: String,
}

impl SessionKeys {
    pub(crate) fn all(&self) -> [&str; 4] {
        [&self.record, &self.metadata, &self.checkpoints, &self.log]
    }
}

impl Keys {
    /// Validates `prefix`: 1–64 bytes of `[A-Za-z0-9._:-]`, so it can never open a hash tag or
    /// collide with the `{…}` parts of a key.
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
        if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN || !prefix.bytes().all(allowed) {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "redis key prefix `{prefix}` must be 1-{MAX_PREFIX_LEN} bytes of ASCII letters, digits, `.`, `_`, `:` or `-`"
                ),
            });
        }
        Ok(Self { prefix: prefix.to_owned(), expiry: format!("{prefix}:x") })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn session(&self, id: &SessionId) -> SessionKeys {
        let base = format!("{}:{{{}}}:", self.prefix, id);
        SessionKeys {
            record: format!("{base}s"),
            metadata: format!("{base}m"),
            checkpoints: format!("{base}cp"),
            log: format!("{base}h"),
        }
    }

    /// The user's index: a sorted set of [`member`]s, all with score 0, ordered by member.
    pub(crate) fn user(&self, user: &UserId) -> String {
        format!("{}:u:{{{}}}", self.prefix, user)
    }

    /// The user index of a user id stored in Redis (already validated when it was written).
    pub(crate) fn user_raw(&self, user: &str) -> String {
        format!("{}:u:{{{}}}", self.prefix, user)
    }

    /// The expiry index: a sorted set of `member|user` scored by deadline (ms).
    pub(crate) fn expiry(&self) -> &str {
        &self.expiry
    }
}

/// A session's entry in its user's index: the creation time as 20 digits (sign bit flipped, so
/// byte order is time order, negative times included), `|`, the id. Byte order of members is
/// therefore `(created_ms, id)` order, which is what listing pages by.
pub(crate) fn member(created_ms: i64, id: &SessionId) -> String {
    format!("{:020}|{}", created_ms.cast_unsigned() ^ (1 << 63), id)
}

/// The exclusive lexicographic bound that starts the page after `cursor`.
pub(crate) fn bound_after(cursor: &Cursor) -> String {
    format!("({}", member(cursor.created_ms(), cursor.id()))
}

/// Splits a member back into `(created_ms, id)`.
pub(crate) fn parse_member(member: &str) -> Option<(i64, SessionId)> {
    let (time, id) = member.split_once('|')?;
    if time.len() != 20 {
        return None;
    }
    let encoded: u64 = time.parse().ok()?;
    Some(((encoded ^ (1 << 63)).cast_signed(), SessionId::parse(id).ok()?))
}

/// The expiry-index entry of a session: its member and owner, so a purge can clean the user
/// index even after Redis dropped the session's keys.
pub(crate) fn expiry_entry(member: &str, user: Option<&str>) -> String {
    format!("{member}|{}", user.unwrap_or(""))
}

/// Splits an expiry-index entry into `(member, user)`.
pub(crate) fn parse_expiry_entry(entry: &str) -> Option<(&str, Option<&str>)> {
    let (member, user) = entry.rsplit_once('|')?;
    parse_member(member)?;
    Some((member, (!user.is_empty()).then_some(user)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(raw: &str) -> SessionId {
        SessionId::parse(raw).unwrap()
    }

    #[test]
    fn session_keys_share_one_hash_tag() {
        let keys = Keys::new("app").unwrap();
        let k = keys.session(&sid("a:b"));
        assert_eq!(k.all(), ["app:{a:b}:s", "app:{a:b}:m", "app:{a:b}:cp", "app:{a:b}:h"]);
        assert_eq!(keys.user(&UserId::parse("alice").unwrap()), "app:u:{alice}");
        assert_eq!(keys.expiry(), "app:x");
    }

    #[test]
    fn prefixes_that_could_break_keys_are_rejected() {
        for bad in ["", "a{b", "a}b", "a b", "a*", &"x".repeat(65)] {
            assert!(matches!(Keys::new(bad), Err(Error::InvalidConfig { .. })), "{bad:?}");
        }
        assert!(Keys::new("my-app.v1:sessions_").is_ok());
    }

    #[test]
    fn members_sort_like_created_then_id() {
        let cases = [(-5, "b"), (-1, "a"), (0, "a"), (0, "ab"), (0, "b"), (1_700_000_000_000, "a"), (i64::MAX, "z")];
        let members: Vec<String> = cases.iter().map(|(ms, id)| member(*ms, &sid(id))).collect();
        let mut sorted = members.clone();
        sorted.sort();
        assert_eq!(sorted, members);
        for ((ms, id), m) in cases.iter().zip(&members) {
            assert_eq!(parse_member(m), Some((*ms, sid(id))));
        }
        assert_eq!(parse_member("12|x"), None);
    }

    #[test]
    fn expiry_entries_carry_the_owner() {
        let m = member(7, &sid("s1"));
        assert_eq!(parse_expiry_entry(&expiry_entry(&m, Some("bob"))), Some((m.as_str(), Some("bob"))));
        assert_eq!(parse_expiry_entry(&expiry_entry(&m, None)), Some((m.as_str(), None)));
    }
}
