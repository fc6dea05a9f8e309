//! From text to a [`Pipeline`]: parse, override, interpolate, build.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::de::{DeserializeOwned, Error as _};
use serde::Deserialize;

use crate::de::{from_node, DeError};
use crate::diagnostic::{Diagnostic, Diagnostics, Origin, Pos};
use crate::interpolate::interpolate;
use crate::model::{Broker, Endpoint, Pipeline, RetrySpec, Services, StageSpec, TopicSpec};
use crate::node::{Node, NodeValue};
use crate::overrides::apply_sets;
use crate::size::ByteSize;
use crate::spanned::Spanned;

/// Top-level fields; keys starting with `x-` are also accepted and ignored,
/// as a home for YAML anchors shared by several stages.
const TOP_FIELDS: &[&str] = &[
    "name",
    "broker",
    "broker_options",
    "services",
    "dead_letter",
    "topics",
    "stages",
];
const SERVICE_FIELDS: &[&str] = &["memcached", "etcd", "chroma", "storage"];
/// Stage fields interpreted by the runtime; every other stage field is a
/// kind-specific setting.
pub const COMMON_STAGE_FIELDS: &[&str] = &[
    "kind",
    "input",
    "output",
    "replicas",
    "concurrency",
    "retry",
    "feedback",
    "resources",
    "autoscale",
];

/// Largest pipeline file read. A pipeline is a few kilobytes (a `resolve:` map of thousands
/// of hosts a few hundred); a file of many megabytes is a mistake (or an attack on a service
/// that loads pipelines), and parsing it would take the memory of a large YAML tree.
pub const MAX_PIPELINE_BYTES: usize = 4 << 20;

/// Read `path`, apply `sets` and environment interpolation, and build the
/// pipeline. Kind-specific checks happen in [`validate`](crate::validate).
pub fn load(
    path: &Path,
    sets: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, Diagnostics> {
    use std::io::Read as _;
    let name = path.display().to_string();
    let origin: Arc<str> = Arc::from(name.as_str());
    let cannot_read = |e: std::io::Error| {
        Diagnostic::error(Pos::file(&origin, 1, 1), format!("cannot read {name}: {e}"))
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(MAX_PIPELINE_BYTES as u64 + 1)
                .read_to_string(&mut text)
        })
        .map_err(cannot_read)?;
    let mut p = load_str(&text, &name, sets, env)?;
    p.path = path.to_path_buf();
    Ok(p)
}

/// Like [`load`] for text in memory; `origin_name` is used in positions.
///
/// Overrides are applied to the parsed tree first and interpolation then
/// skips the values they set (which are literal), so the result is the same
/// as overriding after interpolation, except that an unset variable in a
/// value replaced by `--set` is not an error.
pub fn load_str(
    text: &str,
    origin_name: &str,
    sets: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, Diagnostics> {
    let origin: Arc<str> = Arc::from(origin_name);
    if text.len() > MAX_PIPELINE_BYTES {
        return Err(Diagnostic::error(
            Pos::file(&origin, 1, 1),
            format!(
                "{origin_name} is larger than {} MiB: not a pipeline file",
                MAX_PIPELINE_BYTES >> 20
            ),
        )
        .into());
    }
    let mut root = Node::parse(text, &origin)?;
    let mut diags = apply_sets(&mut root, sets);
    diags.extend(interpolate_file_values(&mut root, env));
    if diags.has_errors() {
        diags.sort();
        return Err(diags);
    }
    build(root, PathBuf::from(origin_name))
}

fn interpolate_file_values(node: &mut Node, env: &dyn Fn(&str) -> Option<String>) -> Diagnostics {
    if matches!(node.pos.origin, Origin::Set(_)) {
        return Diagnostics::new();
    }
    match &mut node.value {
        NodeValue::Seq(items) => items
            .iter_mut()
            .flat_map(|n| interpolate_file_values(n, env))
            .collect(),
        NodeValue::Map(entries) => entries
            .iter_mut()
            .flat_map(|(_, v)| interpolate_file_values(v, env))
            .collect(),
        _ => interpolate(node, env),
    }
}

/// Collects diagnostics while the model is built, so one run reports every
/// structural problem rather than the first.
struct Builder {
    diags: Diagnostics,
}

impl Builder {
    fn read<T: DeserializeOwned>(&mut self, node: &Node) -> Option<T> {
        from_node(node).map_err(|d| self.diags.push(d)).ok()
    }

    /// The entries of a map that may only contain `allowed` keys (plus
    /// `x-...` keys when `extensions`); null counts as an empty map.
    fn fields<'a>(
        &mut self,
        node: &'a Node,
        allowed: &'static [&'static str],
        extensions: bool,
    ) -> Option<&'a [(Node, Node)]> {
        match &node.value {
            NodeValue::Null => Some(&[]),
            NodeValue::Map(entries) => {
                for (key, _) in entries {
                    let extension = extensions && key.key_text().starts_with("x-");
                    if !allowed.contains(&key.key_text()) && !extension {
                        let e = DeError::unknown_field(key.key_text(), allowed);
                        self.diags.error(&key.pos, e.message());
                    }
                }
                Some(entries)
            }
            _ => {
                self.expected_map(node);
                None
            }
        }
    }

    fn expected_map(&mut self, node: &Node) {
        self.diags.error(
            &node.pos,
            format!("invalid type: {}, expected a map", node.describe()),
        );
    }

    fn at_least_one(&mut self, value: u32, node: Option<&Node>, what: &str) {
        if value == 0 {
            if let Some(node) = node {
                self.diags
                    .error(&node.pos, format!("{what} must be at least 1"));
            }
        }
    }
}

