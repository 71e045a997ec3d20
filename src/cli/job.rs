//! `borg job ...`: submit, follow, inspect and stop jobs.

use super::exit::TimedOut;
use super::render;
use super::{master_client, GlobalArgs, OutputFormat};
use crate::cli::rpc::cell_client;
use anyhow::{bail, Context};
use borg_common::{new_request_id, now_ms, MasterClient};
use borg_model::{AllocSetSpec, JobSpec};
use borg_proto::v1;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

/// How often `job run` re-reads the job while following it.
const FOLLOW_POLL_INTERVAL_MS: u64 = 500;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit the jobs of a BCL file (creating or updating them) and follow them until their
    /// tasks run.
    Run {
        file: PathBuf,
        /// Return as soon as the cell accepted the job.
        #[arg(long)]
        detach: bool,
        /// Refuse unless the job's modify index is still N (0: the job must not exist yet).
        #[arg(long)]
        check_index: Option<u64>,
        /// Give up following after this many seconds.
        #[arg(long, default_value_t = 120)]
        wait_timeout_s: u64,
    },
    /// Show a job: summary and every task (state, machine, restarts, age).
    Status {
        /// NAME, or NAME/INDEX for one task with its events.
        name: String,
        /// Read through the leader rather than any replica.
        #[arg(long)]
        consistent: bool,
    },
    /// Stop every task of a job.
    Kill { name: String },
    /// List the jobs of the cell.
    List {
        /// Only jobs of this owner.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Evaluate a BCL file and print the jobs it defines, without submitting anything.
    Inspect { file: PathBuf },
    /// Show what submitting a file would change (tasks created, destroyed, recreated), whether
    /// the tasks would fit now and whom they would preempt, and the index for --check-index.
    Plan { file: PathBuf },
    /// Explain why a job's tasks are pending: machines failing each constraint, exhausted
    /// resources, the best candidates, and the smallest change that would make them fit.
    Why {
        /// NAME, or NAME/INDEX for one task.
        target: String,
    },
}

pub async fn run(command: JobCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match command {
        JobCommand::Inspect { file } => inspect(&file),
        JobCommand::Plan { file } => super::plan::run(&file, global).await,
        JobCommand::Why { target } => super::why::run(&target, global).await,
        JobCommand::Run {
            file,
            detach,
            check_index,
            wait_timeout_s,
        } => {
            let client = master_client(global)?;
            let owner = default_owner(global)?;
            submit_file(
                &client,
                &file,
                owner.as_deref(),
                check_index,
                detach,
                wait_timeout_s,
                global.output,
            )
            .await
        }
        JobCommand::Status { name, consistent } => {
            if name.contains('/') {
                return super::task_status::run(&name, consistent, global).await;
            }
            let client = master_client(global)?;
            let job = get_job(&client, &name, consistent).await?;
            match global.output {
                OutputFormat::Json => println!("{:#}", render::job_json(&job)),
                OutputFormat::Text => println!("{}", render::job_text(&job, now_ms())),
            }
            Ok(())
        }
        JobCommand::Kill { name } => {
            let client = master_client(global)?;
            let response = kill_job(&client, &name).await?;
            match global.output {
                OutputFormat::Json => println!(
                    "{:#}",
                    serde_json::json!({"killed": name, "index": response.index})
                ),
                OutputFormat::Text => {
                    println!(
                        "job {name} killed (index {}); its tasks are being stopped",
                        response.index
                    )
                }
            }
            Ok(())
        }
        JobCommand::List { owner } => {
            let client = master_client(global)?;
            let mut jobs = list_jobs(&client, owner.as_deref()).await?;
            // Alloc sets are listed by `borg alloc list`.
            jobs.retain(|j| !render::is_alloc_set(j));
            match global.output {
                OutputFormat::Json => println!(
                    "{:#}",
                    serde_json::Value::Array(jobs.iter().map(render::job_json).collect())
                ),
                OutputFormat::Text => println!("{}", render::jobs_text(&jobs)),
            }
            Ok(())
        }
    }
}

