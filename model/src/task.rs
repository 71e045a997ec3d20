//! Tasks: the replicas of a job.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A task is named by its job and its index within the job (`hello/2`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId {
    pub job: String,
    pub index: u32,
}

impl TaskId {
    pub fn new(job: impl Into<String>, index: u32) -> Self {
        TaskId {
            job: job.into(),
            index,
        }
    }

    /// Parses `JOB/INDEX`.
    pub fn parse(text: &str) -> Option<TaskId> {
        let (job, index) = text.rsplit_once('/')?;
        if job.is_empty() {
            return None;
        }
        Some(TaskId::new(job, index.parse().ok()?))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.job, self.index)
    }
}

/// Lifecycle of a task as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for the scheduler.
    Pending,
    /// Placed on a machine; the borglet has not reported it running yet.
    Scheduled,
    Running,
    /// Exited 0 (batch) and will not run again.
    Succeeded,
    /// Exited non-zero and exhausted its restart policy, or could not start.
    Failed,
    /// Stopped because its job was killed or it was preempted/removed.
    Killed,
    /// Its machine stopped answering; it will be rescheduled.
    Lost,
}

impl TaskState {
    /// A terminal task runs no more and holds no resources.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Killed
        )
    }

    /// Whether the task holds resources on a machine.
    pub fn is_placed(self) -> bool {
        matches!(self, TaskState::Scheduled | TaskState::Running)
    }

    pub fn name(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Scheduled => "scheduled",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Killed => "killed",
            TaskState::Lost => "lost",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip_through_text() {
        let id = TaskId::new("web-frontend", 12);
        assert_eq!(id.to_string(), "web-frontend/12");
        assert_eq!(TaskId::parse("web-frontend/12"), Some(id));
        assert_eq!(TaskId::parse("nojob"), None);
        assert_eq!(TaskId::parse("/3"), None);
        assert_eq!(TaskId::parse("job/x"), None);
    }
}
