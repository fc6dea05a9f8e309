//! Semantic checks of a loaded pipeline against the known stage kinds.

use std::collections::{HashMap, HashSet, VecDeque};

use indexmap::IndexMap;

use crate::de::from_node;
use crate::diagnostic::{Diagnostic, Diagnostics, Pos};
use crate::kinds::{KindCatalog, KindInfo, ANY_TYPE};
use crate::load::COMMON_STAGE_FIELDS;
use crate::model::{Pipeline, StageSpec};
use crate::node::Node;
use crate::spanned::Spanned;

/// Check everything `load` cannot know without the kinds: kind names and
/// settings, inputs and ports, declared topics, message types, cycles, and
/// unused topics (warnings). Works whether or not [`bind_ports`] has run.
/// The result is sorted by position.
pub fn validate(p: &Pipeline, kinds: &dyn KindCatalog) -> Diagnostics {
    let mut d = Diagnostics::new();
    let topic_names: Vec<&str> = p.topics.keys().map(String::as_str).collect();
    let undeclared = |t: &str| -> Option<String> {
        (!p.topics.contains_key(t))
            .then(|| format!("is not declared under `topics`{}", suggest(t, &topic_names)))
    };

    let views: Vec<View> = p
        .stages
        .values()
        .map(|s| view(p, s, kinds, &mut d))
        .collect();

    for v in &views {
        let s = v.stage;
        if let Some(k) = &v.kind {
            check_kind_shape(v, k, &mut d);
        }
        if let Some(input) = &s.input {
            if let Some(why) = undeclared(input) {
                d.error(
                    &input.pos,
                    format!("stage `{}`: input topic `{}` {why}", s.name, input.value),
                );
            }
        }
        for (field, topic) in &v.ports {
            if let Some(why) = undeclared(topic) {
                d.error(
                    &topic.pos,
                    format!(
                        "stage `{}`: output topic `{}` (port `{field}`) {why}",
                        s.name, topic.value
                    ),
                );
            }
        }
        for f in &s.feedback {
            if !v.ports.iter().any(|(_, t)| t.value == f.value) {
                let outs: Vec<String> = v
                    .ports
                    .iter()
                    .map(|(_, t)| format!("`{}`", t.value))
                    .collect();
                let outs = if outs.is_empty() {
                    "it writes no topic".to_string()
                } else {
                    format!("it writes {}", outs.join(", "))
                };
                d.error(
                    &f.pos,
                    format!(
                        "stage `{}`: feedback topic `{}` is not one of this stage's outputs ({outs})",
                        s.name, f.value
                    ),
                );
            }
        }
    }
    if let Some(dl) = &p.dead_letter {
        if let Some(why) = undeclared(dl) {
            d.error(&dl.pos, format!("dead_letter topic `{}` {why}", dl.value));
        }
    }

    check_types(p, &views, &mut d);
    check_usage(p, &views, &mut d);
    check_cycles(&views, &mut d);
    d.sort();
    d
}

/// Move each stage's kind-specific port fields (e.g. `discovered`) from
/// `settings` into `outputs`. Fields that do not hold a topic name stay in
/// `settings` for [`validate`] to report; stages of unknown kinds are left
/// alone.
pub fn bind_ports(p: &mut Pipeline, kinds: &dyn KindCatalog) {
    for stage in p.stages.values_mut() {
        let Some(kind) = kinds.kind(&stage.kind) else {
            continue;
        };
        let (ports, _) = split_ports(&stage.settings, &kind);
        for port in ports.into_iter().flatten() {
            if let Some(entries) = stage.settings.as_map_mut() {
                entries.retain(|(k, _)| k.key_text() != port.0);
            }
            stage.outputs.insert(port.0, port.1);
        }
    }
}

/// A stage seen through its kind.
struct View<'a> {
    stage: &'a StageSpec,
    kind: Option<KindInfo>,
    /// Port field and topic, `output` first, then the kind's extra ports.
    ports: Vec<(String, Spanned<String>)>,
}

type PortResult = Result<(String, Spanned<String>), Diagnostic>;

/// The kind's extra port fields found in `settings`, and the settings
/// without them.
fn split_ports(settings: &Node, kind: &KindInfo) -> (Vec<PortResult>, Node) {
    let mut rest = settings.clone();
    let mut ports = Vec::new();
    for port in kind.outputs.iter().filter(|p| p.field != "output") {
        if let Some(value) = settings.get(port.field) {
            ports.push(
                from_node::<Spanned<String>>(value).map(|topic| (port.field.to_string(), topic)),
            );
            if let Some(entries) = rest.as_map_mut() {
                entries.retain(|(k, _)| k.key_text() != port.field);
            }
        }
    }
    (ports, rest)
}

