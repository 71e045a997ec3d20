//! Exit codes: scripts can tell "not found" from "rejected" from "cell unreachable".

use tonic::Code;

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_NOT_FOUND: u8 = 3;
pub const EXIT_REJECTED: u8 = 4;
pub const EXIT_UNAVAILABLE: u8 = 5;
pub const EXIT_TIMED_OUT: u8 = 6;

/// A wait that ran out of time (`borg job run` following a job whose tasks never ran).
#[derive(Debug)]
pub struct TimedOut {
    pub what: String,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "timed out waiting for {}", self.what)
    }
}

impl std::error::Error for TimedOut {}

/// The process exit code for an error: from the gRPC status it carries, if any.
pub fn exit_code_of(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.downcast_ref::<TimedOut>().is_some() {
            return EXIT_TIMED_OUT;
        }
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            return match status.code() {
                Code::NotFound => EXIT_NOT_FOUND,
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::AlreadyExists
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::ResourceExhausted
                | Code::OutOfRange => EXIT_REJECTED,
                Code::Unavailable | Code::DeadlineExceeded => EXIT_UNAVAILABLE,
                _ => EXIT_FAILURE,
            };
        }
    }
    EXIT_FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_distinct_codes() {
        let not_found = anyhow::Error::new(tonic::Status::not_found("no job"));
        assert_eq!(exit_code_of(&not_found), EXIT_NOT_FOUND);
        let wrapped = anyhow::Error::new(tonic::Status::unavailable("down")).context("submitting");
        assert_eq!(exit_code_of(&wrapped), EXIT_UNAVAILABLE);
        let timed_out = anyhow::Error::new(TimedOut { what: "x".into() });
        assert_eq!(exit_code_of(&timed_out), EXIT_TIMED_OUT);
        assert_eq!(exit_code_of(&anyhow::anyhow!("other")), EXIT_FAILURE);
    }
}
