//! The gRPC services of a replica, one module each, over a shared `ReplicaContext`.

pub mod auth;
pub mod cell;
pub mod link;
pub mod replica;
pub mod scheduler;
pub mod task_access;

use crate::state::Outcome;
use crate::wire::state_error_status;
use tonic::Status;

/// A rejected entry as its status; anything else is passed on for the caller to match.
fn accepted(outcome: Outcome) -> Result<Outcome, Status> {
    match outcome {
        Outcome::Rejected(error) => Err(state_error_status(&error)),
        other => Ok(other),
    }
}

/// An outcome that does not belong to the command proposed: a bug, not the caller's fault.
fn unexpected(outcome: &Outcome) -> Status {
    tracing::error!(?outcome, "unexpected outcome for the command proposed");
    Status::internal(format!(
        "unexpected outcome {outcome:?}; this is a bug in the master"
    ))
}
