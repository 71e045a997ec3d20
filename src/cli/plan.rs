//! `borg job plan FILE`: what submitting a file would do, without doing it.
//!
//! The diff follows the master's update rules (docs/lifecycle.md, "Job updates"); the dry
//! run places the job's would-be pending tasks on the cell's current view with the real
//! scheduler library, so "would it fit, whom would it preempt" is answered by the same code
//! that will place it.

use super::cell_view::{build_view, fetch_cell};
use super::job::{current_user, load_specs};
use super::{master_client, GlobalArgs, OutputFormat};
use anyhow::Context;
use borg_model::{JobSpec, TaskId, TaskState};
use borg_proto::v1;
use serde_json::json;
use std::path::Path;

/// Seed of the dry run's machine order; fixed so that repeated plans agree.
const DRY_RUN_SEED: u64 = 1;

/// What a submit would change in one job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobDiff {
    pub name: String,
    /// None: the job does not exist yet.
    pub modify_index: Option<u64>,
    pub tasks_created: Vec<u32>,
    pub tasks_destroyed: Vec<u32>,
    /// Tasks stopped and started again with a new incarnation.
    pub tasks_recreated: Vec<u32>,
    /// Spec fields whose change restarts tasks.
    pub restarting_fields: Vec<&'static str>,
    /// Spec fields that change without touching running tasks.
    pub in_place_fields: Vec<&'static str>,
}

impl JobDiff {
    pub fn is_noop(&self) -> bool {
        self.modify_index.is_some()
            && self.tasks_created.is_empty()
            && self.tasks_destroyed.is_empty()
            && self.tasks_recreated.is_empty()
            && self.in_place_fields.is_empty()
    }
}

/// Existing job as the diff needs it: its spec, whether it is still active, and the state of
/// each task index.
pub struct Existing<'a> {
    pub spec: &'a JobSpec,
    pub active: bool,
    pub modify_index: u64,
    pub tasks: Vec<(u32, TaskState)>,
}

/// The master's update rules applied to `new` against `existing`.
pub fn diff_job(existing: Option<Existing<'_>>, new: &JobSpec) -> JobDiff {
    let mut diff = JobDiff {
        name: new.name.clone(),
        ..JobDiff::default()
    };
    let Some(existing) = existing else {
        diff.tasks_created = (0..new.replicas).collect();
        return diff;
    };
    diff.modify_index = Some(existing.modify_index);
    let old = existing.spec;
    if old.task != new.task {
        diff.restarting_fields
            .push("task (command, args, env, resources, ports)");
    }
    if old.task_overrides != new.task_overrides {
        diff.restarting_fields.push("per-task overrides");
    }
    let restart_all_fields = old.constraints != new.constraints || old.priority != new.priority;
    if old.constraints != new.constraints {
        diff.restarting_fields.push("constraints");
    }
    if old.priority != new.priority {
        diff.restarting_fields.push("priority");
    }
    for (field, changed) in [
        ("owner", old.owner != new.owner),
        ("job type", old.job_type != new.job_type),
        ("app class", old.app_class != new.app_class),
        ("restart policy", old.restart != new.restart),
    ] {
        if changed {
            diff.in_place_fields.push(field);
        }
    }
    // As the master does: a task restarts when the job is not active, its constraints or
    // priority changed, or its own template (the job's or its override) changed.
    let restart_all = !existing.active || restart_all_fields;
    let kept = new.replicas.min(old.replicas);
    for (index, state) in &existing.tasks {
        let restarts = restart_all || old.task_template(*index) != new.task_template(*index);
        if *index >= new.replicas {
            if !state.is_terminal() {
                diff.tasks_destroyed.push(*index);
            }
        } else if *index < kept && restarts && (!existing.active || !state.is_terminal()) {
            diff.tasks_recreated.push(*index);
        }
    }
    diff.tasks_created = (old.replicas..new.replicas).collect();
    if !existing.active && old.replicas > new.replicas {
        diff.tasks_destroyed.clear();
    }
    diff
}

/// Result of placing the job's would-be pending tasks on the current cell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DryRun {
    pub tasks: usize,
    pub placed: usize,
    pub preempted: Vec<TaskId>,
    /// Reason text per task that would stay pending (the first few).
    pub unplaced: Vec<(TaskId, String)>,
}

