//! Every `tests/broken/*.yaml` file states, in leading comments, the exact
//! diagnostics it must produce:
//!
//! ```text
//! # expect: 12:5: error: fragment of the message
//! # expect: --set stages.x.replicas=abc: error: fragment
//! # set: stages.x.replicas=abc      (passed as --set, in order)
//! # env: NAME=value                 (the only environment visible)
//! ```
//!
//! Each diagnostic must match one expectation (position and severity
//! exactly, message by fragment), and each expectation one diagnostic.

mod common;

use std::fs;
use std::path::Path;

use sluice_config::{load_str_validated, Diagnostic};

struct Case {
    expects: Vec<(String, String)>,
    sets: Vec<String>,
    env: Vec<(String, String)>,
}

fn parse_directives(text: &str) -> Case {
    let mut case = Case {
        expects: Vec::new(),
        sets: Vec::new(),
        env: Vec::new(),
    };
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        if let Some(e) = rest.strip_prefix("expect: ") {
            // "<where>: <severity>: <fragment>" where <where> may contain ": "
            // only for --set origins, which never contain ": error: ".
            let (head, fragment) = e
                .split_once(": error: ")
                .map(|(h, f)| (format!("{h}: error"), f))
                .or_else(|| {
                    e.split_once(": warning: ")
                        .map(|(h, f)| (format!("{h}: warning"), f))
                })
                .unwrap_or_else(|| panic!("bad expect line: {line}"));
            case.expects.push((head, fragment.to_string()));
        } else if let Some(s) = rest.strip_prefix("set: ") {
            case.sets.push(s.to_string());
        } else if let Some(kv) = rest.strip_prefix("env: ") {
            let (k, v) = kv.split_once('=').expect("env: NAME=value");
            case.env.push((k.to_string(), v.to_string()));
        }
    }
    case
}

fn head(d: &Diagnostic) -> String {
    format!("{}: {}", d.pos, d.severity)
}

fn check_file(path: &Path) -> Result<(), String> {
    let text = fs::read_to_string(path).unwrap();
    let case = parse_directives(&text);
    if case.expects.is_empty() {
        return Err("no `# expect:` line".to_string());
    }
    let name = path.file_name().unwrap().to_str().unwrap();
    let env = case.env.clone();
    let lookup = move |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let diags = match load_str_validated(&text, name, &case.sets, &lookup, &common::catalog()) {
        Ok((_, warnings)) => warnings,
        Err(all) => all,
    };
    let mut unmatched: Vec<&(String, String)> = case.expects.iter().collect();
    let mut unexpected = Vec::new();
    for d in &diags {
        let full = head(d);
        let h = full.strip_prefix(&format!("{name}:")).unwrap_or(&full);
        match unmatched
            .iter()
            .position(|(eh, frag)| eh == h && d.message.contains(frag.as_str()))
        {
            Some(i) => {
                unmatched.remove(i);
            }
            None => unexpected.push(d.to_string()),
        }
    }
    if unmatched.is_empty() && unexpected.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "\n  missing: {unmatched:?}\n  unexpected: {unexpected:#?}\n  all diagnostics:\n{diags}"
        ))
    }
}

fn run(stem: &str) {
    let path = manifest_dir().join(format!("tests/broken/{stem}.yaml"));
    if let Err(e) = check_file(&path) {
        panic!("{}: {e}", path.display());
    }
}

macro_rules! broken {
    ($($stem:ident)*) => {
        $(
            #[test]
            fn $stem() {
                run(stringify!($stem));
            }
        )*

        /// Every file in tests/broken has a test above.
        #[test]
        fn every_broken_file_is_listed() {
            let listed = [$(stringify!($stem)),*];
            let dir = manifest_dir().join("tests/broken");
            let mut missing = Vec::new();
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
                if path.extension().is_some_and(|e| e == "yaml") && !listed.contains(&stem.as_str()) {
                    missing.push(stem);
                }
            }
            assert!(missing.is_empty(), "add to broken!{{...}}: {missing:?}");
        }
    };
}

broken! {
    duplicate_key
    empty
    kind_settings
    max_message_bytes
    multiple_documents
    partitions_zero
    self_cycle_and_bad_feedback
    services_and_broker
    set_bad_value_type
    set_errors
    stage_fields
    stage_shape
    syntax_bad_indent
    syntax_bad_indent_dedent
    syntax_unclosed_flow_map
    top_level_not_map
    type_mismatch_consumer
    type_mismatch_writers
    undeclared_cycle
    undeclared_topics
    unknown_kind
    unknown_stage_field
    unknown_top_field
    unset_env
    unsupported_tag
    unused_topics
    wrong_type_partitions
}

/// This package's directory: as cargo gives it to the running test, else as it was when this
/// was built (a binary reused from a shared target directory may come from another clone).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
