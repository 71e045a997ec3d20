//! A task assigned to this machine, as the borglet keeps it, and its conversion from the wire.

use borg_model::{AppClass, JobType, Priority, RestartPolicy, TaskTemplate};
use borg_proto::convert::{app_class_from_wire, job_type_from_wire};
use borg_proto::v1;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A task on a machine is named by its job, index and incarnation: each placement of the
/// task is a new incarnation, run in its own sandbox and cgroup.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    pub job: String,
    pub index: u32,
    pub incarnation: u64,
}

impl TaskKey {
    pub fn new(job: impl Into<String>, index: u32, incarnation: u64) -> TaskKey {
        TaskKey {
            job: job.into(),
            index,
            incarnation,
        }
    }

    /// `<job>.<index>.<incarnation>`: the name of the task's sandbox, cgroup and record. Only
    /// meaningful for a valid job name (see [`borg_model::is_valid_name`]).
    pub fn dir_name(&self) -> String {
        format!("{}.{}.{}", self.job, self.index, self.incarnation)
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.job, self.index, self.incarnation)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAssignment {
    pub key: TaskKey,
    pub owner: String,
    pub priority: Priority,
    pub job_type: JobType,
    pub app_class: AppClass,
    pub restart: RestartPolicy,
    pub template: TaskTemplate,
}

/// Why an assigned task cannot be run at all; it is reported FAILED with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {key} cannot run: {reason}")]
pub struct InvalidAssignment {
    pub key: TaskKey,
    pub reason: String,
}

impl TaskAssignment {
    pub fn from_wire(task: v1::AssignedTask) -> Result<TaskAssignment, InvalidAssignment> {
        let key = TaskKey::new(task.job, task.index, task.incarnation);
        let invalid = |reason: String| InvalidAssignment {
            key: key.clone(),
            reason,
        };
        if !borg_model::is_valid_name(&key.job) {
            return Err(invalid(format!(
                "job name {:?} is not usable as a directory or cgroup name",
                key.job
            )));
        }
        if !borg_model::is_valid_name(&task.owner) {
            return Err(invalid(format!(
                "owner {:?} is not a valid user name",
                task.owner
            )));
        }
        let job_type = job_type_from_wire(task.job_type).map_err(|e| invalid(e.to_string()))?;
        let app_class = app_class_from_wire(task.app_class).map_err(|e| invalid(e.to_string()))?;
        let Some(template) = task.template else {
            return Err(invalid(
                "the assignment carries no task template".to_owned(),
            ));
        };
        let template = TaskTemplate::from(template);
        if template.command.trim().is_empty() {
            return Err(invalid("the task template has no command".to_owned()));
        }
        Ok(TaskAssignment {
            owner: task.owner,
            priority: task.priority,
            job_type,
            app_class,
            restart: task.restart.map(Into::into).unwrap_or_default(),
            template,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> v1::AssignedTask {
        v1::AssignedTask {
            job: "web".into(),
            index: 2,
            incarnation: 5,
            owner: "alice".into(),
            priority: 200,
            job_type: v1::JobType::Batch as i32,
            app_class: 0,
            restart: None,
            template: Some(v1::TaskTemplate {
                command: "/bin/true".into(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_valid_assignment_converts() {
        let a = TaskAssignment::from_wire(wire()).unwrap();
        assert_eq!(a.key, TaskKey::new("web", 2, 5));
        assert_eq!(a.key.dir_name(), "web.2.5");
        assert_eq!(a.key.to_string(), "web/2#5");
        assert_eq!(a.job_type, JobType::Batch);
        assert_eq!(a.restart, RestartPolicy::default());
    }

    #[test]
    fn unusable_assignments_say_why() {
        let mut t = wire();
        t.job = "../etc".into();
        let e = TaskAssignment::from_wire(t).unwrap_err();
        assert!(e.reason.contains("not usable"), "{e}");
        let mut t = wire();
        t.template = None;
        assert!(TaskAssignment::from_wire(t).is_err());
        let mut t = wire();
        t.job_type = 42;
        assert!(TaskAssignment::from_wire(t)
            .unwrap_err()
            .reason
            .contains("job_type"));
        let mut t = wire();
        t.template.as_mut().unwrap().command = " ".into();
        assert!(TaskAssignment::from_wire(t).is_err());
    }
}
