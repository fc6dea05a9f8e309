//! `${VAR}` substitution in scalar values.

use crate::diagnostic::Diagnostics;
use crate::node::{Node, NodeValue, ScalarStyle};

/// Substitute environment variables in every scalar value (never in keys).
///
/// Supported forms: `${VAR}` (error when unset), `${VAR:-default}` (default
/// when unset or empty), `${VAR-default}` (default only when unset),
/// `${VAR:?message}` / `${VAR?message}` (error with a message), and `$$` for a
/// literal `$`. Defaults may themselves contain substitutions.
///
/// A value that is exactly one substitution is typed by its result like a
/// plain scalar (`${P:-8}` is the integer 8, an empty result is null), even
/// when quoted: YAML flow maps force quoting (`{partitions: "${P:-8}"}`), and
/// string fields accept any scalar anyway. Any other interpolated value is a
/// string, so that `v${N}` or `1${N}` never turns into a number.
pub fn interpolate(node: &mut Node, env: &dyn Fn(&str) -> Option<String>) -> Diagnostics {
    let mut diags = Diagnostics::new();
    walk(node, env, &mut diags);
    diags
}

fn walk(node: &mut Node, env: &dyn Fn(&str) -> Option<String>, diags: &mut Diagnostics) {
    match &mut node.value {
        NodeValue::Null => {}
        NodeValue::Seq(items) => items.iter_mut().for_each(|n| walk(n, env, diags)),
        NodeValue::Map(entries) => entries.iter_mut().for_each(|(_, v)| walk(v, env, diags)),
        NodeValue::Scalar { text, style } => {
            if !text.contains('$') {
                return;
            }
            match expand_scalar(text, env) {
                Err(message) => diags.error(&node.pos, message),
                Ok(expanded) => {
                    let pos = node.pos.clone();
                    *node = match (*style, expanded.kind) {
                        (_, Kind::Whole) | (ScalarStyle::Plain, Kind::Literal) => {
                            Node::plain(expanded.text, pos)
                        }
                        _ => Node::string(expanded.text, pos),
                    };
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// The text was exactly one `${...}`.
    Whole,
    /// Only `$$` escapes (or a lone `$`), no substitution.
    Literal,
    /// Substitutions mixed with other text.
    Mixed,
}

#[derive(Debug)]
struct Expanded {
    text: String,
    kind: Kind,
}

fn expand_scalar(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Expanded, String> {
    let whole = text.starts_with("${") && find_close(text, 2) == Some(text.len() - 1);
    let mut out = String::new();
    let substituted = expand(text, env, &mut out)?;
    let kind = if whole {
        Kind::Whole
    } else if substituted {
        Kind::Mixed
    } else {
        Kind::Literal
    };
    Ok(Expanded { text: out, kind })
}

/// Expand `s` into `out`; returns whether any `${...}` was substituted.
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>, out: &mut String) -> Result<bool, String> {
    let mut substituted = false;
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        if rest.starts_with("$$") {
            out.push('$');
            i += 2;
        } else if rest.starts_with("${") {
            let end = find_close(s, i + 2).ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
            substitute(&s[i + 2..end], env, out)?;
            substituted = true;
            i = end + 1;
        } else {
            let c = rest.chars().next().expect("i is inside s");
            out.push(c);
            i += c.len_utf8();
        }
    }
    Ok(substituted)
}

/// Index of the `}` closing a `${` whose body starts at `start`, allowing
/// nested `${...}` in defaults.
fn find_close(s: &str, start: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut j = start;
    while j < bytes.len() {
        if bytes[j..].starts_with(b"$$") {
            j += 2;
        } else if bytes[j..].starts_with(b"${") {
            depth += 1;
            j += 2;
        } else if bytes[j] == b'}' {
            if depth == 0 {
                return Some(j);
            }
            depth -= 1;
            j += 1;
        } else {
            j += 1;
        }
    }
    None
}

fn substitute(
    body: &str,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), String> {
    let name_len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, op) = body.split_at(name_len);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("invalid variable name in `${{{body}}}`"));
    }
    let value = env(name);
    let set_and_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (use_value, fallback) = if op.is_empty() {
        (value.is_some(), None)
    } else if let Some(default) = op.strip_prefix(":-") {
        (set_and_nonempty, Some(Ok(default)))
    } else if let Some(default) = op.strip_prefix('-') {
        (value.is_some(), Some(Ok(default)))
    } else if let Some(message) = op.strip_prefix(":?") {
        (set_and_nonempty, Some(Err(message)))
    } else if let Some(message) = op.strip_prefix('?') {
        (value.is_some(), Some(Err(message)))
    } else {
        return Err(format!(
            "invalid substitution `${{{body}}}`: expected `${{VAR}}`, `${{VAR:-default}}` or `${{VAR-default}}`"
        ));
    };
    match (use_value, fallback) {
        (true, _) => out.push_str(&value.unwrap_or_default()),
        (false, Some(Ok(default))) => {
            expand(default, env, out)?;
        }
        (false, Some(Err(message))) if !message.is_empty() => {
            return Err(format!("environment variable {name} is not set: {message}"))
        }
        (false, _) if value.is_some() => {
            return Err(format!("environment variable {name} is empty"))
        }
        (false, _) => return Err(format!("environment variable {name} is not set")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::node::NodeValue;
    use yaml_rust2::Yaml;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("kafka:9092".into()),
            "EMPTY" => Some(String::new()),
            "P" => Some("4".into()),
            _ => None,
        }
    }

    fn expand_one(text: &str) -> Result<String, String> {
        expand_scalar(text, &env).map(|e| e.text)
    }

    #[test]
    fn forms() {
        assert_eq!(expand_one("${HOST}").unwrap(), "kafka:9092");
        assert_eq!(expand_one("kafka://${HOST}").unwrap(), "kafka://kafka:9092");
        assert_eq!(expand_one("${NOPE:-memory}").unwrap(), "memory");
        assert_eq!(expand_one("${EMPTY:-memory}").unwrap(), "memory");
        assert_eq!(expand_one("${EMPTY-memory}").unwrap(), "");
        assert_eq!(expand_one("${NOPE-memory}").unwrap(), "memory");
        assert_eq!(expand_one("${HOST:-x}").unwrap(), "kafka:9092");
        assert_eq!(expand_one("${NOPE:-}").unwrap(), "");
        assert_eq!(expand_one("${NOPE:-${P}}").unwrap(), "4");
        assert_eq!(expand_one("${NOPE:-a-${NOPE2:-b}}").unwrap(), "a-b");
        assert_eq!(
            expand_one("cost: $$5 and $HOME").unwrap(),
            "cost: $5 and $HOME"
        );
        assert_eq!(expand_one("$${HOST}").unwrap(), "${HOST}");
    }

    #[test]
    fn errors() {
        assert_eq!(
            expand_one("${NOPE}").unwrap_err(),
            "environment variable NOPE is not set"
        );
        assert_eq!(
            expand_one("${EMPTY:?needed}").unwrap_err(),
            "environment variable EMPTY is not set: needed"
        );
        assert_eq!(expand_one("${EMPTY?needed}").unwrap(), "");
        assert_eq!(
            expand_one("${HOST").unwrap_err(),
            "unterminated `${` in `${HOST`"
        );
        assert_eq!(
            expand_one("${1X}").unwrap_err(),
            "invalid variable name in `${1X}`"
        );
        assert!(expand_one("${HOST:x}")
            .unwrap_err()
            .starts_with("invalid substitution `${HOST:x}`"));
    }

    fn tree(text: &str) -> Node {
        Node::parse(text, &Arc::from("i.yaml")).unwrap()
    }

    #[test]
    fn typing_of_results() {
        let mut n = tree(
            "a: ${P:-8}\nb: ${NOPE:-8}\nc: v${P}\nd: '${P}'\ne: ${NOPE:-}\nf: ${NOPE:-true}\n",
        );
        assert!(interpolate(&mut n, &env).is_empty());
        let v = n.to_yaml_value();
        assert_eq!(v["a"], Yaml::Integer(4));
        assert_eq!(v["b"], Yaml::Integer(8));
        assert_eq!(v["c"], Yaml::String("v4".into()));
        assert_eq!(v["d"], Yaml::Integer(4));
        assert_eq!(v["e"], Yaml::Null);
        assert_eq!(v["f"], Yaml::Boolean(true));
    }

    #[test]
    fn mixed_digits_stay_strings() {
        let mut n = tree("a: 1${P}\nb: '${P}${P}'\nc: 1$$\n");
        assert!(interpolate(&mut n, &env).is_empty());
        assert_eq!(n.to_yaml_value()["a"], Yaml::String("14".into()));
        assert_eq!(n.to_yaml_value()["b"], Yaml::String("44".into()));
        assert_eq!(n.to_yaml_value()["c"], Yaml::String("1$".into()));
    }

    #[test]
    fn keys_are_untouched_and_errors_positioned() {
        let mut n = tree("${P}: x\nlist:\n  - ok\n  - ${MISSING}\n");
        let d = interpolate(&mut n, &env);
        assert_eq!(
            d.to_string(),
            "i.yaml:4:5: error: environment variable MISSING is not set"
        );
        assert!(n.get("${P}").is_some());
        assert!(matches!(
            n.get("list").unwrap().as_seq().unwrap()[0].value,
            NodeValue::Scalar { .. }
        ));
    }
}
