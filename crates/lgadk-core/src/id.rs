//! Validated identifiers for sessions and users.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Longest accepted id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Checks the id rules shared by [`SessionId`] and [`UserId`]: 1–128 bytes of `[A-Za-z0-9._:-]`.
///
/// These rules also keep ids safe inside Redis key names (no `{`, `}`, `*`, spaces or control bytes).
fn check(raw: &str) -> std::result::Result<(), &'static str> {
    if raw.is_empty() {
        return Err("it is empty");
    }
    if raw.len() > MAX_ID_LEN {
        return Err("it is longer than 128 bytes");
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
    if !raw.bytes().all(allowed) {
        return Err("only ASCII letters, digits and `.`, `_`, `:`, `-` are allowed");
    }
    Ok(())
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $error:ident, $(#[$into_doc:meta])* $into:ident :: $method:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates a caller-chosen id.
            ///
            /// # Errors
            #[doc = concat!("[`Error::", stringify!($error), "`] unless the id is 1–128 bytes of `[A-Za-z0-9._:-]`.")]
            pub fn parse(raw: &str) -> Result<Self> {
                check(raw).map_err(|reason| Error::$error { reason })?;
                Ok(Self(Arc::from(raw)))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(raw: &str) -> Result<Self> {
                Self::parse(raw)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;
            fn try_from(raw: &str) -> Result<Self> {
                Self::parse(raw)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(raw: String) -> Result<Self> {
                Self::parse(&raw)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
                let raw = <Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        $(#[$into_doc])*
        pub trait $into<'a>: Send {
            #[doc = concat!("The [`", stringify!($name), "`] this value stands for: borrowed when it already is one, parsed from text otherwise.")]
            ///
            /// # Errors
            #[doc = concat!("[`Error::", stringify!($error), "`] when text is not a valid id.")]
            fn $method(self) -> Result<Cow<'a, $name>>;
        }

        impl<'a> $into<'a> for &'a $name {
            fn $method(self) -> Result<Cow<'a, $name>> {
                Ok(Cow::Borrowed(self))
            }
        }

        impl<'a> $into<'a> for $name {
            fn $method(self) -> Result<Cow<'a, $name>> {
                Ok(Cow::Owned(self))
            }
        }

        /// For `&&id`, as iterating over a slice of references yields.
        impl<'a, 'b: 'a> $into<'a> for &'a &'b $name {
            fn $method(self) -> Result<Cow<'a, $name>> {
                Ok(Cow::Borrowed(*self))
            }
        }

        impl<'a> $into<'a> for &str {
            fn $method(self) -> Result<Cow<'a, $name>> {
                $name::parse(self).map(Cow::Owned)
            }
        }

        impl<'a> $into<'a> for String {
            fn $method(self) -> Result<Cow<'a, $name>> {
                $name::parse(&self).map(Cow::Owned)
            }
        }

        impl<'a> $into<'a> for &String {
            fn $method(self) -> Result<Cow<'a, $name>> {
                $name::parse(self).map(Cow::Owned)
            }
        }
    };
}

define_id!(
    /// Identifies one session: a UUID v4 when lgadk makes it, or a caller-chosen id.
    ///
    /// Cloning is cheap (a reference count), so ids can sit in several indexes at once.
    ///
    /// ```
    /// use lgadk_core::SessionId;
    /// let id = SessionId::parse("support:ticket-42")?;
    /// assert_eq!(id.as_str(), "support:ticket-42");
    /// assert!(SessionId::parse("has space").is_err());
    /// # Ok::<(), lgadk_core::Error>(())
    /// ```
    SessionId,
    InvalidSessionId,
    /// Anything a session id argument accepts: a [`SessionId`] (by value, `&id` or `&&id`) or
    /// text (`&str`, `String`, `&String`) that is parsed on the way in.
    ///
    /// `&SessionId` is borrowed as it is (no clone, no allocation); text is validated and a
    /// malformed id fails the call with [`Error::InvalidSessionId`] before anything is read or
    /// written.
    ///
    /// ```
    /// use lgadk_core::{IntoSessionId, SessionId};
    ///
    /// fn show<'a>(id: impl IntoSessionId<'a>) -> lgadk_core::Result<String> {
    ///     Ok(id.into_session_id()?.to_string())
    /// }
    /// let id = SessionId::parse("s-1")?;
    /// assert_eq!(show(&id)?, "s-1");
    /// assert_eq!(show("s-2")?, "s-2");
    /// assert_eq!(show(String::from("s-3"))?, "s-3");
    /// assert!(show("not valid").is_err());
    /// # Ok::<(), lgadk_core::Error>(())
    /// ```
    IntoSessionId::into_session_id
);

