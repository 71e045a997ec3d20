//! The cell as the scheduler sees it, rebuilt in the CLI from the master's machine and job
//! lists, so `borg job plan` and `borg job why` answer with the real placement library.

use crate::cli::rpc::cell_client;
use anyhow::Context;
use borg_proto::v1;
use scheduler::view_sync::{job_from_wire, machine_from_wire};
use scheduler::{CellView, JobView};

/// Every machine and job of the cell, read through the leader (a plan or an explanation
/// made from a stale replica would mislead).
pub async fn fetch_cell(
    client: &borg_common::MasterClient,
) -> anyhow::Result<(Vec<v1::Machine>, Vec<v1::Job>)> {
    client
        .call(|channel| async move {
            let mut cell = cell_client(channel);
            let machines = cell
                .list_machines(v1::ListMachinesRequest { consistent: true })
                .await?
                .into_inner()
                .machines;
            let jobs = cell
                .list_jobs(v1::ListJobsRequest {
                    consistent: true,
                    owner: String::new(),
                })
                .await?
                .into_inner()
                .jobs;
            Ok((machines, jobs))
        })
        .await
        .context("reading the cell's machines and jobs")
}

/// The scheduler's view of the cell. The job named `held_back`, if any, is returned
/// separately instead of being added, so the caller can change it first.
pub fn build_view(
    machines: Vec<v1::Machine>,
    jobs: Vec<v1::Job>,
    held_back: Option<&str>,
) -> (CellView, Option<JobView>) {
    let mut view = CellView::new();
    for machine in machines {
        // A machine or job the CLI cannot read is left out: the view is advisory and
        // the master's own records are what count.
        if let Ok(machine) = machine_from_wire(machine) {
            view.upsert_machine(machine);
        }
    }
    let mut held = None;
    for job in jobs {
        if let Ok(job) = job_from_wire(job) {
            if Some(job.name.as_str()) == held_back {
                held = Some(job);
            } else {
                view.upsert_job(job);
            }
        }
    }
    (view, held)
}
