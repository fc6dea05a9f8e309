//! Loading and validating the pipeline file for any command.

use std::sync::Arc;

use sluice_config::{Diagnostics, Pipeline, Severity};

use crate::stages::registry;
use crate::PipelineArgs;

/// Why a pipeline could not be used.
#[derive(Debug)]
pub struct Invalid(pub Diagnostics);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let errors = self
            .0
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        write!(f, "{}\n{errors} error(s) in the pipeline", self.0)
    }
}

impl std::error::Error for Invalid {}

/// Loads, interpolates (from the process environment), applies `--set`, validates. Warnings
/// go to stderr; errors make it fail with every diagnostic.
pub fn pipeline(args: &PipelineArgs) -> anyhow::Result<Arc<Pipeline>> {
    let (p, warnings) = sluice_config::load_validated(
        &args.file,
        &args.set,
        &sluice_config::process_env,
        &registry(),
    )
    .map_err(Invalid)?;
    for d in warnings.iter() {
        eprintln!("{d}");
    }
    Ok(Arc::new(p))
}