define_id!(
    /// Identifies the user a session belongs to; the same rules as [`SessionId`].
    UserId,
    InvalidUserId,
    /// Anything a user id argument accepts: a [`UserId`] (by value or by reference) or text
    /// (`&str`, `String`, `&String`) that is parsed on the way in; a malformed id fails the call
    /// with [`Error::InvalidUserId`]. See [`IntoSessionId`] for the session side.
    IntoUserId::into_user_id
);

/// The optional owner of a new session: anything [`IntoUserId`] accepts (the session belongs
/// to that user), or an `Option<UserId>` (`None`: no owner).
///
/// `Some("alice")` is not accepted (write `"alice"`), so that a bare `None` needs no type
/// annotation.
///
/// ```
/// use lgadk_core::{IntoOptionalUserId, UserId};
///
/// fn owner(user: impl IntoOptionalUserId) -> lgadk_core::Result<Option<UserId>> {
///     user.into_optional_user_id()
/// }
/// let alice = UserId::parse("alice")?;
/// assert_eq!(owner("alice")?, Some(alice.clone()));
/// assert_eq!(owner(&alice)?, Some(alice.clone()));
/// assert_eq!(owner(Some(alice.clone()))?, Some(alice));
/// assert_eq!(owner(None)?, None);
/// assert!(owner("no spaces please").is_err());
/// # Ok::<(), lgadk_core::Error>(())
/// ```
pub trait IntoOptionalUserId: Send {
    /// The owner, if any.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] when text is not a valid id.
    fn into_optional_user_id(self) -> Result<Option<UserId>>;
}

impl<'a, T: IntoUserId<'a>> IntoOptionalUserId for T {
    fn into_optional_user_id(self) -> Result<Option<UserId>> {
        Ok(Some(self.into_user_id()?.into_owned()))
    }
}

impl IntoOptionalUserId for Option<UserId> {
    fn into_optional_user_id(self) -> Result<Option<UserId>> {
        Ok(self)
    }
}

impl SessionId {
    /// A new random id (UUID v4 from the operating system's RNG, hyphenated).
    pub fn new() -> Self {
        let mut buf = uuid::Uuid::encode_buffer();
        let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
        Self(Arc::from(&*text))
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_uuid_v4() {
        let id = SessionId::new();
        let parsed = uuid::Uuid::parse_str(id.as_str()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(SessionId::new(), id);
    }

    #[test]
    fn parse_rejects_what_would_break_a_key() {
        for bad in ["", "a b", "{x}", "a*", "line\nbreak", "café", &"x".repeat(129)] {
            assert!(matches!(SessionId::parse(bad), Err(Error::InvalidSessionId { .. })), "{bad:?}");
            assert!(matches!(UserId::parse(bad), Err(Error::InvalidUserId { .. })), "{bad:?}");
        }
        assert!(SessionId::parse(&"x".repeat(128)).is_ok());
        assert!(SessionId::parse("A-z_0.9:").is_ok());
    }

    #[test]
    fn arguments_borrow_ids_and_parse_text() {
        let id = SessionId::parse("s1").unwrap();
        assert!(matches!(id.clone().into_session_id().unwrap(), Cow::Owned(_)));
        let borrowed = (&id).into_session_id().unwrap();
        assert!(matches!(borrowed, Cow::Borrowed(b) if std::ptr::eq(b, &id)), "a borrowed id is not cloned");
        let refs = [&id];
        for twice in refs.iter() {
            assert!(matches!(twice.into_session_id().unwrap(), Cow::Borrowed(b) if std::ptr::eq(b, &id)));
        }
        assert_eq!(*"s1".into_session_id().unwrap(), id);
        assert_eq!(*String::from("s1").into_session_id().unwrap(), id);
        assert_eq!(*(&String::from("s1")).into_session_id().unwrap(), id);
        assert!(matches!("a b".into_session_id(), Err(Error::InvalidSessionId { .. })));
        assert!(matches!("a b".into_user_id(), Err(Error::InvalidUserId { .. })));
        assert!(matches!("a b".into_optional_user_id(), Err(Error::InvalidUserId { .. })));
        assert_eq!(None.into_optional_user_id().unwrap(), None);
        assert_eq!("u".into_optional_user_id().unwrap(), Some(UserId::parse("u").unwrap()));
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let id: SessionId = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"abc\"");
        assert!(serde_json::from_str::<SessionId>("\"a b\"").is_err());
    }
}
