//! `borg job ...`: submit, follow, inspect and stop jobs.

use super::exit::TimedOut;
use super::render;
use super::{master_client, GlobalArgs, OutputFormat};
use anyhow::{bail, Context};
use borg_common::{new_request_id, now_ms, MasterClient};
use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
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
            let request_id = new_request_id("kill");
            let response = client
                .call(|channel| {
                    let request = v1::KillJobRequest {
                        name: name.clone(),
                        request_id: request_id.clone(),
                    };
                    async move {
                        CellServiceClient::new(channel)
                            .kill_job(request)
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await
                .with_context(|| format!("killing job {name:?}"))?;
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
            let response = client
                .call(|channel| {
                    let request = v1::ListJobsRequest {
                        consistent: false,
                        owner: owner.clone().unwrap_or_default(),
                    };
                    async move {
                        CellServiceClient::new(channel)
                            .list_jobs(request)
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await
                .context("listing jobs")?;
            match global.output {
                OutputFormat::Json => println!(
                    "{:#}",
                    serde_json::Value::Array(response.jobs.iter().map(render::job_json).collect())
                ),
                OutputFormat::Text => println!("{}", render::jobs_text(&response.jobs)),
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

/// Evaluates a BCL file into job specs. A job without an `owner` gets `default_owner`; with
/// none it stays empty, and the master makes the authenticated caller its owner.
pub fn load_jobs(
    file: &std::path::Path,
    default_owner: Option<&str>,
) -> anyhow::Result<Vec<borg_model::JobSpec>> {
    let mut loaded =
        bcl::load_file(file).map_err(|diagnostics| anyhow::anyhow!("{diagnostics}"))?;
    if let Some(user) = default_owner {
        loaded.fill_owner(user);
    }
    if loaded.jobs.is_empty() {
        bail!(
            "{} defines no job: add `job NAME = {{ ... }}`",
            file.display()
        );
    }
    refuse_what_the_cell_cannot_run(&loaded, file)?;
    for job in &loaded.jobs {
        let mut checked = job.clone();
        if checked.owner.is_empty() {
            checked.owner = current_user();
        }
        checked
            .validate()
            .with_context(|| format!("in {}", file.display()))?;
    }
    Ok(loaded.jobs)
}

/// BCL can express per-task overrides and allocs, but the cell does not run them yet: refuse
/// such a file rather than silently run something other than what it says.
fn refuse_what_the_cell_cannot_run(
    loaded: &bcl::Loaded,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    if let Some(alloc) = loaded.allocs.first() {
        bail!(
            "{}: alloc {:?}: this cell does not run allocs yet; submit the jobs without `alloc` (`borg job inspect` shows what the file defines)",
            file.display(),
            alloc.name
        );
    }
    for (job, extras) in &loaded.job_extras {
        if !extras.task_overrides.is_empty() {
            let tasks: Vec<String> = extras.task_overrides.keys().map(u32::to_string).collect();
            bail!(
                "{}: job {job:?} overrides task(s) {}; this cell does not run per-task overrides yet (`borg job inspect` shows what the file defines)",
                file.display(),
                tasks.join(", ")
            );
        }
    }
    Ok(())
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
    let jobs = load_jobs(file, default_owner)?;
    if check_index.is_some() && jobs.len() > 1 {
        bail!(
            "--check-index applies to one job, but {} defines {}",
            file.display(),
            jobs.len()
        );
    }
    let mut submitted = Vec::new();
    for spec in jobs {
        let name = spec.name.clone();
        let response = submit(client, spec, check_index)
            .await
            .with_context(|| format!("submitting job {name:?}"))?;
        if output == OutputFormat::Text {
            println!(
                "job {name} {} at index {}",
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
    spec: borg_model::JobSpec,
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
                CellServiceClient::new(channel)
                    .submit_job(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
}

pub async fn get_job(
    client: &MasterClient,
    name: &str,
    consistent: bool,
) -> anyhow::Result<v1::Job> {
    let response = client
        .call(|channel| {
            let request = v1::GetJobRequest {
                name: name.to_owned(),
                consistent,
            };
            async move {
                CellServiceClient::new(channel)
                    .get_job(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .with_context(|| format!("reading job {name:?}"))?;
    response
        .job
        .with_context(|| format!("the master answered without job {name:?}"))
}

/// Whether a job has reached what `job run` waits for: every task running (services) or
/// finished (batch), or the job is no longer active.
fn settled(job: &v1::Job) -> bool {
    if job.state != v1::JobState::Active as i32 {
        return true;
    }
    let batch = job
        .spec
        .as_ref()
        .is_some_and(|s| s.job_type == v1::JobType::Batch as i32);
    !job.tasks.is_empty()
        && job.tasks.iter().all(|t| {
            let state = render::task_state_name(t.state);
            if batch {
                matches!(state, "succeeded" | "failed" | "killed")
            } else {
                matches!(state, "running" | "succeeded" | "failed" | "killed")
            }
        })
}

/// Re-reads the job until it settles, printing a line whenever its summary changes.
async fn follow(
    client: &MasterClient,
    name: &str,
    timeout: Duration,
    output: OutputFormat,
) -> anyhow::Result<v1::Job> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_line = String::new();
    loop {
        let job = get_job(client, name, false).await?;
        let line = render::task_summary(&job)
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(state, count)| format!("{count} {state}"))
            .collect::<Vec<_>>()
            .join(", ");
        if output == OutputFormat::Text && line != last_line {
            println!("  {name}: {line}");
            last_line = line.clone();
        }
        if settled(&job) {
            let failed = job
                .tasks
                .iter()
                .filter(|t| render::task_state_name(t.state) == "failed")
                .count();
            if failed > 0 {
                bail!(
                    "{failed} task(s) of job {name} failed; see `borg job status {name}` for exit codes and messages"
                );
            }
            return Ok(job);
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
