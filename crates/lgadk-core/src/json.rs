//! The JSON nesting limit every store and the graph runtime apply, counted the same way
//! everywhere.
//!
//! serde_json's parser refuses a document whose arrays and objects nest
//! [`MAX_JSON_DEPTH`] levels deep, so anything lgadk stores must stay below that, or every
//! later read of it would fail. The limit is checked *before* anything is written, on the
//! document as it is stored: a metadata map (the map itself is the first level), a graph
//! state inside its checkpoint envelope, a logged message.
//!
//! The checks never recurse deeper than the limit, so a value nested 100,000 levels deep,
//! built in code, gets [`Error::NestingTooDeep`] instead of overflowing the stack:
//! [`check_value`] walks a [`Value`] with an explicit stack, and [`to_string`] / [`to_value`]
//! / [`size`] serialize any `Serialize` type through an adapter that stops at the limit.
//! [`dispose`] drops a rejected value without recursing, since dropping a deep
//! `serde_json::Value` recurses once per level.
//!
//! ```
//! use lgadk_core::json::{self, MAX_JSON_DEPTH};
//! use lgadk_core::serde_json::{Value, json};
//!
//! let mut deep = Value::Null;
//! for _ in 0..MAX_JSON_DEPTH {
//!     deep = Value::Array(vec![deep]);
//! }
//! assert!(json::to_string(&deep).is_err());
//! assert!(json::check_value(&deep, 0).is_err());
//! json::dispose(deep);
//! assert_eq!(json::to_string(&json!({"plan": ["pro"]})).ok().as_deref(), Some(r#"{"plan":["pro"]}"#));
//! ```

use std::cell::Cell;
use std::fmt::Display;
use std::io;

use serde::ser::{self, Serialize, Serializer};
use serde_json::Value;

use crate::error::Error;
use crate::message::Message;

/// Nesting at which serde_json's parser stops: a stored document's arrays and objects may
/// nest at most `MAX_JSON_DEPTH - 1` levels.
pub const MAX_JSON_DEPTH: usize = 128;

/// Why a value could not be turned into JSON.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// Its arrays and objects nest [`MAX_JSON_DEPTH`] levels or deeper.
    #[error("JSON nests {MAX_JSON_DEPTH} levels or deeper")]
    TooDeep,
    /// serde_json refused it (a map key that is not a string, a failing `Serialize` impl).
    #[error(transparent)]
    Serde(#[from] serde_json::Error),
}

impl JsonError {
    /// The public error: [`Error::NestingTooDeep`] naming `what`, or `other` applied to the
    /// serde_json error.
    pub fn into_error(self, what: &'static str, other: impl FnOnce(serde_json::Error) -> Error) -> Error {
        match self {
            Self::TooDeep => Error::NestingTooDeep { what, limit: MAX_JSON_DEPTH },
            Self::Serde(err) => other(err),
        }
    }
}

/// Checks that `value`, placed `levels_above` containers deep inside the stored document,
/// keeps the document below [`MAX_JSON_DEPTH`]. Iterative: the stack stays flat however
/// deep the value is, and the walk stops at the first level too many.
///
/// # Errors
/// [`JsonError::TooDeep`].
pub fn check_value(value: &Value, levels_above: usize) -> Result<(), JsonError> {
    let budget = (MAX_JSON_DEPTH - 1).saturating_sub(levels_above);
    // Containers still to visit, with the depth at which each one opens.
    let mut pending: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((value, depth)) = pending.pop() {
        let children = match value {
            Value::Array(items) => Children::Array(items.iter()),
            Value::Object(map) => Children::Object(map.values()),
            _ => continue,
        };
        if depth > budget {
            return Err(JsonError::TooDeep);
        }
        pending.extend(children.filter(|child| is_container(child)).map(|child| (child, depth + 1)));
    }
    Ok(())
}

/// A container's children, without boxing the iterator.
enum Children<'a> {
    Array(std::slice::Iter<'a, Value>),
    Object(serde_json::map::Values<'a>),
}

impl<'a> Iterator for Children<'a> {
    type Item = &'a Value;

    fn next(&mut self) -> Option<&'a Value> {
        match self {
            Self::Array(items) => items.next(),
            Self::Object(values) => values.next(),
        }
    }
}

