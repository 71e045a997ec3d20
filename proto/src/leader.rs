//! How a follower tells a caller where the leader is.
//!
//! A replica that cannot serve a write (or a consistent read) answers `UNAVAILABLE` with the
//! leader's address in the `borg-leader` metadata entry, when it knows it. Clients retry there.

use tonic::{Code, Status};

/// Metadata key carrying the leader's `host:port`.
pub const LEADER_METADATA_KEY: &str = "borg-leader";

/// The status a follower returns for a request only the leader can serve.
pub fn not_leader(leader_address: Option<&str>) -> Status {
    match leader_address {
        Some(address) => {
            let mut status = Status::unavailable(format!(
                "this replica is not the leader; retry at the leader {address}"
            ));
            if let Ok(value) = address.parse() {
                status.metadata_mut().insert(LEADER_METADATA_KEY, value);
            }
            status
        }
        None => Status::unavailable(
            "no leader is elected yet (the replicas may be starting or partitioned); retry shortly",
        ),
    }
}

/// The leader's address named by a `not_leader` status, if any.
pub fn leader_hint(status: &Status) -> Option<String> {
    if status.code() != Code::Unavailable {
        return None;
    }
    status
        .metadata()
        .get(LEADER_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_round_trips() {
        let status = not_leader(Some("127.0.0.1:7101"));
        assert_eq!(leader_hint(&status).as_deref(), Some("127.0.0.1:7101"));
        assert_eq!(leader_hint(&not_leader(None)), None);
        assert_eq!(leader_hint(&Status::internal("x")), None);
    }
}
