//! The Job that creates the pipeline's topics with `sluice topics create`, for any Kafka. It
//! retries while Kafka starts (the stages wait for their topics meanwhile), and is idempotent,
//! so re-applying the manifests re-runs it harmlessly.

use yaml_rust2::Yaml;

use super::names::{labels, metadata};
use super::tree::{boolean, int, map, seq, v};
use super::{RenderOptions, CONFIG_DIR};

/// The Job `PIPELINE-topics-create`.
pub(super) fn topics_job(pipeline: &str, opts: &RenderOptions) -> Yaml {
    let container = map([
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
                    ("optional", boolean(true)),
                ]),
            )])]),
        ),
        (
            "volumeMounts",
            seq([map([
                ("name", v("pipeline")),
                ("mountPath", v(CONFIG_DIR)),
                ("readOnly", boolean(true)),
            ])]),
        ),
    ]);
    map([
        ("apiVersion", v("batch/v1")),
        ("kind", v("Job")),
        (
            "metadata",
            metadata(
                &format!("{pipeline}-topics-create"),
                &opts.namespace,
                labels(pipeline, "topics"),
            ),
        ),
        (
            "spec",
            map([
                // Kafka may take minutes to come up; each failure backs off longer.
                ("backoffLimit", int(20)),
                ("ttlSecondsAfterFinished", int(86400)),
                (
                    "template",
                    map([
                        ("metadata", map([("labels", labels(pipeline, "topics"))])),
                        (
                            "spec",
                            map([
                                ("restartPolicy", v("OnFailure")),
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
    ])
}
