//! Strimzi `KafkaTopic`s, the topics' other form besides the Job (see the `k8s` docs): with the
//! operator owning topics, their partitions, replication and limits live in these objects, and
//! the operator reconciles the cluster to them.

use sluice_config::TopicSpec;
use yaml_rust2::yaml::Hash;
use yaml_rust2::Yaml;

use super::names::{dns_name, labels, metadata};
use super::tree::{int, map, v, with};
use sluice_bus::DEFAULT_MAX_MESSAGE_BYTES;

use super::RenderOptions;

/// A `KafkaTopic` for one topic of the pipeline: partitions and replicas as declared, and a
/// record limit the producer's largest record fits under.
pub(super) fn kafka_topic(t: &TopicSpec, pipeline: &str, opts: &RenderOptions) -> Yaml {
    let mut config = Hash::new();
    let limit = t.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
    config.insert(v("max.message.bytes"), int(limit));
    if t.replication >= 3 {
        // Producers wait for all in-sync replicas (acks=all): with two of three required, a
        // broker can be down for maintenance without stopping writes or risking acked records.
        config.insert(v("min.insync.replicas"), int(2));
    }
    // The operator only reconciles topics labelled with its Kafka cluster's name.
    let topic_labels = with(
        labels(pipeline, "topics"),
        "strimzi.io/cluster",
        v(&opts.strimzi_cluster),
    );
    map([
        ("apiVersion", v("kafka.strimzi.io/v1beta2")),
        ("kind", v("KafkaTopic")),
        (
            "metadata",
            metadata(&dns_name(&t.name), &opts.namespace, topic_labels),
        ),
        (
            "spec",
            map([
                // Topic names may hold `.` or `_`, which object names may not.
                ("topicName", v(&t.name)),
                ("partitions", int(t.partitions)),
                (
                    "replicas",
                    // -1 (the broker default) is left to the operator: no field.
                    if t.replication > 0 {
                        int(t.replication)
                    } else {
                        Yaml::Null
                    },
                ),
                ("config", Yaml::Hash(config)),
            ]),
        ),
    ])
}
