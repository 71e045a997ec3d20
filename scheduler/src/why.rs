//! "Why pending": for one pending task, what every machine of the cell says about it, the
//! best candidates if any, and the smallest changes that would make it fit. Pure, like
//! `schedule`; a diagnostic, so it examines the whole cell (no relaxed randomization).

use crate::class::{Classes, TaskClass};
use crate::constraint::describe;
use crate::feasibility::{self, Infeasible};
use crate::plan::ConstraintFailure;
use crate::schedule::evaluate;
use crate::scoring::{FitPolicy, Score};
use crate::spread::Spread;
use crate::view::{CellView, MachineRef, PendingTask};
use crate::work::MachineWork;
use borg_model::{Constraint, Priority, Resources, TaskId};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

/// Most best candidates reported.
pub const WHY_CANDIDATES_MAX: usize = 3;
/// Most distinct priorities tried when looking for the smallest sufficient raise.
pub const WHY_PRIORITIES_TRIED_MAX: usize = 64;

/// A feasible machine and its score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub machine: String,
    pub score: Score,
}

/// A change to the job that would let the task fit on at least one machine now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The largest request (resources and ports), no larger than the current one in any
    /// dimension, that fits on `machine` (the machine needing the smallest relative cut).
    LowerRequest {
        request: Resources,
        ports: u32,
        machine: String,
    },
    /// The lowest priority above the current one that fits somewhere (by preemption).
    RaisePriority { priority: Priority, machines: usize },
    /// Without this hard constraint, `machines` machines would fit.
    DropConstraint {
        constraint: Constraint,
        machines: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhyPending {
    pub task: TaskId,
    pub priority: Priority,
    pub request: Resources,
    /// Ports each task holds.
    pub ports: u32,
    pub machines_total: usize,
    pub machines_not_up: usize,
    /// Per hard constraint, the machines that fail it.
    pub constraint_failures: Vec<ConstraintFailure>,
    /// Per dimension, machines that pass the constraints but lack it even counting
    /// preemptible tasks as free.
    pub resource_shortfalls: BTreeMap<&'static str, usize>,
    /// Machines the task fits on now, best first (empty when it fits nowhere).
    pub best: Vec<Candidate>,
    /// Changes that would make it fit, each the smallest of its kind.
    pub changes: Vec<Change>,
}

/// Explains why `task` is pending in `view`.
pub fn why_pending(view: &CellView, task: &PendingTask, policy: FitPolicy) -> WhyPending {
    let package = view.package_of(&task.id.job);
    let mut classes = Classes::new(false);
    let class_id = classes.class_of(task, &package);
    let class = classes.get(class_id);
    let machines: Vec<MachineRef<'_>> = view.machine_refs().collect();
    let works: Vec<MachineWork<'_>> = machines.iter().map(|&m| MachineWork::of(m)).collect();
    let mut spread = Spread::default();
    let job_slot = spread.prepare(view, &task.id.job, &machines, &HashSet::new());

    let mut why = WhyPending {
        task: task.id.clone(),
        priority: task.priority,
        request: task.limits,
        ports: task.ports,
        machines_total: works.len(),
        machines_not_up: 0,
        constraint_failures: Vec::new(),
        resource_shortfalls: BTreeMap::new(),
        best: Vec::new(),
        changes: Vec::new(),
    };
    let mut constraint_counts = vec![0usize; class.hard.len()];
    // Up machines that pass every hard constraint but lack resources.
    let mut short: Vec<&MachineWork<'_>> = Vec::new();
    for (m, work) in works.iter().enumerate() {
        match evaluate(work, class, policy) {
            Ok((_, mut score)) => {
                score.same_job_on_machine = spread.on_machine(job_slot, m);
                why.best.push(Candidate {
                    machine: work.machine.name.clone(),
                    score,
                });
            }
            Err(Infeasible::NotUp) => why.machines_not_up += 1,
            Err(Infeasible::Constraints(failed)) => {
                for c in failed {
                    constraint_counts[c] += 1;
                }
            }
            Err(Infeasible::Resources(dimensions)) => {
                for d in dimensions {
                    *why.resource_shortfalls.entry(d).or_insert(0) += 1;
                }
                short.push(work);
            }
        }
    }
    why.best.sort_by_key(|c| std::cmp::Reverse(c.score));
    why.best.truncate(WHY_CANDIDATES_MAX);
    why.constraint_failures = class
        .hard
        .iter()
        .zip(&constraint_counts)
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| ConstraintFailure {
            constraint: c.constraint.clone(),
            machines: *n,
        })
        .collect();
    if !why.best.is_empty() {
        return why;
    }

    if let Some(change) = lower_request(&short, class) {
        why.changes.push(change);
    }
    if let Some(change) = raise_priority(&short, task, &package) {
        why.changes.push(change);
    }
    for (i, c) in class.hard.iter().enumerate() {
        let machines = works
            .iter()
            .filter(|w| w.up)
            .filter(|w| feasibility::failed_constraints(w.machine, class) == [i])
            .filter(|w| feasibility::fit_resources(w, class).is_ok())
            .count();
        if machines > 0 {
            why.changes.push(Change::DropConstraint {
                constraint: c.constraint.clone(),
                machines,
            });
        }
    }
    why
}

