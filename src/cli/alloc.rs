//! `borg alloc ...`: the cell's alloc sets, what the jobs placed in them use, and releasing
//! them. Alloc sets are submitted with `borg job run FILE` (a file's sets before its jobs).

use super::job::{get_job, kill_job, list_jobs};
use super::render::{self, table, task_state_name};
use super::{master_client, GlobalArgs, OutputFormat};
use anyhow::bail;
use borg_model::Resources;
use borg_proto::convert::resources_or_zero;
use borg_proto::v1;
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub enum AllocCommand {
    /// List the alloc sets of the cell.
    List {
        /// Only alloc sets of this owner.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show an alloc set: each alloc's state and machine, and what the jobs placed in it
    /// use of it.
    Status { name: String },
    /// Release an alloc set. Refused while jobs are placed in it, unless --with-jobs.
    Kill {
        name: String,
        /// Kill the jobs placed in the set first.
        #[arg(long)]
        with_jobs: bool,
    },
}

pub async fn run(command: AllocCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = master_client(global)?;
    match command {
        AllocCommand::List { owner } => {
            let jobs = list_jobs(&client, owner.as_deref()).await?;
            let sets: Vec<&v1::Job> = jobs.iter().filter(|j| render::is_alloc_set(j)).collect();
            match global.output {
                OutputFormat::Json => println!(
                    "{:#}",
                    Value::Array(sets.iter().map(|s| render::job_json(s)).collect())
                ),
                OutputFormat::Text => println!("{}", sets_text(&sets, &jobs)),
            }
        }
        AllocCommand::Status { name } => {
            let set = get_alloc_set(&client, &name).await?;
            let jobs = list_jobs(&client, None).await?;
            let allocs = alloc_usage(&set, &jobs);
            match global.output {
                OutputFormat::Json => {
                    let mut out = render::job_json(&set);
                    out["allocs"] = allocs.iter().map(AllocUsage::json).collect();
                    println!("{out:#}");
                }
                OutputFormat::Text => println!("{}", status_text(&set, &allocs)),
            }
        }
        AllocCommand::Kill { name, with_jobs } => {
            get_alloc_set(&client, &name).await?;
            let tenants = if with_jobs {
                tenants_of(&name, &list_jobs(&client, None).await?)
            } else {
                Vec::new()
            };
            for job in &tenants {
                kill_job(&client, job).await?;
            }
            let response = kill_job(&client, &name).await?;
            match global.output {
                OutputFormat::Json => println!(
                    "{:#}",
                    json!({"killed": name, "jobs_killed": tenants, "index": response.index})
                ),
                OutputFormat::Text => {
                    for job in &tenants {
                        println!("job {job} killed");
                    }
                    println!("alloc set {name} killed (index {})", response.index);
                }
            }
        }
    }
    Ok(())
}

/// The alloc set `name`; an error that says so if it is a job.
async fn get_alloc_set(client: &borg_common::MasterClient, name: &str) -> anyhow::Result<v1::Job> {
    let set = get_job(client, name, false).await?;
    if !render::is_alloc_set(&set) {
        bail!("{name:?} is a job, not an alloc set: see `borg job status {name}`");
    }
    Ok(set)
}

/// Names of the active jobs placed in alloc set `set`.
fn tenants_of(set: &str, jobs: &[v1::Job]) -> Vec<String> {
    jobs.iter()
        .filter(|j| j.state == v1::JobState::Active as i32)
        .filter_map(|j| j.spec.as_ref())
        .filter(|s| s.alloc_set == set)
        .map(|s| s.name.clone())
        .collect()
}

/// One alloc of a set with the tasks placed in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllocUsage {
    index: u32,
    state: &'static str,
    machine: String,
    reserved: Resources,
    used: Resources,
    /// `job/index` of each task placed in the alloc.
    tasks: Vec<String>,
}

impl AllocUsage {
    fn json(&self) -> Value {
        let resources = |r: &Resources| render::resources_json(&(*r).into());
        json!({
            "index": self.index,
            "state": self.state,
            "machine": self.machine,
            "reserved": resources(&self.reserved),
            "used": resources(&self.used),
            "tasks": self.tasks,
        })
    }
}

/// Limits of task `index` of a wire job spec: its override's, else the job's.
fn task_limits(spec: &v1::JobSpec, index: u32) -> Resources {
    let template = spec.task_overrides.get(&index).or(spec.task.as_ref());
    resources_or_zero(template.and_then(|t| t.resources))
}

/// Each alloc of `set` with the limits of the tasks of `jobs` placed in it.
fn alloc_usage(set: &v1::Job, jobs: &[v1::Job]) -> Vec<AllocUsage> {
    let Some(spec) = &set.spec else {
        return Vec::new();
    };
    let placed = |t: &v1::Task| matches!(task_state_name(t.state), "scheduled" | "running");
    set.tasks
        .iter()
        .filter(|a| a.index < spec.replicas)
        .map(|alloc| {
            let mut usage = AllocUsage {
                index: alloc.index,
                state: task_state_name(alloc.state),
                machine: alloc.machine.clone(),
                reserved: task_limits(spec, alloc.index),
                used: Resources::ZERO,
                tasks: Vec::new(),
            };
            for job in jobs {
                let Some(job_spec) = job.spec.as_ref().filter(|s| s.alloc_set == spec.name) else {
                    continue;
                };
                let in_alloc = job.tasks.iter().find(|t| {
                    t.index == alloc.index
                        && placed(t)
                        && placed(alloc)
                        && t.machine == alloc.machine
                });
                if in_alloc.is_some() {
                    usage.used += task_limits(job_spec, alloc.index);
                    usage
                        .tasks
                        .push(format!("{}/{}", job_spec.name, alloc.index));
                }
            }
            usage
        })
        .collect()
}

