//! A serde `Deserializer` over [`Node`] that positions every error.
//!
//! Each layer attaches its node's position to an error that has none yet, so
//! the innermost node that saw the problem wins: an unknown field is reported
//! at its key, a wrong type at the value, a missing field at the map.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, Expected, IntoDeserializer, MapAccess,
    SeqAccess, Unexpected, VariantAccess, Visitor,
};

use crate::diagnostic::{Diagnostic, Pos};
use crate::node::{Node, NodeValue, ScalarStyle};
use crate::scalar::{resolve_plain, Resolved};
use crate::spanned;

/// A deserialization error, positioned once it has passed through a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeError {
    message: String,
    pos: Option<Pos>,
}

impl DeError {
    /// The error's message, without position.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The position of the node where the error happened, if known.
    pub fn pos(&self) -> Option<&Pos> {
        self.pos.as_ref()
    }

    fn at(mut self, pos: &Pos) -> Self {
        if self.pos.is_none() {
            self.pos = Some(pos.clone());
        }
        self
    }

    /// Turn into an error diagnostic, at `fallback` if the error has no position.
    pub fn into_diagnostic(self, fallback: &Pos) -> Diagnostic {
        Diagnostic::error(self.pos.unwrap_or_else(|| fallback.clone()), self.message)
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            pos: None,
        }
    }

    // serde calls YAML's null a "unit value", which means nothing to a user.
    fn invalid_type(unexp: Unexpected, exp: &dyn Expected) -> Self {
        if unexp == Unexpected::Unit {
            de::Error::custom(format_args!("invalid type: null, expected {exp}"))
        } else {
            de::Error::custom(format_args!("invalid type: {unexp}, expected {exp}"))
        }
    }
}

/// Deserialize any `T` from a node; errors carry the position of the node
/// where they happened.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, Diagnostic> {
    T::deserialize(NodeDeserializer::new(node)).map_err(|e| e.into_diagnostic(&node.pos))
}

/// Check that `node` deserializes as `T`; the shape of a
/// [`SettingsCheck`](crate::kinds::SettingsCheck).
pub fn check_with<T: DeserializeOwned>(node: &Node) -> Result<(), Vec<Diagnostic>> {
    from_node::<T>(node).map(drop).map_err(|d| vec![d])
}

/// Settings with rules serde cannot express (ranges, combinations). An error names the field
/// it is about, so it can be reported at that field's line.
pub trait Validate {
    /// Checks the rules (none unless the settings say).
    fn validate(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }
}

/// Deserializes `node` as `T` and checks [`Validate::validate`]; every error carries the
/// position of the field it is about. The one way kind settings are read, by `validate` and
/// when a stage is built.
pub fn parse_validated<T: DeserializeOwned + Validate>(node: &Node) -> Result<T, Diagnostic> {
    let settings = from_node::<T>(node)?;
    settings.validate().map_err(|(field, message)| {
        let pos = node.get(field).map_or(&node.pos, |n| &n.pos);
        Diagnostic::error(pos.clone(), message)
    })?;
    Ok(settings)
}

/// [`parse_validated`] as a [`SettingsCheck`](crate::kinds::SettingsCheck).
pub fn check_validated<T: DeserializeOwned + Validate>(node: &Node) -> Result<(), Vec<Diagnostic>> {
    parse_validated::<T>(node).map(drop).map_err(|d| vec![d])
}

/// A serde deserializer reading from a borrowed [`Node`].
#[derive(Debug, Clone, Copy)]
pub struct NodeDeserializer<'de> {
    node: &'de Node,
}

impl<'de> NodeDeserializer<'de> {
    /// Deserialize from `node`.
    pub fn new(node: &'de Node) -> Self {
        NodeDeserializer { node }
    }

    fn invalid<V: Visitor<'de>, T>(&self, visitor: &V) -> Result<T, DeError> {
        let unexp = match &self.node.value {
            NodeValue::Null => Unexpected::Unit,
            NodeValue::Scalar { text, .. } => Unexpected::Str(text),
            NodeValue::Seq(_) => Unexpected::Seq,
            NodeValue::Map(_) => Unexpected::Map,
        };
        Err(de::Error::invalid_type(unexp, visitor))
    }

    fn visit_seq<V: Visitor<'de>>(
        &self,
        items: &'de [Node],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let mut access = SeqDe {
            iter: items.iter(),
            seen: 0,
        };
        let value = visitor.visit_seq(&mut access)?;
        let rest = access.iter.len();
        if rest > 0 {
            return Err(de::Error::invalid_length(
                access.seen + rest,
                &ExpectedItems(access.seen),
            ));
        }
        Ok(value)
    }

    fn visit_map<V: Visitor<'de>>(
        &self,
        entries: &'de [(Node, Node)],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_map(MapDe {
            iter: entries.iter(),
            value: None,
        })
    }

    fn positioned<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.at(&self.node.pos))
    }
}