/// What a machine can give the class: free room and ports plus what preemption may free.
fn available(work: &MachineWork<'_>, class: &TaskClass) -> (Resources, u32) {
    (0..work.evictable.len())
        .filter(|&i| borg_model::priority::may_preempt(class.priority, work.evictable[i].priority))
        .fold(
            (work.free_for(class.priority), work.free_ports()),
            |(sum, ports), i| {
                (
                    sum + work.freed_by(i, class.priority),
                    ports.saturating_add(work.evictable[i].ports),
                )
            },
        )
}

/// The request cut the least (largest relative cut over the dimensions, minimised) to fit
/// one of `short`; none when every candidate would need a dimension cut to zero.
fn lower_request(short: &[&MachineWork<'_>], class: &TaskClass) -> Option<Change> {
    let need = class.limits;
    let mut best: Option<(u64, Resources, u32, &str)> = None;
    for work in short {
        let (room, room_ports) = available(work, class);
        let ports = class.ports.min(room_ports);
        let request = Resources {
            cpu_millis: need.cpu_millis.min(room.cpu_millis),
            ram_bytes: need.ram_bytes.min(room.ram_bytes),
            disk_bytes: need.disk_bytes.min(room.disk_bytes),
            gpus: need.gpus.min(room.gpus),
        };
        let dims = [
            (need.cpu_millis, request.cpu_millis),
            (need.ram_bytes, request.ram_bytes),
            (need.disk_bytes, request.disk_bytes),
            (u64::from(need.gpus), u64::from(request.gpus)),
            (u64::from(class.ports), u64::from(ports)),
        ];
        if dims.iter().any(|&(n, r)| n > 0 && r == 0) {
            continue;
        }
        let cut_permille = dims
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|&(n, r)| u64::try_from(u128::from(n - r) * 1000 / u128::from(n)).unwrap_or(1000))
            .max()
            .unwrap_or(0);
        if best.as_ref().is_none_or(|(c, _, _, _)| cut_permille < *c) {
            best = Some((cut_permille, request, ports, &work.machine.name));
        }
    }
    best.map(|(_, request, ports, machine)| Change::LowerRequest {
        request,
        ports,
        machine: machine.to_owned(),
    })
}

/// The lowest priority above the task's that fits on one of `short` by preemption.
fn raise_priority(
    short: &[&MachineWork<'_>],
    task: &PendingTask,
    package: &std::sync::Arc<str>,
) -> Option<Change> {
    // Just above each running priority, and the start of each higher band.
    let mut tried: BTreeSet<Priority> = [100, 200, 300].into_iter().collect();
    for work in short {
        for victim in &work.evictable {
            tried.insert(victim.priority.saturating_add(1));
        }
    }
    for priority in tried
        .into_iter()
        .filter(|&p| p > task.priority)
        .take(WHY_PRIORITIES_TRIED_MAX)
    {
        let raised = PendingTask {
            priority,
            ..task.clone()
        };
        let mut classes = Classes::new(false);
        let id = classes.class_of(&raised, package);
        let class = classes.get(id);
        let machines = short
            .iter()
            .filter(|w| feasibility::fit_resources(w, class).is_ok())
            .count();
        if machines > 0 {
            return Some(Change::RaisePriority { priority, machines });
        }
    }
    None
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::LowerRequest {
                request,
                ports,
                machine,
            } => {
                write!(
                    f,
                    "lower the request to cpu {} millis, ram {} bytes",
                    request.cpu_millis, request.ram_bytes
                )?;
                if *ports > 0 {
                    write!(f, ", {ports} ports")?;
                }
                write!(f, " (fits on {machine})")
            }
            Change::RaisePriority { priority, machines } => write!(
                f,
                "raise the priority to {priority} (fits on {machines} machines by preemption)"
            ),
            Change::DropConstraint {
                constraint,
                machines,
            } => write!(
                f,
                "drop the constraint {} ({machines} machines would fit)",
                describe(constraint)
            ),
        }
    }
}

