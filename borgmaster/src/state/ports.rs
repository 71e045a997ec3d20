//! Ports, a dimension the master checks when it commits a placement as the scheduler does:
//! a task holds one port of its machine's range per port name (`borg_model::ports_needed`),
//! and the tasks placed on a machine may not hold more than its borglet hands out
//! (`MachineInfo::ports`).

use super::CellState;
use borg_model::{ports_needed, TaskId};
use std::collections::BTreeSet;

impl CellState {
    /// Ports task `id` holds once placed (0 for an unknown job).
    fn ports_of(&self, id: &TaskId) -> u32 {
        self.jobs.get(&id.job).map_or(0, |job| {
            ports_needed(&job.spec.task_template(id.index).ports)
        })
    }

    /// Why placing `task` on `machine`, after evicting `victims`, would hold more ports than
    /// the machine has (`None`: it fits, or the machine is unknown: checked elsewhere).
    pub(crate) fn ports_exhausted(
        &self,
        task: &TaskId,
        machine: &str,
        victims: &BTreeSet<TaskId>,
    ) -> Option<String> {
        let need = self.ports_of(task);
        let record = self.machines.get(machine)?;
        if need == 0 {
            return None;
        }
        let held = record
            .placed
            .iter()
            .filter(|id| !victims.contains(*id))
            .fold(0u32, |sum, id| sum.saturating_add(self.ports_of(id)));
        let capacity = record.info.ports();
        (held.saturating_add(need) > capacity).then(|| {
            format!(
                "ports exhausted on {machine:?}: task needs {need}, {} of {capacity} free",
                capacity.saturating_sub(held)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{machine, placement, spec, submit, Cell};
    use super::super::Command;
    use borg_model::TaskId;

    #[test]
    fn a_placement_beyond_the_machine_ports_is_refused_and_victims_free_theirs() {
        let mut cell = Cell::new();
        let mut m1 = machine("m1", 10_000);
        m1.port_capacity = Some(3);
        cell.apply(Command::RegisterMachine { info: m1 });
        let with_ports = |name: &str, priority: u32, ports: &[&str]| {
            let mut s = spec(name, 1, priority, 100);
            s.task.ports = ports.iter().map(|p| p.to_string()).collect();
            s
        };
        cell.apply(submit(with_ports("free", 50, &["a", "b"])));
        cell.apply(submit(with_ports("web", 100, &["http", "admin"])));
        cell.apply(submit(with_ports("one", 100, &["http"])));
        assert!(cell.plan(vec![placement("free", 0, 0, "m1")])[0].accepted);

        // 1 port left: a 2-port task is refused, naming ports, and a 1-port task fits.
        let results = cell.plan(vec![placement("web", 0, 0, "m1")]);
        assert!(!results[0].accepted);
        assert!(
            results[0].reason.contains("ports exhausted") && results[0].reason.contains("1 of 3"),
            "{}",
            results[0].reason
        );
        // Evicting the 2-port task makes room.
        let mut p = placement("web", 0, 0, "m1");
        p.preempt = vec![(TaskId::new("free", 0), 1)];
        assert!(cell.plan(vec![p])[0].accepted);
        assert!(cell.plan(vec![placement("one", 0, 0, "m1")])[0].accepted);
    }
}