/// [`check_value`] for the entries of a map that sits `levels_above` containers deep (so its
/// own level is `levels_above + 1`).
///
/// # Errors
/// [`JsonError::TooDeep`].
pub fn check_map(map: &serde_json::Map<String, Value>, levels_above: usize) -> Result<(), JsonError> {
    map.values().try_for_each(|value| check_value(value, levels_above + 1))
}

fn is_container(value: &Value) -> bool {
    matches!(value, Value::Array(_) | Value::Object(_))
}

/// Checks a message as it is logged: its tool calls' arguments sit three levels deep
/// (message object, `tool_calls` array, call object).
///
/// # Errors
/// [`Error::NestingTooDeep`].
pub fn check_message(message: &Message) -> Result<(), Error> {
    for call in &message.tool_calls {
        check_value(&call.arguments, 3)
            .map_err(|_| Error::NestingTooDeep { what: "a message", limit: MAX_JSON_DEPTH })?;
    }
    Ok(())
}

/// Compact JSON of `value`, refused once it nests [`MAX_JSON_DEPTH`] levels.
///
/// # Errors
/// [`JsonError::TooDeep`], or serde_json's own error.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, JsonError> {
    let mut out = Vec::with_capacity(128);
    write(&mut out, value)?;
    // serde_json writes valid UTF-8 only.
    String::from_utf8(out).map_err(|err| JsonError::Serde(ser::Error::custom(err)))
}

/// `value` as a [`Value`], refused once it nests [`MAX_JSON_DEPTH`] levels.
///
/// # Errors
/// [`JsonError::TooDeep`], or serde_json's own error.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, JsonError> {
    let hit = Cell::new(false);
    let result = Limited::root(value, &hit).serialize(serde_json::value::Serializer);
    finish(result, &hit)
}

/// Size of `value` as compact JSON in bytes, counted without building the text.
///
/// # Errors
/// [`JsonError::TooDeep`], or serde_json's own error.
pub fn size<T: Serialize + ?Sized>(value: &T) -> Result<usize, JsonError> {
    let mut counter = ByteCounter(0);
    write(&mut counter, value)?;
    Ok(counter.0)
}

/// Drops `value` with a flat stack, however deep it nests.
pub fn dispose(value: Value) {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::Array(items) => pending.extend(items),
            Value::Object(map) => pending.extend(map.into_iter().map(|(_, child)| child)),
            _ => {}
        }
    }
}

fn write<W: io::Write, T: Serialize + ?Sized>(writer: W, value: &T) -> Result<(), JsonError> {
    let hit = Cell::new(false);
    let mut serializer = serde_json::Serializer::new(writer);
    let result = Limited::root(value, &hit).serialize(&mut serializer);
    finish(result, &hit)
}

fn finish<T>(result: Result<T, serde_json::Error>, hit: &Cell<bool>) -> Result<T, JsonError> {
    match result {
        Ok(value) => Ok(value),
        Err(_) if hit.get() => Err(JsonError::TooDeep),
        Err(err) => Err(JsonError::Serde(err)),
    }
}

struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A value to serialize with `budget` more container levels allowed below it. Every
/// container the inner serializer opens costs the levels serde_json's output gives it, so
/// the count matches what its parser sees; past the budget it fails (and sets `hit`) before
/// recursing, which bounds the stack.
struct Limited<'a, T: ?Sized> {
    value: &'a T,
    budget: usize,
    hit: &'a Cell<bool>,
}

impl<'a, T: ?Sized> Limited<'a, T> {
    fn root(value: &'a T, hit: &'a Cell<bool>) -> Self {
        Self { value, budget: MAX_JSON_DEPTH - 1, hit }
    }
}

impl<T: Serialize + ?Sized> Serialize for Limited<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Guard { inner: serializer, budget: self.budget, hit: self.hit })
    }
}