impl fmt::Display for WhyPending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} (priority {}): {} machines",
            self.task, self.priority, self.machines_total
        )?;
        if !self.best.is_empty() {
            writeln!(f, "  fits now; best machines:")?;
            for c in &self.best {
                writeln!(f, "    {} (quality {})", c.machine, c.score.quality())?;
            }
            return Ok(());
        }
        if self.machines_not_up > 0 {
            writeln!(f, "  {} machines not up", self.machines_not_up)?;
        }
        for c in &self.constraint_failures {
            writeln!(
                f,
                "  {} machines fail {}",
                c.machines,
                describe(&c.constraint)
            )?;
        }
        for (dimension, machines) in &self.resource_shortfalls {
            writeln!(f, "  {machines} machines short of {dimension}")?;
        }
        if self.changes.is_empty() {
            writeln!(f, "  no single change makes it fit")?;
        }
        for change in &self.changes {
            writeln!(f, "  would fit if you {change}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feasibility::tests::{machine, pending, running_job};
    use borg_model::ConstraintOp;

    fn rack(value: &str) -> Constraint {
        Constraint {
            attribute: "rack".into(),
            op: ConstraintOp::Eq,
            values: vec![value.into()],
            soft: false,
        }
    }

    #[test]
    fn counts_causes_and_proposes_the_smallest_changes() {
        let mut view = CellView::new();
        view.upsert_machine(machine("m1", 1000, 1000, &[("rack", "r1")]));
        view.upsert_machine(machine("m2", 1000, 1000, &[("rack", "r2")]));
        view.upsert_machine(machine("m3", 4000, 4000, &[("rack", "r3")]));
        // m1 holds 600 cpu of batch at 150; m2 is empty.
        view.upsert_job(running_job("batch", 150, Resources::new(600, 100), "m1", 1));
        let task = pending(
            "j",
            120,
            Resources::new(700, 100),
            vec![borg_model::Constraint {
                attribute: "rack".into(),
                op: ConstraintOp::In,
                values: vec!["r1".into(), "r2".into()],
                soft: false,
            }],
        );
        // Fits on m2 outright.
        let why = why_pending(&view, &task, FitPolicy::Hybrid);
        assert_eq!(why.best.len(), 1);
        assert_eq!(why.best[0].machine, "m2");

        // Only r1 allowed: m1 has 400 cpu free; batch at 150 is preemptible from 151.
        let task = pending("j", 120, Resources::new(700, 100), vec![rack("r1")]);
        let why = why_pending(&view, &task, FitPolicy::Hybrid);
        assert!(why.best.is_empty());
        assert_eq!(why.constraint_failures.len(), 1);
        assert_eq!(why.constraint_failures[0].machines, 2);
        assert_eq!(why.resource_shortfalls.get("cpu"), Some(&1));
        assert_eq!(
            why.changes,
            vec![
                Change::LowerRequest {
                    request: Resources::new(400, 100),
                    ports: 0,
                    machine: "m1".into()
                },
                Change::RaisePriority {
                    priority: 151,
                    machines: 1
                },
                Change::DropConstraint {
                    constraint: rack("r1"),
                    machines: 2
                },
            ]
        );
        let text = why.to_string();
        assert!(text.contains("2 machines fail rack == r1"), "{text}");
        assert!(text.contains("raise the priority to 151"), "{text}");
    }
}
