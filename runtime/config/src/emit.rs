//! YAML text out, for every tree the workspace writes (the effective pipeline file, the
//! Kubernetes manifests): yaml-rust2's emitter, so that reading and writing share one library,
//! with the strings it would leave open to misreading quoted here first.
//!
//! The emitter quotes most strings that read as another type, but not all: `0o17` and `+.inf`
//! come out plain and read back as numbers even under YAML 1.2, and it ignores the YAML 1.1
//! forms that readers in use still apply (PyYAML, and so kubernetes-validate; go-yaml v2 under
//! kubectl): `1_000`, `0b101`, `2024-01-01`. It writes characters that YAML 1.1 reads as line
//! breaks unescaped, and its literal blocks cannot carry a text that starts with indentation
//! or ends in blank lines. Such strings reach the emitter already double-quoted, as a verbatim
//! scalar; everything else is its own output.

use yaml_rust2::{Yaml, YamlEmitter};

/// `doc` as one YAML document: block style, multi-line strings as literal blocks where that
/// keeps them intact, no `---` header, ending in a newline. Every string reads back as the
/// same string under YAML 1.1 and 1.2.
pub fn to_yaml_string(doc: &Yaml) -> String {
    let doc = quote_misreadable(doc, false);
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    emitter.multiline_strings(true);
    emitter
        .dump(&doc)
        .expect("formatting into a String cannot fail");
    let body = out.strip_prefix("---\n").unwrap_or(&out);
    let mut text = String::with_capacity(body.len() + 1);
    for line in body.split('\n') {
        // The emitter indents the blank lines of literal blocks too. Trimming them changes no
        // value: a string with whitespace-only lines of its own is never a literal block.
        if !line.trim_start_matches(' ').is_empty() {
            text.push_str(line);
        }
        text.push('\n');
    }
    text
}