fn view<'a>(
    p: &Pipeline,
    s: &'a StageSpec,
    kinds: &dyn KindCatalog,
    d: &mut Diagnostics,
) -> View<'a> {
    let kind = kinds.kind(&s.kind);
    let mut ports: Vec<(String, Spanned<String>)> = s
        .outputs
        .iter()
        .map(|(f, t)| (f.clone(), t.clone()))
        .collect();
    match &kind {
        None => {
            let names = kinds.kind_names();
            let known: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            d.error(
                &s.kind.pos,
                format!(
                    "stage `{}`: unknown stage kind `{}`{}; known kinds: {}",
                    s.name,
                    s.kind.value,
                    suggest(&s.kind, &names),
                    known.join(", ")
                ),
            );
        }
        Some(k) => {
            let (extra, settings) = split_ports(&s.settings, k);
            for port in extra {
                match port {
                    Ok(p) if !ports.iter().any(|(f, _)| *f == p.0) => ports.push(p),
                    Ok(_) => {}
                    Err(e) => d.push(e),
                }
            }
            match kinds.check_settings(k.name, &settings) {
                Err(errors) => d.extend(errors.into_iter().map(|e| hint_stage_field(e, k))),
                Ok(()) => d.extend(kinds.check_in_pipeline(k.name, s, &settings, p)),
            }
        }
    }
    View {
        stage: s,
        kind,
        ports,
    }
}

fn check_kind_shape(v: &View, k: &KindInfo, d: &mut Diagnostics) {
    let s = v.stage;
    for (field, topic) in &v.ports {
        if k.port(field).is_none() {
            let fields: Vec<String> = k.outputs.iter().map(|p| format!("`{}`", p.field)).collect();
            let has = if fields.is_empty() {
                "it writes no topic".to_string()
            } else {
                format!("its ports are {}", fields.join(", "))
            };
            d.error(
                &topic.pos,
                format!(
                    "stage `{}`: kind `{}` has no output port `{field}` ({has})",
                    s.name, k.name
                ),
            );
        }
    }
    match (k.input, &s.input) {
        (None, Some(input)) => d.error(
            &input.pos,
            format!(
                "stage `{}`: kind `{}` is a source and takes no `input`",
                s.name, k.name
            ),
        ),
        (Some(ty), None) => d.error(
            &s.pos,
            format!(
                "stage `{}`: kind `{}` needs an `input` topic carrying `{ty}`",
                s.name, k.name
            ),
        ),
        _ => {}
    }
    for port in k.outputs.iter().filter(|p| p.required) {
        if !v.ports.iter().any(|(f, _)| f == port.field) {
            d.error(
                &s.pos,
                format!(
                    "stage `{}`: missing required output `{}` (kind `{}` writes `{}` there)",
                    s.name, port.field, k.name, port.message_type
                ),
            );
        }
    }
}

/// Who decided a topic's message type.
enum TypeSource<'a> {
    Declared,
    Writer { stage: &'a str, port: &'a str },
}

impl TypeSource<'_> {
    fn describe(&self) -> String {
        match self {
            TypeSource::Declared => "its declared `type`".to_string(),
            TypeSource::Writer { stage, port } => {
                format!("written by stage `{stage}`, port `{port}`")
            }
        }
    }
}

