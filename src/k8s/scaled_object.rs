//! KEDA ScaledObjects for stages with `autoscale:`. A stage's backlog is its consumer group's
//! lag on its input topic, which KEDA reads from Kafka directly; CPU says little about a stage
//! that mostly waits on the network.

use serde::Deserialize;
use sluice_config::{Broker, Diagnostic, Pipeline};
use yaml_rust2::Yaml;

use super::tree::{int, map, seq, v};
use super::Stage;

/// Kafka protocol version KEDA's scaler (sarama) speaks. Its default, 1.0.0, uses request
/// versions Kafka 4 removed (KIP-896); 2.1.0 is the baseline every broker from 2.1 to 4.x accepts.
const KEDA_KAFKA_VERSION: &str = "2.1.0";

/// `autoscale:` of a stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Autoscale {
    min: u32,
    max: u32,
    /// Consumer-group lag per replica that triggers scaling out.
    lag: u64,
}

/// The ScaledObject of a stage with `autoscale:` (`None` without). Errors, positioned at
/// `autoscale:`, when the bounds are inconsistent or there is no Kafka lag to scale on.
pub(super) fn scaled_object(p: &Pipeline, s: &Stage) -> Result<Option<Yaml>, Diagnostic> {
    let Some(node) = &s.spec.autoscale else {
        return Ok(None);
    };
    let a: Autoscale = sluice_config::from_node(node)?;
    if a.min > a.max || a.max == 0 || a.lag == 0 {
        return Err(Diagnostic::error(
            node.pos.clone(),
            "autoscale needs 0 <= min <= max, max >= 1 and lag >= 1",
        ));
    }
    let Some(input) = &s.spec.input else {
        return Err(Diagnostic::error(
            node.pos.clone(),
            format!("stage `{}` has no input topic to scale on", s.spec.name),
        ));
    };
    let bootstrap =
        match &p.broker.value {
            Broker::Kafka { bootstrap } => bootstrap.clone(),
            Broker::Memory => return Err(Diagnostic::error(
                node.pos.clone(),
                "autoscale scales on Kafka consumer lag: set `broker` to Kafka bootstrap servers",
            )),
        };
    Ok(Some(map([
        ("apiVersion", v("keda.sh/v1alpha1")),
        ("kind", v("ScaledObject")),
        ("metadata", s.metadata()),
        (
            "spec",
            map([
                ("scaleTargetRef", map([("name", v(&s.name))])),
                ("minReplicaCount", int(a.min)),
                ("maxReplicaCount", int(a.max)),
                (
                    "triggers",
                    seq([map([
                        ("type", v("kafka")),
                        (
                            "metadata",
                            // KEDA takes every metadata value as a string.
                            map([
                                ("bootstrapServers", v(bootstrap)),
                                // A stage's consumer group is its name.
                                ("consumerGroup", v(&s.spec.name)),
                                ("topic", v(&input.value)),
                                ("lagThreshold", v(a.lag.to_string())),
                                ("version", v(KEDA_KAFKA_VERSION)),
                            ]),
                        ),
                    ])]),
                ),
            ]),
        ),
    ])))
}
