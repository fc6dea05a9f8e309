//! `Spanned<T>`: a deserialized value together with its position.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde::{Serialize, Serializer};

use crate::diagnostic::{Origin, Pos};

// serde has no way to ask a deserializer for a position, so `Spanned` asks for
// a struct with this reserved name, which only `NodeDeserializer` recognizes
// (the same trick `toml`'s `serde_spanned` uses).
pub(crate) const NAME: &str = "$__sluice_config_private_Spanned";
pub(crate) const ORIGIN: &str = "$__sluice_config_private_origin";
pub(crate) const LINE: &str = "$__sluice_config_private_line";
pub(crate) const COLUMN: &str = "$__sluice_config_private_column";
pub(crate) const VALUE: &str = "$__sluice_config_private_value";
const FIELDS: &[&str] = &[ORIGIN, LINE, COLUMN, VALUE];

pub(crate) fn encode_origin(origin: &Origin) -> String {
    match origin {
        Origin::File(name) => format!("f{name}"),
        Origin::Set(text) => format!("s{text}"),
        Origin::Unknown => "u".to_string(),
    }
}

fn decode_origin(s: &str) -> Origin {
    if let Some(name) = s.strip_prefix('f') {
        Origin::File(Arc::from(name))
    } else if let Some(text) = s.strip_prefix('s') {
        Origin::Set(text.to_string())
    } else {
        Origin::Unknown
    }
}

/// A value and the position of the node it was read from.
///
/// Positions are only available when deserializing from a
/// [`Node`](crate::Node) (via [`from_node`](crate::from_node)); other
/// deserializers reject `Spanned`. Comparison and hashing look at the value
/// only, so two equal values from different places compare equal.
#[derive(Debug, Clone, Default)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where the value was written.
    pub pos: Pos,
}

impl<T> Spanned<T> {
    /// Pair a value with a position.
    pub fn new(value: T, pos: Pos) -> Self {
        Spanned { value, pos }
    }

    /// Drop the position.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// Transform the value, keeping the position.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned {
            value: f(self.value),
            pos: self.pos,
        }
    }
}

impl<T> Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Spanned<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> AsRef<T> for Spanned<T> {
    fn as_ref(&self) -> &T {
        &self.value
    }
}

impl Borrow<str> for Spanned<String> {
    fn borrow(&self) -> &str {
        &self.value
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Spanned<T> {}

impl<T: std::hash::Hash> std::hash::Hash for Spanned<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.hash(state);
    }
}

impl PartialEq<str> for Spanned<String> {
    fn eq(&self, other: &str) -> bool {
        self.value == other
    }
}

impl PartialEq<&str> for Spanned<String> {
    fn eq(&self, other: &&str) -> bool {
        self.value == *other
    }
}

impl<T: fmt::Display> fmt::Display for Spanned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(NAME, FIELDS, SpannedVisitor(PhantomData))
    }
}

struct SpannedVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for SpannedVisitor<T> {
    type Value = Spanned<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value read from a sluice_config::Node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Spanned<T>, A::Error> {
        expect_key(&mut map, ORIGIN)?;
        let origin: String = map.next_value()?;
        expect_key(&mut map, LINE)?;
        let line: u64 = map.next_value()?;
        expect_key(&mut map, COLUMN)?;
        let column: u64 = map.next_value()?;
        expect_key(&mut map, VALUE)?;
        let value: T = map.next_value()?;
        Ok(Spanned {
            value,
            pos: Pos {
                origin: decode_origin(&origin),
                line: line as usize,
                column: column as usize,
            },
        })
    }
}

fn expect_key<'de, A: MapAccess<'de>>(map: &mut A, want: &str) -> Result<(), A::Error> {
    match map.next_key::<String>()? {
        Some(k) if k == want => Ok(()),
        _ => Err(de::Error::custom(
            "Spanned<T> can only be deserialized from a sluice_config::Node",
        )),
    }
}
