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
//!   writes; an admin may do all of that for any owner and also set quotas and create and
//!   revoke tokens. A revoked token is simply forgotten: authentication looks tokens up in
//!   the applied state on every request, so each replica refuses it once it applied the
//!   revocation. (The bootstrap admin token lives in the replicas' configuration, not in the
//!   state, and cannot be revoked this way: replace its file.)
//! - Control-plane commands (machines, plans, reports) are never a user's.

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
    /// Master time of the entry that registered it.
    pub created_ms: u64,
}

/// Hex digits of a token's SHA-256 that name it in `borg token list` and `revoke`: enough
/// to tell 10,000 tokens apart, and a hash prefix reveals nothing of the secret.
pub const TOKEN_ID_LEN: usize = 12;

/// The public name of the token with hash `token_sha256`.
pub fn token_id(token_sha256: &str) -> &str {
    token_sha256.get(..TOKEN_ID_LEN).unwrap_or(token_sha256)
}

/// A registered token as an admin may see it: never the secret or its whole hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub admin: bool,
    pub created_index: u64,
    pub created_ms: u64,
}

impl TokenInfo {
    fn of(token_sha256: &str, record: &TokenRecord) -> TokenInfo {
        TokenInfo {
            id: token_id(token_sha256).to_owned(),
            user: record.user.clone(),
            admin: record.admin,
            created_index: record.created_index,
            created_ms: record.created_ms,
        }
    }
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
                created_ms: ctx.time_ms,
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

    /// Registered tokens (of `user`, if given), by user then creation.
    pub fn tokens_view(&self, user: Option<&str>) -> Vec<TokenInfo> {
        let mut tokens: Vec<TokenInfo> = self
            .tokens
            .iter()
            .filter(|(_, t)| user.is_none_or(|u| t.user == u))
            .map(|(hash, t)| TokenInfo::of(hash, t))
            .collect();
        tokens.sort_by(|a, b| {
            (&a.user, a.created_index, &a.id).cmp(&(&b.user, b.created_index, &b.id))
        });
        tokens
    }

    /// Forgets the token whose id starts with `target` (at least `TOKEN_ID_LEN` hex digits),
    /// or else every token of user `target`. The next request with a revoked token is
    /// refused by every replica that applied this.
    pub(crate) fn revoke_tokens(
        &mut self,
        ctx: &mut Ctx,
        target: &str,
    ) -> Result<Outcome, StateError> {
        let by_id: Vec<String> = if target.len() >= TOKEN_ID_LEN {
            self.tokens
                .keys()
                .filter(|hash| hash.starts_with(target))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        if by_id.len() > 1 {
            return Err(StateError::TokenIdAmbiguous {
                target: target.to_owned(),
                count: by_id.len(),
            });
        }
        let hashes = if by_id.is_empty() {
            self.tokens
                .iter()
                .filter(|(_, t)| t.user == target)
                .map(|(hash, _)| hash.clone())
                .collect()
        } else {
            by_id
        };
        if hashes.is_empty() {
            return Err(StateError::TokenNotFound {
                target: target.to_owned(),
            });
        }
        let mut revoked = Vec::with_capacity(hashes.len());
        for hash in hashes {
            if let Some(record) = self.tokens.remove(&hash) {
                let info = TokenInfo::of(&hash, &record);
                ctx.event(NewEvent::job(
                    "token_revoked",
                    "",
                    format!("token {} of user {} revoked", info.id, info.user),
                ));
                revoked.push(info);
            }
        }
        Ok(Outcome::TokensRevoked { tokens: revoked })
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
            Command::SetQuota { .. }
            | Command::CreateToken { .. }
            | Command::RevokeTokens { .. } => {
                if caller.admin {
                    Ok(())
                } else {
                    denied("only an admin may set quotas or create or revoke tokens; ask one".into())
                }
            }
            Command::RegisterMachine { .. }
            | Command::CommitPlan { .. }
            | Command::ApplyReports { .. }
            | Command::RecordTaskEvent { .. }
            | Command::AsUser { .. } => denied(
                "only the control plane (with the cluster token) may register machines, commit plans or report".into(),
            ),
        }
    }
}
