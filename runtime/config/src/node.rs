//! A YAML tree that remembers where every node came from, and its parser.
//!
//! yaml-rust2's own tree has no positions, so we build ours from its marked
//! event stream.

use std::collections::HashMap;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

use crate::diagnostic::{Diagnostic, Pos};
use crate::scalar::{self, Resolved};

/// How a scalar was written, which decides how it is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    /// Unquoted: typed by the YAML 1.2 core schema (`8` is an int, `true` a bool).
    Plain,
    /// Quoted, block (`|`, `>`), tagged `!!str`, or produced by partial
    /// interpolation: always a string.
    Quoted,
}

/// The content of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// `~`, `null`, or an empty value.
    Null,
    /// Any other scalar, untyped until deserialized.
    Scalar {
        /// The scalar's text after YAML unescaping.
        text: String,
        /// Whether the scalar is typed by content or always a string.
        style: ScalarStyle,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping as `(key, value)` pairs in file order; keys are unique.
    Map(Vec<(Node, Node)>),
}

/// A YAML node and the position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The content.
    pub value: NodeValue,
    /// Where the node starts (for a block map: its first key).
    pub pos: Pos,
}

// Guards alias expansion against "billion laughs" documents.
const MAX_NODES: usize = 1_000_000;

impl Node {
    /// A node with the given content and position.
    pub fn new(value: NodeValue, pos: Pos) -> Self {
        Node { value, pos }
    }

    /// A null node.
    pub fn null(pos: Pos) -> Self {
        Node::new(NodeValue::Null, pos)
    }

    /// A scalar that is always a string.
    pub fn string(text: impl Into<String>, pos: Pos) -> Self {
        Node::new(
            NodeValue::Scalar {
                text: text.into(),
                style: ScalarStyle::Quoted,
            },
            pos,
        )
    }

    /// A plain scalar, typed by its content.
    pub fn plain(text: impl Into<String>, pos: Pos) -> Self {
        let text = text.into();
        if scalar::is_null(&text) {
            return Node::null(pos);
        }
        Node::new(
            NodeValue::Scalar {
                text,
                style: ScalarStyle::Plain,
            },
            pos,
        )
    }

    /// An empty map.
    pub fn empty_map(pos: Pos) -> Self {
        Node::new(NodeValue::Map(Vec::new()), pos)
    }

    /// Parse one YAML document; positions refer to `origin`.
    ///
    /// An empty document yields a null root at 1:1.
    pub fn parse(text: &str, origin: &Arc<str>) -> Result<Node, Diagnostic> {
        Builder::new(|line, col| Pos::file(origin, line, col)).run(text)
    }

    /// Parse one YAML document, giving every node the same position (used for
    /// `--set` values, whose diagnostics name the override, not a column).
    pub fn parse_with_pos(text: &str, pos: &Pos) -> Result<Node, Diagnostic> {
        Builder::new(|_, _| pos.clone()).run(text)
    }

    /// The text of a scalar node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The entries of a map node.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            NodeValue::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The entries of a map node, mutably.
    pub fn as_map_mut(&mut self) -> Option<&mut Vec<(Node, Node)>> {
        match &mut self.value {
            NodeValue::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The items of a sequence node.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            NodeValue::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// Whether this is a null node.
    pub fn is_null(&self) -> bool {
        matches!(self.value, NodeValue::Null)
    }

    /// The key and value of `key` in a map node.
    pub fn entry(&self, key: &str) -> Option<&(Node, Node)> {
        self.as_map()?.iter().find(|(k, _)| k.key_text() == key)
    }

    /// The value of `key` in a map node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The value of `key` in a map node, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.as_map_mut()?
            .iter_mut()
            .find(|(k, _)| k.key_text() == key)
            .map(|(_, v)| v)
    }

    /// Follow a path of map keys.
    pub fn get_path(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, key| node.get(key))
    }

    /// The text a key is matched by: a scalar's text, `null` for a null key,
    /// and a placeholder for collections (which the parser rejects as keys).
    pub fn key_text(&self) -> &str {
        match &self.value {
            NodeValue::Scalar { text, .. } => text,
            NodeValue::Null => "null",
            NodeValue::Seq(_) => "<sequence>",
            NodeValue::Map(_) => "<map>",
        }
    }