/// The serializer side of [`Limited`]: forwards everything, wrapping children.
struct Guard<'a, S> {
    inner: S,
    budget: usize,
    hit: &'a Cell<bool>,
}

/// A compound (sequence, map, struct …) whose elements get `budget` levels.
struct Compound<'a, C> {
    inner: C,
    budget: usize,
    hit: &'a Cell<bool>,
}

impl<'a, S: Serializer> Guard<'a, S> {
    /// Opens `levels` containers, or fails when the budget does not allow them.
    fn open(&self, levels: usize) -> Result<usize, S::Error> {
        match self.budget.checked_sub(levels) {
            Some(rest) => Ok(rest),
            None => {
                self.hit.set(true);
                Err(ser::Error::custom(format_args!("JSON nests {MAX_JSON_DEPTH} levels or deeper")))
            }
        }
    }

    fn child<'v, T: ?Sized>(&self, value: &'v T, budget: usize) -> Limited<'v, T>
    where
        'a: 'v,
    {
        Limited { value, budget, hit: self.hit }
    }
}

impl<'a, C> Compound<'a, C> {
    fn child<'v, T: ?Sized>(&self, value: &'v T) -> Limited<'v, T>
    where
        'a: 'v,
    {
        Limited { value, budget: self.budget, hit: self.hit }
    }
}

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method(self, $($arg: $ty),*) -> Result<Self::Ok, Self::Error> {
            self.inner.$method($($arg),*)
        }
    )*};
}

impl<'a, S: Serializer> Serializer for Guard<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<'a, S::SerializeSeq>;
    type SerializeTuple = Compound<'a, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'a, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'a, S::SerializeMap>;
    type SerializeStruct = Compound<'a, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'a, S::SerializeStructVariant>;

    forward! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        let child = self.child(value, self.budget);
        self.inner.serialize_some(&child)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Result<S::Ok, S::Error> {
        let child = self.child(value, self.budget);
        self.inner.serialize_newtype_struct(name, &child)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        // `{"variant": value}`: one object level.
        let budget = self.open(1)?;
        let child = self.child(value, budget);
        self.inner.serialize_newtype_variant(name, index, variant, &child)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        let budget = self.open(1)?;
        let inner = self.inner.serialize_seq(len)?;
        Ok(Compound { inner, budget, hit: self.hit })
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        let budget = self.open(1)?;
        let inner = self.inner.serialize_tuple(len)?;
        Ok(Compound { inner, budget, hit: self.hit })
    }

    fn serialize_tuple_struct(self, name: &'static str, len: usize) -> Result<Self::SerializeTupleStruct, S::Error> {
        let budget = self.open(1)?;
        let inner = self.inner.serialize_tuple_struct(name, len)?;
        Ok(Compound { inner, budget, hit: self.hit })
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        // `{"variant": [..]}`: an object and an array.
        let budget = self.open(2)?;
        let hit = self.hit;
        let inner = self.inner.serialize_tuple_variant(name, index, variant, len)?;
        Ok(Compound { inner, budget, hit })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        let budget = self.open(1)?;
        let inner = self.inner.serialize_map(len)?;
        Ok(Compound { inner, budget, hit: self.hit })
    }

    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Self::SerializeStruct, S::Error> {
        let budget = self.open(1)?;
        let inner = self.inner.serialize_struct(name, len)?;
        Ok(Compound { inner, budget, hit: self.hit })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        // `{"variant": {..}}`: two object levels.
        let budget = self.open(2)?;
        let hit = self.hit;
        let inner = self.inner.serialize_struct_variant(name, index, variant, len)?;
        Ok(Compound { inner, budget, hit })
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.collect_str(value)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// The compound traits whose elements come without a key: each element gets the compound's
/// budget.
macro_rules! unkeyed_compound {
    ($($trait:ident :: $method:ident),+ $(,)?) => {$(
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
                let child = self.child(value);
                self.inner.$method(&child)
            }

            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    )+};
}

unkeyed_compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

