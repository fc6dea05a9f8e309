//! Pipeline diagrams: Graphviz DOT and Mermaid.
//!
//! Stages are boxes, topics ellipses (Mermaid: stadium shapes), feedback
//! edges dashed. Output depends only on the pipeline, in declaration order.
//! Extra ports (e.g. `discovered`) appear once they are in
//! [`StageSpec::outputs`](crate::StageSpec::outputs), i.e. after
//! [`bind_ports`](crate::bind_ports) or [`load_validated`](crate::load_validated).

use std::fmt::Write as _;

use indexmap::IndexSet;

use crate::model::Pipeline;

/// Every topic the diagram shows: declared ones first, then any referenced
/// but undeclared ones (so a broken pipeline still draws).
fn topic_names(p: &Pipeline) -> IndexSet<&str> {
    let mut names: IndexSet<&str> = p.topics.keys().map(String::as_str).collect();
    for s in p.stages.values() {
        if let Some(i) = &s.input {
            names.insert(i);
        }
        for t in s.outputs.values() {
            names.insert(t);
        }
    }
    if let Some(dl) = &p.dead_letter {
        names.insert(dl);
    }
    names
}

fn topic_caption(p: &Pipeline, name: &str) -> Vec<String> {
    let mut lines = vec![name.to_string()];
    match p.topics.get(name) {
        Some(t) => {
            let mut line = format!(
                "{} partition{}",
                t.partitions,
                if t.partitions == 1 { "" } else { "s" }
            );
            if let Some(ty) = &t.message_type {
                line.push_str(&format!(", {}", ty.value));
            }
            lines.push(line);
        }
        None => lines.push("undeclared".to_string()),
    }
    if p.dead_letter.as_ref().is_some_and(|d| d.value == name) {
        lines.push("dead letter".to_string());
    }
    lines
}

fn stage_caption(p: &Pipeline, name: &str) -> Vec<String> {
    let s = &p.stages[name];
    let mut lines = vec![name.to_string(), format!("kind: {}", s.kind.value)];
    if s.replicas != 1 {
        lines.push(format!("replicas: {}", s.replicas));
    }
    lines
}

fn dot_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The pipeline as a Graphviz `digraph`.
pub fn to_dot(p: &Pipeline) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_str(&p.name));
    out.push_str(
        "  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\"];\n",
    );
    for name in topic_names(p) {
        let _ = writeln!(
            out,
            "  {} [shape=ellipse, label={}];",
            dot_str(&format!("topic:{name}")),
            dot_str(&topic_caption(p, name).join("\n"))
        );
    }
    for name in p.stages.keys() {
        let _ = writeln!(
            out,
            "  {} [shape=box, label={}];",
            dot_str(&format!("stage:{name}")),
            dot_str(&stage_caption(p, name).join("\n"))
        );
    }
    for (name, s) in &p.stages {
        let stage = dot_str(&format!("stage:{name}"));
        if let Some(i) = &s.input {
            let _ = writeln!(
                out,
                "  {} -> {stage};",
                dot_str(&format!("topic:{}", i.value))
            );
        }
        for (port, topic) in &s.outputs {
            let mut attrs = Vec::new();
            if port != "output" {
                attrs.push(format!("label={}", dot_str(port)));
            }
            if s.is_feedback(topic) {
                attrs.push("style=dashed".to_string());
            }
            let attrs = if attrs.is_empty() {
                String::new()
            } else {
                format!(" [{}]", attrs.join(", "))
            };
            let _ = writeln!(
                out,
                "  {stage} -> {}{attrs};",
                dot_str(&format!("topic:{}", topic.value))
            );
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid_text(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| l.replace('"', "#quot;"))
        .collect::<Vec<_>>()
        .join("<br/>")
}

/// The pipeline as a Mermaid `flowchart`.
///
/// Node ids are positional (`t0`, `s0`, ...) because Mermaid ids cannot hold
/// every character a topic or stage name may contain.
pub fn to_mermaid(p: &Pipeline) -> String {
    let topics = topic_names(p);
    let topic_id = |name: &str| format!("t{}", topics.get_index_of(name).unwrap_or(usize::MAX));
    let stage_id = |name: &str| format!("s{}", p.stages.get_index_of(name).unwrap_or(usize::MAX));
    let mut out = String::from("flowchart LR\n");
    for name in &topics {
        let _ = writeln!(
            out,
            "  {}([\"{}\"])",
            topic_id(name),
            mermaid_text(&topic_caption(p, name))
        );
    }
    for name in p.stages.keys() {
        let _ = writeln!(
            out,
            "  {}[\"{}\"]",
            stage_id(name),
            mermaid_text(&stage_caption(p, name))
        );
    }
    for (name, s) in &p.stages {
        if let Some(i) = &s.input {
            let _ = writeln!(out, "  {} --> {}", topic_id(i), stage_id(name));
        }
        for (port, topic) in &s.outputs {
            let arrow = match (s.is_feedback(topic), port.as_str()) {
                (false, "output") => "-->".to_string(),
                (false, port) => format!("-->|{}|", mermaid_text(&[port.to_string()])),
                (true, "output") => "-.->".to_string(),
                (true, port) => format!("-.->|{}|", mermaid_text(&[port.to_string()])),
            };
            let _ = writeln!(out, "  {} {arrow} {}", stage_id(name), topic_id(topic));
        }
    }
    out
}
