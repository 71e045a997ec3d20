//! `borg machine ...`: the machines of the cell.

use super::render;
use super::{master_client, GlobalArgs, OutputFormat};
use crate::cli::rpc::cell_client;
use anyhow::Context;
use borg_proto::v1;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// Every machine: state, capacity and allocation, tasks, last report.
    List,
}

/// The cell's machines, from any replica.
pub async fn list_machines(
    client: &borg_common::MasterClient,
) -> anyhow::Result<v1::ListMachinesResponse> {
    client
        .call(|channel| async move {
            cell_client(channel)
                .list_machines(v1::ListMachinesRequest { consistent: false })
                .await
                .map(|r| r.into_inner())
        })
        .await
        .context("listing machines")
}

pub async fn run(command: MachineCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match command {
        MachineCommand::List => {
            let client = master_client(global)?;
            let response = list_machines(&client).await?;
            match global.output {
                OutputFormat::Json => println!(
                    "{:#}",
                    serde_json::Value::Array(
                        response.machines.iter().map(render::machine_json).collect()
                    )
                ),
                OutputFormat::Text => println!(
                    "{}",
                    render::machines_text(&response.machines, borg_common::now_ms())
                ),
            }
            Ok(())
        }
    }
}
