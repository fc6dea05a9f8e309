//! Kubernetes manifests rendered from pipeline.yaml (`sluice k8s render`): one Deployment per
//! stage, the pipeline file as a ConfigMap mounted into every pod, a Service for `ingest`, a
//! Job that creates the topics, PodDisruptionBudgets, and KEDA ScaledObjects for stages with
//! `autoscale`. The pipeline file stays the single source of truth: re-render after editing it.
//!
//! The topics are rendered twice, because which form works depends on the cluster: the Job
//! (`sluice topics create`, any Kafka) and Strimzi `KafkaTopic`s (the operator then owns the
//! topics and their config). The KafkaTopics form a kustomize Component that also deletes the
//! Job, so an overlay picks one by listing the Component or not.
//!
//! Output is deterministic (objects and keys in a fixed order), so it diffs cleanly in git,
//! and a change to one stage changes only that stage's objects (and the ConfigMap holding the
//! file). Pods do not restart by themselves when the file changes: replica counts need no
//! restart, anything else does (`kubectl rollout restart deployment -l app.kubernetes.io/instance=NAME`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use sluice_config::{Broker, Diagnostic, Pipeline, StageSpec, TopicSpec};
use sluice_runtime::registry::Registry;

/// Where the pods' metrics, health and readiness are served.
pub const METRICS_PORT: u16 = 9400;
/// Where the pipeline file is mounted.
const CONFIG_DIR: &str = "/etc/sluice";
/// The largest record a topic accepts: the producer's `message.max.bytes`
/// (runtime/core/src/kafka/producer.rs). Page records carry bodies of up to the crawl's
/// `max_body`, far above Kafka's 1 MB default; a limit is a bound, not an allocation, so
/// every topic gets it rather than guessing which ones carry pages.
pub const MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;
/// Kafka protocol version KEDA's scaler (sarama) speaks. Its default, 1.0.0, uses request
/// versions Kafka 4 removed (KIP-896); 2.1.0 is the baseline every broker from 2.1 to 4.x accepts.
const KEDA_KAFKA_VERSION: &str = "2.1.0";
/// Subdirectory of `-o DIR` holding the Strimzi KafkaTopics Component.
pub const STRIMZI_TOPICS_DIR: &str = "strimzi-topics";

/// Render options.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Container image.
    pub image: String,
    /// Namespace of every object.
    pub namespace: String,
    /// Host name of an Ingress for `ingest` (none without it).
    pub ingress_host: Option<String>,
    /// `--set` overrides, passed on to every pod so it sees the same pipeline.
    pub sets: Vec<String>,
    /// Name of the Strimzi `Kafka` resource the KafkaTopics belong to (`strimzi.io/cluster`).
    pub strimzi_cluster: String,
}

/// Which set a rendered object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// The stages and their configuration: always deployed.
    Pipeline,
    /// The Job that creates the topics (any Kafka).
    TopicsJob,
    /// Strimzi KafkaTopics, instead of the Job, for clusters running the Strimzi operator.
    StrimziTopics,
}

/// One rendered object: its file name and content.
pub struct Manifest {
    /// File name (`deployment-crawl.yaml`).
    pub file: String,
    /// The object.
    pub object: Value,
    /// Which set it belongs to.
    pub group: Group,
}

/// `autoscale:` of a stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Autoscale {
    min: u32,
    max: u32,
    /// Consumer-group lag per replica that triggers scaling out.
    lag: u64,
}

fn v(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// Builds a mapping from `(key, value)` pairs, in order.
fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut m = Mapping::new();
    for (k, val) in pairs {
        if !val.is_null() {
            m.insert(v(k), val);
        }
    }
    Value::Mapping(m)
}

fn seq(items: impl IntoIterator<Item = Value>) -> Value {
    Value::Sequence(items.into_iter().collect())
}

