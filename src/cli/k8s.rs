//! `sluice k8s render`: Kubernetes manifests from pipeline.yaml.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::k8s::{
    kustomization, render, summary, to_stream, Group, Manifest, RenderOptions, STRIMZI_TOPICS_DIR,
};
use crate::PipelineArgs;

/// Arguments of `k8s`.
#[derive(Args)]
pub struct K8sArgs {
    #[command(subcommand)]
    command: K8sCommand,
}

#[derive(Subcommand)]
enum K8sCommand {
    /// Write one Deployment per stage, the pipeline ConfigMap, Services for stages that listen
    /// (ingest), the topics Job (or Strimzi KafkaTopics), PodDisruptionBudgets and KEDA
    /// ScaledObjects.
    Render(RenderArgs),
}

/// How the topics get created, in the printed stream.
#[derive(Clone, Copy, ValueEnum)]
enum KafkaTopics {
    /// A Job running `sluice topics create` (any Kafka).
    Job,
    /// Strimzi KafkaTopic resources (the Strimzi operator creates them).
    Strimzi,
}

#[derive(Args)]
struct RenderArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Container image of the stages.
    #[arg(long, default_value = "ghcr.io/sluice-crawler/sluice:latest")]
    image: String,
    /// Namespace of every object.
    #[arg(long, default_value = "sluice")]
    namespace: String,
    /// Write one file per object (and a kustomization.yaml) into this directory instead of
    /// printing one YAML stream. The topics are written both ways: the Job in DIR, and Strimzi
    /// KafkaTopics in DIR/strimzi-topics, a kustomize Component that replaces the Job.
    #[arg(short = 'o', long = "output")]
    output: Option<std::path::PathBuf>,
    /// Add an Ingress on this host for the stages whose kind routes a path to one (ingest:
    /// `/v1/urls`).
    #[arg(long)]
    ingress_host: Option<String>,
    /// How the printed stream creates the topics (`-o` writes both).
    #[arg(long, value_enum, default_value = "job", conflicts_with = "output")]
    kafka_topics: KafkaTopics,
    /// The Strimzi `Kafka` resource the KafkaTopics belong to.
    #[arg(long, default_value = "kafka")]
    strimzi_cluster: String,
}

/// Runs `k8s`.
pub fn run(a: K8sArgs) -> anyhow::Result<ExitCode> {
    let K8sCommand::Render(r) = a.command;
    // Same diagnostics as `sluice validate`, one per line, positioned.
    let p = match super::load::pipeline(&r.pipeline) {
        Ok(p) => p,
        Err(e) => match e.downcast_ref::<super::load::Invalid>() {
            Some(super::load::Invalid(diags)) => {
                for d in diags.iter() {
                    eprintln!("{d}");
                }
                return Ok(ExitCode::FAILURE);
            }
            None => return Err(e),
        },
    };
    let text = std::fs::read_to_string(&r.pipeline.file)
        .with_context(|| format!("reading {}", r.pipeline.file.display()))?;
    let opts = RenderOptions {
        image: r.image,
        namespace: r.namespace,
        ingress_host: r.ingress_host,
        sets: r.pipeline.set.clone(),
        strimzi_cluster: r.strimzi_cluster,
    };
    let manifests = match render(&p, &text, &crate::stages::registry(), &opts) {
        Ok(m) => m,
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let in_group = |groups: &[Group]| -> Vec<&Manifest> {
        manifests
            .iter()
            .filter(|m| groups.contains(&m.group))
            .collect()
    };
    match &r.output {
        None => {
            let topics = match r.kafka_topics {
                KafkaTopics::Job => Group::TopicsJob,
                KafkaTopics::Strimzi => Group::StrimziTopics,
            };
            print!("{}", to_stream(&in_group(&[Group::Pipeline, topics])));
        }
        Some(dir) => {
            let source_name = r
                .pipeline
                .file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let base = in_group(&[Group::Pipeline, Group::TopicsJob]);
            write_dir(
                dir,
                &base,
                &kustomization(&p, &source_name, &base, Group::Pipeline),
            )?;
            let strimzi = in_group(&[Group::StrimziTopics]);
            write_dir(
                &dir.join(STRIMZI_TOPICS_DIR),
                &strimzi,
                &kustomization(&p, &source_name, &strimzi, Group::StrimziTopics),
            )?;
            let kinds: Vec<String> = summary(&manifests)
                .into_iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            eprintln!("wrote {} ({})", dir.display(), kinds.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes one file per object and the kustomization into `dir`. Files of objects no longer
/// rendered stay (DIR may hold other files) but drop out of the kustomization.
fn write_dir(
    dir: &std::path::Path,
    manifests: &[&Manifest],
    kustomization: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for m in manifests {
        let path = dir.join(&m.file);
        std::fs::write(&path, m.to_yaml())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let path = dir.join("kustomization.yaml");
    std::fs::write(&path, kustomization).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