fn get<'a>(entries: &'a [(Node, Node)], key: &str) -> Option<&'a Node> {
    entries
        .iter()
        .find(|(k, _)| k.key_text() == key)
        .map(|(_, v)| v)
}

fn build(root: Node, path: PathBuf) -> Result<Pipeline, Diagnostics> {
    let mut b = Builder {
        diags: Diagnostics::new(),
    };
    if root.is_null() {
        b.diags.error(
            &root.pos,
            "the pipeline file is empty; expected a map with `name`, `topics` and `stages`",
        );
        return Err(b.diags);
    }
    let Some(top) = b.fields(&root, TOP_FIELDS, true) else {
        return Err(b.diags);
    };

    let name = match get(top, "name") {
        None => {
            b.diags.error(&root.pos, "missing field `name`");
            String::new()
        }
        Some(n) => b.read::<Spanned<String>>(n).map_or_else(String::new, |s| {
            if s.trim().is_empty() {
                b.diags.error(&s.pos, "name must not be empty");
            }
            s.value
        }),
    };

    let broker = match get(top, "broker") {
        None => Spanned::new(Broker::Memory, root.pos.clone()),
        Some(n) => b
            .read::<Spanned<String>>(n)
            .and_then(|s| match parse_broker(&s) {
                Ok(broker) => Some(Spanned::new(broker, s.pos)),
                Err(msg) => {
                    b.diags.error(&s.pos, msg);
                    None
                }
            })
            .unwrap_or_else(|| Spanned::new(Broker::Memory, n.pos.clone())),
    };

    let broker_options = get(top, "broker_options")
        .and_then(|n| b.read::<IndexMap<String, String>>(n))
        .unwrap_or_default();

    let services = build_services(&mut b, get(top, "services"), &root.pos);

    let dead_letter =
        get(top, "dead_letter").and_then(|n| b.read::<Option<Spanned<String>>>(n).flatten());

    let mut topics = IndexMap::new();
    if let Some(section) = get(top, "topics") {
        for (key, value) in section_entries(&mut b, section) {
            if let Some(t) = build_topic(&mut b, key, value) {
                topics.insert(t.name.clone(), t);
            }
        }
    }

    let mut stages = IndexMap::new();
    if let Some(section) = get(top, "stages") {
        for (key, value) in section_entries(&mut b, section) {
            if let Some(s) = build_stage(&mut b, key, value) {
                stages.insert(s.name.clone(), s);
            }
        }
    }

    if b.diags.has_errors() {
        b.diags.sort();
        return Err(b.diags);
    }
    Ok(Pipeline {
        name,
        broker,
        broker_options,
        services,
        dead_letter,
        topics,
        stages,
        source: root,
        path,
    })
}

fn section_entries<'a>(b: &mut Builder, section: &'a Node) -> &'a [(Node, Node)] {
    match &section.value {
        NodeValue::Map(entries) => entries,
        NodeValue::Null => &[],
        _ => {
            b.expected_map(section);
            &[]
        }
    }
}

