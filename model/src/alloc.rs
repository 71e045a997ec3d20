//! Alloc sets: resources reserved on machines for tasks of one or more jobs placed together
//! (Borg's allocs). An alloc set is admitted, placed and shown like a job whose tasks are
//! its allocs: they reserve `resources` each and run nothing. A job that names the set has
//! its task i placed in alloc i, on alloc i's machine and within what alloc i has left.

use crate::job::{Constraint, JobSpec, JobSpecError, TaskTemplate};
use crate::priority::Priority;
use crate::resources::Resources;
use serde::{Deserialize, Serialize};

/// An alloc set as declared (`alloc NAME = { ... }` in BCL).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AllocSetSpec {
    pub name: String,
    pub owner: String,
    pub priority: Priority,
    /// Number of allocs in the set.
    pub replicas: u32,
    /// Reserved by each alloc.
    pub resources: Resources,
    pub constraints: Vec<Constraint>,
}

impl AllocSetSpec {
    /// The job-shaped record the master keeps for the set: one task per alloc, reserving
    /// `resources`, with no command.
    pub fn to_job_spec(&self) -> JobSpec {
        JobSpec {
            name: self.name.clone(),
            owner: self.owner.clone(),
            priority: self.priority,
            replicas: self.replicas,
            task: TaskTemplate {
                resources: self.resources,
                ..TaskTemplate::default()
            },
            constraints: self.constraints.clone(),
            is_alloc_set: true,
            ..JobSpec::default()
        }
    }

    /// The set a job-shaped record describes, if it is one.
    pub fn from_job_spec(spec: &JobSpec) -> Option<AllocSetSpec> {
        spec.is_alloc_set.then(|| AllocSetSpec {
            name: spec.name.clone(),
            owner: spec.owner.clone(),
            priority: spec.priority,
            replicas: spec.replicas,
            resources: spec.task.resources,
            constraints: spec.constraints.clone(),
        })
    }

    pub fn validate(&self) -> Result<(), JobSpecError> {
        self.to_job_spec().validate()
    }
}

/// Checks of an alloc set's job-shaped record beyond a job's (called by `JobSpec::validate`).
pub(crate) fn validate_alloc_set(spec: &JobSpec) -> Result<(), JobSpecError> {
    let bad = |reason: &'static str| JobSpecError::BadAllocSet {
        name: spec.name.clone(),
        reason,
    };
    if !spec.task.command.is_empty()
        || !spec.task.args.is_empty()
        || !spec.task.env.is_empty()
        || !spec.task.ports.is_empty()
        || !spec.task_overrides.is_empty()
    {
        return Err(bad(
            "an alloc set runs nothing: it has no command, args, env, ports or per-task overrides",
        ));
    }
    if spec.alloc_set.is_some() {
        return Err(bad("an alloc set cannot itself be placed in an alloc set"));
    }
    if spec.task.resources.cpu_millis == 0 || spec.task.resources.ram_bytes == 0 {
        return Err(bad(
            "an alloc reserves cpu and ram: set both (for example resources = { cpu = 1 ram = 1Gi })",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> AllocSetSpec {
        AllocSetSpec {
            name: "shared".into(),
            owner: "alice".into(),
            priority: 100,
            replicas: 2,
            resources: Resources::new(500, 128 << 20),
            constraints: vec![],
        }
    }

    #[test]
    fn an_alloc_set_is_a_job_of_allocs_that_runs_nothing() {
        let spec = set().to_job_spec();
        assert!(spec.is_alloc_set);
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!(spec.total_resources(), Resources::new(1000, 256 << 20));
        assert_eq!(AllocSetSpec::from_job_spec(&spec), Some(set()));

        let mut runs = spec.clone();
        runs.task.command = "/bin/true".into();
        assert!(matches!(
            runs.validate(),
            Err(JobSpecError::BadAllocSet { .. })
        ));
        let mut empty = set();
        empty.resources.ram_bytes = 0;
        let e = empty.validate().unwrap_err();
        assert!(e.to_string().contains("reserves cpu and ram"), "{e}");
    }
}
