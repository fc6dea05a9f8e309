//! Producing a record's outputs: every record is sent, the ones the broker refuses are sent
//! again with backoff, until all are acknowledged or the caller gives up. Shared by the record
//! driver, the batch driver and stages that produce themselves (crawl).

use sluice_bus::{OutRecord, Producer};
use tokio_util::sync::CancellationToken;

use crate::metrics::StageMetrics;
use crate::retry::Backoff;

/// Sends `records` until each is acknowledged; false if `give_up` is cancelled first (the
/// input is then not committed and will be replayed).
pub async fn produce_all(
    producer: &dyn Producer,
    records: &[OutRecord],
    metrics: &StageMetrics,
    backoff: &Backoff,
    give_up: &CancellationToken,
) -> bool {
    let mut pending: Vec<&OutRecord> = records.iter().collect();
    let mut round: u32 = 0;
    while !pending.is_empty() {
        let results = if let [one] = pending[..] {
            vec![producer.send(one.clone()).await]
        } else {
            futures::future::join_all(pending.iter().map(|o| producer.send((*o).clone()))).await
        };
        let mut failed = Vec::new();
        for (out, r) in pending.into_iter().zip(results) {
            match r {
                Ok(_) => metrics.sent(&out.topic),
                Err(e) => {
                    tracing::warn!(topic = %out.topic, error = %e, "produce failed; retrying");
                    metrics.failed("produce");
                    failed.push(out);
                }
            }
        }
        pending = failed;
        if !pending.is_empty() {
            round += 1;
            tokio::select! {
                _ = tokio::time::sleep(backoff.delay(round.min(8))) => {}
                _ = give_up.cancelled() => return false,
            }
        }
    }
    true
}