/// The struct-like compound traits: named fields, each getting the compound's budget.
macro_rules! struct_compound {
    ($($trait:ident),+ $(,)?) => {$(
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;

            fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), C::Error> {
                let child = self.child(value);
                self.inner.serialize_field(key, &child)
            }

            fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
                self.inner.skip_field(key)
            }

            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    )+};
}

struct_compound!(SerializeStruct, SerializeStructVariant);

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        let child = self.child(key);
        self.inner.serialize_key(&child)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let child = self.child(value);
        self.inner.serialize_value(&child)
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(levels: usize) -> Value {
        let mut value = Value::Null;
        for _ in 0..levels {
            value = Value::Array(vec![value]);
        }
        value
    }

    /// What serde_json's parser accepts is exactly what the checks accept.
    #[test]
    fn the_limit_is_where_serde_json_stops_parsing() {
        let fits = nested(MAX_JSON_DEPTH - 1);
        let text = to_string(&fits).unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_ok());
        assert!(check_value(&fits, 0).is_ok());
        assert!(to_value(&fits).is_ok());

        let deep = nested(MAX_JSON_DEPTH);
        let text = serde_json::to_string(&deep).unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err(), "serde_json refuses it");
        assert!(matches!(to_string(&deep), Err(JsonError::TooDeep)));
        assert!(matches!(to_value(&deep), Err(JsonError::TooDeep)));
        assert!(matches!(size(&deep), Err(JsonError::TooDeep)));
        assert!(matches!(check_value(&deep, 0), Err(JsonError::TooDeep)));
        assert!(matches!(check_value(&fits, 1), Err(JsonError::TooDeep)));
    }

    #[test]
    fn output_and_size_match_serde_json() {
        let value = json!({"a": [1, {"b": "x\"y"}], "c": null, "d": 1.5});
        let text = to_string(&value).unwrap();
        assert_eq!(text, serde_json::to_string(&value).unwrap());
        assert_eq!(size(&value).unwrap(), text.len());
        assert_eq!(to_value(&value).unwrap(), value);
    }

    #[derive(serde::Serialize)]
    enum Shape {
        Unit,
        Newtype(Value),
        Tuple(u8, Value),
        Struct { inner: Value },
    }

    /// Nesting of a small parsed document, counted like serde_json's parser.
    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// `0` inside `1` arrays.
    struct Wrapped<'a>(&'a Shape, usize);

    impl Serialize for Wrapped<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            match self.1 {
                0 => self.0.serialize(serializer),
                n => [Wrapped(self.0, n - 1)].serialize(serializer),
            }
        }
    }

    #[test]
    fn enum_variants_count_the_levels_serde_json_writes() {
        let shapes =
            [Shape::Unit, Shape::Newtype(nested(1)), Shape::Tuple(1, nested(1)), Shape::Struct { inner: nested(1) }];
        for shape in &shapes {
            let own = depth(&serde_json::from_str(&serde_json::to_string(shape).unwrap()).unwrap());
            assert!(to_string(&Wrapped(shape, MAX_JSON_DEPTH - 1 - own)).is_ok(), "{own}");
            assert!(matches!(to_string(&Wrapped(shape, MAX_JSON_DEPTH - own)), Err(JsonError::TooDeep)), "{own}");
        }
    }

    #[test]
    fn messages_count_their_envelope() {
        let mut message = Message::assistant("");
        message.tool_calls.push(crate::message::ToolCall {
            id: "c".into(),
            name: "t".into(),
            arguments: nested(MAX_JSON_DEPTH - 4),
        });
        assert!(check_message(&message).is_ok());
        assert!(to_string(&message).is_ok());
        message.tool_calls[0].arguments = nested(MAX_JSON_DEPTH - 3);
        assert!(matches!(check_message(&message), Err(Error::NestingTooDeep { .. })));
        assert!(matches!(to_string(&message), Err(JsonError::TooDeep)));
    }

    #[test]
    fn dispose_drops_what_a_recursive_drop_could_not() {
        let deep = nested(1_000_000);
        assert!(matches!(check_value(&deep, 0), Err(JsonError::TooDeep)));
        assert!(matches!(to_string(&deep), Err(JsonError::TooDeep)));
        dispose(deep);
    }
}
