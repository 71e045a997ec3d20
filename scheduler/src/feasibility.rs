//! Whether a task class can go on a machine: machine up, hard constraints, and resources
//! available to the class's priority (counting lower-priority preemptible tasks as free).

use crate::class::TaskClass;
use crate::view::MachineView;
use crate::work::MachineWork;
use borg_model::priority::may_preempt;
use borg_model::Resources;

/// A machine the class fits on, and the tasks to evict for it (indices into
/// `MachineWork::evictable`; empty when it fits outright).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    pub victims: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Infeasible {
    NotUp,
    /// Indices into `TaskClass::hard` of the constraints the machine fails.
    Constraints(Vec<usize>),
    /// Dimensions short even after evicting every preemptible task.
    Resources(Vec<&'static str>),
}

/// Hard constraints the machine fails (empty: all satisfied).
pub fn failed_constraints(machine: &MachineView, class: &TaskClass) -> Vec<usize> {
    class
        .hard
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.matches(&machine.attributes))
        .map(|(i, _)| i)
        .collect()
}

/// Full feasibility of `class` on the machine as the plan has left it.
pub fn check(work: &MachineWork<'_>, class: &TaskClass) -> Result<Fit, Infeasible> {
    if !work.up {
        return Err(Infeasible::NotUp);
    }
    let failed = failed_constraints(work.machine, class);
    if !failed.is_empty() {
        return Err(Infeasible::Constraints(failed));
    }
    fit_resources(work, class).map_err(Infeasible::Resources)
}

