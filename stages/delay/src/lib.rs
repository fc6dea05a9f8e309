//! # delay
//!
//! Reads records that a stage deferred (each value framed with its due time, see
//! [`deferral`](sluice_runtime::deferral)) and passes each back to its output topic, key,
//! headers and value as they were, once it is due. The crawl frontier
//! defers URLs of busy domains through it; it knows nothing of URLs.
//!
//! A record waits in the stage (a task and the record, about a kilobyte) and its partition's
//! commits wait behind it; a rebalance or a shutdown recalls waiting records at once, and
//! their next owner holds them again until they are due. Records are taken in offset order,
//! so at most `concurrency` wait at once: when every place holds a record due later, one due
//! sooner waits behind them in the topic (deferrers keep due times within minutes, which keeps
//! that rare).
//!
//! Files: `lib.rs` (the kind and its settings), `hold.rs` (the processor).

mod hold;

use std::sync::Arc;

use serde::Deserialize;
use sluice_config::{HumanDuration, KindInfo, Validate, ANY_TYPE};
use sluice_runtime::stage::{StageContext, StageImpl, StageKind};

pub use hold::Hold;

/// `delay` settings in pipeline.yaml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Longest a record is held, whatever its due time says (default `1h`): a clock far off
    /// or a bad due time cannot park a record for days.
    pub max_hold: HumanDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_hold: HumanDuration(std::time::Duration::from_secs(3600)),
        }
    }
}

impl Validate for Settings {}

/// The `delay` stage kind.
pub struct Kind;

impl StageKind for Kind {
    type Settings = Settings;

    fn info(&self) -> KindInfo {
        KindInfo::new(
            "delay",
            "hold deferred records until their due time, then pass them back",
        )
        .input(ANY_TYPE)
        .output("output", ANY_TYPE)
    }

    async fn build(&self, settings: Settings, ctx: StageContext) -> anyhow::Result<StageImpl> {
        Ok(StageImpl::Processor(Arc::new(Hold::new(
            ctx.output("output")?,
            settings.max_hold.0,
        ))))
    }

    fn default_concurrency(&self) -> usize {
        // Waiting records cost about a kilobyte each: many may wait, so that one due soon
        // rarely queues behind those due later.
        65_536
    }
}
