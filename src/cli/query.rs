//! `sluice query`: SQL over the dataset in the pipeline's storage.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::PipelineArgs;

/// Output formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputFormat {
    /// An aligned table (the default on a terminal).
    Table,
    /// CSV with a header.
    Csv,
    /// JSON lines (the default otherwise).
    Json,
    /// Parquet (needs --output or a redirected stdout).
    Parquet,
}

/// Arguments of `query`.
#[derive(Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// The SQL; tables `pages`, `anchors` (and `embeddings` once it has files).
    sql: String,
    /// Output format (default: table on a terminal, JSON lines otherwise).
    #[arg(long)]
    format: Option<OutputFormat>,
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o')]
    output: Option<std::path::PathBuf>,
    /// Storage to read instead of the pipeline's `services.storage`.
    #[arg(long, env = "SLUICE_QUERY_STORAGE")]
    storage: Option<String>,
}

/// Runs the query and prints the result.
pub async fn run(a: QueryArgs) -> anyhow::Result<ExitCode> {
    let spec = match a.storage {
        Some(s) => s,
        None => super::load::pipeline(&a.pipeline)?
            .services
            .storage
            .value
            .clone(),
    };
    let storage = sluice_tables::Storage::open(&spec)?;
    let batches = sluice_query::query(&storage, &a.sql).await?;
    let to_terminal = a.output.is_none() && std::io::stdout().is_terminal();
    let format = match a.format {
        Some(OutputFormat::Table) => sluice_query::Format::Table,
        Some(OutputFormat::Csv) => sluice_query::Format::Csv,
        Some(OutputFormat::Json) => sluice_query::Format::Json,
        Some(OutputFormat::Parquet) => {
            anyhow::ensure!(
                !to_terminal,
                "parquet output needs --output FILE or a redirected stdout"
            );
            sluice_query::Format::Parquet
        }
        None if to_terminal => sluice_query::Format::Table,
        None => sluice_query::Format::Json,
    };
    match &a.output {
        Some(path) => {
            let mut f = std::fs::File::create(path)?;
            sluice_query::render(&batches, format, &mut f)?;
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            sluice_query::render(&batches, format, &mut out)?;
            std::io::Write::flush(&mut out)?;
        }
    }
    if to_terminal {
        eprintln!("{} rows", sluice_query::row_count(&batches));
    }
    Ok(ExitCode::SUCCESS)
}