/// A copy of `node` whose misreadable strings are double-quoted verbatim scalars.
/// `Yaml::Real` is the emitter's one scalar that it writes exactly as given.
fn quote_misreadable(node: &Yaml, is_key: bool) -> Yaml {
    match node {
        Yaml::String(s) if misread(s) || (is_key && s.contains('\n')) => {
            Yaml::Real(double_quoted(s))
        }
        Yaml::Array(items) => Yaml::Array(
            items
                .iter()
                .map(|item| quote_misreadable(item, false))
                .collect(),
        ),
        Yaml::Hash(entries) => Yaml::Hash(
            entries
                .iter()
                .map(|(k, v)| (quote_misreadable(k, true), quote_misreadable(v, false)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether the emitter could write `s` in a form that reads back as something else.
fn misread(s: &str) -> bool {
    looks_typed(s) || s.chars().any(needs_escape) || (s.contains('\n') && !fits_literal_block(s))
}

/// Whether `s`, written plain, is a null, bool, number or date to YAML 1.1 or 1.2.
/// Errs on the side of quoting: `1.2.3` is quoted too, which costs nothing.
fn looks_typed(s: &str) -> bool {
    const WORDS: [&str; 11] = [
        "", "~", "null", "true", "false", "y", "n", "yes", "no", "on", "off",
    ];
    if WORDS.contains(&s.to_ascii_lowercase().as_str()) {
        return true;
    }
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = unsigned.to_ascii_lowercase();
    if lower == ".inf" || lower == ".nan" {
        return true;
    }
    if lower.len() > 2 && ["0x", "0o", "0b"].iter().any(|p| lower.starts_with(p)) {
        return true;
    }
    // Integers and floats, with 1.1's `_` separators and sexagesimal `:`, and dates.
    unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned.chars().any(|c| c.is_ascii_digit())
        && unsigned
            .chars()
            .all(|c| c.is_ascii_digit() || "._:+-eE".contains(c))
}

/// Characters a plain or literal scalar cannot hold as they are: control characters other than
/// tab and newline, the ones YAML 1.1 takes for line breaks, and byte-order marks.
fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}

/// Whether a literal block as the emitter writes it (`|` or `|-`, no indentation indicator)
/// carries `s` unchanged: the block's indentation is read from its first line, it keeps at
/// most one final newline, and whitespace-only lines are taken for indentation.
fn fits_literal_block(s: &str) -> bool {
    !s.starts_with([' ', '\t', '\n'])
        && !s.ends_with("\n\n")
        && !s
            .split('\n')
            .any(|line| !line.is_empty() && line.trim_matches([' ', '\t']).is_empty())
}

/// `s` as a double-quoted YAML scalar.
fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use yaml_rust2::yaml::Hash;
    use yaml_rust2::YamlLoader;

    fn doc(value: Yaml) -> Yaml {
        let mut h = Hash::new();
        h.insert(Yaml::String("k".into()), value);
        Yaml::Hash(h)
    }

    /// The text after `k: `, and the value read back.
    fn write_and_read(s: &str) -> (String, Yaml) {
        let text = to_yaml_string(&doc(Yaml::String(s.into())));
        let back = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{s:?} wrote unreadable YAML {text:?}: {e}"));
        let written = text.strip_prefix("k:").unwrap().trim_start_matches(' ');
        (written.to_string(), back[0]["k"].clone())
    }

    #[test]
    fn strings_that_yaml_would_misread_are_quoted() {
        for s in [
            // YAML 1.1 booleans and nulls, in the spellings readers accept.
            "on",
            "On",
            "OFF",
            "yes",
            "No",
            "y",
            "N",
            "true",
            "False",
            "null",
            "Null",
            "~",
            "",
            // Numbers of YAML 1.2, and of 1.1 (octal, `_`, binary, sexagesimal), and dates.
            "0755",
            "1e3",
            "1E3",
            "12",
            "-3",
            "+7",
            "1.5",
            ".5",
            "0x1F",
            "0o17",
            "0b101",
            "1_000",
            "1:20",
            "+.inf",
            "-.inf",
            ".NaN",
            "2024-01-01",
            // Indicators, comments and mapping syntax.
            "a: b",
            "*x",
            "&x",
            "!x",
            "- x",
            "-f",
            "? x",
            "|x",
            ">x",
            "%x",
            "@x",
            "`x",
            "#x",
            "x #y",
            "[x]",
            "{x}",
            "x,y",
            "'x'",
            "\"x\"",
            "<<",
            "=",
            // Characters a plain scalar cannot hold, or that 1.1 reads as line breaks.
            "\u{7f}",
            "a\u{85}b",
            "a\u{2028}b",
            "\u{feff}x",
            "a\rb",
            "tab\there",
            " lead",
            "trail ",
        ] {
            let (written, back) = write_and_read(s);
            assert!(
                written.starts_with(['"', '\'']),
                "{s:?} must be quoted, was written {written:?}"
            );
            assert_eq!(back, Yaml::String(s.into()), "{s:?} written as {written:?}");
        }
    }

    #[test]
    fn unambiguous_strings_stay_plain() {
        for s in [
            "web-crawl",
            "100m",
            "128Mi",
            "/metrics",
            "ghcr.io/a/b",
            "metadata.name",
        ] {
            let (written, back) = write_and_read(s);
            assert_eq!(written, format!("{s}\n"));
            assert_eq!(back, Yaml::String(s.into()));
        }
    }

    #[test]
    fn multi_line_strings_are_literal_blocks_only_where_that_keeps_them() {
        let text = to_yaml_string(&doc(Yaml::String("# a file\n\nname: x\n".into())));
        assert_eq!(text, "k: |\n  # a file\n\n  name: x\n");
        let text = to_yaml_string(&doc(Yaml::String("no final newline\nx".into())));
        assert_eq!(text, "k: |-\n  no final newline\n  x\n");
        for s in [
            "a\nb\n",
            "  indented first\nline\n",
            "\nleading blank\n",
            "two final newlines\n\n",
            "blank with spaces\n   \nx\n",
            "a\u{85}b\nc\n",
        ] {
            let (written, back) = write_and_read(s);
            assert_eq!(back, Yaml::String(s.into()), "{s:?} written as {written:?}");
        }
    }

    #[test]
    fn other_scalars_keep_their_types_and_keys_are_quoted_too() {
        let mut h = Hash::new();
        h.insert(Yaml::String("int".into()), Yaml::Integer(9400));
        h.insert(Yaml::String("bool".into()), Yaml::Boolean(true));
        h.insert(Yaml::String("float".into()), Yaml::Real("1.5".into()));
        h.insert(Yaml::String("null".into()), Yaml::Null);
        h.insert(Yaml::String("list".into()), Yaml::Array(vec![]));
        h.insert(Yaml::String("map".into()), Yaml::Hash(Hash::new()));
        let text = to_yaml_string(&Yaml::Hash(h.clone()));
        assert_eq!(
            text,
            "int: 9400\nbool: true\nfloat: 1.5\n\"null\": ~\nlist: []\nmap: {}\n"
        );
        assert_eq!(YamlLoader::load_from_str(&text).unwrap()[0], Yaml::Hash(h));
    }
}
