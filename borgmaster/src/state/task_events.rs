//! Events on tasks that the master witnesses outside the log (`Command::RecordTaskEvent`):
//! `borg ssh` sessions through its task access service. They join the cell's event log like
//! every other task event (scheduled, running, exited, restarted, preempted, lost), so
//! `borg job status JOB/INDEX` shows one history.
//!
//! The task must exist; a message longer than `TASK_EVENT_MESSAGE_MAX_LEN` is refused. The
//! incarnation is recorded in the message (the session was with that process).

use super::context::Ctx;
use super::events::{NewEvent, TaskEventKind, TASK_EVENT_MESSAGE_MAX_LEN};
use super::outcome::{Outcome, StateError};
use super::CellState;
use borg_model::TaskId;

impl CellState {
    pub(crate) fn record_task_event(
        &mut self,
        ctx: &mut Ctx,
        task: &TaskId,
        incarnation: u64,
        kind: TaskEventKind,
        message: &str,
    ) -> Result<Outcome, StateError> {
        if message.len() > TASK_EVENT_MESSAGE_MAX_LEN {
            return Err(StateError::InvalidRequest {
                reason: format!(
                    "a task event message has {} bytes; the most is {TASK_EVENT_MESSAGE_MAX_LEN}",
                    message.len()
                ),
            });
        }
        let record = self
            .jobs
            .get(&task.job)
            .ok_or_else(|| StateError::JobNotFound {
                name: task.job.clone(),
            })?
            .tasks
            .get(&task.index)
            .ok_or_else(|| StateError::InvalidRequest {
                reason: format!("task {task} does not exist"),
            })?;
        ctx.event(NewEvent::task(
            kind.name(),
            &task.job,
            task.index,
            &record.machine,
            format!("incarnation {incarnation}: {message}"),
        ));
        Ok(Outcome::TaskEventRecorded)
    }
}
