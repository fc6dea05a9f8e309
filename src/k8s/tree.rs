//! Helpers that keep each object's code shaped like the YAML it renders: a manifest reads as
//! nested `map([...])` and `seq([...])` calls, in the order its keys are written.

use yaml_rust2::yaml::Hash;
use yaml_rust2::Yaml;

/// A string scalar.
pub(super) fn v(s: impl Into<String>) -> Yaml {
    Yaml::String(s.into())
}

/// An integer scalar. Rendered numbers (ports, replicas, byte limits) are far inside `i64`.
pub(super) fn int(n: impl TryInto<i64>) -> Yaml {
    Yaml::Integer(n.try_into().unwrap_or(i64::MAX))
}

/// A boolean scalar.
pub(super) fn boolean(b: bool) -> Yaml {
    Yaml::Boolean(b)
}

/// A mapping of `(key, value)` pairs in order; null values are left out, so optional fields
/// can be written inline.
pub(super) fn map<const N: usize>(pairs: [(&str, Yaml); N]) -> Yaml {
    let mut m = Hash::new();
    for (k, val) in pairs {
        if !val.is_null() {
            m.insert(v(k), val);
        }
    }
    Yaml::Hash(m)
}

/// `m` with one more entry (or `key` replaced), for objects that extend a shared mapping.
pub(super) fn with(m: Yaml, key: &str, value: Yaml) -> Yaml {
    match m {
        Yaml::Hash(mut h) => {
            h.insert(v(key), value);
            Yaml::Hash(h)
        }
        other => other,
    }
}

/// A sequence.
pub(super) fn seq(items: impl IntoIterator<Item = Yaml>) -> Yaml {
    Yaml::Array(items.into_iter().collect())
}
