//! Human-readable durations (`500ms`, `24h`, `1h 30m`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written the humantime way; displays and serializes back in
/// the same style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The wrapped duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse(s).map(HumanDuration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_duration::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_duration::deserialize(d).map(HumanDuration)
    }
}

fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration `{s}`: {e} (expected e.g. `500ms`, `30s`, `24h`, `1h 30m`)")
    })
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration like `500ms`, `30s` or `1h 30m`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
}

/// `#[serde(with = "sluice_config::serde_duration")]` for `std::time::Duration`
/// fields written as humantime strings.
pub mod serde_duration {
    use super::*;

    /// Write a duration as a humantime string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    /// Read a duration from a humantime string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(DurationVisitor)
    }

    /// The same for `Option<Duration>` (null or absent with `#[serde(default)]` is `None`).
    pub mod option {
        use super::*;

        /// Write an optional duration.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        /// Read an optional duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<HumanDuration>::deserialize(d).map(|o| o.map(|h| h.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{from_node, Node};

    #[derive(Debug, Deserialize, Serialize)]
    struct S {
        #[serde(with = "serde_duration")]
        a: Duration,
        b: HumanDuration,
        #[serde(with = "serde_duration::option", default)]
        c: Option<Duration>,
    }

    fn node(text: &str) -> Node {
        Node::parse(text, &Arc::from("d.yaml")).unwrap()
    }

    #[test]
    fn parses_and_prints() {
        let s: S = from_node(&node("a: 500ms\nb: 1h 30m\n")).unwrap();
        assert_eq!(s.a, Duration::from_millis(500));
        assert_eq!(s.b.0, Duration::from_secs(5400));
        assert_eq!(s.c, None);
        assert_eq!(s.b.to_string(), "1h 30m");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"a":"500ms","b":"1h 30m","c":null}"#);
        assert_eq!(
            "24h".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(86400)
        );
    }

    #[test]
    fn bad_duration_is_positioned() {
        let e = from_node::<S>(&node("a: 5\nb: 1s\n")).unwrap_err();
        assert_eq!(e.pos.to_string(), "d.yaml:1:4");
        assert!(
            e.message.starts_with("invalid duration `5`"),
            "{}",
            e.message
        );
    }
}