/// Most unplaced tasks listed by name; the rest are counted.
const UNPLACED_LISTED_MAX: usize = 5;

pub fn dry_run(
    machines: Vec<v1::Machine>,
    jobs: Vec<v1::Job>,
    spec: &JobSpec,
    diff: &JobDiff,
) -> DryRun {
    let (mut view, current) = build_view(machines, jobs, Some(&spec.name));
    let mut tasks = current
        .as_ref()
        .map(|j| j.tasks.clone())
        .unwrap_or_default();
    let pending_indices: Vec<u32> = diff
        .tasks_created
        .iter()
        .chain(diff.tasks_recreated.iter())
        .copied()
        .collect();
    for index in &diff.tasks_destroyed {
        tasks.remove(index);
    }
    for index in &pending_indices {
        let incarnation = tasks.get(index).map(|t| t.incarnation).unwrap_or(0);
        tasks.insert(
            *index,
            scheduler::TaskView {
                state: TaskState::Pending,
                machine: String::new(),
                incarnation,
            },
        );
    }
    view.upsert_job(scheduler::JobView::from_spec(spec, true, tasks));
    let pending: Vec<scheduler::PendingTask> = view
        .pending_tasks()
        .into_iter()
        .filter(|t| t.id.job == spec.name && pending_indices.contains(&t.id.index))
        .collect();
    let plan = scheduler::schedule(
        &view,
        &pending,
        &scheduler::PlacementConfig::new(),
        DRY_RUN_SEED,
    );
    DryRun {
        tasks: pending.len(),
        placed: plan.placements.len(),
        preempted: plan
            .placements
            .iter()
            .flat_map(|p| p.preempt.iter().map(|v| v.task.clone()))
            .collect(),
        unplaced: plan
            .unplaced
            .iter()
            .map(|(id, reason)| (id.clone(), reason.to_string()))
            .collect(),
    }
}

