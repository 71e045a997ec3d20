//! What a user asks for: a job of identical tasks.

use crate::priority::{Band, Priority};
use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most replicas one job may ask for.
pub const JOB_REPLICAS_MAX: u32 = 100_000;
/// Most constraints on one job.
pub const JOB_CONSTRAINTS_MAX: usize = 64;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobType {
    /// Long-running; a task that exits is restarted according to its restart policy.
    #[default]
    Service,
    /// Runs to completion; a task that exits 0 is done.
    Batch,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AppClass {
    #[default]
    LatencySensitive,
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Restarts allowed within `interval_s` before the task is marked failed.
    pub max_attempts: u32,
    pub interval_s: u64,
    /// Delay before each restart (doubled on consecutive crashes by the borglet).
    pub delay_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_attempts: 3,
            interval_s: 300,
            delay_ms: 1000,
        }
    }
}

/// Operator of a constraint on a machine attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConstraintOp {
    Eq,
    Ne,
    /// The attribute matches the regular expression in `values[0]`.
    Regex,
    /// The attribute is one of `values`.
    In,
    NotIn,
    /// Dotted version comparison against `values[0]`.
    VersionGe,
    VersionLt,
    /// The attribute is present (any value).
    Exists,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Constraint {
    pub attribute: String,
    pub op: ConstraintOp,
    pub values: Vec<String>,
    /// A soft constraint is a scoring preference, not a feasibility requirement.
    pub soft: bool,
}

/// What every task of a job runs, before runtime substitutions (`%task_index%`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskTemplate {
    /// Program to execute: an absolute path, or a name looked up in the task's PATH.
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Limits: the most the task may use.
    pub resources: Resources,
    /// Names of ports the task needs (allocated by the borglet, passed as `%port%`...).
    pub ports: Vec<String>,
}

/// A job as submitted: the declarative desired state of its tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub owner: String,
    pub priority: Priority,
    pub replicas: u32,
    pub task: TaskTemplate,
    pub constraints: Vec<Constraint>,
    pub job_type: JobType,
    pub app_class: AppClass,
    pub restart: RestartPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobSpecError {
    #[error("job name {name:?} is invalid: use 1-128 letters, digits, '-', '_' or '.', not starting with '.'")]
    InvalidName { name: String },
    #[error("owner {owner:?} is invalid: use 1-128 letters, digits, '-', '_' or '.'")]
    InvalidOwner { owner: String },
    #[error("job {job:?} has no command: set `command`")]
    MissingCommand { job: String },
    #[error("job {job:?} asks for {replicas} replicas; the most is {max}")]
    TooManyReplicas {
        job: String,
        replicas: u32,
        max: u32,
    },
    #[error("job {job:?} has {count} constraints; the most is {max}")]
    TooManyConstraints {
        job: String,
        count: usize,
        max: usize,
    },
    #[error("job {job:?} requests no cpu or no ram: every task needs both (for example cpu = 100m, ram = 64Mi)")]
    EmptyResources { job: String },
    #[error("job {job:?}: constraint on {attribute:?} with operator {op:?} needs {expected}")]
    BadConstraint {
        job: String,
        attribute: String,
        op: ConstraintOp,
        expected: &'static str,
    },
}

impl JobSpec {
    pub fn band(&self) -> Band {
        Band::of(self.priority)
    }

    /// Total limits of all replicas: what admission charges against quota.
    pub fn total_resources(&self) -> Resources {
        self.task.resources.saturating_mul(u64::from(self.replicas))
    }

    /// Checks that do not depend on cell state. Admission (quota, ownership) comes later.
    pub fn validate(&self) -> Result<(), JobSpecError> {
        if !crate::is_valid_name(&self.name) {
            return Err(JobSpecError::InvalidName {
                name: self.name.clone(),
            });
        }
        if !crate::is_valid_name(&self.owner) {
            return Err(JobSpecError::InvalidOwner {
                owner: self.owner.clone(),
            });
        }
        if self.task.command.trim().is_empty() {
            return Err(JobSpecError::MissingCommand {
                job: self.name.clone(),
            });
        }
        if self.replicas > JOB_REPLICAS_MAX {
            return Err(JobSpecError::TooManyReplicas {
                job: self.name.clone(),
                replicas: self.replicas,
                max: JOB_REPLICAS_MAX,
            });
        }
        if self.constraints.len() > JOB_CONSTRAINTS_MAX {
            return Err(JobSpecError::TooManyConstraints {
                job: self.name.clone(),
                count: self.constraints.len(),
                max: JOB_CONSTRAINTS_MAX,
            });
        }
        if self.task.resources.cpu_millis == 0 || self.task.resources.ram_bytes == 0 {
            return Err(JobSpecError::EmptyResources {
                job: self.name.clone(),
            });
        }
        for c in &self.constraints {
            let expected = match c.op {
                ConstraintOp::Exists => None,
                ConstraintOp::In | ConstraintOp::NotIn if c.values.is_empty() => {
                    Some("at least one value")
                }
                ConstraintOp::In | ConstraintOp::NotIn => None,
                _ if c.values.len() != 1 => Some("exactly one value"),
                _ => None,
            };
            if let Some(expected) = expected {
                return Err(JobSpecError::BadConstraint {
                    job: self.name.clone(),
                    attribute: c.attribute.clone(),
                    op: c.op,
                    expected,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            name: "hello".into(),
            owner: "alice".into(),
            priority: 100,
            replicas: 3,
            task: TaskTemplate {
                command: "/bin/sleep".into(),
                args: vec!["100".into()],
                resources: Resources::new(100, 64 << 20),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_complete_spec_validates() {
        assert_eq!(spec().validate(), Ok(()));
        assert_eq!(spec().total_resources(), Resources::new(300, 192 << 20));
    }

    #[test]
    fn missing_pieces_are_named() {
        let mut s = spec();
        s.task.command.clear();
        assert!(matches!(
            s.validate(),
            Err(JobSpecError::MissingCommand { .. })
        ));
        let mut s = spec();
        s.name = "a/b".into();
        assert!(matches!(
            s.validate(),
            Err(JobSpecError::InvalidName { .. })
        ));
        let mut s = spec();
        s.task.resources.ram_bytes = 0;
        assert!(matches!(
            s.validate(),
            Err(JobSpecError::EmptyResources { .. })
        ));
        let mut s = spec();
        s.constraints.push(Constraint {
            attribute: "rack".into(),
            op: ConstraintOp::Eq,
            values: vec![],
            soft: false,
        });
        assert!(matches!(
            s.validate(),
            Err(JobSpecError::BadConstraint { .. })
        ));
    }
}
