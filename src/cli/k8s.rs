//! `sluice k8s render`: Kubernetes manifests from pipeline.yaml.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::k8s::{render, summary, to_stream, RenderOptions};
use crate::PipelineArgs;

/// Arguments of `k8s`.
#[derive(Args)]
pub struct K8sArgs {
    #[command(subcommand)]
    command: K8sCommand,
}

#[derive(Subcommand)]
enum K8sCommand {
    /// Write one Deployment per stage, the pipeline ConfigMap, the ingest Service, the
    /// topics Job, PodDisruptionBudgets and KEDA ScaledObjects.
    Render(RenderArgs),
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
    /// printing one YAML stream.
    #[arg(short = 'o', long = "output")]
    output: Option<std::path::PathBuf>,
    /// Add an Ingress for the ingest stage on this host.
    #[arg(long)]
    ingress_host: Option<String>,
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
    let text = std::fs::read_to_string(&r.pipeline.file)?;
    let opts = RenderOptions {
        image: r.image,
        namespace: r.namespace,
        ingress_host: r.ingress_host,
        sets: r.pipeline.set.clone(),
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
    match &r.output {
        None => print!("{}", to_stream(&manifests)),
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for m in &manifests {
                let yaml = serde_yaml::to_string(&m.object)?;
                std::fs::write(dir.join(&m.file), yaml)?;
            }
            let resources: Vec<&str> = manifests.iter().map(|m| m.file.as_str()).collect();
            let kustomization = format!(
                "# Rendered by `sluice k8s render` from {}; re-render after editing it.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n{}",
                r.pipeline
                    .file
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                resources.iter().map(|f| format!("  - {f}\n")).collect::<String>()
            );
            std::fs::write(dir.join("kustomization.yaml"), kustomization)?;
            let kinds: Vec<String> = summary(&manifests)
                .into_iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            eprintln!("wrote {} ({})", dir.display(), kinds.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
