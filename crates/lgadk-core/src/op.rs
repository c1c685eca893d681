//! Operation ids: what makes a retried write apply at most once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// How many of a session's most recent operation ids every store remembers, at least. A retry
/// of a write with the same [`OpId`] is recognized as long as fewer than this many other
/// writes with operation ids reached the session in between.
pub const OP_ID_WINDOW: usize = 16;

/// Identifies one logical write, so that repeating it (after an [`Outcome::Unknown`] failure,
/// say) applies it at most once.
///
/// The writes that are not naturally idempotent carry one: [`Interaction`] (tracking a turn),
/// [`NewCheckpoint`] (a checkpoint and its messages) and [`NewSession`] (whose plain retry
/// would see `AlreadyExists`). A store that receives a write whose id it has already applied
/// to that session changes nothing and answers with the same kind of success: the session's
/// current totals, the checkpoint saved the first time, the session created the first time.
/// Stores remember at least the last [`OP_ID_WINDOW`] ids per session, for as long as the
/// session lives.
///
/// 128 random bits, written as 32 lowercase hex digits. They come from a fast per-thread
/// generator seeded from the OS (`fastrand`), not from a system call per id: an id must only be
/// unique, not unpredictable, and every tracked interaction takes one.
///
/// ```
/// use lgadk_core::{Interaction, OpId};
///
/// let op = OpId::new();
/// let turn = Interaction::tokens(12, 40).with_op_id(op);
/// assert_eq!(turn.op, Some(op));
/// assert_eq!(op.to_string().parse::<OpId>()?, op);
/// # Ok::<(), lgadk_core::Error>(())
/// ```
///
/// [`Outcome::Unknown`]: crate::Outcome::Unknown
/// [`Interaction`]: crate::Interaction
/// [`NewCheckpoint`]: crate::NewCheckpoint
/// [`NewSession`]: crate::NewSession
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(u128);

impl OpId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(fastrand::u128(..))
    }

    /// The id with these 128 bits (for ids chosen by the caller, e.g. derived from a request id).
    pub const fn from_u128(bits: u128) -> Self {
        Self(bits)
    }

    /// The id's 128 bits.
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl Default for OpId {
    /// A fresh random id, as [`OpId::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpId({self})")
    }
}

impl FromStr for OpId {
    type Err = Error;

    /// Parses 32 hex digits.
    fn from_str(raw: &str) -> Result<Self> {
        let bits = (raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u128::from_str_radix(raw, 16).ok())
            .flatten()
            .ok_or_else(|| Error::InvalidConfig {
                reason: format!("`{raw}` is not an operation id (32 hex digits)"),
            })?;
        Ok(Self(bits))
    }
}

impl Serialize for OpId {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OpId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_round_trip_as_hex() {
        let (a, b) = (OpId::new(), OpId::new());
        assert_ne!(a, b);
        assert_eq!(OpId::from_u128(255).to_string(), format!("{:032x}", 255));
        assert_eq!(a.to_string().parse::<OpId>().ok(), Some(a));
        assert!("xyz".parse::<OpId>().is_err());
        assert!("+0000000000000000000000000000000".parse::<OpId>().is_err());
        let json = serde_json::to_string(&a).unwrap_or_default();
        assert_eq!(serde_json::from_str::<OpId>(&json).ok(), Some(a));
    }
}
