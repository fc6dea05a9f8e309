//! The pipeline file as a ConfigMap, mounted into every pod at `CONFIG_DIR`. The file goes in
//! as written, comments and `${VAR}`s included, so each pod resolves its variables against its
//! own environment exactly as `sluice run` on a laptop does.

use yaml_rust2::Yaml;

use super::names::{labels, metadata};
use super::tree::{map, v};
use super::RenderOptions;

/// The ConfigMap `PIPELINE-pipeline` holding `pipeline.yaml`.
pub(super) fn pipeline_file(pipeline: &str, source_text: &str, opts: &RenderOptions) -> Yaml {
    map([
        ("apiVersion", v("v1")),
        ("kind", v("ConfigMap")),
        (
            "metadata",
            metadata(
                &format!("{pipeline}-pipeline"),
                &opts.namespace,
                labels(pipeline, "config"),
            ),
        ),
        ("data", map([("pipeline.yaml", v(source_text))])),
    ])
}
