//! The cell's domain model, shared by the master, the scheduler, the borglet, the BCL
//! evaluator and the simulator.
//!
//! This crate is deliberately free of tokio, tonic and RocksDB so that the pure parts of the
//! system (the state machine, the placement library, the simulator) can depend on it.

pub mod alloc;
pub mod job;
pub mod machine;
pub mod priority;
pub mod resources;
pub mod task;

pub use alloc::AllocSetSpec;
pub use job::{AppClass, Constraint, ConstraintOp, JobSpec, JobType, RestartPolicy, TaskTemplate};
pub use machine::{ports_needed, MachineInfo, MachineState, MACHINE_PORT_CAPACITY_DEFAULT};
pub use priority::{Band, Priority};
pub use resources::Resources;
pub use task::{TaskId, TaskState};

/// Longest job name accepted anywhere; names become directory and cgroup names.
pub const JOB_NAME_MAX_LEN: usize = 128;

/// Whether `name` is usable as a job, user or machine name: it becomes part of paths,
/// cgroup names and log file names, so only a conservative character set is allowed.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= JOB_NAME_MAX_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_a_path_are_invalid() {
        assert!(is_valid_name("hello-world_1.v2"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("../etc"));
        assert!(!is_valid_name("a/b"));
        assert!(!is_valid_name(".hidden"));
        assert!(!is_valid_name(&"x".repeat(JOB_NAME_MAX_LEN + 1)));
    }
}
