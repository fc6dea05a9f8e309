//! The Deployment of one stage: `sluice run --stage NAME` on the mounted pipeline file, with
//! the ports and resources its kind declares. Every stage serves metrics and health on
//! `METRICS_PORT`, and probes and Prometheus find them there.

use sluice_config::{Diagnostic, Resources};
use yaml_rust2::Yaml;

use super::tree::{boolean, int, map, seq, v};
use super::{Stage, CONFIG_DIR, METRICS_PORT};

/// The Deployment `PIPELINE-STAGE`. Fails when a port the kind listens on cannot be read
/// from the stage's settings.
pub(super) fn deployment(s: &Stage) -> Result<Yaml, Diagnostic> {
    let opts = s.opts;
    let pipeline = &s.pipeline;
    let mut ports = vec![map([
        ("name", v("metrics")),
        ("containerPort", int(METRICS_PORT)),
    ])];
    for listen in &s.needs.listens {
        ports.push(map([
            ("name", v(listen.name)),
            ("containerPort", int(listen.port(&s.spec.settings)?)),
        ]));
    }
    let resources = match &s.spec.resources {
        Some(node) => node.to_yaml_value(),
        None => resources(&s.needs.resources),
    };
    let container = map([
        ("name", v("stage")),
        ("image", v(&opts.image)),
        (
            "args",
            seq([
                v("run"),
                v("-f"),
                v(format!("{CONFIG_DIR}/pipeline.yaml")),
                v("--stage"),
                v(&s.spec.name),
                v("--metrics-addr"),
                v(format!("0.0.0.0:{METRICS_PORT}")),
            ]
            .into_iter()
            .chain(opts.sets.iter().flat_map(|set| [v("--set"), v(set)]))),
        ),
        ("ports", seq(ports)),
        (
            "env",
            seq([
                map([("name", v("SLUICE_LOG_FORMAT")), ("value", v("json"))]),
                map([
                    ("name", v("HOSTNAME")),
                    (
                        "valueFrom",
                        map([("fieldRef", map([("fieldPath", v("metadata.name"))]))]),
                    ),
                ]),
            ]),
        ),
        (
            "envFrom",
            seq([
                map([(
                    "configMapRef",
                    map([
                        ("name", v(format!("{pipeline}-env"))),
                        ("optional", boolean(true)),
                    ]),
                )]),
                map([(
                    "secretRef",
                    map([
                        ("name", v(format!("{pipeline}-secrets"))),
                        ("optional", boolean(true)),
                    ]),
                )]),
            ]),
        ),
        ("livenessProbe", probe("/healthz", 10)),
        ("readinessProbe", probe("/readyz", 5)),
        ("resources", resources),
        (
            "lifecycle",
            // Let endpoints and load balancers stop sending before SIGTERM starts the drain.
            map([("preStop", map([("sleep", map([("seconds", int(5))]))]))]),
        ),
        (
            "volumeMounts",
            seq([map([
                ("name", v("pipeline")),
                ("mountPath", v(CONFIG_DIR)),
                ("readOnly", boolean(true)),
            ])]),
        ),
        (
            "securityContext",
            map([
                ("runAsNonRoot", boolean(true)),
                ("allowPrivilegeEscalation", boolean(false)),
                ("readOnlyRootFilesystem", boolean(false)),
            ]),
        ),
    ]);
    Ok(map([
        ("apiVersion", v("apps/v1")),
        ("kind", v("Deployment")),
        ("metadata", s.metadata()),
        (
            "spec",
            map([
                ("replicas", int(s.spec.replicas)),
                ("selector", map([("matchLabels", s.selector())])),
                (
                    "template",
                    map([
                        (
                            "metadata",
                            map([
                                ("labels", s.labels()),
                                (
                                    "annotations",
                                    map([
                                        ("prometheus.io/scrape", v("true")),
                                        ("prometheus.io/port", v(METRICS_PORT.to_string())),
                                        ("prometheus.io/path", v("/metrics")),
                                    ]),
                                ),
                            ]),
                        ),
                        (
                            "spec",
                            map([
                                // Drain and commit, plus the preStop pause, plus slack.
                                ("terminationGracePeriodSeconds", int(s.drain_secs + 15)),
                                ("containers", seq([container])),
                                (
                                    "volumes",
                                    seq([map([
                                        ("name", v("pipeline")),
                                        (
                                            "configMap",
                                            map([("name", v(format!("{pipeline}-pipeline")))]),
                                        ),
                                    ])]),
                                ),
                            ]),
                        ),
                    ]),
                ),
            ]),
        ),
    ]))
}

fn probe(path: &str, period: u64) -> Yaml {
    map([
        ("httpGet", map([("path", v(path)), ("port", v("metrics"))])),
        ("periodSeconds", int(period)),
        ("failureThreshold", int(3)),
    ])
}

/// A kind's default requests and limits as a container's `resources`.
fn resources(r: &Resources) -> Yaml {
    let list = |pairs: &[(&str, &str)]| {
        let mut m = yaml_rust2::yaml::Hash::new();
        for (name, quantity) in pairs {
            m.insert(v(*name), v(*quantity));
        }
        Yaml::Hash(m)
    };
    let mut m = yaml_rust2::yaml::Hash::new();
    if !r.requests.is_empty() {
        m.insert(v("requests"), list(r.requests));
    }
    if !r.limits.is_empty() {
        m.insert(v("limits"), list(r.limits));
    }
    Yaml::Hash(m)
}
