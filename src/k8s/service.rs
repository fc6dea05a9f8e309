//! The Service and Ingress in front of a stage whose kind listens on a port of its own (ingest's
//! HTTP API). Which ports, and which paths an Ingress routes, is the kind's to say
//! ([`ListenPort`](sluice_config::ListenPort)): stages without such ports get neither.

use yaml_rust2::Yaml;

use super::tree::{int, map, seq, v};
use super::Stage;

/// A Service for the stage's ports that have a `service_port`; `None` if none has.
pub(super) fn service(s: &Stage) -> Option<Yaml> {
    let ports: Vec<Yaml> = s
        .needs
        .listens
        .iter()
        .filter_map(|l| {
            let port = l.service_port?;
            Some(map([
                ("name", v(l.name)),
                ("port", int(port)),
                // By name, so the Service follows the container port wherever `listen` puts it.
                ("targetPort", v(l.name)),
            ]))
        })
        .collect();
    if ports.is_empty() {
        return None;
    }
    Some(map([
        ("apiVersion", v("v1")),
        ("kind", v("Service")),
        ("metadata", s.metadata()),
        (
            "spec",
            map([("selector", s.selector()), ("ports", seq(ports))]),
        ),
    ]))
}

/// An Ingress on `host` routing each of the stage's `ingress_path`s to its Service; `None` if
/// the stage has no such path.
pub(super) fn ingress(s: &Stage, host: &str) -> Option<Yaml> {
    let paths: Vec<Yaml> = s
        .needs
        .listens
        .iter()
        .filter(|l| l.service_port.is_some())
        .filter_map(|l| {
            Some(map([
                ("path", v(l.ingress_path?)),
                ("pathType", v("Prefix")),
                (
                    "backend",
                    map([(
                        "service",
                        map([("name", v(&s.name)), ("port", map([("name", v(l.name))]))]),
                    )]),
                ),
            ]))
        })
        .collect();
    if paths.is_empty() {
        return None;
    }
    Some(map([
        ("apiVersion", v("networking.k8s.io/v1")),
        ("kind", v("Ingress")),
        ("metadata", s.metadata()),
        (
            "spec",
            map([(
                "rules",
                seq([map([
                    ("host", v(host)),
                    ("http", map([("paths", seq(paths))])),
                ])]),
            )]),
        ),
    ]))
}
