//! `sluice validate`.

use std::process::ExitCode;

use clap::Args;

use crate::PipelineArgs;

/// Arguments of `validate`.
#[derive(Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// Prints every diagnostic; exit 0 when there is no error (warnings allowed).
pub fn run(a: ValidateArgs) -> anyhow::Result<ExitCode> {
    let diags = match sluice_config::load_validated(
        &a.pipeline.file,
        &a.pipeline.set,
        &sluice_config::process_env,
        &crate::stages::registry(),
    ) {
        Ok((_, warnings)) => warnings,
        Err(d) => d,
    };
    for d in diags.iter() {
        eprintln!("{d}");
    }
    if diags.has_errors() {
        return Ok(ExitCode::FAILURE);
    }
    println!("{}: ok", a.pipeline.file.display());
    Ok(ExitCode::SUCCESS)
}