struct ExpectedItems(usize);

impl Expected for ExpectedItems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} items", self.0)
    }
}

macro_rules! forward_to_any {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
                self.deserialize_any(visitor)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            NodeValue::Null => visitor.visit_unit(),
            NodeValue::Scalar {
                text,
                style: ScalarStyle::Quoted,
            } => visitor.visit_borrowed_str(text),
            NodeValue::Scalar { text, .. } => match resolve_plain(text) {
                Resolved::Null => visitor.visit_unit(),
                Resolved::Bool(b) => visitor.visit_bool(b),
                Resolved::Int(i) => match (i64::try_from(i), u64::try_from(i)) {
                    (Ok(v), _) => visitor.visit_i64(v),
                    (_, Ok(v)) => visitor.visit_u64(v),
                    _ => visitor.visit_i128(i),
                },
                Resolved::Float(f) => visitor.visit_f64(f),
                Resolved::Str => visitor.visit_borrowed_str(text),
            },
            NodeValue::Seq(items) => self.visit_seq(items, visitor),
            NodeValue::Map(entries) => self.visit_map(entries, visitor),
        };
        self.positioned(r)
    }

    forward_to_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_unit
    }

    // Any scalar reads as a string when a string is wanted, so `listen: 8080`
    // fills a `String` field; null stays an error because an empty value is
    // almost always a mistake.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            NodeValue::Scalar { text, .. } => visitor.visit_borrowed_str(text),
            _ => self.invalid(&visitor),
        };
        self.positioned(r)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            NodeValue::Scalar { text, .. } => visitor.visit_borrowed_bytes(text.as_bytes()),
            NodeValue::Seq(items) => self.visit_seq(items, visitor),
            _ => self.invalid(&visitor),
        };
        self.positioned(r)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        };
        self.positioned(r)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = visitor.visit_newtype_struct(self);
        self.positioned(r)
    }

    // A null collection is read as an empty one, so `dead-letter:` with no
    // options means "all defaults" rather than a type error.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            NodeValue::Seq(items) => self.visit_seq(items, visitor),
            NodeValue::Null => self.visit_seq(&[], visitor),
            _ => self.invalid(&visitor),
        };
        self.positioned(r)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            NodeValue::Map(entries) => self.visit_map(entries, visitor),
            NodeValue::Null => self.visit_map(&[], visitor),
            _ => self.invalid(&visitor),
        };
        self.positioned(r)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == spanned::NAME {
            let r = visitor.visit_map(SpannedDe {
                node: self.node,
                state: 0,
            });
            return self.positioned(r);
        }
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            NodeValue::Scalar { .. } => visitor.visit_enum(EnumDe {
                tag: self.node,
                value: None,
            }),
            NodeValue::Map(entries) if entries.len() == 1 => visitor.visit_enum(EnumDe {
                tag: &entries[0].0,
                value: Some(&entries[0].1),
            }),
            _ => Err(de::Error::custom(format_args!(
                "invalid type: {}, expected {} (a variant name, or a map with one key)",
                self.node.describe(),
                Described(&visitor)
            ))),
        };
        self.positioned(r)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct Described<'a, V>(&'a V);

impl<'de, V: Visitor<'de>> fmt::Display for Described<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }
}

impl<'de> IntoDeserializer<'de, DeError> for &'de Node {
    type Deserializer = NodeDeserializer<'de>;
    fn into_deserializer(self) -> Self::Deserializer {
        NodeDeserializer::new(self)
    }
}

struct SeqDe<'de> {
    iter: std::slice::Iter<'de, Node>,
    seen: usize,
}

impl<'de> SeqAccess<'de> for SeqDe<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            None => Ok(None),
            Some(item) => {
                self.seen += 1;
                seed.deserialize(NodeDeserializer::new(item))
                    .map(Some)
                    .map_err(|e| e.at(&item.pos))
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapDe<'de> {
    iter: std::slice::Iter<'de, (Node, Node)>,
    value: Option<&'de Node>,
}

