//! Tasks of jobs placed in alloc sets: task i goes to alloc i's machine, within what alloc i
//! has left. There is nothing to search, score or preempt: the search placed the alloc, and
//! the task's resources are inside the alloc's (the master checks the same, see
//! borgmaster's `state::allocs`).

use crate::view::{CellView, MachineView, PendingTask};
use borg_model::{MachineState, Resources};
use std::collections::HashMap;

/// What allocs handed out during one `schedule` call, on top of what the view holds.
#[derive(Debug, Default)]
pub struct AllocFit {
    /// Per (set, alloc index): limits of the tasks placed in the alloc, this plan's included.
    used: HashMap<(String, u32), Resources>,
}

impl AllocFit {
    /// The machine of the alloc `task` (of a job in alloc set `set`) runs in, recording the
    /// task's use of the alloc; or why it cannot be placed now.
    pub fn place<'v>(
        &mut self,
        view: &'v CellView,
        task: &PendingTask,
        set: &str,
    ) -> Result<&'v MachineView, String> {
        let index = task.id.index;
        let set_job = view
            .job(set)
            .filter(|j| j.active)
            .ok_or_else(|| format!("alloc set {set:?} does not exist or is killed"))?;
        let alloc = set_job
            .tasks
            .get(&index)
            .filter(|a| a.state.is_placed() && !a.machine.is_empty())
            .ok_or_else(|| {
                format!("alloc {set}/{index} is not placed yet: the task waits for it")
            })?;
        let machine = view
            .machine(&alloc.machine)
            .filter(|m| m.state == MachineState::Up)
            .ok_or_else(|| {
                format!(
                    "alloc {set}/{index} is on {}, which is not up",
                    alloc.machine
                )
            })?;
        let key = (set.to_owned(), index);
        let used = match self.used.get(&key) {
            Some(used) => *used,
            None => tenants_used(view, set, index, &alloc.machine),
        };
        let reserved = set_job.limits_of(index);
        let left = reserved.saturating_sub(&used);
        let exceeded = task.limits.exceeded_dimensions(&left);
        if !exceeded.is_empty() {
            return Err(format!(
                "{} exhausted in alloc {set}/{index} on {}: the task needs {}, {left} is left of the alloc's {reserved}",
                exceeded.join(", "),
                alloc.machine,
                task.limits
            ));
        }
        self.used.insert(key, used + task.limits);
        Ok(machine)
    }
}

/// Limits of the tasks the view holds placed in alloc `index` of `set` on `machine`.
fn tenants_used(view: &CellView, set: &str, index: u32, machine: &str) -> Resources {
    view.jobs()
        .filter(|j| j.alloc_set.as_deref() == Some(set))
        .filter(|j| {
            j.tasks
                .get(&index)
                .is_some_and(|t| t.state.is_placed() && t.machine == machine)
        })
        .fold(Resources::ZERO, |sum, j| sum + j.limits_of(index))
}

#[cfg(test)]
mod tests {
    use crate::view::{CellView, JobView, MachineView, TaskView};
    use crate::{schedule, PlacementConfig};
    use borg_model::{
        AllocSetSpec, JobSpec, MachineInfo, MachineState, Resources, TaskState, TaskTemplate,
    };
    use std::collections::BTreeMap;

    fn machine(name: &str) -> MachineView {
        MachineView::new(
            MachineInfo {
                name: name.into(),
                capacity: Resources::new(4000, 8 << 30),
                ..Default::default()
            },
            MachineState::Up,
            1,
        )
    }

    fn tasks(states: &[(TaskState, &str)]) -> BTreeMap<u32, TaskView> {
        states
            .iter()
            .enumerate()
            .map(|(i, (state, machine))| {
                let task = TaskView {
                    state: *state,
                    machine: machine.to_string(),
                    incarnation: 1,
                };
                (i as u32, task)
            })
            .collect()
    }

    fn tenant(name: &str, cpu_millis: u64) -> JobSpec {
        JobSpec {
            name: name.into(),
            owner: "alice".into(),
            priority: 100,
            replicas: 2,
            task: TaskTemplate {
                command: "/bin/true".into(),
                resources: Resources::new(cpu_millis, 64 << 20),
                ..Default::default()
            },
            alloc_set: Some("shared".into()),
            ..Default::default()
        }
    }