fn sets_text(sets: &[&v1::Job], jobs: &[v1::Job]) -> String {
    let rows: Vec<Vec<String>> = sets
        .iter()
        .map(|set| {
            let spec = set.spec.clone().unwrap_or_default();
            let placed = set
                .tasks
                .iter()
                .filter(|t| t.index < spec.replicas && task_state_name(t.state) == "running")
                .count();
            let tenants = tenants_of(&spec.name, jobs);
            vec![
                spec.name.clone(),
                spec.owner,
                spec.priority.to_string(),
                render::job_state_name(set.state).to_owned(),
                format!("{placed}/{}", spec.replicas),
                resources_or_zero(spec.task.and_then(|t| t.resources)).to_string(),
                if tenants.is_empty() {
                    "-".into()
                } else {
                    tenants.join(",")
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "OWNER",
            "PRIORITY",
            "STATE",
            "PLACED",
            "PER ALLOC",
            "JOBS",
        ],
        &rows,
    )
}

fn status_text(set: &v1::Job, allocs: &[AllocUsage]) -> String {
    let spec = set.spec.clone().unwrap_or_default();
    let mut out = format!(
        "Alloc set     {}\nOwner         {}\nPriority      {}\nState         {}\nAllocs        {}\nModify index  {}\n\nAllocs\n",
        spec.name,
        spec.owner,
        spec.priority,
        render::job_state_name(set.state),
        spec.replicas,
        set.modify_index,
    );
    let rows: Vec<Vec<String>> = allocs
        .iter()
        .map(|a| {
            vec![
                a.index.to_string(),
                a.state.to_owned(),
                if a.machine.is_empty() {
                    "-".into()
                } else {
                    a.machine.clone()
                },
                a.reserved.to_string(),
                a.used.to_string(),
                if a.tasks.is_empty() {
                    "-".into()
                } else {
                    a.tasks.join(",")
                },
            ]
        })
        .collect();
    out.push_str(&table(
        &["ALLOC", "STATE", "MACHINE", "RESERVED", "USED", "TASKS"],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(cpu_millis: u64) -> Option<v1::Resources> {
        Some(Resources::new(cpu_millis, 64 << 20).into())
    }

    fn task(job: &str, index: u32, state: v1::TaskState, machine: &str) -> v1::Task {
        v1::Task {
            job: job.into(),
            index,
            state: state as i32,
            machine: machine.into(),
            ..Default::default()
        }
    }

    fn job(name: &str, spec: v1::JobSpec, tasks: Vec<v1::Task>) -> v1::Job {
        v1::Job {
            spec: Some(v1::JobSpec {
                name: name.into(),
                replicas: tasks.len() as u32,
                ..spec
            }),
            state: v1::JobState::Active as i32,
            tasks,
            ..Default::default()
        }
    }

    #[test]
    fn each_alloc_shows_the_tasks_placed_in_it_and_what_they_use() {
        use v1::TaskState::{Pending, Running};
        let set = job(
            "shared",
            v1::JobSpec {
                is_alloc_set: true,
                task: Some(v1::TaskTemplate {
                    resources: resources(500),
                    ..Default::default()
                }),
                ..Default::default()
            },
            vec![
                task("shared", 0, Running, "m1"),
                task("shared", 1, Running, "m2"),
            ],
        );
        let tenant = |name: &str, cpu, states: [(v1::TaskState, &str); 2]| {
            job(
                name,
                v1::JobSpec {
                    alloc_set: "shared".into(),
                    task: Some(v1::TaskTemplate {
                        command: "/bin/true".into(),
                        resources: resources(cpu),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                states
                    .iter()
                    .enumerate()
                    .map(|(i, (s, m))| task(name, i as u32, *s, m))
                    .collect(),
            )
        };
        let jobs = vec![
            set.clone(),
            tenant("server", 300, [(Running, "m1"), (Running, "m2")]),
            tenant("saver", 100, [(Running, "m1"), (Pending, "")]),
        ];
        let allocs = alloc_usage(&set, &jobs);
        assert_eq!(allocs.len(), 2);
        assert_eq!(allocs[0].used.cpu_millis, 400);
        assert_eq!(allocs[0].tasks, vec!["server/0", "saver/0"]);
        assert_eq!(allocs[1].used.cpu_millis, 300);
        assert_eq!(allocs[1].tasks, vec!["server/1"]);
        assert_eq!(tenants_of("shared", &jobs), vec!["server", "saver"]);
        let text = status_text(&set, &allocs);
        assert!(text.contains("server/0,saver/0"), "{text}");
        let list = sets_text(&[&set], &jobs);
        assert!(list.contains("2/2"), "{list}");
        assert!(list.contains("server,saver"), "{list}");
    }
}
