//! API keys: each stands for a user (threads belong to the user who created them), some for
//! admins (who see every thread). Keys are compared in constant time.

use std::fmt;
use std::path::Path;

use axum::http::HeaderMap;
use lgadk_core::{Error, Result, UserId};
use subtle::ConstantTimeEq as _;

/// The user every caller is when the server has no API keys.
pub const ANONYMOUS_USER: &str = "anonymous";

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) user: UserId,
    pub(crate) admin: bool,
}

impl Principal {
    /// Whether this caller may see a thread owned by `owner`.
    pub(crate) fn may_see(&self, owner: Option<&UserId>) -> bool {
        self.admin || owner == Some(&self.user)
    }
}

#[derive(Clone)]
struct Key {
    secret: Vec<u8>,
    user: UserId,
    admin: bool,
}

/// The API keys a server accepts, each mapped to a user id.
///
/// A request carries its key in `x-api-key` (as `langgraph-sdk` sends it) or in
/// `Authorization: Bearer <key>`.
///
/// ```
/// use lgadk_server::ApiKeys;
///
/// let keys = ApiKeys::parse("# key user [admin]\nalice-key-1 alice\nops-key-001 ops admin\n")?;
/// assert_eq!(keys.len(), 2);
/// # Ok::<(), lgadk_core::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<Key>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secrets.
        f.debug_struct("ApiKeys")
            .field("users", &self.keys.iter().map(|k| (k.user.as_str(), k.admin)).collect::<Vec<_>>())
            .finish()
    }
}

/// Shortest key accepted, in bytes: shorter ones are guessable.
pub const MIN_KEY_LEN: usize = 8;

impl ApiKeys {
    /// No keys yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` for `user`.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] for a malformed user id; [`Error::InvalidConfig`] for a key
    /// shorter than [`MIN_KEY_LEN`], with whitespace, or given twice.
    pub fn with_user(self, key: &str, user: &str) -> Result<Self> {
        self.with(key, user, false)
    }

    /// Adds `key` for `user` as an admin: it sees and may change every user's threads.
    ///
    /// # Errors
    /// As [`with_user`](Self::with_user).
    pub fn with_admin(self, key: &str, user: &str) -> Result<Self> {
        self.with(key, user, true)
    }

    fn with(mut self, key: &str, user: &str, admin: bool) -> Result<Self> {
        let user = UserId::parse(user)?;
        if key.len() < MIN_KEY_LEN {
            return Err(Error::InvalidConfig {
                reason: format!("the API key of user `{user}` is shorter than {MIN_KEY_LEN} bytes"),
            });
        }
        if key.chars().any(char::is_whitespace) {
            return Err(Error::InvalidConfig { reason: format!("the API key of user `{user}` contains whitespace") });
        }
        if self.find(key.as_bytes()).is_some() {
            return Err(Error::InvalidConfig { reason: format!("an API key of user `{user}` is given twice") });
        }
        self.keys.push(Key { secret: key.as_bytes().to_vec(), user, admin });
        Ok(self)
    }

    /// Parses the key file format: one `<key> <user-id> [admin]` per line; blank lines and
    /// lines starting with `#` are skipped.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the line for a malformed line; as
    /// [`with_user`](Self::with_user) for a bad key or user.
    pub fn parse(text: &str) -> Result<Self> {
        let mut keys = Self::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            keys = match fields.as_slice() {
                [key, user] => keys.with_user(key, user),
                [key, user, "admin"] => keys.with_admin(key, user),
                _ => {
                    let reason = format!("API keys, line {}: expected `<key> <user-id> [admin]`", index + 1);
                    return Err(Error::InvalidConfig { reason });
                }
            }?;
        }
        Ok(keys)
    }

    /// Reads a key file (see [`parse`](Self::parse)).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the file cannot be read or does not parse.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|err| Error::InvalidConfig {
            reason: format!("cannot read the API key file `{}`: {err}", path.display()),
        })?;
        Self::parse(&text)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key matching `presented`. Every key is compared, each in constant time, so the time
    /// taken says nothing about which key (or how much of one) matched.
    fn find(&self, presented: &[u8]) -> Option<&Key> {
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.secret.as_slice().ct_eq(presented)) {
                found = Some(key);
            }
        }
        found
    }

    /// The caller a request's headers identify; `None` without a known key.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Option<Principal> {
        let presented = presented_key(headers)?;
        self.find(presented.as_bytes()).map(|key| Principal { user: key.user.clone(), admin: key.admin })
    }
}

/// The key in `x-api-key`, or else in `Authorization: Bearer`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get("x-api-key") {
        return value.to_str().ok().map(str::trim);
    }
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failure is a panic")]

    use axum::http::HeaderValue;

    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::new().with_user("alice-key-1", "alice").unwrap().with_admin("admin-key-1", "ops").unwrap()
    }

    #[test]
    fn x_api_key_and_bearer_both_authenticate() {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("alice-key-1"));
        assert_eq!(keys().authenticate(&headers).unwrap().user, "alice");
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer admin-key-1"));
        let admin = keys().authenticate(&headers).unwrap();
        assert!(admin.admin);
    }

    #[test]
    fn wrong_prefix_or_suffix_of_a_key_is_refused() {
        for wrong in ["alice-key-", "alice-key-12", "", "ALICE-KEY-1"] {
            let mut headers = HeaderMap::new();
            headers.insert("x-api-key", HeaderValue::from_str(wrong).unwrap());
            assert!(keys().authenticate(&headers).is_none(), "{wrong:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Basic alice-key-1"));
        assert!(keys().authenticate(&headers).is_none());
    }

    #[test]
    fn parse_rejects_short_duplicate_and_malformed_lines() {
        assert!(matches!(ApiKeys::parse("short alice"), Err(Error::InvalidConfig { .. })));
        assert!(matches!(ApiKeys::parse("long-enough-1 alice\nlong-enough-1 bob"), Err(Error::InvalidConfig { .. })));
        assert!(matches!(ApiKeys::parse("long-enough-1 alice root"), Err(Error::InvalidConfig { .. })));
        assert!(matches!(ApiKeys::parse("long-enough-1 al ice"), Err(Error::InvalidConfig { .. })));
        assert!(matches!(ApiKeys::parse("long-enough-1 al/ice"), Err(Error::InvalidUserId { .. })));
        assert_eq!(ApiKeys::parse("\n# comment\nlong-enough-1 alice\n").unwrap().len(), 1);
    }

    #[test]
    fn debug_never_shows_a_key() {
        assert!(!format!("{:?}", keys()).contains("key-1"));
    }
}
