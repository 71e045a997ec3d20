//! Applying link-shard reports (docs/lifecycle.md, "What the master does with reports").
//!
//! - A report for an unknown machine, or about a task that is not currently placed on that
//!   machine with that incarnation, is stale and ignored.
//! - `RUNNING` moves `Scheduled` to `Running` and records restarts, pid and exit code.
//! - `SUCCEEDED`/`FAILED` make the task terminal, releasing its resources.
//! - `KILLED` on a task the master still wants there means it was lost: it is re-pended
//!   (incarnation unchanged until it is placed again).
//! - An unreachable machine goes `Down` and its placed tasks are re-pended; a later report
//!   (or registration) brings it back `Up`.
//! - Usage (machine and task) is recorded; a zero usage means "not reported" and keeps the
//!   previous value. A running task's usage updates its reservation (see `reservations`).

use super::context::Ctx;
use super::events::NewEvent;
use super::outcome::{Outcome, StateError};
use super::tasks::move_task;
use super::{CellState, MachineReport, TaskReport};
use borg_model::{MachineState, Resources, TaskState};

/// Most machine reports in one entry.
pub const REPORT_MACHINES_MAX: usize = 10_000;
/// Most task reports about one machine in one entry.
pub const REPORT_TASKS_PER_MACHINE_MAX: usize = 10_000;

impl CellState {
    pub(crate) fn apply_reports(
        &mut self,
        ctx: &mut Ctx,
        reports: &[MachineReport],
    ) -> Result<Outcome, StateError> {
        if reports.len() > REPORT_MACHINES_MAX {
            return Err(StateError::BatchTooLarge {
                what: "reports".into(),
                count: reports.len(),
                max: REPORT_MACHINES_MAX,
            });
        }
        if let Some(big) = reports
            .iter()
            .find(|r| r.tasks.len() > REPORT_TASKS_PER_MACHINE_MAX)
        {
            return Err(StateError::BatchTooLarge {
                what: format!("report of machine {:?}", big.machine),
                count: big.tasks.len(),
                max: REPORT_TASKS_PER_MACHINE_MAX,
            });
        }
        for report in reports {
            if report.unreachable {
                self.machine_lost(ctx, &report.machine);
            } else {
                self.machine_reported(ctx, report);
            }
        }
        Ok(Outcome::ReportsApplied)
    }

    /// Marks the machine `Down` and re-pends its placed tasks.
    fn machine_lost(&mut self, ctx: &mut Ctx, name: &str) {
        let Some(machine) = self.machines.get_mut(name) else {
            return;
        };
        if machine.state == MachineState::Down {
            return;
        }
        machine.state = MachineState::Down;
        machine.version += 1;
        let placed: Vec<_> = machine.placed.iter().cloned().collect();
        ctx.touch_machine(name);
        ctx.event(NewEvent::machine(
            "machine_down",
            name,
            format!("unreachable; {} tasks re-pended", placed.len()),
        ));
        let message = format!("machine {name} lost");
        for id in &placed {
            let Some(task) = self
                .jobs
                .get_mut(&id.job)
                .and_then(|j| j.tasks.get_mut(&id.index))
            else {
                continue;
            };
            ctx.event(NewEvent::task(
                "task_lost",
                &id.job,
                id.index,
                name,
                message.clone(),
            ));
            move_task(
                &mut self.machines,
                ctx,
                id,
                task,
                TaskState::Pending,
                message.clone(),
            );
        }
    }

    fn machine_reported(&mut self, ctx: &mut Ctx, report: &MachineReport) {
        let Some(machine) = self.machines.get_mut(&report.machine) else {
            return;
        };
        machine.last_report_ms = ctx.time_ms;
        // A diff carries usage only when it changed notably; absent arrives as zero.
        if report.usage != Resources::ZERO {
            machine.usage = report.usage;
        }
        if machine.state == MachineState::Down {
            machine.state = MachineState::Up;
            machine.version += 1;
            ctx.event(NewEvent::machine(
                "machine_up",
                &report.machine,
                "answering again".into(),
            ));
        }
        ctx.touch_machine(&report.machine);
        for task_report in &report.tasks {
            self.task_reported(ctx, &report.machine, task_report);
        }
    }

    fn task_reported(&mut self, ctx: &mut Ctx, machine: &str, r: &TaskReport) {
        let id = &r.task;
        let Some(job) = self.jobs.get_mut(&id.job) else {
            return;
        };
        let limit = job.spec.task_resources(id.index);
        let Some(task) = job.tasks.get_mut(&id.index) else {
            return;
        };
        if !task.state.is_placed() || task.machine != machine || task.incarnation != r.incarnation {
            return;
        }
        if r.usage != Resources::ZERO {
            task.usage = r.usage;
        }
        if r.state == TaskState::Running && r.usage != Resources::ZERO {
            // A task reported running for the first time starts now (below).
            let running_since_ms = if task.state == TaskState::Running {
                task.state_since_ms
            } else {
                ctx.time_ms
            };
            let before = task.reservation;
            task.reservation = before.after_report(&limit, &r.usage, running_since_ms, ctx.time_ms);
            if task.reservation.reserved != before.reserved {
                ctx.touch_task(id);
            }
        }
        match r.state {
            TaskState::Running => {
                if r.restarts > task.restarts {
                    ctx.event(NewEvent::task(
                        "task_restarted",
                        &id.job,
                        id.index,
                        machine,
                        format!(
                            "restart {} (last exit code {})",
                            r.restarts,
                            r.exit_code
                                .map_or_else(|| "unknown".to_string(), |c| c.to_string())
                        ),
                    ));
                }
                let changed = task.restarts != r.restarts
                    || task.pid != r.pid
                    || task.exit_code != r.exit_code
                    || task.ports != r.ports
                    || task.state != TaskState::Running;
                task.ports.clone_from(&r.ports);
                task.restarts = r.restarts;
                task.pid = r.pid;
                task.exit_code = r.exit_code;
                if task.state == TaskState::Scheduled {
                    task.state = TaskState::Running;
                    task.state_since_ms = ctx.time_ms;
                    task.message = r.message.clone();
                    ctx.event(NewEvent::task(
                        "task_running",
                        &id.job,
                        id.index,
                        machine,
                        format!("pid {}", r.pid),
                    ));
                }
                if changed {
                    ctx.touch_task(id);
                }
            }
            TaskState::Succeeded | TaskState::Failed => {
                task.restarts = r.restarts;
                task.pid = r.pid;
                task.exit_code = r.exit_code;
                let message = if r.message.is_empty() {
                    match r.exit_code {
                        Some(code) => format!("exited with code {code}"),
                        None => format!("{}", r.state),
                    }
                } else {
                    r.message.clone()
                };
                ctx.event(NewEvent::task(
                    "task_exited",
                    &id.job,
                    id.index,
                    machine,
                    format!("{}: {message}", r.state),
                ));
                move_task(&mut self.machines, ctx, id, task, r.state, message);
            }
            TaskState::Killed => {
                let message = if r.message.is_empty() {
                    format!("lost on {machine}: stopped without being asked")
                } else {
                    format!("lost on {machine}: {}", r.message)
                };
                ctx.event(NewEvent::task(
                    "task_lost",
                    &id.job,
                    id.index,
                    machine,
                    message.clone(),
                ));
                move_task(
                    &mut self.machines,
                    ctx,
                    id,
                    task,
                    TaskState::Pending,
                    message,
                );
            }
            // Not states a borglet reports; nothing to learn from them.
            TaskState::Pending | TaskState::Scheduled | TaskState::Lost => {}
        }
    }
}