fn build_services(b: &mut Builder, node: Option<&Node>, root_pos: &Pos) -> Services {
    // Defaults point at the section (or the file) so messages about them
    // still have a useful place.
    let default_pos = node.map_or(root_pos, |n| &n.pos).clone();
    let entries = node
        .and_then(|n| b.fields(n, SERVICE_FIELDS, false))
        .unwrap_or(&[]);
    let mut optional = |key: &str| -> Option<Spanned<String>> {
        let node = get(entries, key)?;
        b.read::<Option<Spanned<String>>>(node).flatten()
    };
    let memcached = optional("memcached");
    let etcd = optional("etcd");
    let chroma = optional("chroma");
    let storage = optional("storage");

    let mut endpoint = |value: Option<Spanned<String>>,
                        parse: fn(&str) -> Result<Vec<String>, String>,
                        what: &str| {
        match value {
            None => Spanned::new(Endpoint::Memory, default_pos.clone()),
            Some(s) if s.trim() == "memory" => Spanned::new(Endpoint::Memory, s.pos),
            Some(s) => match parse(s.trim()) {
                Ok(list) => Spanned::new(Endpoint::Remote(list), s.pos),
                Err(why) => {
                    b.diags.error(
                        &s.pos,
                        format!("invalid {what} endpoint `{}`: {why}", s.value),
                    );
                    Spanned::new(Endpoint::Memory, s.pos)
                }
            },
        }
    };
    let memcached = endpoint(memcached, parse_host_ports, "memcached");
    let etcd = endpoint(etcd, parse_http_urls, "etcd");

    let chroma = chroma.filter(|s| !s.trim().is_empty());
    if let Some(c) = &chroma {
        if !is_http_url(c.trim()) {
            b.diags.error(
                &c.pos,
                format!(
                    "invalid chroma URL `{}`: expected `http://host:port` or `https://...`",
                    c.value
                ),
            );
        }
    }
    let storage = match storage {
        None => Spanned::new("./data".to_string(), default_pos),
        Some(s) if s.trim().is_empty() => {
            b.diags.error(
                &s.pos,
                "storage must not be empty (a local directory or object-store URL)",
            );
            s
        }
        Some(s) => s,
    };
    Services {
        memcached,
        etcd,
        chroma,
        storage,
    }
}

/// Parse a `broker:` value.
pub fn parse_broker(s: &str) -> Result<Broker, String> {
    let s = s.trim();
    if s == "memory" {
        return Ok(Broker::Memory);
    }
    let list = s.strip_prefix("kafka://").unwrap_or(s);
    parse_host_ports(list)
        .map(|hosts| Broker::Kafka {
            bootstrap: hosts.join(","),
        })
        .map_err(|why| {
            format!("invalid broker `{s}`: {why}; expected `memory` or Kafka bootstrap servers `host:port[,host:port]`")
        })
}

/// Split `host:port[,host:port]`, checking each address.
pub fn parse_host_ports(list: &str) -> Result<Vec<String>, String> {
    list.split(',')
        .map(|addr| {
            let addr = addr.trim();
            let ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if ok && !addr.contains(char::is_whitespace) && !addr.contains('/') {
                Ok(addr.to_string())
            } else {
                Err(format!("`{addr}` is not a `host:port` address"))
            }
        })
        .collect()
}

fn parse_http_urls(list: &str) -> Result<Vec<String>, String> {
    list.split(',')
        .map(|url| {
            let url = url.trim();
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            match rest.map(|r| r.trim_end_matches('/')) {
                Some(hp) if parse_host_ports(hp).is_ok() => Ok(url.to_string()),
                _ => Err(format!("`{url}` is not an `http://host:port` URL")),
            }
        })
        .collect()
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    #[serde(default = "one_u32")]
    partitions: u32,
    #[serde(default = "one_i16")]
    replication: i16,
    #[serde(rename = "type", default)]
    message_type: Option<Spanned<String>>,
    #[serde(default)]
    max_message_bytes: Option<ByteSize>,
}

/// Bounds of a topic's `max_message_bytes`: Kafka counts it in a 32-bit int, and a record
/// below a few KiB could not hold a page's metadata.
const MESSAGE_BYTES_RANGE: std::ops::RangeInclusive<u64> = 4096..=(1 << 30);

fn one_u32() -> u32 {
    1
}

fn one_i16() -> i16 {
    1
}

/// Kafka's rule for topic names.
fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn build_topic(b: &mut Builder, key: &Node, value: &Node) -> Option<TopicSpec> {
    let name = key.key_text().to_string();
    if !valid_topic_name(&name) {
        b.diags.error(
            &key.pos,
            format!("invalid topic name `{name}`: use 1 to 249 letters, digits, `.`, `_` or `-`"),
        );
    }
    let raw: RawTopic = b.read(value)?;
    b.at_least_one(raw.partitions, value.get("partitions"), "partitions");
    if raw.replication == 0 || raw.replication < -1 {
        if let Some(n) = value.get("replication") {
            b.diags.error(
                &n.pos,
                "replication must be at least 1 (or -1 for the broker default)",
            );
        }
    }
    let max_message_bytes = raw.max_message_bytes.and_then(|size| {
        if MESSAGE_BYTES_RANGE.contains(&size.0) {
            return u32::try_from(size.0).ok();
        }
        if let Some(n) = value.get("max_message_bytes") {
            b.diags.error(
                &n.pos,
                format!("max_message_bytes must be between 4KiB and 1GiB, not {size}"),
            );
        }
        None
    });
    Some(TopicSpec {
        name,
        partitions: raw.partitions,
        replication: raw.replication,
        message_type: raw.message_type,
        max_message_bytes,
        pos: key.pos.clone(),
    })
}