    /// A short description of the node's type for messages, e.g. "a map".
    pub fn describe(&self) -> &'static str {
        match &self.value {
            NodeValue::Null => "null",
            NodeValue::Scalar {
                style: ScalarStyle::Quoted,
                ..
            } => "a string",
            NodeValue::Scalar { text, .. } => match scalar::resolve_plain(text) {
                Resolved::Null => "null",
                Resolved::Bool(_) => "a boolean",
                Resolved::Int(_) => "an integer",
                Resolved::Float(_) => "a float",
                Resolved::Str => "a string",
            },
            NodeValue::Seq(_) => "a sequence",
            NodeValue::Map(_) => "a map",
        }
    }

    /// The node as a position-less yaml-rust2 value, scalars typed by the
    /// core schema.
    pub fn to_yaml_value(&self) -> Yaml {
        match &self.value {
            NodeValue::Null => Yaml::Null,
            NodeValue::Scalar {
                text,
                style: ScalarStyle::Quoted,
            } => Yaml::String(text.clone()),
            NodeValue::Scalar { text, .. } => match scalar::resolve_plain(text) {
                Resolved::Null => Yaml::Null,
                Resolved::Bool(b) => Yaml::Boolean(b),
                // i64 is yaml-rust2's widest integer; larger ones keep their digits as a
                // verbatim scalar, which reads back as the same integer.
                Resolved::Int(i) => {
                    i64::try_from(i).map_or_else(|_| Yaml::Real(i.to_string()), Yaml::Integer)
                }
                Resolved::Float(f) => Yaml::Real(float_text(f)),
                Resolved::Str => Yaml::String(text.clone()),
            },
            NodeValue::Seq(items) => Yaml::Array(items.iter().map(Node::to_yaml_value).collect()),
            NodeValue::Map(entries) => Yaml::Hash(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_yaml_value(), v.to_yaml_value()))
                    .collect(),
            ),
        }
    }

    /// The node as YAML text (positions and comments are lost; quoting is
    /// re-derived so that every scalar keeps its type).
    pub fn to_yaml_string(&self) -> String {
        crate::emit::to_yaml_string(&self.to_yaml_value())
    }

    fn count(&self) -> usize {
        1 + match &self.value {
            NodeValue::Seq(items) => items.iter().map(Node::count).sum(),
            NodeValue::Map(entries) => entries.iter().map(|(k, v)| k.count() + v.count()).sum(),
            _ => 0,
        }
    }
}

/// A float as YAML 1.1 and 1.2 both read it: with a `.`, and a signed exponent.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.into();
    }
    let text = format!("{f:?}");
    match text.split_once('e') {
        None => text,
        Some((mantissa, exponent)) => {
            let dot = if mantissa.contains('.') { "" } else { ".0" };
            let sign = if exponent.starts_with('-') { "" } else { "+" };
            format!("{mantissa}{dot}e{sign}{exponent}")
        }
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.value {
            NodeValue::Null => s.serialize_unit(),
            NodeValue::Scalar {
                text,
                style: ScalarStyle::Quoted,
            } => s.serialize_str(text),
            NodeValue::Scalar { text, .. } => match scalar::resolve_plain(text) {
                Resolved::Null => s.serialize_unit(),
                Resolved::Bool(b) => s.serialize_bool(b),
                Resolved::Int(i) => match (i64::try_from(i), u64::try_from(i)) {
                    (Ok(v), _) => s.serialize_i64(v),
                    (_, Ok(v)) => s.serialize_u64(v),
                    _ => s.serialize_str(text),
                },
                Resolved::Float(f) => s.serialize_f64(f),
                Resolved::Str => s.serialize_str(text),
            },
            NodeValue::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            NodeValue::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        // Block maps report the position of the first `:`; we move it to the
        // first key, which needs the marker's character index.
        index: usize,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        seen: HashMap<String, Pos>,
    },
}

struct Builder<F: Fn(usize, usize) -> Pos> {
    make_pos: F,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    nodes: usize,
}