    /// Alloc set `shared`: 2 allocs of 500m.
    fn shared() -> JobSpec {
        AllocSetSpec {
            name: "shared".into(),
            owner: "alice".into(),
            priority: 100,
            replicas: 2,
            resources: Resources::new(500, 256 << 20),
            constraints: vec![],
        }
        .to_job_spec()
    }

    /// Alloc set `shared` of 2 allocs of 500m on m1 and m2 (the cell has m1 to m3).
    fn cell() -> CellView {
        let mut view = CellView::new();
        for name in ["m1", "m2", "m3"] {
            view.upsert_machine(machine(name));
        }
        view.upsert_job(JobView::from_spec(
            &shared(),
            true,
            tasks(&[(TaskState::Running, "m1"), (TaskState::Running, "m2")]),
        ));
        view
    }

    #[test]
    fn task_i_goes_to_alloc_i_and_fits_only_in_what_is_left() {
        let mut view = cell();
        let pending = [(TaskState::Pending, ""), (TaskState::Pending, "")];
        view.upsert_job(JobView::from_spec(
            &tenant("server", 300),
            true,
            tasks(&pending),
        ));
        view.upsert_job(JobView::from_spec(
            &tenant("saver", 100),
            true,
            tasks(&pending),
        ));
        let plan = schedule(&view, &view.pending_tasks(), &PlacementConfig::new(), 7);
        let mut placed: Vec<(String, String)> = plan
            .placements
            .iter()
            .map(|p| (p.task.to_string(), p.machine.clone()))
            .collect();
        placed.sort();
        let expected = [
            ("saver/0", "m1"),
            ("saver/1", "m2"),
            ("server/0", "m1"),
            ("server/1", "m2"),
        ];
        assert_eq!(
            placed,
            expected
                .map(|(t, m)| (t.to_string(), m.to_string()))
                .to_vec()
        );
        assert!(plan.placements.iter().all(|p| p.preempt.is_empty()));

        // With server running in the allocs, a 300m job does not fit the 200m left.
        let running = [(TaskState::Running, "m1"), (TaskState::Running, "m2")];
        view.upsert_job(JobView::from_spec(
            &tenant("server", 300),
            true,
            tasks(&running),
        ));
        view.remove_job("saver");
        view.upsert_job(JobView::from_spec(
            &tenant("big", 300),
            true,
            tasks(&pending),
        ));
        let m1 = view.machine("m1").unwrap().clone();
        assert_eq!(
            view.allocated(&m1).cpu_millis,
            500,
            "tasks in an alloc take none of the machine's room"
        );
        let plan = schedule(&view, &view.pending_tasks(), &PlacementConfig::new(), 7);
        assert!(plan.placements.is_empty(), "{plan:?}");
        let reason = plan.unplaced[0].1.to_string();
        assert!(
            reason.starts_with("cpu exhausted in alloc shared/0 on m1"),
            "{reason}"
        );
        assert!(reason.contains("cpu=200m"), "{reason}");
    }

    #[test]
    fn a_task_waits_for_its_alloc_to_be_placed() {
        let mut view = cell();
        view.upsert_job(JobView::from_spec(
            &shared(),
            true,
            tasks(&[(TaskState::Running, "m1"), (TaskState::Pending, "")]),
        ));
        view.upsert_job(JobView::from_spec(
            &tenant("server", 300),
            true,
            tasks(&[(TaskState::Pending, ""), (TaskState::Pending, "")]),
        ));
        let pending: Vec<_> = view
            .pending_tasks()
            .into_iter()
            .filter(|t| t.id.job == "server")
            .collect();
        let plan = schedule(&view, &pending, &PlacementConfig::new(), 7);
        assert_eq!(plan.placements.len(), 1);
        assert_eq!(plan.placements[0].machine, "m1");
        let reason = plan.unplaced[0].1.to_string();
        assert!(
            reason.contains("alloc shared/1 is not placed yet"),
            "{reason}"
        );
    }
}