/// The user submitting: `BORG_USER`, else the login name of this process' user.
pub fn current_user() -> String {
    if let Ok(user) = std::env::var("BORG_USER") {
        if !user.is_empty() {
            return user;
        }
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What a BCL file asks the cell for: alloc sets (submitted first) and jobs.
#[derive(Debug, Clone, Default)]
pub struct FileSpecs {
    pub alloc_sets: Vec<AllocSetSpec>,
    pub jobs: Vec<JobSpec>,
}

/// Evaluates a BCL file into alloc sets and jobs (with their per-task overrides and alloc
/// sets), each validated. One without an `owner` gets `default_owner`; with none it stays
/// empty, and the master makes the authenticated caller its owner.
pub fn load_specs(
    file: &std::path::Path,
    default_owner: Option<&str>,
) -> anyhow::Result<FileSpecs> {
    let mut loaded =
        bcl::load_file(file).map_err(|diagnostics| anyhow::anyhow!("{diagnostics}"))?;
    if let Some(user) = default_owner {
        loaded.fill_owner(user);
    }
    if loaded.jobs.is_empty() && loaded.allocs.is_empty() {
        bail!(
            "{} defines no job: add `job NAME = {{ ... }}`",
            file.display()
        );
    }
    let mut specs = FileSpecs {
        alloc_sets: loaded
            .allocs
            .iter()
            .map(|alloc| alloc.set.clone())
            .collect(),
        jobs: loaded.jobs,
    };
    for job in specs.jobs.iter_mut() {
        if let Some(extras) = loaded.job_extras.get_mut(&job.name) {
            job.task_overrides = std::mem::take(&mut extras.task_overrides);
            job.alloc_set = extras.alloc.take();
        }
    }
    let with_owner = |mut spec: JobSpec| {
        if spec.owner.is_empty() {
            spec.owner = current_user();
        }
        spec
    };
    let sets = specs.alloc_sets.iter().map(AllocSetSpec::to_job_spec);
    for spec in sets.chain(specs.jobs.iter().cloned()) {
        with_owner(spec)
            .validate()
            .with_context(|| format!("in {}", file.display()))?;
    }
    Ok(specs)
}

/// The owner given to jobs that name none: the login name when the CLI sends no token (a cell
/// without authentication); otherwise nobody, so the master uses the token's user.
pub fn default_owner(global: &GlobalArgs) -> anyhow::Result<Option<String>> {
    let token = super::token::resolve(global.token.as_deref(), global.token_file.as_deref())?;
    Ok(token.is_none().then(current_user))
}

/// Prints the whole evaluation (jobs, allocs, per-task overrides), owner filled in.
fn inspect(file: &std::path::Path) -> anyhow::Result<()> {
    let mut loaded =
        bcl::load_file(file).map_err(|diagnostics| anyhow::anyhow!("{diagnostics}"))?;
    loaded.fill_owner(&current_user());
    println!("{}", serde_json::to_string_pretty(&loaded)?);
    Ok(())
}

pub async fn submit_file(
    client: &MasterClient,
    file: &std::path::Path,
    default_owner: Option<&str>,
    check_index: Option<u64>,
    detach: bool,
    wait_timeout_s: u64,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let FileSpecs { alloc_sets, jobs } = load_specs(file, default_owner)?;
    if check_index.is_some() && jobs.len() + alloc_sets.len() > 1 {
        bail!(
            "--check-index applies to one job, but {} defines {}",
            file.display(),
            jobs.len() + alloc_sets.len()
        );
    }
    let mut submitted = Vec::new();
    // Alloc sets first: the jobs placed in them name them.
    let sets = alloc_sets.iter().map(|s| ("alloc set", s.to_job_spec()));
    for (kind, spec) in sets.chain(jobs.into_iter().map(|j| ("job", j))) {
        let name = spec.name.clone();
        let response = submit(client, spec, check_index)
            .await
            .with_context(|| format!("submitting {kind} {name:?}"))?;
        if output == OutputFormat::Text {
            println!(
                "{kind} {name} {} at index {}",
                if response.created {
                    "created"
                } else {
                    "updated"
                },
                response.index
            );
        }
        submitted.push(name);
    }
    let mut final_jobs = Vec::new();
    for name in &submitted {
        let job = if detach {
            get_job(client, name, false).await?
        } else {
            follow(client, name, Duration::from_secs(wait_timeout_s), output).await?
        };
        final_jobs.push(job);
    }
    match output {
        OutputFormat::Json => println!(
            "{:#}",
            serde_json::Value::Array(final_jobs.iter().map(render::job_json).collect())
        ),
        OutputFormat::Text if !detach => {
            for job in &final_jobs {
                println!("\n{}", render::job_text(job, now_ms()));
            }
        }
        OutputFormat::Text => {}
    }
    Ok(())
}

pub async fn submit(
    client: &MasterClient,
    spec: JobSpec,
    check_index: Option<u64>,
) -> Result<v1::SubmitJobResponse, tonic::Status> {
    let request_id = new_request_id("submit");
    let spec = v1::JobSpec::from(spec);
    client
        .call(|channel| {
            let request = v1::SubmitJobRequest {
                spec: Some(spec.clone()),
                request_id: request_id.clone(),
                check_index,
            };
            async move {
                cell_client(channel)
                    .submit_job(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
}

/// Kills job (or alloc set) `name`.
pub async fn kill_job(client: &MasterClient, name: &str) -> anyhow::Result<v1::KillJobResponse> {
    let request_id = new_request_id("kill");
    client
        .call(|channel| {
            let request = v1::KillJobRequest {
                name: name.to_owned(),
                request_id: request_id.clone(),
            };
            async move {
                cell_client(channel)
                    .kill_job(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .with_context(|| format!("killing {name:?}"))
}

/// Every job and alloc set of the cell (of `owner` if given).
pub async fn list_jobs(client: &MasterClient, owner: Option<&str>) -> anyhow::Result<Vec<v1::Job>> {
    let response = client
        .call(|channel| {
            let request = v1::ListJobsRequest {
                consistent: false,
                owner: owner.unwrap_or_default().to_owned(),
            };
            async move {
                cell_client(channel)
                    .list_jobs(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .context("listing jobs")?;
    Ok(response.jobs)
}

pub async fn get_job(
    client: &MasterClient,
    name: &str,
    consistent: bool,
) -> anyhow::Result<v1::Job> {
    let response = read_job(client, name, consistent, false).await?;
    response
        .job
        .with_context(|| format!("the master answered without job {name:?}"))
}

/// The job without its tasks, and how many of them are in each state: what following a
/// large job's progress needs, without the master encoding every task on each poll.
async fn get_job_summary(
    client: &MasterClient,
    name: &str,
) -> anyhow::Result<(v1::Job, Vec<(&'static str, usize)>)> {
    let response = read_job(client, name, false, true).await?;
    let job = response
        .job
        .with_context(|| format!("the master answered without job {name:?}"))?;
    let counts = response
        .task_counts
        .iter()
        .map(|c| (render::task_state_name(c.state), c.count as usize))
        .collect();
    Ok((job, counts))
}

async fn read_job(
    client: &MasterClient,
    name: &str,
    consistent: bool,
    summary: bool,
) -> anyhow::Result<v1::GetJobResponse> {
    client
        .call(|channel| {
            let request = v1::GetJobRequest {
                name: name.to_owned(),
                consistent,
                summary,
            };
            async move {
                cell_client(channel)
                    .get_job(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .with_context(|| format!("reading job {name:?}"))
}

/// Whether a job needs no more following: it is no longer active, or every task has
/// reached a state it stays in (for a service, running counts).
fn settled(job: &v1::Job, counts: &[(&str, usize)]) -> bool {
    if job.state != v1::JobState::Active as i32 {
        return true;
    }
    let batch = job
        .spec
        .as_ref()
        .is_some_and(|s| s.job_type == v1::JobType::Batch as i32);
    counts.iter().any(|(_, count)| *count > 0)
        && counts.iter().all(|(state, count)| {
            *count == 0
                || if batch {
                    matches!(*state, "succeeded" | "failed" | "killed")
                } else {
                    matches!(*state, "running" | "succeeded" | "failed" | "killed")
                }
        })
}

/// Reads the job's task counts until it settles, printing a line whenever they change;
/// then reads the whole job once.
async fn follow(
    client: &MasterClient,
    name: &str,
    timeout: Duration,
    output: OutputFormat,
) -> anyhow::Result<v1::Job> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_line = String::new();
    loop {
        let (job, counts) = get_job_summary(client, name).await?;
        let line = counts
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(state, count)| format!("{count} {state}"))
            .collect::<Vec<_>>()
            .join(", ");
        if output == OutputFormat::Text && line != last_line {
            println!("  {name}: {line}");
            last_line = line.clone();
        }
        if settled(&job, &counts) {
            let failed: usize = counts
                .iter()
                .filter(|(state, _)| *state == "failed")
                .map(|(_, count)| count)
                .sum();
            if failed > 0 {
                bail!(
                    "{failed} task(s) of job {name} failed; see `borg job status {name}` for exit codes and messages"
                );
            }
            return get_job(client, name, false).await;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow::Error::new(TimedOut {
                what: format!(
                    "job {name} to run ({line}); it keeps trying: see `borg job status {name}`"
                ),
            }));
        }
        tokio::time::sleep(Duration::from_millis(FOLLOW_POLL_INTERVAL_MS)).await;
    }
}
