//! Which recrawl clock this crawl marks: the one of the normalize-dedup stage that feeds its
//! input topic (the clock's owner), so the two never disagree on the key prefix or the
//! interval. A crawl fed from outside the pipeline has no owner and may set both itself.

use sluice_config::{Pipeline, StageSpec};
use sluice_recrawl::{owner_of, ClockSettings};

use crate::settings::Settings;

/// The clock settings of the crawl stage `stage`, or the field that conflicts and why.
pub fn resolve(
    settings: &Settings,
    stage: &StageSpec,
    pipeline: &Pipeline,
) -> Result<ClockSettings, (&'static str, String)> {
    let owner = match &stage.input {
        Some(input) => owner_of(pipeline, &input.value).map_err(|e| ("input", e))?,
        None => None,
    };
    let Some((owner, clock)) = owner else {
        let defaults = ClockSettings::default();
        return Ok(ClockSettings {
            recrawl_after: settings.recrawl_after.unwrap_or(defaults.recrawl_after),
            key_prefix: settings.key_prefix.clone().unwrap_or(defaults.key_prefix),
        });
    };
    let owned = |field: &str, ours: String, theirs: String| {
        format!(
            "`{field}` is {ours} here but {theirs} on stage `{}`, the normalize-dedup stage \
             that feeds this one and owns the recrawl clock; remove it here",
            owner.name
        )
    };
    if let Some(ours) = settings.recrawl_after {
        if ours != clock.recrawl_after {
            return Err((
                "recrawl_after",
                owned(
                    "recrawl_after",
                    ours.to_string(),
                    clock.recrawl_after.to_string(),
                ),
            ));
        }
    }
    if let Some(ours) = &settings.key_prefix {
        if *ours != clock.key_prefix {
            return Err((
                "key_prefix",
                owned(
                    "key_prefix",
                    format!("{ours:?}"),
                    format!("{:?}", clock.key_prefix),
                ),
            ));
        }
    }
    Ok(clock)
}
