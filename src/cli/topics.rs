//! `sluice topics create`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use sluice_bus::CreateOutcome;
use sluice_config::Broker;

use crate::PipelineArgs;

/// Arguments of `topics`.
#[derive(Args)]
pub struct TopicsArgs {
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create the declared topics with their partition counts (existing ones are left alone).
    Create {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
}

/// Runs the subcommand.
pub async fn run(a: TopicsArgs) -> anyhow::Result<ExitCode> {
    let TopicsCommand::Create { pipeline } = a.command;
    let p = super::load::pipeline(&pipeline)?;
    if matches!(p.broker.value, Broker::Memory) {
        anyhow::bail!(
            "broker is `memory`: the embedded bus lives inside `sluice run` and creates its topics itself; set SLUICE_BROKER to a Kafka address"
        );
    }
    let bus = sluice_runtime::connect::bus(&p)?;
    let results = bus
        .create_topics(&sluice_runtime::connect::topic_specs(&p))
        .await?;
    for (name, outcome) in results {
        let wanted = p.topics[&name].partitions as i32;
        match outcome {
            CreateOutcome::Created => println!("{name}: created ({wanted} partitions)"),
            CreateOutcome::Exists { partitions } if partitions == wanted => {
                println!("{name}: exists ({partitions} partitions)")
            }
            CreateOutcome::Exists { partitions } => {
                // Not an error: Kafka cannot shrink a topic, and growing one moves keys
                // between partitions, so that is left to an operator's decision.
                eprintln!(
                    "warning: {name}: exists with {partitions} partitions, pipeline.yaml says {wanted}"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
