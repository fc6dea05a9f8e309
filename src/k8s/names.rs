//! Names and labels of the rendered objects. Selectors, Services, PDBs and ScaledObjects find
//! their targets by these, so they are made in one place and cannot drift apart.

use yaml_rust2::Yaml;

use super::tree::{map, v};

/// A Kubernetes name: lowercase alphanumerics and `-`, at most 63 characters.
pub(super) fn dns_name(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(63);
    out.trim_matches('-').to_string()
}

/// The recommended `app.kubernetes.io/*` labels of one component of the pipeline.
pub(super) fn labels(pipeline: &str, component: &str) -> Yaml {
    map([
        ("app.kubernetes.io/name", v("sluice")),
        ("app.kubernetes.io/instance", v(pipeline)),
        ("app.kubernetes.io/component", v(component)),
        ("app.kubernetes.io/part-of", v(pipeline)),
        ("app.kubernetes.io/managed-by", v("sluice")),
    ])
}

/// The labels that tell one component's pods apart: a subset of [`labels`] that stays fixed
/// (a Deployment's selector cannot change after creation).
pub(super) fn selector(pipeline: &str, component: &str) -> Yaml {
    map([
        ("app.kubernetes.io/instance", v(pipeline)),
        ("app.kubernetes.io/component", v(component)),
    ])
}

/// `metadata` of an object.
pub(super) fn metadata(name: &str, namespace: &str, labels: Yaml) -> Yaml {
    map([
        ("name", v(name)),
        ("namespace", v(namespace)),
        ("labels", labels),
    ])
}
