//! `sluice`: run, inspect and feed pipelines declared in pipeline.yaml.

mod cli;
mod k8s;
mod stages;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Stream-processing pipelines on Kafka topics, declared in pipeline.yaml.
#[derive(Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Args, Clone, Debug)]
pub struct PipelineArgs {
    /// Pipeline file.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "pipeline.yaml",
        global = true
    )]
    pub file: PathBuf,
    /// Override a value of the file: dotted.path=value (repeatable), e.g. stages.crawl.replicas=3.
    #[arg(long = "set", value_name = "PATH=VALUE", global = true)]
    pub set: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Check pipeline.yaml; prints every problem as file:line:column.
    Validate(cli::validate::ValidateArgs),
    /// Print the stage/topic graph (DOT or Mermaid).
    Graph(cli::graph::GraphArgs),
    /// Manage the pipeline's topics on the broker.
    Topics(cli::topics::TopicsArgs),
    /// Run stages (all of them, or those named with --stage).
    Run(cli::run::RunArgs),
    /// Produce one message per input line (URLs to url-in by default).
    Produce(cli::produce::ProduceArgs),
    /// Print a topic's messages as JSON lines.
    Consume(cli::consume::ConsumeArgs),
    /// Run SQL over the crawl dataset (tables pages, anchors, embeddings) with DataFusion.
    Query(cli::query::QueryArgs),
    /// Semantic search: the texts nearest in meaning to a query (Chroma, or the embeddings table).
    Search(cli::search::SearchArgs),
    /// Kubernetes manifests from pipeline.yaml.
    K8s(cli::k8s::K8sArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sluice_runtime::logging::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Validate(a) => cli::validate::run(a),
            Command::Graph(a) => cli::graph::run(a),
            Command::Topics(a) => cli::topics::run(a).await,
            Command::Run(a) => cli::run::run(a).await,
            Command::Produce(a) => cli::produce::run(a).await,
            Command::Consume(a) => cli::consume::run(a).await,
            Command::Query(a) => cli::query::run(a).await,
            Command::Search(a) => cli::search::run(a).await,
            Command::K8s(a) => cli::k8s::run(a),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
