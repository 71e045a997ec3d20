//! Task state transitions: the only code that changes a task's state or placement, so that
//! each machine's index of placed tasks (and its version) stays in step with the tasks.

use super::context::Ctx;
use super::records::{MachineRecord, TaskRecord};
use super::reservations::Reservation;
use borg_model::{Resources, TaskId, TaskState};
use std::collections::BTreeMap;

/// Moves `task` to `to`, which must not be `Scheduled` (placing is `place`). Leaving a
/// machine removes the task from the machine's placed set and bumps its version; going
/// `Pending` clears the machine (a terminal task keeps it, to show where it ran).
pub(crate) fn move_task(
    machines: &mut BTreeMap<String, MachineRecord>,
    ctx: &mut Ctx,
    id: &TaskId,
    task: &mut TaskRecord,
    to: TaskState,
    message: String,
) {
    debug_assert!(to != TaskState::Scheduled, "use place() to schedule a task");
    if task.state.is_placed() && !to.is_placed() {
        if let Some(machine) = machines.get_mut(&task.machine) {
            machine.placed.remove(id);
            machine.version += 1;
            ctx.touch_machine(&task.machine);
        }
    }
    if to == TaskState::Pending {
        task.machine.clear();
        task.pid = 0;
    }
    if to.is_terminal() {
        ctx.maybe_finished.insert(id.job.clone());
    }
    if task.state != to {
        task.state = to;
        task.state_since_ms = ctx.time_ms;
    }
    task.message = message;
    ctx.touch_task(id);
}

/// Places a pending task on `machine` (which must exist): `Scheduled`, next incarnation,
/// reserving its `limit` until usage reports say otherwise.
pub(crate) fn place(
    machines: &mut BTreeMap<String, MachineRecord>,
    ctx: &mut Ctx,
    id: &TaskId,
    task: &mut TaskRecord,
    machine: &str,
    limit: Resources,
) {
    if let Some(record) = machines.get_mut(machine) {
        record.placed.insert(id.clone());
        record.version += 1;
        ctx.touch_machine(machine);
    }
    task.state = TaskState::Scheduled;
    task.machine = machine.to_string();
    task.incarnation += 1;
    task.restarts = 0;
    task.exit_code = None;
    task.pid = 0;
    task.state_since_ms = ctx.time_ms;
    task.message = String::new();
    task.usage = Resources::ZERO;
    task.reservation = Reservation::at_limit(limit);
    ctx.touch_task(id);
}

/// Re-pends a task with a new incarnation (after its job's spec changed, or when a job is
/// restarted): any process of the old incarnation leaves the desired set and is stopped,
/// and plans made for the old incarnation are stale.
pub(crate) fn repend_new_incarnation(
    machines: &mut BTreeMap<String, MachineRecord>,
    ctx: &mut Ctx,
    id: &TaskId,
    task: &mut TaskRecord,
    message: String,
) {
    move_task(machines, ctx, id, task, TaskState::Pending, message);
    task.incarnation += 1;
    task.restarts = 0;
    task.exit_code = None;
}
