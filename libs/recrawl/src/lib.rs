//! The recrawl clock: when each URL was last passed on or fetched, in memcached.
//!
//! normalize-dedup claims a URL here before passing it on (`dedup.rs` has the protocol) and
//! crawl marks it when it fetches. Both must agree on the key prefix and on `recrawl_after`,
//! so the clock has one owner: the normalize-dedup stage that feeds a crawl stage's input
//! topic. [`ClockSettings`] holds the only defaults; [`owner_of`] finds a crawl's owner, whose
//! values the crawl takes. A crawl fed from outside the pipeline (no owner) sets them itself.

mod dedup;

use std::time::Duration;

use serde::Deserialize;
use sluice_config::{HumanDuration, Pipeline, StageSpec};

pub use dedup::{Claim, Dedup, Validators};

/// The stage kind that owns the clock.
pub const OWNER_KIND: &str = "normalize-dedup";

/// The clock's settings, as fields of the owner's pipeline.yaml entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ClockSettings {
    /// A URL passes again only after this long.
    pub recrawl_after: HumanDuration,
    /// Prefix of the cache keys, so pipelines can share one memcached.
    pub key_prefix: String,
}

impl Default for ClockSettings {
    fn default() -> Self {
        Self {
            recrawl_after: HumanDuration(Duration::from_secs(24 * 3600)),
            key_prefix: "sluice:url:".into(),
        }
    }
}

/// The stage that owns the clock of a stage reading `topic`: the normalize-dedup stage
/// writing it, with its clock settings. `Err` names the stages when several disagree.
pub fn owner_of<'a>(
    pipeline: &'a Pipeline,
    topic: &str,
) -> Result<Option<(&'a StageSpec, ClockSettings)>, String> {
    let mut found: Option<(&StageSpec, ClockSettings)> = None;
    for stage in pipeline.stages.values() {
        if stage.kind.value != OWNER_KIND
            || stage.outputs.get("output").map(|t| t.value.as_str()) != Some(topic)
        {
            continue;
        }
        // The owner's own settings were validated with it; unknown fields are its business.
        let clock: ClockSettings = sluice_config::from_node(&stage.settings).unwrap_or_default();
        match &found {
            Some((other, theirs)) if *theirs != clock => {
                return Err(format!(
                    "stages `{}` and `{}` both write `{topic}` with different recrawl clocks \
                     (recrawl_after, key_prefix)",
                    other.name, stage.name
                ))
            }
            Some(_) => {}
            None => found = Some((stage, clock)),
        }
    }
    Ok(found)
}
