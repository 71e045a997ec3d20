//! `borg job why NAME[/INDEX]`: why a job's tasks are pending, explained by the scheduler's
//! own library on the cell's current state (the counts of machines failing each constraint,
//! the exhausted resources, the best candidates, and the smallest change that would fit).

use super::cell_view::{build_view, fetch_cell};
use super::{master_client, GlobalArgs, OutputFormat};
use borg_model::TaskId;
use scheduler::why::{Candidate, Change};
use scheduler::{why_pending, CellView, PendingTask, PlacementConfig, WhyPending};
use serde_json::{json, Value};

/// Most pending indices listed by number in the text output; the rest are counted.
const PENDING_LISTED_MAX: usize = 20;

/// What `why` found for one job.
#[derive(Debug)]
pub struct JobWhy {
    pub job: String,
    /// Indices of the job's pending tasks (all of them, or the one asked for).
    pub pending: Vec<u32>,
    /// The explanation of the first of them: the job's tasks share their request,
    /// priority and constraints, so one explanation covers all.
    pub why: Option<WhyPending>,
    /// For a job in an alloc set: why the first pending task's alloc cannot take it (its
    /// tasks are placed in their allocs, not searched for).
    pub alloc: Option<String>,
}

/// Splits `NAME` or `NAME/INDEX`.
pub fn parse_target(target: &str) -> anyhow::Result<(String, Option<u32>)> {
    match target.rsplit_once('/') {
        None => Ok((target.to_string(), None)),
        Some((job, index)) => {
            let index = index.parse::<u32>().map_err(|_| {
                anyhow::anyhow!(
                    "{target:?}: the part after '/' must be a task index (e.g. {job}/0)"
                )
            })?;
            Ok((job.to_string(), Some(index)))
        }
    }
}

/// Explains the pending tasks of `job` (or only task `index`) in `view`.
pub fn explain(view: &CellView, job: &str, index: Option<u32>) -> Result<JobWhy, tonic::Status> {
    let Some(job_view) = view.job(job) else {
        return Err(tonic::Status::not_found(format!(
            "no job named {job:?}; `borg job list` shows the cell's jobs"
        )));
    };
    if let Some(index) = index {
        if !job_view.tasks.contains_key(&index) {
            return Err(tonic::Status::not_found(format!(
                "job {job:?} has no task {index} (it has {} tasks)",
                job_view.tasks.len()
            )));
        }
    }
    let pending: Vec<PendingTask> = view
        .pending_tasks()
        .into_iter()
        .filter(|t| t.id.job == job && index.is_none_or(|i| t.id.index == i))
        .collect();
    let policy = PlacementConfig::new().fit_policy;
    let alloc = job_view.alloc_set.as_deref().and_then(|set| {
        let task = pending.first()?;
        scheduler::alloc::AllocFit::default()
            .place(view, task, set)
            .err()
    });
    Ok(JobWhy {
        job: job.to_string(),
        pending: pending.iter().map(|t| t.id.index).collect(),
        why: pending.first().map(|t| why_pending(view, t, policy)),
        alloc,
    })
}

pub async fn run(target: &str, global: &GlobalArgs) -> anyhow::Result<()> {
    let (job, index) = parse_target(target)?;
    let client = master_client(global)?;
    let (machines, jobs) = fetch_cell(&client).await?;
    let (view, _) = build_view(machines, jobs, None);
    let found = explain(&view, &job, index)?;
    match global.output {
        OutputFormat::Json => println!("{:#}", job_why_json(&found)),
        OutputFormat::Text => print!("{}", job_why_text(&found)),
    }
    Ok(())
}

fn job_why_text(found: &JobWhy) -> String {
    let Some(why) = &found.why else {
        return format!("{}: no task is pending\n", found.job);
    };
    if let Some(alloc) = &found.alloc {
        return format!(
            "{}: {} task(s) pending; task {}: {alloc}\n",
            found.job,
            found.pending.len(),
            why.task
        );
    }
    let mut listed: Vec<String> = found
        .pending
        .iter()
        .take(PENDING_LISTED_MAX)
        .map(u32::to_string)
        .collect();
    if found.pending.len() > PENDING_LISTED_MAX {
        listed.push(format!(
            "and {} more",
            found.pending.len() - PENDING_LISTED_MAX
        ));
    }
    let mut text = format!(
        "{}: {} task(s) pending ({}); they share one request, so task {} speaks for all:\n",
        found.job,
        found.pending.len(),
        listed.join(", "),
        why.task
    );
    text.push_str(&format!("  request: {}", why.request));
    if why.ports > 0 {
        text.push_str(&format!(" ports={}", why.ports));
    }
    text.push('\n');
    text.push_str(&why.to_string());
    text
}

fn job_why_json(found: &JobWhy) -> Value {
    json!({
        "job": found.job,
        "pending": found.pending,
        "why": found.why.as_ref().map(why_json),
        "alloc": found.alloc,
    })
}