fn check_types(p: &Pipeline, views: &[View], d: &mut Diagnostics) {
    let mut types: HashMap<&str, (&str, TypeSource)> = HashMap::new();
    for (name, t) in &p.topics {
        if let Some(ty) = &t.message_type {
            types.insert(name, (ty.value.as_str(), TypeSource::Declared));
        }
    }
    // Writers of a fixed type first, then pass-through ports, which write what their input
    // topic carries.
    for pass_through in [false, true] {
        for v in views {
            let Some(k) = &v.kind else { continue };
            for (field, topic) in &v.ports {
                let Some(port) = k.port(field) else { continue };
                if (port.message_type == ANY_TYPE) != pass_through
                    || !p.topics.contains_key(topic.value.as_str())
                {
                    continue;
                }
                let written = if pass_through {
                    let input = v.stage.input.as_ref().map(|i| i.value.as_str());
                    match input.and_then(|i| types.get(i)) {
                        Some((ty, _)) => *ty,
                        None => continue,
                    }
                } else {
                    port.message_type
                };
                match types.get(topic.value.as_str()) {
                    Some((ty, source)) if *ty != written => d.error(
                        &topic.pos,
                        format!(
                            "stage `{}` writes `{}` to topic `{}` (port `{field}`), but the topic carries `{ty}` ({})",
                            v.stage.name,
                            written,
                            topic.value,
                            source.describe()
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        types.insert(
                            topic.value.as_str(),
                            (
                                written,
                                TypeSource::Writer {
                                    stage: &v.stage.name,
                                    port: field,
                                },
                            ),
                        );
                    }
                }
            }
        }
    }
    for v in views {
        let (Some(k), Some(input)) = (&v.kind, &v.stage.input) else {
            continue;
        };
        let Some(want) = k.input.filter(|t| *t != ANY_TYPE) else {
            continue;
        };
        if let Some((ty, source)) = types.get(input.value.as_str()) {
            if *ty != want {
                d.error(
                    &input.pos,
                    format!(
                        "stage `{}` (kind `{}`) reads `{want}` but its input topic `{}` carries `{ty}` ({})",
                        v.stage.name,
                        k.name,
                        input.value,
                        source.describe()
                    ),
                );
            }
        }
    }
}

fn check_usage(p: &Pipeline, views: &[View], d: &mut Diagnostics) {
    let mut readers: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut writers: HashMap<&str, Vec<&str>> = HashMap::new();
    for v in views {
        if let Some(input) = &v.stage.input {
            readers
                .entry(input.value.as_str())
                .or_default()
                .push(&v.stage.name);
        }
        for (_, topic) in &v.ports {
            writers
                .entry(topic.value.as_str())
                .or_default()
                .push(&v.stage.name);
        }
    }
    let dead_letter = p.dead_letter.as_ref().map(|s| s.value.as_str());
    for (name, t) in &p.topics {
        if Some(name.as_str()) == dead_letter {
            continue;
        }
        let read = readers.get(name.as_str());
        let written = writers.get(name.as_str());
        match (read, written, &t.message_type) {
            (None, None, None) => d.warning(&t.pos, format!("topic `{name}` is declared but no stage reads or writes it")),
            (None, Some(w), _) => d.warning(
                &t.pos,
                format!("topic `{name}` has no consumer: stage `{}` writes it but no stage reads it", w[0]),
            ),
            (None, None, Some(_)) => d.warning(&t.pos, format!("topic `{name}` has no consumer: no stage reads it")),
            (Some(r), None, None) => d.warning(
                &t.pos,
                format!(
                    "topic `{name}` is read by stage `{}` but no stage writes it; declare its `type` if it is fed from outside",
                    r[0]
                ),
            ),
            _ => {}
        }
    }
}

/// Edges of the stage graph, skipping deliberate feedback edges:
/// `edges[a]` lists `(b, topic)` for every topic `a` writes and `b` reads.
fn stage_edges<'a>(views: &'a [View]) -> Vec<Vec<Edge<'a>>> {
    let mut readers: IndexMap<&str, Vec<usize>> = IndexMap::new();
    for (i, v) in views.iter().enumerate() {
        if let Some(input) = &v.stage.input {
            readers.entry(input.value.as_str()).or_default().push(i);
        }
    }
    views
        .iter()
        .map(|v| {
            v.ports
                .iter()
                .filter(|(_, t)| !v.stage.is_feedback(t))
                .flat_map(|(_, t)| {
                    readers
                        .get(t.value.as_str())
                        .into_iter()
                        .flatten()
                        .map(move |&r| (r, t.value.as_str()))
                })
                .collect()
        })
        .collect()
}

fn check_cycles(views: &[View], d: &mut Diagnostics) {
    let edges = stage_edges(views);
    for scc in strongly_connected(&edges) {
        let start = *scc.iter().min().expect("components are non-empty");
        let cyclic = scc.len() > 1 || edges[start].iter().any(|&(b, _)| b == start);
        if !cyclic {
            continue;
        }
        let members: HashSet<usize> = scc.iter().copied().collect();
        let Some((path, closing)) = shortest_cycle(&edges, &members, start) else {
            continue;
        };
        let mut text = views[start].stage.name.clone();
        for &(stage, topic) in path.iter().skip(1).chain(std::iter::once(&closing)) {
            text.push_str(&format!(" -> {topic} -> {}", views[stage].stage.name));
        }
        let last = path.last().map_or(start, |&(s, _)| s);
        let last_view = &views[last];
        let pos: Pos = last_view
            .ports
            .iter()
            .find(|(_, t)| t.value == closing.1)
            .map_or_else(|| last_view.stage.pos.clone(), |(_, t)| t.pos.clone());
        d.error(
            &pos,
            format!(
                "cycle without a `feedback` edge: {text}; if the loop is intended, add `feedback: [{}]` to stage `{}`",
                closing.1, last_view.stage.name
            ),
        );
    }
}