impl<'de> MapAccess<'de> for MapDe<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            None => Ok(None),
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(NodeDeserializer::new(key))
                    .map(Some)
                    .map_err(|e| e.at(&key.pos))
            }
        }
    }

    // Errors raised after the value was read (e.g. by `deserialize_with`
    // range checks) still belong to the value, not to the enclosing map.
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let value = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value requested before key"))?;
        seed.deserialize(NodeDeserializer::new(value))
            .map_err(|e| e.at(&value.pos))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct EnumDe<'de> {
    tag: &'de Node,
    value: Option<&'de Node>,
}

impl<'de> EnumAccess<'de> for EnumDe<'de> {
    type Error = DeError;
    type Variant = VariantDe<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantDe<'de>), DeError> {
        let variant = seed
            .deserialize(NodeDeserializer::new(self.tag))
            .map_err(|e| e.at(&self.tag.pos))?;
        Ok((
            variant,
            VariantDe {
                tag: self.tag,
                value: self.value,
            },
        ))
    }
}

struct VariantDe<'de> {
    tag: &'de Node,
    value: Option<&'de Node>,
}

impl<'de> VariantDe<'de> {
    fn content(&self, what: &str) -> Result<&'de Node, DeError> {
        self.value.ok_or_else(|| {
            <DeError as de::Error>::custom(format_args!(
                "variant `{}` needs {what}: write it as a map `{}: ...`",
                self.tag.key_text(),
                self.tag.key_text()
            ))
            .at(&self.tag.pos)
        })
    }
}

impl<'de> VariantAccess<'de> for VariantDe<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            None => Ok(()),
            Some(v) if v.is_null() => Ok(()),
            Some(v) => Err(<DeError as de::Error>::custom(format_args!(
                "variant `{}` takes no value",
                self.tag.key_text()
            ))
            .at(&v.pos)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        let node = self.content("a value")?;
        seed.deserialize(NodeDeserializer::new(node))
            .map_err(|e| e.at(&node.pos))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        let node = self.content("a sequence")?;
        de::Deserializer::deserialize_seq(NodeDeserializer::new(node), visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let node = self.content("fields")?;
        de::Deserializer::deserialize_map(NodeDeserializer::new(node), visitor)
    }
}

/// Hands a node's position and value to [`Spanned`](crate::Spanned)'s visitor
/// as a four-entry map (the only channel serde offers).
struct SpannedDe<'de> {
    node: &'de Node,
    state: u8,
}