fn why_json(why: &WhyPending) -> Value {
    json!({
        "task": task_json(&why.task),
        "priority": why.priority,
        "request": why.request,
        "ports": why.ports,
        "machines_total": why.machines_total,
        "machines_not_up": why.machines_not_up,
        "constraint_failures": why.constraint_failures.iter().map(|c| json!({
            "constraint": scheduler::constraint::describe(&c.constraint),
            "machines": c.machines,
        })).collect::<Vec<_>>(),
        "resource_shortfalls": why.resource_shortfalls,
        "best": why.best.iter().map(candidate_json).collect::<Vec<_>>(),
        "changes": why.changes.iter().map(change_json).collect::<Vec<_>>(),
    })
}

fn task_json(task: &TaskId) -> Value {
    json!({"job": task.job, "index": task.index})
}

fn candidate_json(candidate: &Candidate) -> Value {
    json!({
        "machine": candidate.machine,
        "quality": candidate.score.quality(),
        "preempted_count": candidate.score.preempted_count,
    })
}

fn change_json(change: &Change) -> Value {
    let mut detail = match change {
        Change::LowerRequest {
            request,
            ports,
            machine,
        } => json!({
            "kind": "lower_request",
            "request": request,
            "ports": ports,
            "machine": machine,
        }),
        Change::RaisePriority { priority, machines } => json!({
            "kind": "raise_priority",
            "priority": priority,
            "machines": machines,
        }),
        Change::DropConstraint {
            constraint,
            machines,
        } => json!({
            "kind": "drop_constraint",
            "constraint": scheduler::constraint::describe(constraint),
            "machines": machines,
        }),
    };
    detail["text"] = Value::String(change.to_string());
    detail
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_model::{MachineInfo, Resources, TaskState};
    use scheduler::{JobView, MachineView, TaskView};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn machine(name: &str, cpu_millis: u64, ram_bytes: u64) -> MachineView {
        let info = MachineInfo {
            name: name.into(),
            capacity: Resources::new(cpu_millis, ram_bytes),
            ..MachineInfo::default()
        };
        MachineView::new(info, borg_model::MachineState::Up, 1)
    }

    fn job(name: &str, request: Resources, tasks: &[(u32, TaskState)]) -> JobView {
        JobView {
            name: name.into(),
            owner: "alice".into(),
            priority: 200,
            limits: request,
            limits_by_task: Default::default(),
            ports_by_task: Default::default(),
            alloc_set: None,
            constraints: Arc::from(Vec::new()),
            ports: 0,
            package: Arc::from("/bin/true"),
            active: true,
            tasks: tasks
                .iter()
                .map(|(i, state)| {
                    (
                        *i,
                        TaskView {
                            state: *state,
                            machine: String::new(),
                            incarnation: 0,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn targets_parse_with_and_without_an_index() {
        assert_eq!(parse_target("web").unwrap(), ("web".into(), None));
        assert_eq!(parse_target("web/3").unwrap(), ("web".into(), Some(3)));
        let error = parse_target("web/x").unwrap_err().to_string();
        assert!(error.contains("task index"), "{error}");
    }

    #[test]
    fn a_task_too_big_for_every_machine_is_explained_with_the_exhausted_dimension() {
        let mut view = CellView::new();
        view.upsert_machine(machine("m1", 1000, 1 << 30));
        view.upsert_machine(machine("m2", 1000, 1 << 30));
        view.upsert_job(job(
            "big",
            Resources::new(2000, 1 << 20),
            &[(0, TaskState::Pending), (1, TaskState::Pending)],
        ));
        let found = explain(&view, "big", None).unwrap();
        assert_eq!(found.pending, vec![0, 1]);
        let why = found.why.expect("an explanation");
        assert!(why.best.is_empty());
        assert_eq!(why.resource_shortfalls.get("cpu"), Some(&2), "{why:?}");
        let text = job_why_text(&explain(&view, "big", None).unwrap());
        assert!(text.contains("2 task(s) pending (0, 1)"), "{text}");
        assert!(text.contains("short of cpu"), "{text}");
        let json = job_why_json(&explain(&view, "big", Some(1)).unwrap());
        assert_eq!(json["pending"], json!([1]));
        assert_eq!(json["why"]["resource_shortfalls"]["cpu"], json!(2));
    }

    #[test]
    fn unknown_jobs_and_tasks_are_not_found_and_a_running_job_has_nothing_pending() {
        let mut view = CellView::new();
        view.upsert_machine(machine("m1", 4000, 1 << 30));
        view.upsert_job(job(
            "ok",
            Resources::new(100, 1 << 20),
            &[(0, TaskState::Running)],
        ));
        assert_eq!(
            explain(&view, "nope", None).unwrap_err().code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            explain(&view, "ok", Some(7)).unwrap_err().code(),
            tonic::Code::NotFound
        );
        let found = explain(&view, "ok", None).unwrap();
        assert!(found.why.is_none());
        assert!(job_why_text(&found).contains("no task is pending"));
    }
}
