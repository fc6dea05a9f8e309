//! Topic creation.

use crate::{Bus, BusError, CreateOutcome, TopicSpec};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::{broker_err, KafkaBus, QUERY_TIMEOUT};

pub(super) async fn create_topics(
    bus: &KafkaBus,
    topics: &[TopicSpec],
) -> Result<Vec<(String, CreateOutcome)>, BusError> {
    let admin: AdminClient<DefaultClientContext> =
        bus.client_config().create().map_err(broker_err)?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(i32::from(t.replication)),
            )
        })
        .collect();
    let limits: Vec<String> = topics
        .iter()
        .map(|t| t.record_limit().to_string())
        .collect();
    let new: Vec<NewTopic> = new
        .into_iter()
        .zip(&limits)
        .map(|(n, limit)| n.set("max.message.bytes", limit))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(QUERY_TIMEOUT));
    let results = admin.create_topics(&new, &opts).await.map_err(broker_err)?;
    let mut out = Vec::new();
    for (spec, r) in topics.iter().zip(results) {
        match r {
            Ok(_) => out.push((spec.name.clone(), CreateOutcome::Created)),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                let partitions = bus.partitions(&spec.name).await?;
                out.push((spec.name.clone(), CreateOutcome::Exists { partitions }));
            }
            Err((name, code)) => {
                return Err(BusError::Broker(format!(
                    "cannot create topic `{name}`: {code}"
                )))
            }
        }
    }
    Ok(out)
}
