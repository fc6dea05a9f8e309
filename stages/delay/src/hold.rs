//! Holding one record until it is due.

use std::time::Duration;

use async_trait::async_trait;
use sluice_bus::{now_ms, Record};
use sluice_runtime::deferral;
use sluice_runtime::stage::{Emitter, Output, Processor, StageError};

/// The delay stage's processor.
pub struct Hold {
    output: Output,
    max_hold: Duration,
}

impl Hold {
    /// Passes records on to `output` when due, holding none longer than `max_hold`.
    pub fn new(output: Output, max_hold: Duration) -> Self {
        Self { output, max_hold }
    }
}

#[async_trait]
impl Processor for Hold {
    async fn process(&self, record: &Record, out: &mut Emitter) -> Result<(), StageError> {
        // A record without a readable due time is due now.
        let due_in = deferral::not_before(record).map_or(0, |due| due - now_ms());
        if due_in > 0 {
            let wait = Duration::from_millis(due_in as u64).min(self.max_hold);
            let recall = out.recall();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // Only waiting: the partition's next owner holds it again.
                _ = recall.recalled() => return Err(StageError::Abandoned),
            }
        }
        out.send_record(
            &self.output,
            deferral::passed_on(record, self.output.topic()),
        )
        .await
    }
}