impl<F: Fn(usize, usize) -> Pos> Builder<F> {
    fn new(make_pos: F) -> Self {
        Builder {
            make_pos,
            stack: Vec::new(),
            anchors: HashMap::new(),
            root: None,
            documents: 0,
            nodes: 0,
        }
    }

    // yaml-rust2 markers have 1-based lines and 0-based columns.
    fn pos(&self, mark: &Marker) -> Pos {
        (self.make_pos)(mark.line(), mark.col() + 1)
    }

    fn run(mut self, text: &str) -> Result<Node, Diagnostic> {
        let mut parser = Parser::new_from_str(text);
        loop {
            let (event, mark) = parser.next_token().map_err(|e| {
                Diagnostic::error(
                    self.pos(e.marker()),
                    format!("YAML syntax error: {}", e.info()),
                )
            })?;
            match event {
                Event::StreamEnd => break,
                Event::StreamStart | Event::Nothing | Event::DocumentEnd => {}
                Event::DocumentStart => {
                    self.documents += 1;
                    if self.documents > 1 {
                        return Err(Diagnostic::error(
                            self.pos(&mark),
                            "multiple YAML documents in one file are not supported",
                        ));
                    }
                }
                Event::Scalar(text, style, anchor, tag) => {
                    let node = self.scalar(text, style, tag.as_ref(), &mark)?;
                    self.finish(node, anchor, &mark)?;
                }
                Event::Alias(id) => {
                    let pos = self.pos(&mark);
                    let Some(target) = self.anchors.get(&id) else {
                        return Err(Diagnostic::error(pos, "alias to an unknown anchor"));
                    };
                    self.nodes += target.count();
                    if self.nodes > MAX_NODES {
                        return Err(Diagnostic::error(
                            pos,
                            "alias expansion makes the document too large",
                        ));
                    }
                    let node = Node::new(target.value.clone(), pos);
                    self.finish(node, 0, &mark)?;
                }
                Event::SequenceStart(anchor, tag) => {
                    self.check_collection_tag(tag.as_ref(), &mark, "seq")?;
                    let pos = self.pos(&mark);
                    self.stack.push(Frame::Seq {
                        pos,
                        anchor,
                        items: Vec::new(),
                    });
                }
                Event::MappingStart(anchor, tag) => {
                    self.check_collection_tag(tag.as_ref(), &mark, "map")?;
                    let pos = self.pos(&mark);
                    self.stack.push(Frame::Map {
                        pos,
                        index: mark.index(),
                        anchor,
                        entries: Vec::new(),
                        key: None,
                        seen: HashMap::new(),
                    });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let node = match self.stack.pop() {
                        Some(Frame::Seq { pos, anchor, items }) => {
                            (Node::new(NodeValue::Seq(items), pos), anchor)
                        }
                        Some(Frame::Map {
                            pos,
                            anchor,
                            entries,
                            ..
                        }) => (Node::new(NodeValue::Map(merge_keys(entries)?), pos), anchor),
                        None => unreachable!("yaml-rust2 balances collection events"),
                    };
                    self.finish(node.0, node.1, &mark)?;
                }
            }
        }
        let root = self.root.take();
        Ok(root.unwrap_or_else(|| Node::null((self.make_pos)(1, 1))))
    }

    fn scalar(
        &self,
        text: String,
        style: TScalarStyle,
        tag: Option<&Tag>,
        mark: &Marker,
    ) -> Result<Node, Diagnostic> {
        let pos = self.pos(mark);
        let forced_string = match tag {
            None => false,
            Some(t) if is_core_tag(t, "str") => true,
            Some(t)
                if ["null", "bool", "int", "float"]
                    .iter()
                    .any(|s| is_core_tag(t, s)) =>
            {
                false
            }
            Some(t) => {
                return Err(Diagnostic::error(
                    pos,
                    format!("unsupported YAML tag `{}`", tag_text(t)),
                ))
            }
        };
        if style == TScalarStyle::Plain && !forced_string {
            Ok(Node::plain(text, pos))
        } else {
            Ok(Node::string(text, pos))
        }
    }