impl<'de> MapAccess<'de> for SpannedDe<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let key = match self.state {
            0 => spanned::ORIGIN,
            1 => spanned::LINE,
            2 => spanned::COLUMN,
            3 => spanned::VALUE,
            _ => return Ok(None),
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let pos = &self.node.pos;
        self.state += 1;
        match self.state {
            1 => seed.deserialize(spanned::encode_origin(&pos.origin).into_deserializer()),
            2 => seed.deserialize((pos.line as u64).into_deserializer()),
            3 => seed.deserialize((pos.column as u64).into_deserializer()),
            _ => seed.deserialize(NodeDeserializer::new(self.node)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde::Deserialize;

    use super::*;
    use crate::Spanned;

    fn parse(text: &str) -> Node {
        Node::parse(text, &Arc::from("t.yaml")).unwrap()
    }

    fn err<T: DeserializeOwned + fmt::Debug>(text: &str) -> String {
        from_node::<T>(&parse(text)).unwrap_err().to_string()
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        partitions: u32,
        #[serde(default)]
        label: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        inner: Inner,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn reads_nested_structs() {
        let v: Outer = from_node(&parse(
            "name: x\ninner: {partitions: 8}\ntags: [a, 'b', 3]\n",
        ))
        .unwrap();
        assert_eq!(v.name, "x");
        assert_eq!(v.inner.partitions, 8);
        assert_eq!(v.tags, ["a", "b", "3"]);
    }

    #[test]
    fn unknown_field_is_at_the_key() {
        let e = err::<Outer>("name: x\ninner:\n  partitions: 1\n  lable: y\n");
        assert_eq!(
            e,
            "t.yaml:4:3: error: unknown field `lable`, expected `partitions` or `label`"
        );
    }

    #[test]
    fn wrong_type_is_at_the_value() {
        let e = err::<Outer>("name: x\ninner:\n  partitions: many\n");
        assert_eq!(
            e,
            "t.yaml:3:15: error: invalid type: string \"many\", expected u32"
        );
        let e = err::<Outer>("name: x\ninner:\n  partitions: -1\n");
        assert_eq!(
            e,
            "t.yaml:3:15: error: invalid value: integer `-1`, expected u32"
        );
    }

    #[test]
    fn missing_field_is_at_the_map() {
        let e = err::<Outer>("name: x\ninner:\n  label: y\n");
        assert_eq!(e, "t.yaml:3:3: error: missing field `partitions`");
    }

    #[test]
    fn quoted_scalars_are_strings() {
        let e = err::<Inner>("partitions: '8'\n");
        assert_eq!(
            e,
            "t.yaml:1:13: error: invalid type: string \"8\", expected u32"
        );
    }

    #[test]
    fn plain_scalars_read_as_strings_when_wanted() {
        #[derive(Deserialize)]
        struct S {
            listen: String,
            flag: String,
            ratio: String,
        }
        let s: S = from_node(&parse("listen: 8080\nflag: true\nratio: 1.5\n")).unwrap();
        assert_eq!(
            (s.listen.as_str(), s.flag.as_str(), s.ratio.as_str()),
            ("8080", "true", "1.5")
        );
    }

    #[test]
    fn null_is_not_a_string_and_empty_value_points_at_key() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct S {
            name: String,
        }
        let e = err::<S>("name:\n");
        assert_eq!(
            e,
            "t.yaml:1:1: error: invalid type: null, expected a string"
        );
    }

    #[test]
    fn options_and_null_collections() {
        #[derive(Debug, Deserialize, Default)]
        #[serde(default)]
        struct S {
            a: Option<u32>,
            b: Option<u32>,
            list: Vec<u32>,
            map: BTreeMap<String, u32>,
        }
        let s: S = from_node(&parse("a: ~\nb: 3\nlist:\nmap:\n")).unwrap();
        assert_eq!((s.a, s.b), (None, Some(3)));
        assert!(s.list.is_empty() && s.map.is_empty());
    }

    #[test]
    fn core_schema_typing_into_any() {
        let v: serde_json::Value = from_node(&parse(
            "a: 1\nb: -2\nc: 1.5\nd: true\ne: ~\nf: text\ng: '1'\nh: 0x10\n",
        ))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": -2, "c": 1.5, "d": true, "e": null, "f": "text", "g": "1", "h": 16})
        );
    }

    #[test]
    fn enums() {
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(rename_all = "lowercase")]
        enum E {
            Plain,
            Wrapped(u32),
            Fields { x: u32 },
        }
        assert_eq!(
            from_node::<Vec<E>>(&parse("[plain, {wrapped: 3}, {fields: {x: 1}}]")).unwrap(),
            [E::Plain, E::Wrapped(3), E::Fields { x: 1 }]
        );
        let e = err::<Vec<E>>("- plain\n- nope\n");
        assert_eq!(e, "t.yaml:2:3: error: unknown variant `nope`, expected one of `plain`, `wrapped`, `fields`");
    }

    #[test]
    fn seq_item_errors_are_at_the_item() {
        let e = err::<Vec<u8>>("- 1\n- 300\n");
        assert_eq!(
            e,
            "t.yaml:2:3: error: invalid value: integer `300`, expected u8"
        );
        let e = err::<(u8, u8)>("[1, 2, 3]");
        assert_eq!(e, "t.yaml:1:1: error: invalid length 3, expected 2 items");
    }

    #[test]
    fn spanned_carries_positions() {
        #[derive(Deserialize)]
        struct S {
            name: Spanned<String>,
            n: Spanned<u32>,
        }
        let s: S = from_node(&parse("name: x\nn:   7\n")).unwrap();
        assert_eq!(s.name.value, "x");
        assert_eq!((s.name.pos.line, s.name.pos.column), (1, 7));
        assert_eq!(*s.n, 7);
        assert_eq!(s.n.pos.to_string(), "t.yaml:2:6");
    }

    #[test]
    fn spanned_inner_errors_are_positioned() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct S {
            n: Spanned<u32>,
        }
        assert_eq!(
            err::<S>("n: x\n"),
            "t.yaml:1:4: error: invalid type: string \"x\", expected u32"
        );
    }

    #[test]
    fn deserialize_with_errors_are_at_the_value() {
        fn positive<'de, D: de::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
            let v = u32::deserialize(d)?;
            if v == 0 {
                return Err(de::Error::custom("must be at least 1"));
            }
            Ok(v)
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct S {
            #[serde(deserialize_with = "positive")]
            n: u32,
        }
        assert_eq!(
            err::<S>("\nn: 0\n"),
            "t.yaml:2:4: error: must be at least 1"
        );
    }
}