fn labels(pipeline: &str, component: &str) -> Value {
    map([
        ("app.kubernetes.io/name", v("sluice")),
        ("app.kubernetes.io/instance", v(pipeline)),
        ("app.kubernetes.io/component", v(component)),
        ("app.kubernetes.io/part-of", v(pipeline)),
        ("app.kubernetes.io/managed-by", v("sluice")),
    ])
}

/// `metadata` with one more label.
fn metadata_with_label(
    name: &str,
    opts: &RenderOptions,
    pipeline: &str,
    component: &str,
    label: (&str, &str),
) -> Value {
    let mut meta = metadata(name, opts, pipeline, component);
    if let Some(Value::Mapping(l)) = meta.get_mut("labels") {
        l.insert(v(label.0), v(label.1));
    }
    meta
}

fn selector(pipeline: &str, component: &str) -> Value {
    map([
        ("app.kubernetes.io/instance", v(pipeline)),
        ("app.kubernetes.io/component", v(component)),
    ])
}

fn metadata(name: &str, opts: &RenderOptions, pipeline: &str, component: &str) -> Value {
    map([
        ("name", v(name)),
        ("namespace", v(&opts.namespace)),
        ("labels", labels(pipeline, component)),
    ])
}

/// Kubernetes names: lowercase alphanumerics and `-`.
fn dns_name(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(63);
    out.trim_matches('-').to_string()
}

fn default_resources() -> Value {
    map([
        (
            "requests",
            map([("cpu", v("100m")), ("memory", v("128Mi"))]),
        ),
        ("limits", map([("memory", v("512Mi"))])),
    ])
}

fn probe(path: &str, period: u64) -> Value {
    map([
        ("httpGet", map([("path", v(path)), ("port", v("metrics"))])),
        ("periodSeconds", Value::from(period)),
        ("failureThreshold", Value::from(3)),
    ])
}

/// The container port of an `ingest` stage, from its `listen` setting.
fn ingest_port(stage: &StageSpec) -> u16 {
    stage
        .settings
        .get("listen")
        .and_then(|n| n.as_str())
        .and_then(|l| l.rsplit(':').next()?.parse().ok())
        .unwrap_or(8080)
}