    fn check_collection_tag(
        &self,
        tag: Option<&Tag>,
        mark: &Marker,
        core: &str,
    ) -> Result<(), Diagnostic> {
        match tag {
            Some(t) if !is_core_tag(t, core) => Err(Diagnostic::error(
                self.pos(mark),
                format!("unsupported YAML tag `{}`", tag_text(t)),
            )),
            _ => Ok(()),
        }
    }

    /// Attach a completed node to its parent (or make it the root).
    fn finish(&mut self, mut node: Node, anchor: usize, mark: &Marker) -> Result<(), Diagnostic> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(Diagnostic::error(node.pos, "document too large"));
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                pos,
                index,
                entries,
                key,
                seen,
                ..
            }) => match key.take() {
                None => {
                    if matches!(node.value, NodeValue::Seq(_) | NodeValue::Map(_)) {
                        return Err(Diagnostic::error(
                            node.pos,
                            "only scalar mapping keys are supported",
                        ));
                    }
                    if entries.is_empty() && mark.index() < *index {
                        *pos = node.pos.clone();
                    }
                    let text = node.key_text().to_string();
                    if let Some(first) = seen.get(&text) {
                        return Err(Diagnostic::error(
                            node.pos,
                            format!("duplicate key `{text}` (first defined at {first})"),
                        ));
                    }
                    seen.insert(text, node.pos.clone());
                    *key = Some(node);
                }
                Some(k) => {
                    // An empty value is reported by the scanner at the next
                    // token, often on the following line; the key is a far
                    // better place to point at.
                    if node.is_null() && is_after(&node.pos, &k.pos) && node.pos.line != k.pos.line
                    {
                        node.pos = k.pos.clone();
                    }
                    entries.push((k, node));
                }
            },
        }
        Ok(())
    }
}

/// Expand YAML merge keys (`<<: *defaults` or `<<: [*a, *b]`) in place:
/// merged entries fill in keys the map does not set itself, earlier sources
/// winning, and keep the positions where they were written.
fn merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, Diagnostic> {
    let is_merge = |k: &Node| matches!(&k.value, NodeValue::Scalar { text, style: ScalarStyle::Plain } if text == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return Ok(entries);
    }
    let mut present: std::collections::HashSet<String> = entries
        .iter()
        .filter(|(k, _)| !is_merge(k))
        .map(|(k, _)| k.key_text().to_string())
        .collect();
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        if !is_merge(&key) {
            out.push((key, value));
            continue;
        }
        let sources: Vec<&Node> = match &value.value {
            NodeValue::Map(_) => vec![&value],
            NodeValue::Seq(items) if items.iter().all(|i| i.as_map().is_some()) => {
                items.iter().collect()
            }
            _ => {
                return Err(Diagnostic::error(
                    value.pos.clone(),
                    "the merge key `<<` needs a map or a list of maps (e.g. `<<: *defaults`)",
                ))
            }
        };
        for source in sources {
            for (k, v) in source.as_map().unwrap_or_default() {
                if present.insert(k.key_text().to_string()) {
                    out.push((k.clone(), v.clone()));
                }
            }
        }
    }
    Ok(out)
}

fn is_after(a: &Pos, b: &Pos) -> bool {
    (a.line, a.column) > (b.line, b.column)
}

fn is_core_tag(tag: &Tag, suffix: &str) -> bool {
    tag.handle == "tag:yaml.org,2002:" && tag.suffix == suffix
}

