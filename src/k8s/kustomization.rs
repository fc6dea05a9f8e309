//! The kustomization.yaml files of `-o DIR`. Written as text, not as a tree: they carry
//! comments for whoever opens the directory, and the Component's patch is a YAML document
//! inside a string, clearer as a literal block than built up from nodes.

use sluice_config::Pipeline;

use super::names::dns_name;
use super::{Group, Manifest};

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
