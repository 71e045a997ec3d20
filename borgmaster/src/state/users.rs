//! Users and their tokens, and what a user may ask of the cell (docs/security.md).
//!
//! - Tokens are stored by their SHA-256 (hex) with the user they stand for and whether that
//!   user is an admin; the secret never reaches the log. A token hash is registered once:
//!   registering it again for another user is refused.
//! - Every request a user makes reaches the log wrapped in `Command::AsUser` with the
//!   identity the RPC edge authenticated; `authorize` decides here, in `apply`, so that
//!   ownership is checked against the state the command is applied to (no check-then-act
//!   race between an RPC handler and the log).
//! - A user may submit jobs it owns, update or kill jobs it owns, and nothing else that
//!   writes; an admin may do all of that for any owner and also set quotas and create
//!   tokens. Control-plane commands (machines, plans, reports) are never a user's.

use super::command::Command;
use super::context::Ctx;
use super::events::NewEvent;
use super::outcome::{Outcome, StateError};
use super::CellState;
use borg_model::is_valid_name;
use serde::{Deserialize, Serialize};

/// Most tokens the cell holds.
pub const TOKENS_MAX: usize = 10_000;
/// Length of a hex SHA-256.
const TOKEN_HASH_LEN: usize = 64;

/// The authenticated identity a user command runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub user: String,
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub user: String,
    pub admin: bool,
    pub created_index: u64,
}

impl CellState {
    /// The user a token hash stands for: (user, admin).
    pub fn token_user(&self, token_sha256: &str) -> Option<(&str, bool)> {
        self.tokens
            .get(token_sha256)
            .map(|t| (t.user.as_str(), t.admin))
    }

    pub(crate) fn create_token(
        &mut self,
        ctx: &mut Ctx,
        token_sha256: &str,
        user: &str,
        admin: bool,
    ) -> Result<Outcome, StateError> {
        let invalid = |reason: String| Err(StateError::InvalidRequest { reason });
        if !is_valid_name(user) {
            return invalid(format!(
                "user {user:?} is invalid: use 1-128 letters, digits, '-', '_' or '.'"
            ));
        }
        if token_sha256.len() != TOKEN_HASH_LEN
            || !token_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return invalid("token_sha256 must be 64 lowercase hex digits".into());
        }
        if let Some(existing) = self.tokens.get(token_sha256) {
            if existing.user == user && existing.admin == admin {
                return Ok(Outcome::TokenCreated { user: user.into() });
            }
            return invalid("this token is already registered; generate a new one".into());
        }
        if self.tokens.len() >= TOKENS_MAX {
            return Err(StateError::CellFull {
                what: "tokens".into(),
                count: self.tokens.len(),
            });
        }
        self.tokens.insert(
            token_sha256.to_owned(),
            TokenRecord {
                user: user.to_owned(),
                admin,
                created_index: ctx.index,
            },
        );
        ctx.event(NewEvent::job(
            "token_created",
            "",
            format!(
                "token created for {}user {user}",
                if admin { "admin " } else { "" }
            ),
        ));
        Ok(Outcome::TokenCreated { user: user.into() })
    }

    /// Whether `caller` may have `command` applied; the reason names what to do if not.
    pub(crate) fn authorize(&self, caller: &Caller, command: &Command) -> Result<(), StateError> {
        let denied = |reason: String| {
            Err(StateError::PermissionDenied {
                user: caller.user.clone(),
                reason,
            })
        };
        match command {
            Command::Noop => Ok(()),
            Command::SubmitJob { spec, .. } => {
                if caller.admin {
                    return Ok(());
                }
                if spec.owner != caller.user {
                    return denied(format!(
                        "only an admin may submit a job owned by someone else; set `owner = '{}'` in job {} or leave it out",
                        caller.user, spec.name
                    ));
                }
                match self.jobs.get(&spec.name) {
                    Some(job) if job.spec.owner != caller.user => denied(format!(
                        "job {} belongs to {}: only its owner or an admin may update it; choose another job name",
                        spec.name, job.spec.owner
                    )),
                    _ => Ok(()),
                }
            }
            Command::KillJob { name } => match self.jobs.get(name) {
                Some(job) if !caller.admin && job.spec.owner != caller.user => denied(format!(
                    "job {name} belongs to {}: only its owner or an admin may kill it",
                    job.spec.owner
                )),
                _ => Ok(()),
            },
            Command::SetQuota { .. } | Command::CreateToken { .. } => {
                if caller.admin {
                    Ok(())
                } else {
                    denied("only an admin may set quotas or create tokens; ask one".into())
                }
            }
            Command::RegisterMachine { .. }
            | Command::CommitPlan { .. }
            | Command::ApplyReports { .. }
            | Command::AsUser { .. } => denied(
                "only the control plane (with the cluster token) may register machines, commit plans or report".into(),
            ),
        }
    }
}