fn tag_text(tag: &Tag) -> String {
    if tag.handle == "tag:yaml.org,2002:" {
        format!("!!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Node, String> {
        Node::parse(text, &Arc::from("n.yaml")).map_err(|d| d.to_string())
    }

    fn at(n: &Node) -> (usize, usize) {
        (n.pos.line, n.pos.column)
    }

    #[test]
    fn positions_are_one_based_and_block_maps_start_at_their_first_key() {
        let n = parse(
            "# comment\nname: x\ntopics:\n  a: {partitions: 8}\n  b:\nlist:\n  - 1\n  - 'q'\n",
        )
        .unwrap();
        assert_eq!(at(&n), (2, 1));
        assert_eq!(at(n.get("name").unwrap()), (2, 7));
        assert_eq!(at(n.get("topics").unwrap()), (4, 3));
        assert_eq!(at(n.get_path(&["topics", "a"]).unwrap()), (4, 6));
        assert_eq!(
            at(n.get_path(&["topics", "a", "partitions"]).unwrap()),
            (4, 19)
        );
        // An empty value points at its key, not at the next line.
        assert_eq!(at(n.get_path(&["topics", "b"]).unwrap()), (5, 3));
        let list = n.get("list").unwrap().as_seq().unwrap();
        assert_eq!(at(n.get("list").unwrap()), (7, 3));
        assert_eq!((at(&list[0]), at(&list[1])), ((7, 5), (8, 5)));
        assert_eq!(n.entry("topics").map(|(k, _)| at(k)), Some((3, 1)));
    }

    #[test]
    fn scalar_styles() {
        let n = parse("a: 1\nb: '1'\nc: !!str 1\nd: |\n  text\ne: ~\nf:\n").unwrap();
        let style = |k: &str| match &n.get(k).unwrap().value {
            NodeValue::Scalar { style, .. } => Some(*style),
            _ => None,
        };
        assert_eq!(style("a"), Some(ScalarStyle::Plain));
        assert_eq!(style("b"), Some(ScalarStyle::Quoted));
        assert_eq!(style("c"), Some(ScalarStyle::Quoted));
        assert_eq!(style("d"), Some(ScalarStyle::Quoted));
        assert!(n.get("e").unwrap().is_null() && n.get("f").unwrap().is_null());
        assert_eq!(n.get("d").unwrap().as_str(), Some("text\n"));
    }

    #[test]
    fn structural_errors() {
        assert_eq!(
            parse("a: 1\na: 2\n").unwrap_err(),
            "n.yaml:2:1: error: duplicate key `a` (first defined at n.yaml:1:1)"
        );
        assert_eq!(
            parse("a: 1\n---\nb: 2\n").unwrap_err(),
            "n.yaml:2:1: error: multiple YAML documents in one file are not supported"
        );
        assert_eq!(
            parse("? [a]\n: 1\n").unwrap_err(),
            "n.yaml:1:3: error: only scalar mapping keys are supported"
        );
        assert_eq!(
            parse("a: !custom x\n").unwrap_err(),
            "n.yaml:1:12: error: unsupported YAML tag `!custom`"
        );
        assert!(parse("a: [1, 2\n")
            .unwrap_err()
            .starts_with("n.yaml:2:1: error: YAML syntax error: "));
    }

    #[test]
    fn empty_document_is_a_null_root() {
        let n = parse("# nothing\n").unwrap();
        assert!(n.is_null());
        assert_eq!(at(&n), (1, 1));
    }

    #[test]
    fn aliases_and_merge_keys() {
        let n = parse(
            "base: &b {replicas: 2, kind: crawl}\nuse: *b\nstage:\n  <<: *b\n  replicas: 3\n",
        )
        .unwrap();
        assert_eq!(
            n.get("use").unwrap().to_yaml_value(),
            n.get("base").unwrap().to_yaml_value()
        );
        assert_eq!(at(n.get("use").unwrap()), (2, 6));
        let stage = n.get("stage").unwrap();
        let keys: Vec<&str> = stage
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.key_text())
            .collect();
        assert_eq!(keys, ["kind", "replicas"]);
        assert_eq!(stage.get("replicas").unwrap().as_str(), Some("3"));
        // The merged value keeps the position where it was written.
        assert_eq!(at(stage.get("kind").unwrap()), (1, 30));
        assert_eq!(
            parse("a:\n  <<: 3\n").unwrap_err(),
            "n.yaml:2:7: error: the merge key `<<` needs a map or a list of maps (e.g. `<<: *defaults`)"
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n", p = i - 1));
        }
        let e = parse(&text).unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn yaml_text_keeps_types() {
        let n = parse("a: '1'\nb: 1\nc: [x, 'null', ~]\nd: {e: 1.5}\n").unwrap();
        assert_eq!(
            n.to_yaml_string(),
            "a: \"1\"\nb: 1\nc:\n  - x\n  - \"null\"\n  - ~\nd:\n  e: 1.5\n"
        );
    }
}
