//! YAML streams (rendered manifests, `kubectl kustomize` output) read into `serde_json` values,
//! whose indexing and comparisons (`v["spec"]["replicas"] == 2`) keep the assertions short.

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// The documents of a YAML stream, empty ones left out.
pub fn documents(text: &str) -> Vec<Value> {
    YamlLoader::load_from_str(text)
        .unwrap_or_else(|e| panic!("invalid YAML ({e}):\n{text}"))
        .iter()
        .map(to_json)
        .filter(|v| !v.is_null())
        .collect()
}

/// One YAML document.
pub fn document(text: &str) -> Value {
    documents(text).into_iter().next().unwrap_or(Value::Null)
}

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Null | Yaml::BadValue | Yaml::Alias(_) => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::Number((*i).into()),
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(|| Value::String(text.clone()), Value::Number),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (key_text(k), to_json(v)))
                .collect::<Map<String, Value>>(),
        ),
    }
}

fn key_text(k: &Yaml) -> String {
    match k {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("unsupported mapping key {other:?}"),
    }
}
