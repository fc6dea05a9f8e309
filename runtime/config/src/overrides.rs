//! `--set dotted.path=value` overrides.

use crate::diagnostic::{Diagnostic, Diagnostics, Pos};
use crate::node::{Node, NodeValue};

/// Apply `--set` overrides in order; each one that is malformed yields an
/// error positioned at (and naming) that `--set`.
pub fn apply_sets(root: &mut Node, sets: &[String]) -> Diagnostics {
    let mut diags = Diagnostics::new();
    for set in sets {
        if let Err(d) = apply_set(root, set) {
            diags.push(d);
        }
    }
    diags
}

/// Apply one `path=value` override.
///
/// The path walks (and creates) maps; a numeric segment indexes an existing
/// sequence; `\.` is a literal dot inside a segment (topic names may contain
/// dots). The value is parsed as YAML, so `3` is an integer and
/// `{partitions: 2}` a map. Every node the override creates is positioned at
/// [`Origin::Set`](crate::Origin::Set).
pub fn apply_set(root: &mut Node, set: &str) -> Result<(), Diagnostic> {
    let pos = Pos::set(set);
    let fail = |msg: String| Diagnostic::error(pos.clone(), msg);
    let (path, value) = set
        .split_once('=')
        .ok_or_else(|| fail("malformed --set: expected `dotted.path=value`".to_string()))?;
    // Shells make `--set "a.b = 3"` easy to type; the spaces are not part of the key.
    let path = path.trim();
    let segments = split_path(path).map_err(fail)?;
    let value = Node::parse_with_pos(value, &pos)
        .map_err(|d| fail(format!("malformed --set value: {}", d.message)))?;

    let mut cur = root;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let here = || segments[..i].join(".");
        if cur.is_null() {
            *cur = Node::empty_map(pos.clone());
        }
        let next = match &mut cur.value {
            NodeValue::Map(entries) => {
                let idx = match entries.iter().position(|(k, _)| k.key_text() == seg) {
                    Some(idx) => idx,
                    None => {
                        entries.push((
                            Node::string(seg.clone(), pos.clone()),
                            Node::null(pos.clone()),
                        ));
                        entries.len() - 1
                    }
                };
                &mut entries[idx].1
            }
            NodeValue::Seq(items) => {
                let len = items.len();
                match seg.parse::<usize>().ok().filter(|&n| n < len) {
                    Some(n) => &mut items[n],
                    None => {
                        return Err(fail(format!(
                            "cannot set `{path}`: `{}` is a sequence of {len} items and `{seg}` is not an index in it",
                            here()
                        )))
                    }
                }
            }
            NodeValue::Scalar { .. } => {
                return Err(fail(format!(
                    "cannot set `{path}`: `{}` is a scalar, not a map",
                    here()
                )))
            }
            NodeValue::Null => unreachable!("null was replaced by a map above"),
        };
        if last {
            *next = value;
            return Ok(());
        }
        cur = next;
    }
    unreachable!("split_path returns at least one segment")
}

fn split_path(path: &str) -> Result<Vec<String>, String> {
    if path.trim().is_empty() {
        return Err("malformed --set: empty path before `=`".to_string());
    }
    let mut segments = vec![String::new()];
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => segments.last_mut().expect("never empty").push(next),
                None => segments.last_mut().expect("never empty").push('\\'),
            },
            '.' => segments.push(String::new()),
            c => segments.last_mut().expect("never empty").push(c),
        }
    }
    if segments.iter().any(String::is_empty) {
        return Err(format!("malformed --set: empty segment in path `{path}`"));
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::diagnostic::Origin;
    use yaml_rust2::Yaml;

    fn tree(text: &str) -> Node {
        Node::parse(text, &Arc::from("o.yaml")).unwrap()
    }

    fn sets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn walks_creates_and_types() {
        let mut n = tree("stages:\n  crawl:\n    replicas: 1\ntopics:\n  urls: {partitions: 8}\n");
        let d = apply_sets(
            &mut n,
            &sets(&[
                "stages.crawl.replicas=3",
                "services.memcached=127.0.0.1:11211",
                "topics.urls.partitions=4",
                "topics.x={partitions: 2}",
                "topics.a\\.b.partitions=5",
            ]),
        );
        assert!(d.is_empty(), "{d}");
        let v = n.to_yaml_value();
        assert_eq!(v["stages"]["crawl"]["replicas"], Yaml::Integer(3));
        assert_eq!(
            v["services"]["memcached"],
            Yaml::String("127.0.0.1:11211".into())
        );
        assert_eq!(v["topics"]["urls"]["partitions"], Yaml::Integer(4));
        assert_eq!(v["topics"]["x"]["partitions"], Yaml::Integer(2));
        assert_eq!(v["topics"]["a.b"]["partitions"], Yaml::Integer(5));
        let replicas = n.get_path(&["stages", "crawl", "replicas"]).unwrap();
        assert_eq!(
            replicas.pos.origin,
            Origin::Set("stages.crawl.replicas=3".into())
        );
        assert_eq!(replicas.pos.to_string(), "--set stages.crawl.replicas=3");
    }

    #[test]
    fn later_sets_win_and_sequences_index() {
        let mut n = tree("a: [x, y]\n");
        assert!(apply_sets(&mut n, &sets(&["b=1", "b=2", "a.1=z", " c = 4"])).is_empty());
        assert_eq!(n.to_yaml_string(), "a:\n  - x\n  - z\nb: 2\nc: 4\n");
    }

    #[test]
    fn malformed() {
        let mut n = tree("name: x\nlist: [1]\n");
        let d = apply_sets(
            &mut n,
            &sets(&[
                "noequals",
                "=3",
                "a..b=1",
                "name.sub=1",
                "list.5=1",
                "x={unclosed",
            ]),
        );
        let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(lines, [
            "--set noequals: error: malformed --set: expected `dotted.path=value`",
            "--set =3: error: malformed --set: empty path before `=`",
            "--set a..b=1: error: malformed --set: empty segment in path `a..b`",
            "--set name.sub=1: error: cannot set `name.sub`: `name` is a scalar, not a map",
            "--set list.5=1: error: cannot set `list.5`: `list` is a sequence of 1 items and `5` is not an index in it",
            "--set x={unclosed: error: malformed --set value: YAML syntax error: while parsing a flow mapping, did not find expected ',' or '}'",
        ]);
    }
}
