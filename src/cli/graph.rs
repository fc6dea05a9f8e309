//! `sluice graph`.

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::PipelineArgs;

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Dot,
    Mermaid,
}

/// Arguments of `graph`.
#[derive(Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "dot")]
    format: Format,
}

/// Prints the graph.
pub fn run(a: GraphArgs) -> anyhow::Result<ExitCode> {
    let p = super::load::pipeline(&a.pipeline)?;
    let text = match a.format {
        Format::Dot => sluice_config::graph::to_dot(&p),
        Format::Mermaid => sluice_config::graph::to_mermaid(&p),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
