//! Kubernetes manifests rendered from pipeline.yaml (`sluice k8s render`): one Deployment per
//! stage, the pipeline file as a ConfigMap mounted into every pod, a Service (and on request an
//! Ingress) for stages whose kind listens on a port, a Job that creates the topics,
//! PodDisruptionBudgets, and KEDA ScaledObjects for stages with `autoscale`. The pipeline file
//! stays the single source of truth: re-render after editing it.
//!
//! The renderer knows no stage kind by name: what a stage's pod must open and reserve comes
//! from its kind's [`DeploymentInfo`], so a new kind that listens on a port gets its Service
//! without a change here.
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
//!
//! Each object kind has a file of its own, so the code of one object reads top to bottom
//! like the YAML it renders, and a change to, say, the Service touches nothing else; this
//! file only decides which objects a pipeline gets.

mod configmap;
mod deployment;
mod kafka_topic;
mod kustomization;
mod names;
mod pdb;
mod scaled_object;
mod service;
mod topics_job;
mod tree;

use std::collections::BTreeMap;

use sluice_config::{DeploymentInfo, Diagnostic, KindCatalog, Pipeline, StageSpec};
use sluice_runtime::registry::Registry;
use yaml_rust2::Yaml;

pub use kustomization::kustomization;

/// Where the pods' metrics, health and readiness are served.
pub const METRICS_PORT: u16 = 9400;
/// Where the pipeline file is mounted.
const CONFIG_DIR: &str = "/etc/sluice";
/// Subdirectory of `-o DIR` holding the Strimzi KafkaTopics Component.
pub const STRIMZI_TOPICS_DIR: &str = "strimzi-topics";
/// How long a stage drains on shutdown when its kind is not in the registry (the runtime's
/// default `StageKind::drain_timeout`).
const DEFAULT_DRAIN_SECS: u64 = 30;

/// Render options.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Container image.
    pub image: String,
    /// Namespace of every object.
    pub namespace: String,
    /// Host name of an Ingress for the stages whose kind routes a path to one (none without it).
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
    pub object: Yaml,
    /// Which set it belongs to.
    pub group: Group,
}

impl Manifest {
    /// The object as a YAML document (no `---` header).
    pub fn to_yaml(&self) -> String {
        sluice_config::to_yaml_string(&self.object)
    }
}

/// One stage as its objects see it: the spec, what its kind needs, and the names all of its
/// objects share.
struct Stage<'a> {
    spec: &'a StageSpec,
    /// What the stage's kind needs from its deployment.
    needs: DeploymentInfo,
    /// How long the stage's kind may take to drain on shutdown, in seconds.
    drain_secs: u64,
    /// The pipeline's name as a DNS label (the `instance` label).
    pipeline: String,
    /// The stage's name as a DNS label (the `component` label).
    component: String,
    /// The name of the stage's objects: `PIPELINE-COMPONENT`.
    name: String,
    opts: &'a RenderOptions,
}

impl Stage<'_> {
    fn labels(&self) -> Yaml {
        names::labels(&self.pipeline, &self.component)
    }

    fn selector(&self) -> Yaml {
        names::selector(&self.pipeline, &self.component)
    }

    /// `metadata` of one of the stage's objects (they all share its name).
    fn metadata(&self) -> Yaml {
        names::metadata(&self.name, &self.opts.namespace, self.labels())
    }
}

/// Renders the manifests of `p`. Errors carry the pipeline.yaml position they are about.
pub fn render(
    p: &Pipeline,
    source_text: &str,
    registry: &Registry,
    opts: &RenderOptions,
) -> Result<Vec<Manifest>, Vec<Diagnostic>> {
    let pipeline = names::dns_name(&p.name);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut push = |file: String, group: Group, object: Yaml| {
        out.push(Manifest {
            file,
            object,
            group,
        })
    };
    push(
        "configmap-pipeline.yaml".into(),
        Group::Pipeline,
        configmap::pipeline_file(&pipeline, source_text, opts),
    );
    push(
        "job-topics-create.yaml".into(),
        Group::TopicsJob,
        topics_job::topics_job(&pipeline, opts),
    );
    for t in p.topics.values() {
        push(
            format!("kafkatopic-{}.yaml", names::dns_name(&t.name)),
            Group::StrimziTopics,
            kafka_topic::kafka_topic(t, &pipeline, opts),
        );
    }
    for spec in p.stages.values() {
        if spec.replicas == 0 {
            continue;
        }
        let component = names::dns_name(&spec.name);
        let s = Stage {
            spec,
            needs: registry
                .kind(&spec.kind.value)
                .map(|k| k.deployment)
                .unwrap_or_default(),
            drain_secs: registry
                .get(&spec.kind.value)
                .map_or(DEFAULT_DRAIN_SECS, |k| k.drain_timeout().as_secs()),
            name: format!("{pipeline}-{component}"),
            pipeline: pipeline.clone(),
            component,
            opts,
        };
        match deployment::deployment(&s) {
            Ok(d) => push(
                format!("deployment-{}.yaml", s.component),
                Group::Pipeline,
                d,
            ),
            Err(d) => errors.push(d),
        }
        if let Some(pdb) = pdb::pod_disruption_budget(&s) {
            push(format!("pdb-{}.yaml", s.component), Group::Pipeline, pdb);
        }
        if let Some(svc) = service::service(&s) {
            push(
                format!("service-{}.yaml", s.component),
                Group::Pipeline,
                svc,
            );
        }
        if let Some(ingress) = opts
            .ingress_host
            .as_deref()
            .and_then(|host| service::ingress(&s, host))
        {
            push(
                format!("ingress-{}.yaml", s.component),
                Group::Pipeline,
                ingress,
            );
        }
        match scaled_object::scaled_object(p, &s) {
            Ok(Some(so)) => push(
                format!("scaledobject-{}.yaml", s.component),
                Group::Pipeline,
                so,
            ),
            Ok(None) => {}
            Err(d) => errors.push(d),
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
        out.push_str(&m.to_yaml());
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