fn build_stage(b: &mut Builder, key: &Node, value: &Node) -> Option<StageSpec> {
    let name = key.key_text().to_string();
    let entries: &[(Node, Node)] = match &value.value {
        NodeValue::Map(entries) => entries,
        NodeValue::Null => &[],
        _ => {
            b.expected_map(value);
            return None;
        }
    };
    let field = |k: &str| get(entries, k);

    let kind = match field("kind") {
        None => {
            b.diags
                .error(&key.pos, format!("stage `{name}`: missing field `kind`"));
            None
        }
        Some(n) => b.read::<Spanned<String>>(n),
    };
    let input = field("input").and_then(|n| b.read::<Option<Spanned<String>>>(n).flatten());
    let output = field("output").and_then(|n| b.read::<Option<Spanned<String>>>(n).flatten());
    let replicas = field("replicas")
        .and_then(|n| b.read::<u32>(n))
        .unwrap_or(1);
    let concurrency = field("concurrency").and_then(|n| b.read::<Option<u32>>(n).flatten());
    if let Some(c) = concurrency {
        b.at_least_one(c, field("concurrency"), "concurrency");
    }
    let retry = match field("retry") {
        None => RetrySpec::default(),
        Some(n) => {
            let retry = b.read::<RetrySpec>(n).unwrap_or_default();
            b.at_least_one(retry.attempts, n.get("attempts"), "retry.attempts");
            if retry.backoff > retry.max_backoff {
                let at = n.get("backoff").or(n.get("max_backoff")).unwrap_or(n);
                b.diags.error(
                    &at.pos,
                    format!(
                        "retry.backoff ({}) is longer than retry.max_backoff ({})",
                        humantime::format_duration(retry.backoff),
                        humantime::format_duration(retry.max_backoff)
                    ),
                );
            }
            retry
        }
    };
    let feedback = field("feedback")
        .and_then(|n| b.read::<Vec<Spanned<String>>>(n))
        .unwrap_or_default();
    let mut free_map = |k: &str| -> Option<Node> {
        let n = field(k)?;
        match n.value {
            NodeValue::Null => None,
            NodeValue::Map(_) => Some(n.clone()),
            _ => {
                b.expected_map(n);
                None
            }
        }
    };
    let resources = free_map("resources");
    let autoscale = free_map("autoscale");

    let settings = entries
        .iter()
        .filter(|(k, _)| !COMMON_STAGE_FIELDS.contains(&k.key_text()))
        .cloned()
        .collect();
    let mut outputs = IndexMap::new();
    if let Some(o) = output {
        outputs.insert("output".to_string(), o);
    }
    Some(StageSpec {
        name,
        kind: kind?,
        input,
        outputs,
        replicas,
        concurrency,
        retry,
        feedback,
        resources,
        autoscale,
        settings: Node::new(NodeValue::Map(settings), value.pos.clone()),
        pos: key.pos.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_many_megabytes_is_refused_before_it_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.yaml");
        let line = "# filler\n";
        let mut text = String::from("name: huge\n");
        text.push_str(&line.repeat(MAX_PIPELINE_BYTES / line.len() + 1));
        std::fs::write(&path, &text).unwrap();
        let Err(err) = load(&path, &[], &|_| None) else {
            panic!("a file over the limit was loaded");
        };
        let err = err.to_string();
        assert!(err.contains("larger than 4 MiB"), "{err}");
    }

    #[test]
    fn brokers() {
        assert_eq!(parse_broker("memory"), Ok(Broker::Memory));
        assert_eq!(
            parse_broker("kafka://a:9092, b:9093"),
            Ok(Broker::Kafka {
                bootstrap: "a:9092,b:9093".into()
            })
        );
        assert_eq!(
            parse_broker("[::1]:9092"),
            Ok(Broker::Kafka {
                bootstrap: "[::1]:9092".into()
            })
        );
        let e = parse_broker("localhost").unwrap_err();
        assert!(
            e.starts_with("invalid broker `localhost`: `localhost` is not a `host:port` address"),
            "{e}"
        );
        assert!(parse_broker("a:0").is_err());
        assert!(parse_broker("a:9092,").is_err());
    }

    #[test]
    fn etcd_urls() {
        assert_eq!(
            parse_http_urls("http://a:2379,https://b:2379/").unwrap(),
            ["http://a:2379", "https://b:2379/"]
        );
        assert!(parse_http_urls("a:2379").is_err());
    }

    #[test]
    fn topic_names() {
        assert!(valid_topic_name("url-in.v1_x"));
        assert!(!valid_topic_name("url in"));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name(""));
    }
}