/// Resources and ports: outright, or by evicting lower-priority tasks the band rules allow.
/// Victims are taken lowest priority first, then the set is pruned of any victim not
/// needed, so the fewest and least important tasks are evicted.
pub fn fit_resources(work: &MachineWork<'_>, class: &TaskClass) -> Result<Fit, Vec<&'static str>> {
    let fits = |room: &Resources, ports: u32| class.limits.fits_in(room) && class.ports <= ports;
    let free = work.free_for(class.priority);
    let free_ports = work.free_ports();
    if fits(&free, free_ports) {
        return Ok(Fit {
            victims: Vec::new(),
        });
    }
    let candidates: Vec<usize> = (0..work.evictable.len())
        .filter(|&i| may_preempt(class.priority, work.evictable[i].priority))
        .collect();
    let (available, available_ports) =
        candidates
            .iter()
            .fold((free, free_ports), |(sum, ports), &i| {
                (
                    sum + work.freed_by(i, class.priority),
                    ports.saturating_add(work.evictable[i].ports),
                )
            });
    if !fits(&available, available_ports) {
        return Err(short_dimensions(class, &available, available_ports));
    }
    let mut victims = Vec::new();
    let (mut room, mut room_ports) = (free, free_ports);
    for i in candidates {
        if fits(&room, room_ports) {
            break;
        }
        room += work.freed_by(i, class.priority);
        room_ports = room_ports.saturating_add(work.evictable[i].ports);
        victims.push(i);
    }
    // Drop victims whose eviction turned out unnecessary, most important first.
    let mut k = victims.len();
    while k > 0 {
        k -= 1;
        let without = room.saturating_sub(&work.freed_by(victims[k], class.priority));
        let without_ports = room_ports.saturating_sub(work.evictable[victims[k]].ports);
        if fits(&without, without_ports) {
            (room, room_ports) = (without, without_ports);
            victims.remove(k);
        }
    }
    victims.sort_unstable();
    Ok(Fit { victims })
}

/// Names of the dimensions feasibility checks, in the order of `short_mask`'s bits.
pub const DIMENSIONS: [&str; 5] = ["cpu", "ram", "disk", "gpu", "ports"];

/// The dimensions in which the class asks for more than `room` and `ports` offer, as bits
/// (bit i: `DIMENSIONS[i]`), so that a scan over many machines allocates nothing.
pub fn short_mask(class: &TaskClass, room: &Resources, ports: u32) -> u8 {
    let need = &class.limits;
    [
        need.cpu_millis > room.cpu_millis,
        need.ram_bytes > room.ram_bytes,
        need.disk_bytes > room.disk_bytes,
        need.gpus > room.gpus,
        class.ports > ports,
    ]
    .into_iter()
    .enumerate()
    .fold(0, |mask, (i, short)| mask | (u8::from(short) << i))
}

/// The names of the dimensions in `mask` (see `short_mask`).
pub fn dimension_names(mask: u8) -> Vec<&'static str> {
    DIMENSIONS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The dimensions ("cpu", "ram", "disk", "gpu", "ports") in which the class asks for more
/// than `room` and `ports` offer.
pub fn short_dimensions(class: &TaskClass, room: &Resources, ports: u32) -> Vec<&'static str> {
    dimension_names(short_mask(class, room, ports))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::class::Classes;
    use crate::view::{CellView, JobView, MachineView, PendingTask, TaskView};
    use borg_model::{Constraint, ConstraintOp, MachineInfo, MachineState, TaskId, TaskState};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    pub(crate) fn machine(name: &str, cpu: u64, ram: u64, attrs: &[(&str, &str)]) -> MachineView {
        MachineView::new(
            MachineInfo {
                name: name.into(),
                address: String::new(),
                capacity: Resources::new(cpu, ram),
                attributes: attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                port_capacity: None,
            },
            MachineState::Up,
            1,
        )
    }

    /// A job with `running` tasks on `machine` at `priority`, each with the given limits.
    pub(crate) fn running_job(
        name: &str,
        priority: u32,
        limits: Resources,
        machine: &str,
        running: u32,
    ) -> JobView {
        JobView {
            name: name.into(),
            owner: format!("owner-{name}"),
            priority,
            limits,
            limits_by_task: Default::default(),
            ports_by_task: Default::default(),
            alloc_set: None,
            constraints: Arc::from(Vec::new()),
            ports: 0,
            package: Arc::from("/bin/app"),
            active: true,
            tasks: (0..running)
                .map(|i| {
                    (
                        i,
                        TaskView {
                            state: TaskState::Running,
                            machine: machine.into(),
                            incarnation: 1,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    pub(crate) fn pending(
        job: &str,
        priority: u32,
        limits: Resources,
        constraints: Vec<Constraint>,
    ) -> PendingTask {
        PendingTask {
            id: TaskId::new(job, 0),
            incarnation: 0,
            owner: "alice".into(),
            priority,
            limits,
            constraints: Arc::from(constraints),
            ports: 0,
        }
    }

    fn verdict(view: &CellView, machine: &str, task: &PendingTask) -> Result<Fit, Infeasible> {
        let mut classes = Classes::default();
        let class = classes.class_of(task, &view.package_of(&task.id.job));
        let work = MachineWork::new(view, view.machine(machine).unwrap());
        check(&work, classes.get(class))
    }

    #[test]
    fn a_machine_that_is_not_up_is_infeasible() {
        let mut view = CellView::new();
        let mut m = machine("m1", 1000, 1000, &[]);
        m.state = MachineState::Draining;
        view.upsert_machine(m);
        let t = pending("j", 100, Resources::new(1, 1), vec![]);
        assert_eq!(verdict(&view, "m1", &t), Err(Infeasible::NotUp));
    }

    #[test]
    fn hard_constraints_filter_and_soft_ones_do_not() {
        let mut view = CellView::new();
        view.upsert_machine(machine("m1", 1000, 1000, &[("rack", "r1")]));
        let rack = |value: &str, soft| Constraint {
            attribute: "rack".into(),
            op: ConstraintOp::Eq,
            values: vec![value.into()],
            soft,
        };
        let ok = pending("j", 100, Resources::new(1, 1), vec![rack("r1", false)]);
        assert!(verdict(&view, "m1", &ok).is_ok());
        let bad = pending(
            "j",
            100,
            Resources::new(1, 1),
            vec![rack("r1", false), rack("r2", false)],
        );
        assert_eq!(
            verdict(&view, "m1", &bad),
            Err(Infeasible::Constraints(vec![1]))
        );
        let soft = pending("j", 100, Resources::new(1, 1), vec![rack("r2", true)]);
        assert!(verdict(&view, "m1", &soft).is_ok());
    }

    #[test]
    fn resources_must_fit_in_every_dimension() {
        let mut view = CellView::new();
        view.upsert_machine(machine("m1", 1000, 1000, &[]));
        view.upsert_job(running_job("prod", 200, Resources::new(600, 100), "m1", 1));
        let fits = pending("j", 200, Resources::new(400, 900), vec![]);
        assert_eq!(verdict(&view, "m1", &fits), Ok(Fit { victims: vec![] }));
        let too_big = pending("j", 200, Resources::new(401, 901), vec![]);
        assert_eq!(
            verdict(&view, "m1", &too_big),
            Err(Infeasible::Resources(vec!["cpu", "ram"]))
        );
    }

    #[test]
    fn preemption_follows_the_bands() {
        let mut view = CellView::new();
        view.upsert_machine(machine("m1", 1100, 1000, &[]));
        view.upsert_job(running_job("batch", 150, Resources::new(300, 100), "m1", 2));
        view.upsert_job(running_job("free", 50, Resources::new(200, 100), "m1", 1));
        view.upsert_job(running_job("prod", 250, Resources::new(200, 100), "m1", 1));
        // 100 cpu free. Prod may evict batch and free, never prod.
        let prod = pending("p", 200, Resources::new(500, 10), vec![]);
        let fit = verdict(&view, "m1", &prod).unwrap();
        let work = MachineWork::new(&view, view.machine("m1").unwrap());
        let victims: Vec<String> = fit
            .victims
            .iter()
            .map(|&i| work.evictable[i].id.to_string())
            .collect();
        // The free task goes first (lowest priority), then one batch task is enough.
        assert_eq!(victims, vec!["free/0", "batch/0"]);
        let huge_prod = pending("p", 299, Resources::new(1000, 10), vec![]);
        assert_eq!(
            verdict(&view, "m1", &huge_prod),
            Err(Infeasible::Resources(vec!["cpu"]))
        );
        // Batch at 120 may evict only the free task: 100 + 200 cpu.
        let batch = pending("b", 120, Resources::new(300, 10), vec![]);
        let fit = verdict(&view, "m1", &batch).unwrap();
        assert_eq!(fit.victims.len(), 1);
        let batch_too_big = pending("b", 120, Resources::new(301, 10), vec![]);
        assert!(verdict(&view, "m1", &batch_too_big).is_err());
        // Equal priority never preempts.
        let same = pending("b", 150, Resources::new(300, 10), vec![]);
        let fit = verdict(&view, "m1", &same).unwrap();
        assert_eq!(fit.victims.len(), 1, "only the free task is evictable");
        let same_too_big = pending("b", 150, Resources::new(301, 10), vec![]);
        assert!(verdict(&view, "m1", &same_too_big).is_err());
    }

    #[test]
    fn unneeded_victims_are_pruned() {
        let mut view = CellView::new();
        view.upsert_machine(machine("m1", 1000, 1000, &[]));
        // Lowest priority first would take small/0 then big/0; big/0 alone is enough.
        view.upsert_job(running_job("small", 10, Resources::new(100, 1), "m1", 1));
        view.upsert_job(running_job("big", 20, Resources::new(900, 1), "m1", 1));
        let t = pending("p", 200, Resources::new(800, 1), vec![]);
        let fit = verdict(&view, "m1", &t).unwrap();
        let work = MachineWork::new(&view, view.machine("m1").unwrap());
        assert_eq!(fit.victims.len(), 1);
        assert_eq!(work.evictable[fit.victims[0]].id.job, "big");
    }

    #[test]
    fn ports_are_a_dimension_and_preemption_frees_them() {
        let mut view = CellView::new();
        let mut m1 = machine("m1", 10_000, 10_000, &[]);
        m1.port_capacity = 5;
        view.upsert_machine(m1);
        // Two batch tasks hold 2 ports each: 1 port left.
        let mut batch = running_job("batch", 150, Resources::new(100, 100), "m1", 2);
        batch.ports = 2;
        view.upsert_job(batch);
        assert_eq!(view.ports_used("m1"), 4);
        let with_ports = |priority, ports| PendingTask {
            ports,
            ..pending("j", priority, Resources::new(100, 100), vec![])
        };
        assert_eq!(
            verdict(&view, "m1", &with_ports(120, 1)),
            Ok(Fit { victims: vec![] })
        );
        // Not enough ports and nothing this priority may evict: "ports" is short.
        assert_eq!(
            verdict(&view, "m1", &with_ports(120, 2)),
            Err(Infeasible::Resources(vec!["ports"]))
        );
        // A higher priority evicts one batch task for its ports, not both.
        let fit = verdict(&view, "m1", &with_ports(200, 3)).unwrap();
        assert_eq!(fit.victims.len(), 1);
        // More ports than the whole range: short even after evicting everything.
        assert_eq!(
            verdict(&view, "m1", &with_ports(200, 6)),
            Err(Infeasible::Resources(vec!["ports"]))
        );
        // Short in cpu and ports at once names both.
        let both = PendingTask {
            ports: 6,
            ..pending("j", 120, Resources::new(20_000, 100), vec![])
        };
        assert_eq!(
            verdict(&view, "m1", &both),
            Err(Infeasible::Resources(vec!["cpu", "ports"]))
        );
    }

    #[test]
    fn tasks_with_other_port_counts_are_other_classes() {
        let mut classes = Classes::default();
        let pkg: Arc<str> = Arc::from("/bin/app");
        let one = PendingTask {
            ports: 1,
            ..pending("a", 100, Resources::new(1, 1), vec![])
        };
        let two = PendingTask {
            ports: 2,
            ..one.clone()
        };
        assert_ne!(classes.class_of(&one, &pkg), classes.class_of(&two, &pkg));
        assert_eq!(classes.class_of(&one, &pkg), classes.class_of(&one, &pkg));
    }
}
