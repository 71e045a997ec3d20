//! What a user asks for: a job of tasks that share one template, except where a per-task
//! override gives a task its own.

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
    /// Per-task overrides: the complete template of each task (by index, below `replicas`)
    /// that differs from `task`. Constraints and priority stay the job's.
    #[serde(default)]
    pub task_overrides: BTreeMap<u32, TaskTemplate>,
    /// The alloc set whose alloc i holds task i (see `alloc`): the tasks are placed on
    /// their allocs' machines, within what the allocs reserve, and charged to the set.
    #[serde(default)]
    pub alloc_set: Option<String>,
    /// This record is an alloc set (see `alloc::AllocSetSpec`): its tasks are allocs that
    /// reserve `task.resources` and run nothing.
    #[serde(default)]
    pub is_alloc_set: bool,
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
    #[error("job {job:?} overrides task {index}, but has only {replicas} replicas (task indices start at 0)")]
    OverrideOutOfRange {
        job: String,
        index: u32,
        replicas: u32,
    },
    #[error("task {index} (a per-task override): {source}")]
    BadOverride {
        index: u32,
        #[source]
        source: Box<JobSpecError>,
    },
    #[error("alloc set {name:?}: {reason}")]
    BadAllocSet { name: String, reason: &'static str },
    #[error("job {job:?} names alloc set {set:?}, which is not a valid name")]
    BadAllocSetName { job: String, set: String },
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

    /// The template task `index` runs: its override, else the job's.
    pub fn task_template(&self, index: u32) -> &TaskTemplate {
        self.task_overrides.get(&index).unwrap_or(&self.task)
    }

    /// Limits of task `index`.
    pub fn task_resources(&self, index: u32) -> Resources {
        self.task_template(index).resources
    }

    /// Total limits of all replicas, each with its own template: what admission charges
    /// against quota.
    pub fn total_resources(&self) -> Resources {
        let overridden = self.task_overrides.range(..self.replicas);
        let plain = u64::from(self.replicas).saturating_sub(overridden.clone().count() as u64);
        overridden.fold(self.task.resources.saturating_mul(plain), |sum, (_, t)| {
            sum + t.resources
        })
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
        if self.is_alloc_set {
            crate::alloc::validate_alloc_set(self)?;
        } else {
            self.validate_template(&self.task)?;
        }
        if let Some(set) = self.alloc_set.as_ref().filter(|s| !crate::is_valid_name(s)) {
            return Err(JobSpecError::BadAllocSetName {
                job: self.name.clone(),
                set: set.clone(),
            });
        }
        if let Some((&index, _)) = self.task_overrides.range(self.replicas..).next() {
            return Err(JobSpecError::OverrideOutOfRange {
                job: self.name.clone(),
                index,
                replicas: self.replicas,
            });
        }
        for (&index, task) in &self.task_overrides {
            self.validate_template(task)
                .map_err(|e| JobSpecError::BadOverride {
                    index,
                    source: Box::new(e),
                })?;
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

    /// What every template (the job's and each override) needs: a command, cpu and ram.
    fn validate_template(&self, task: &TaskTemplate) -> Result<(), JobSpecError> {
        if task.command.trim().is_empty() {
            return Err(JobSpecError::MissingCommand {
                job: self.name.clone(),
            });
        }
        if task.resources.cpu_millis == 0 || task.resources.ram_bytes == 0 {
            return Err(JobSpecError::EmptyResources {
                job: self.name.clone(),
            });
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

    #[test]
    fn overrides_give_tasks_their_own_template_and_total() {
        let mut s = spec();
        let mut big = s.task.clone();
        big.args = vec!["--primary".into()];
        big.resources = Resources::new(1000, 1 << 30);
        s.task_overrides.insert(1, big.clone());
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.task_template(1), &big);
        assert_eq!(s.task_template(2), &s.task);
        assert_eq!(
            s.total_resources(),
            Resources::new(200 + 1000, (128 << 20) + (1 << 30))
        );

        let mut out_of_range = s.clone();
        out_of_range.replicas = 1;
        assert_eq!(
            out_of_range.validate(),
            Err(JobSpecError::OverrideOutOfRange {
                job: "hello".into(),
                index: 1,
                replicas: 1
            })
        );
        let mut empty = s.clone();
        empty.task_overrides.insert(0, TaskTemplate::default());
        let e = empty.validate().unwrap_err();
        assert!(
            e.to_string().starts_with("task 0 (a per-task override)"),
            "{e}"
        );
    }
}