fn deployment(p: &Pipeline, stage: &StageSpec, registry: &Registry, opts: &RenderOptions) -> Value {
    let pipeline = dns_name(&p.name);
    let component = dns_name(&stage.name);
    let name = format!("{pipeline}-{component}");
    let drain = registry
        .get(&stage.kind.value)
        .map(|k| k.drain_timeout().as_secs())
        .unwrap_or(30);
    let mut ports = vec![map([
        ("name", v("metrics")),
        ("containerPort", Value::from(METRICS_PORT)),
    ])];
    if stage.kind.value == "ingest" {
        ports.push(map([
            ("name", v("http")),
            ("containerPort", Value::from(ingest_port(stage))),
        ]));
    }
    let resources = stage
        .resources
        .as_ref()
        .map(|n| n.to_yaml_value())
        .unwrap_or_else(default_resources);
    let config_map = format!("{pipeline}-pipeline");
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
                v(&stage.name),
                v("--metrics-addr"),
                v(format!("0.0.0.0:{METRICS_PORT}")),
            ]
            .into_iter()
            .chain(opts.sets.iter().flat_map(|s| [v("--set"), v(s)]))),
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
                        ("optional", Value::from(true)),
                    ]),
                )]),
                map([(
                    "secretRef",
                    map([
                        ("name", v(format!("{pipeline}-secrets"))),
                        ("optional", Value::from(true)),
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
            map([(
                "preStop",
                map([("sleep", map([("seconds", Value::from(5))]))]),
            )]),
        ),
        (
            "volumeMounts",
            seq([map([
                ("name", v("pipeline")),
                ("mountPath", v(CONFIG_DIR)),
                ("readOnly", Value::from(true)),
            ])]),
        ),
        (
            "securityContext",
            map([
                ("runAsNonRoot", Value::from(true)),
                ("allowPrivilegeEscalation", Value::from(false)),
                ("readOnlyRootFilesystem", Value::from(false)),
            ]),
        ),
    ]);
    map([
        ("apiVersion", v("apps/v1")),
        ("kind", v("Deployment")),
        ("metadata", metadata(&name, opts, &pipeline, &component)),
        (
            "spec",
            map([
                ("replicas", Value::from(stage.replicas)),
                (
                    "selector",
                    map([("matchLabels", selector(&pipeline, &component))]),
                ),
                (
                    "template",
                    map([
                        (
                            "metadata",
                            map([
                                ("labels", labels(&pipeline, &component)),
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
                                ("terminationGracePeriodSeconds", Value::from(drain + 15)),
                                ("containers", seq([container])),
                                (
                                    "volumes",
                                    seq([map([
                                        ("name", v("pipeline")),
                                        ("configMap", map([("name", v(config_map))])),
                                    ])]),
                                ),
                            ]),
                        ),
                    ]),
                ),
            ]),
        ),
    ])
}

/// A Strimzi `KafkaTopic` for one topic of the pipeline: partitions and replicas as declared,
/// and a record limit the producer's largest record fits under.
fn kafka_topic(t: &TopicSpec, pipeline: &str, opts: &RenderOptions) -> Value {
    let mut config = Mapping::new();
    config.insert(v("max.message.bytes"), Value::from(MAX_MESSAGE_BYTES));
    if t.replication >= 3 {
        // Producers wait for all in-sync replicas (acks=all): with two of three required, a
        // broker can be down for maintenance without stopping writes or risking acked records.
        config.insert(v("min.insync.replicas"), Value::from(2));
    }
    map([
        ("apiVersion", v("kafka.strimzi.io/v1beta2")),
        ("kind", v("KafkaTopic")),
        (
            "metadata",
            // The operator only reconciles topics labelled with its Kafka cluster's name.
            metadata_with_label(
                &dns_name(&t.name),
                opts,
                pipeline,
                "topics",
                ("strimzi.io/cluster", &opts.strimzi_cluster),
            ),
        ),
        (
            "spec",
            map([
                // Topic names may hold `.` or `_`, which object names may not.
                ("topicName", v(&t.name)),
                ("partitions", Value::from(t.partitions)),
                (
                    "replicas",
                    // -1 (the broker default) is left to the operator: no field.
                    if t.replication > 0 {
                        Value::from(t.replication)
                    } else {
                        Value::Null
                    },
                ),
                ("config", Value::Mapping(config)),
            ]),
        ),
    ])
}

/// The kustomization of one group written by `-o DIR`: the pipeline's objects (with the topics
/// Job) as a plain Kustomization, the KafkaTopics as a Component that also deletes the Job.
pub fn kustomization(
    p: &Pipeline,
    source_name: &str,
    manifests: &[&Manifest],
    group: Group,
) -> String {
    let files: String = manifests
        .iter()
        .map(|m| format!("  - {}\n", m.file))
        .collect();
    let header = format!(
        "# Rendered by `sluice k8s render` from {source_name}; re-render after editing it.\n"
    );
    match group {
        Group::Pipeline | Group::TopicsJob => format!(
            "{header}apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n{files}"
        ),
        Group::StrimziTopics => {
            let job = format!("{}-topics-create", dns_name(&p.name));
            format!(
                "{header}# The topics as Strimzi KafkaTopics, for a cluster running the Strimzi operator. The\n\
                 # operator creates and configures them, so the topics Job is deleted.\n\
                 apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n{files}\
                 patches:\n  - target: {{ kind: Job, name: {job} }}\n    patch: |-\n      $patch: delete\n      apiVersion: batch/v1\n      kind: Job\n      metadata:\n        name: {job}\n"
            )
        }
    }
}

/// Renders the manifests of `p`. Errors carry the pipeline.yaml position they are about.
pub fn render(
    p: &Pipeline,
    source_text: &str,
    registry: &Registry,
    opts: &RenderOptions,
) -> Result<Vec<Manifest>, Vec<Diagnostic>> {
    let pipeline = dns_name(&p.name);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    out.push(Manifest {
        file: "configmap-pipeline.yaml".into(),
        group: Group::Pipeline,
        object: map([
            ("apiVersion", v("v1")),
            ("kind", v("ConfigMap")),
            (
                "metadata",
                metadata(&format!("{pipeline}-pipeline"), opts, &pipeline, "config"),
            ),
            ("data", map([("pipeline.yaml", v(source_text))])),
        ]),
    });
    out.push(Manifest {
        file: "job-topics-create.yaml".into(),
        group: Group::TopicsJob,
        object: map([
            ("apiVersion", v("batch/v1")),
            ("kind", v("Job")),
            (
                "metadata",
                metadata(
                    &format!("{pipeline}-topics-create"),
                    opts,
                    &pipeline,
                    "topics",
                ),
            ),
            (
                "spec",
                map([
                    ("backoffLimit", Value::from(20)),
                    ("ttlSecondsAfterFinished", Value::from(86400)),
                    (
                        "template",
                        map([
                            ("metadata", map([("labels", labels(&pipeline, "topics"))])),
                            (
                                "spec",
                                map([
                                    ("restartPolicy", v("OnFailure")),
                                    (
                                        "containers",
                                        seq([map([
                                            ("name", v("topics")),
                                            ("image", v(&opts.image)),
                                            (
                                                "args",
                                                seq([
                                                    v("topics"),
                                                    v("create"),
                                                    v("-f"),
                                                    v(format!("{CONFIG_DIR}/pipeline.yaml")),
                                                ]),
                                            ),
                                            (
                                                "envFrom",
                                                seq([map([(
                                                    "configMapRef",
                                                    map([
                                                        ("name", v(format!("{pipeline}-env"))),
                                                        ("optional", Value::from(true)),
                                                    ]),
                                                )])]),
                                            ),
                                            (
                                                "volumeMounts",
                                                seq([map([
                                                    ("name", v("pipeline")),
                                                    ("mountPath", v(CONFIG_DIR)),
                                                    ("readOnly", Value::from(true)),
                                                ])]),
                                            ),
                                        ])]),
                                    ),
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
        ]),
    });
    for t in p.topics.values() {
        out.push(Manifest {
            file: format!("kafkatopic-{}.yaml", dns_name(&t.name)),
            group: Group::StrimziTopics,
            object: kafka_topic(t, &pipeline, opts),
        });
    }
    for stage in p.stages.values() {
        if stage.replicas == 0 {
            continue;
        }
        let component = dns_name(&stage.name);
        let name = format!("{pipeline}-{component}");
        out.push(Manifest {
            file: format!("deployment-{component}.yaml"),
            group: Group::Pipeline,
            object: deployment(p, stage, registry, opts),
        });
        if stage.replicas >= 2 {
            out.push(Manifest {
                file: format!("pdb-{component}.yaml"),
                group: Group::Pipeline,
                object: map([
                    ("apiVersion", v("policy/v1")),
                    ("kind", v("PodDisruptionBudget")),
                    ("metadata", metadata(&name, opts, &pipeline, &component)),
                    (
                        "spec",
                        map([
                            ("maxUnavailable", Value::from(1)),
                            (
                                "selector",
                                map([("matchLabels", selector(&pipeline, &component))]),
                            ),
                        ]),
                    ),
                ]),
            });
        }
        if stage.kind.value == "ingest" {
            out.push(Manifest {
                file: format!("service-{component}.yaml"),
                group: Group::Pipeline,
                object: map([
                    ("apiVersion", v("v1")),
                    ("kind", v("Service")),
                    ("metadata", metadata(&name, opts, &pipeline, &component)),
                    (
                        "spec",
                        map([
                            ("selector", selector(&pipeline, &component)),
                            (
                                "ports",
                                seq([map([
                                    ("name", v("http")),
                                    ("port", Value::from(80)),
                                    ("targetPort", v("http")),
                                ])]),
                            ),
                        ]),
                    ),
                ]),
            });
            if let Some(host) = &opts.ingress_host {
                out.push(Manifest {
                    file: format!("ingress-{component}.yaml"),
                    group: Group::Pipeline,
                    object: map([
                        ("apiVersion", v("networking.k8s.io/v1")),
                        ("kind", v("Ingress")),
                        ("metadata", metadata(&name, opts, &pipeline, &component)),
                        (
                            "spec",
                            map([(
                                "rules",
                                seq([map([
                                    ("host", v(host)),
                                    (
                                        "http",
                                        map([(
                                            "paths",
                                            seq([map([
                                                ("path", v("/v1/urls")),
                                                ("pathType", v("Prefix")),
                                                (
                                                    "backend",
                                                    map([(
                                                        "service",
                                                        map([
                                                            ("name", v(&name)),
                                                            ("port", map([("name", v("http"))])),
                                                        ]),
                                                    )]),
                                                ),
                                            ])]),
                                        )]),
                                    ),
                                ])]),
                            )]),
                        ),
                    ]),
                });
            }
        }
        if let Some(node) = &stage.autoscale {
            let a: Autoscale = match sluice_config::from_node(node) {
                Ok(a) => a,
                Err(d) => {
                    errors.push(d);
                    continue;
                }
            };
            if a.min > a.max || a.max == 0 || a.lag == 0 {
                errors.push(Diagnostic::error(
                    node.pos.clone(),
                    "autoscale needs 0 <= min <= max, max >= 1 and lag >= 1",
                ));
                continue;
            }
            let Some(input) = &stage.input else {
                errors.push(Diagnostic::error(
                    node.pos.clone(),
                    format!("stage `{}` has no input topic to scale on", stage.name),
                ));
                continue;
            };
            let bootstrap = match &p.broker.value {
                Broker::Kafka { bootstrap } => bootstrap.clone(),
                Broker::Memory => {
                    errors.push(Diagnostic::error(
                        node.pos.clone(),
                        "autoscale scales on Kafka consumer lag: set `broker` to Kafka bootstrap servers",
                    ));
                    continue;
                }
            };
            out.push(Manifest {
                file: format!("scaledobject-{component}.yaml"),
                group: Group::Pipeline,
                object: map([
                    ("apiVersion", v("keda.sh/v1alpha1")),
                    ("kind", v("ScaledObject")),
                    ("metadata", metadata(&name, opts, &pipeline, &component)),
                    (
                        "spec",
                        map([
                            ("scaleTargetRef", map([("name", v(&name))])),
                            ("minReplicaCount", Value::from(a.min)),
                            ("maxReplicaCount", Value::from(a.max)),
                            (
                                "triggers",
                                seq([map([
                                    ("type", v("kafka")),
                                    (
                                        "metadata",
                                        map([
                                            ("bootstrapServers", v(bootstrap)),
                                            ("consumerGroup", v(&stage.name)),
                                            ("topic", v(&input.value)),
                                            ("lagThreshold", v(a.lag.to_string())),
                                            ("version", v(KEDA_KAFKA_VERSION)),
                                        ]),
                                    ),
                                ])]),
                            ),
                        ]),
                    ),
                ]),
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// All manifests as one multi-document YAML stream.
pub fn to_stream(manifests: &[&Manifest]) -> String {
    let mut out = String::new();
    for m in manifests {
        out.push_str("---\n");
        out.push_str(&format!("# {}\n", m.file));
        out.push_str(&serde_yaml::to_string(&m.object).expect("manifests serialize"));
    }
    out
}

/// The kinds of objects rendered, by file, for a summary.
pub fn summary(manifests: &[Manifest]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for x in manifests {
        let kind = x.object["kind"].as_str().unwrap_or("?").to_string();
        *m.entry(kind).or_default() += 1;
    }
    m
}