fn ranges(indices: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end = indices[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

fn plan_text(diff: &JobDiff, dry: &DryRun, file: &Path) -> String {
    let mut out = match diff.modify_index {
        None => format!("+ job {} (new)\n", diff.name),
        Some(_) if diff.is_noop() => format!("= job {} (no change)\n", diff.name),
        Some(index) => format!("~ job {} (modify index {index})\n", diff.name),
    };
    let line = |out: &mut String, sign: &str, what: &str, indices: &[u32], why: String| {
        if !indices.is_empty() {
            out.push_str(&format!(
                "    {sign} {} task(s) {what}: {}{why}\n",
                indices.len(),
                ranges(indices)
            ));
        }
    };
    line(&mut out, "+", "created", &diff.tasks_created, String::new());
    line(
        &mut out,
        "-",
        "destroyed",
        &diff.tasks_destroyed,
        String::new(),
    );
    let why = if diff.restarting_fields.is_empty() {
        " (the job is not active)".to_owned()
    } else {
        format!(" ({} changed)", diff.restarting_fields.join(", "))
    };
    line(&mut out, "±", "recreated", &diff.tasks_recreated, why);
    if !diff.in_place_fields.is_empty() {
        out.push_str(&format!(
            "    ~ updated in place: {}\n",
            diff.in_place_fields.join(", ")
        ));
    }
    if dry.tasks == 0 {
        out.push_str("\nScheduler dry run: nothing to place.\n");
    } else if dry.placed == dry.tasks {
        out.push_str(&format!(
            "\nScheduler dry run: all {} task(s) fit now",
            dry.tasks
        ));
        if dry.preempted.is_empty() {
            out.push_str(", preempting nothing.\n");
        } else {
            let names: Vec<String> = dry.preempted.iter().map(|t| t.to_string()).collect();
            out.push_str(&format!(
                ", preempting {}: {}\n",
                names.len(),
                names.join(", ")
            ));
        }
    } else {
        out.push_str(&format!(
            "\nScheduler dry run: {} of {} task(s) fit now; {} would stay pending:\n",
            dry.placed,
            dry.tasks,
            dry.tasks - dry.placed
        ));
        for (task, reason) in dry.unplaced.iter().take(UNPLACED_LISTED_MAX) {
            out.push_str(&format!("    {task}: {reason}\n"));
        }
        if dry.unplaced.len() > UNPLACED_LISTED_MAX {
            out.push_str(&format!(
                "    ... and {} more\n",
                dry.unplaced.len() - UNPLACED_LISTED_MAX
            ));
        }
    }
    out.push_str(&format!(
        "\nTo submit exactly this: borg job run --check-index {} {}\n",
        diff.modify_index.unwrap_or(0),
        file.display()
    ));
    out
}

fn plan_json(diff: &JobDiff, dry: &DryRun) -> serde_json::Value {
    json!({
        "job": diff.name,
        "exists": diff.modify_index.is_some(),
        "modify_index": diff.modify_index.unwrap_or(0),
        "tasks_created": diff.tasks_created,
        "tasks_destroyed": diff.tasks_destroyed,
        "tasks_recreated": diff.tasks_recreated,
        "restarting_fields": diff.restarting_fields,
        "in_place_fields": diff.in_place_fields,
        "dry_run": {
            "tasks": dry.tasks,
            "placed": dry.placed,
            "preempted": dry.preempted.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "unplaced": dry.unplaced.iter().map(|(t, r)| json!({"task": t.to_string(), "reason": r})).collect::<Vec<_>>(),
        },
    })
}

pub async fn run(file: &Path, global: &GlobalArgs) -> anyhow::Result<()> {
    // Alloc sets first, as `job run` submits them: they are job-shaped (their tasks are allocs).
    let loaded = load_specs(file, Some(&current_user()))?;
    let specs: Vec<JobSpec> = loaded
        .alloc_sets
        .iter()
        .map(borg_model::AllocSetSpec::to_job_spec)
        .chain(loaded.jobs)
        .collect();
    let client = master_client(global)?;
    let (machines, jobs) = fetch_cell(&client).await?;
    let mut outputs = Vec::new();
    for spec in &specs {
        let current = jobs
            .iter()
            .find(|j| j.spec.as_ref().is_some_and(|s| s.name == spec.name));
        let current_spec = match current.and_then(|j| j.spec.clone()) {
            Some(wire) => Some(JobSpec::try_from(wire).with_context(|| {
                format!(
                    "the master returned job {:?} in a form this CLI cannot read",
                    spec.name
                )
            })?),
            None => None,
        };
        let existing = match (current, current_spec.as_ref()) {
            (Some(job), Some(old)) => Some(Existing {
                spec: old,
                active: job.state == v1::JobState::Active as i32,
                modify_index: job.modify_index,
                tasks: job
                    .tasks
                    .iter()
                    .filter_map(|t| {
                        borg_proto::convert::task_state_from_wire(t.state)
                            .ok()
                            .map(|s| (t.index, s))
                    })
                    .collect(),
            }),
            _ => None,
        };
        let diff = diff_job(existing, spec);
        let dry = dry_run(machines.clone(), jobs.clone(), spec, &diff);
        outputs.push((diff, dry));
    }
    match global.output {
        OutputFormat::Json => println!(
            "{:#}",
            serde_json::Value::Array(outputs.iter().map(|(d, r)| plan_json(d, r)).collect())
        ),
        OutputFormat::Text => {
            for (diff, dry) in &outputs {
                print!("{}", plan_text(diff, dry, file));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_model::{Resources, TaskTemplate};

    fn spec(replicas: u32) -> JobSpec {
        JobSpec {
            name: "web".into(),
            owner: "alice".into(),
            priority: 100,
            replicas,
            task: TaskTemplate {
                command: "/bin/server".into(),
                resources: Resources::new(500, 1 << 30),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn running(n: u32) -> Vec<(u32, TaskState)> {
        (0..n).map(|i| (i, TaskState::Running)).collect()
    }

    #[test]
    fn a_new_job_creates_every_task() {
        let diff = diff_job(None, &spec(3));
        assert_eq!(diff.tasks_created, vec![0, 1, 2]);
        assert!(diff.modify_index.is_none());
    }

    #[test]
    fn scaling_creates_or_destroys_the_highest_indices_only() {
        let old = spec(3);
        let existing = |old| Existing {
            spec: old,
            active: true,
            modify_index: 7,
            tasks: running(3),
        };
        let grown = diff_job(Some(existing(&old)), &spec(5));
        assert_eq!(grown.tasks_created, vec![3, 4]);
        assert!(grown.tasks_recreated.is_empty() && grown.tasks_destroyed.is_empty());
        let shrunk = diff_job(Some(existing(&old)), &spec(1));
        assert_eq!(shrunk.tasks_destroyed, vec![1, 2]);
        assert!(shrunk.tasks_created.is_empty() && shrunk.tasks_recreated.is_empty());
        let same = diff_job(Some(existing(&old)), &spec(3));
        assert!(same.is_noop());
    }

    #[test]
    fn a_template_change_recreates_live_tasks_and_in_place_fields_do_not() {
        let old = spec(3);
        let mut new = spec(3);
        new.task.args = vec!["--fast".into()];
        new.restart.max_attempts = 9;
        let mut tasks = running(3);
        tasks[1].1 = TaskState::Failed;
        let diff = diff_job(
            Some(Existing {
                spec: &old,
                active: true,
                modify_index: 7,
                tasks,
            }),
            &new,
        );
        assert_eq!(diff.tasks_recreated, vec![0, 2]);
        assert_eq!(diff.in_place_fields, vec!["restart policy"]);
        assert_eq!(diff.restarting_fields.len(), 1);
    }

    #[test]
    fn a_changed_override_recreates_only_its_task() {
        let mut old = spec(3);
        let mut leader = old.task.clone();
        leader.args = vec!["--leader".into()];
        old.task_overrides.insert(0, leader.clone());
        let mut new = old.clone();
        leader.args = vec!["--leader".into(), "--verbose".into()];
        new.task_overrides.insert(0, leader);
        let existing = |old| Existing {
            spec: old,
            active: true,
            modify_index: 7,
            tasks: running(3),
        };
        let diff = diff_job(Some(existing(&old)), &new);
        assert_eq!(diff.tasks_recreated, vec![0]);
        assert_eq!(diff.restarting_fields, vec!["per-task overrides"]);
        let text = plan_text(&diff, &DryRun::default(), Path::new("db.bcl"));
        assert!(
            text.contains("1 task(s) recreated: 0 (per-task overrides changed)"),
            "{text}"
        );

        // A new override on task 2 restarts task 2 only; the job's template changing
        // restarts every task that has no override of its own.
        let mut with_two = old.clone();
        let mut two = old.task.clone();
        two.resources = Resources::new(900, 1 << 30);
        with_two.task_overrides.insert(2, two);
        assert_eq!(
            diff_job(Some(existing(&old)), &with_two).tasks_recreated,
            vec![2]
        );
        let mut base = old.clone();
        base.task.args = vec!["--fast".into()];
        assert_eq!(
            diff_job(Some(existing(&old)), &base).tasks_recreated,
            vec![1, 2]
        );
    }

    #[test]
    fn resubmitting_a_killed_job_restarts_all_of_it() {
        let old = spec(2);
        let diff = diff_job(
            Some(Existing {
                spec: &old,
                active: false,
                modify_index: 4,
                tasks: vec![(0, TaskState::Killed), (1, TaskState::Killed)],
            }),
            &spec(2),
        );
        assert_eq!(diff.tasks_recreated, vec![0, 1]);
    }

    #[test]
    fn the_dry_run_uses_the_real_placement_and_explains_what_does_not_fit() {
        let machine = v1::Machine {
            info: Some(v1::MachineInfo {
                name: "m1".into(),
                address: "127.0.0.1:1".into(),
                capacity: Some(Resources::new(1000, 4 << 30).into()),
                attributes: Default::default(),
                port_capacity: None,
            }),
            state: v1::MachineState::Up as i32,
            version: 1,
            ..Default::default()
        };
        let job = spec(3);
        let diff = diff_job(None, &job);
        let dry = dry_run(vec![machine], vec![], &job, &diff);
        assert_eq!(dry.tasks, 3);
        assert_eq!(dry.placed, 2, "two 500m tasks fit on a 1000m machine");
        assert_eq!(dry.unplaced.len(), 1);
        assert!(dry.unplaced[0].1.contains("cpu"), "{}", dry.unplaced[0].1);
        let text = plan_text(&diff, &dry, Path::new("web.bcl"));
        assert!(text.contains("+ job web (new)"), "{text}");
        assert!(text.contains("2 of 3 task(s) fit now"), "{text}");
        assert!(text.contains("--check-index 0 web.bcl"), "{text}");
    }

    #[test]
    fn index_ranges_are_compact() {
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(ranges(&[]), "");
    }
}