/// A stage index and the topic on the edge that reaches it.
type Edge<'a> = (usize, &'a str);

/// Breadth-first search for the shortest cycle through `start` inside one
/// component. Returns the path as `(stage, topic that led to it)` from
/// `start` (whose topic is empty) and the edge closing the cycle.
fn shortest_cycle<'a>(
    edges: &[Vec<Edge<'a>>],
    members: &HashSet<usize>,
    start: usize,
) -> Option<(Vec<Edge<'a>>, Edge<'a>)> {
    let mut parent: HashMap<usize, (usize, &'a str)> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    let mut seen = HashSet::from([start]);
    while let Some(u) = queue.pop_front() {
        for &(v, topic) in &edges[u] {
            if v == start {
                let mut path = vec![(u, parent.get(&u).map_or("", |p| p.1))];
                let mut cur = u;
                while let Some(&(prev, _)) = parent.get(&cur) {
                    path.push((prev, parent.get(&prev).map_or("", |p| p.1)));
                    cur = prev;
                }
                path.reverse();
                return Some((path, (start, topic)));
            }
            if members.contains(&v) && seen.insert(v) {
                parent.insert(v, (u, topic));
                queue.push_back(v);
            }
        }
    }
    None
}

/// Tarjan's algorithm; components come out in a deterministic order.
fn strongly_connected(edges: &[Vec<Edge>]) -> Vec<Vec<usize>> {
    struct State {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(v: usize, edges: &[Vec<Edge>], st: &mut State) {
        st.index[v] = Some(st.next);
        st.low[v] = st.next;
        st.next += 1;
        st.stack.push(v);
        st.on_stack[v] = true;
        for &(w, _) in &edges[v] {
            match st.index[w] {
                None => {
                    visit(w, edges, st);
                    st.low[v] = st.low[v].min(st.low[w]);
                }
                Some(iw) if st.on_stack[w] => st.low[v] = st.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(st.low[v]) == st.index[v] {
            let mut component = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            st.out.push(component);
        }
    }
    let n = edges.len();
    let mut st = State {
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if st.index[v].is_none() {
            visit(v, edges, &mut st);
        }
    }
    st.out
}

/// ` (did you mean `x`?)` for a close match, else nothing.
fn suggest(name: &str, candidates: &[&str]) -> String {
    closest(name, candidates).map_or_else(String::new, |c| format!(" (did you mean `{c}`?)"))
}

fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|&(dist, _)| dist > 0 && dist <= (name.chars().count() / 3).max(1))
        .min_by_key(|&(dist, _)| dist)
        .map(|(_, c)| c)
}

/// A kind's settings struct only knows its own fields, so a misspelt common
/// field (`replica`) would be reported against the kind's list alone.
fn hint_stage_field(mut e: Diagnostic, k: &KindInfo) -> Diagnostic {
    let field = e
        .message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field.to_string());
    if let Some(field) = field {
        let mut candidates: Vec<&str> = COMMON_STAGE_FIELDS.to_vec();
        candidates.extend(k.outputs.iter().map(|p| p.field));
        if let Some(c) = closest(&field, &candidates) {
            e.message
                .push_str(&format!(" (did you mean the stage field `{c}`?)"));
        }
    }
    e
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("urlz", &["urls", "url-in"]),
            " (did you mean `urls`?)"
        );
        assert_eq!(suggest("totally", &["urls"]), "");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn tarjan_finds_components() {
        let edges: Vec<Vec<(usize, &str)>> = vec![
            vec![(1, "a")],
            vec![(2, "b")],
            vec![(0, "c")],
            vec![(3, "d")],
            vec![],
        ];
        let mut comps: Vec<Vec<usize>> = strongly_connected(&edges)
            .into_iter()
            .map(|mut c| {
                c.sort();
                c
            })
            .collect();
        comps.sort();
        assert_eq!(comps, vec![vec![0, 1, 2], vec![3], vec![4]]);
    }
}
