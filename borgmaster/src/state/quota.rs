//! Quotas per (user, priority band) and admission of submits against them (ARCHITECTURE.md,
//! "Priority bands").
//!
//! - A quota is a resource vector; what a job charges is its limits: the sum over its
//!   tasks, each with its own template (per-task overrides).
//! - A user may use the free band always (no quota); any other band only with a quota
//!   there. A submit must fit what remains of the owner's quota in the job's band: the quota
//!   minus the totals of the owner's other active (not finished) jobs in that band.
//! - An update is checked on the difference only: per dimension, only growth over the job's
//!   current total (if it is active in the same band and owned by the same user) must fit.
//!   So a job over its quota (after the quota was lowered) can still be shrunk or changed.
//! - A refused submit names every dimension short and by how much, and changes nothing.
//! - Setting a quota to all zero removes it (the band can no longer be used).

use super::context::Ctx;
use super::events::NewEvent;
use super::outcome::{Outcome, StateError};
use super::CellState;
use borg_model::resources::format_bytes;
use borg_model::{is_valid_name, Band, JobSpec, Resources};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most (user, band) quotas the cell holds.
pub const QUOTAS_MAX: usize = 30_000;

/// One dimension in which a submit does not fit: it needs `needed` more, `remaining` is left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    pub dimension: String,
    pub needed: u64,
    pub remaining: u64,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let amount = |n: u64| format_amount(&self.dimension, n);
        write!(
            f,
            "{} needs {} more but {} remain (short by {})",
            self.dimension,
            amount(self.needed),
            amount(self.remaining),
            amount(self.needed.saturating_sub(self.remaining))
        )
    }
}

/// `n` in the unit of `dimension`: millicores for cpu, binary bytes for ram and disk.
fn format_amount(dimension: &str, n: u64) -> String {
    match dimension {
        "cpu" => format!("{n}m"),
        "ram" | "disk" => format_bytes(n),
        _ => n.to_string(),
    }
}

/// The shortfalls joined for a message.
pub fn format_shortfalls(shortfalls: &[Shortfall]) -> String {
    shortfalls
        .iter()
        .map(Shortfall::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a job charges to its owner's quota: the limits of all its tasks; nothing for a job
/// placed in an alloc set (the set is charged for what it reserves).
pub fn job_total(spec: &JobSpec) -> Resources {
    if spec.alloc_set.is_some() {
        return Resources::ZERO;
    }
    spec.total_resources()
}

/// A quota with what the user's active jobs use of it, for views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUsage {
    pub user: String,
    pub band: Band,
    pub limit: Resources,
    pub used: Resources,
}

impl CellState {
    pub(crate) fn set_quota(
        &mut self,
        ctx: &mut Ctx,
        user: &str,
        band: Band,
        limit: Resources,
    ) -> Result<Outcome, StateError> {
        if !is_valid_name(user) {
            return Err(StateError::InvalidRequest {
                reason: format!(
                    "user {user:?} is invalid: use 1-128 letters, digits, '-', '_' or '.'"
                ),
            });
        }
        if !band.needs_quota() {
            return Err(StateError::InvalidRequest {
                reason: "the free band needs no quota: every user may use it".into(),
            });
        }
        let key = (user.to_owned(), band);
        if limit == Resources::ZERO {
            self.quotas.remove(&key);
        } else {
            if !self.quotas.contains_key(&key) && self.quotas.len() >= QUOTAS_MAX {
                return Err(StateError::CellFull {
                    what: "quotas".into(),
                    count: self.quotas.len(),
                });
            }
            self.quotas.insert(key, limit);
        }
        ctx.event(NewEvent::job(
            "quota_set",
            "",
            format!("quota of {user} in band {} set to {limit}", band.name()),
        ));
        Ok(Outcome::QuotaSet {
            user: user.to_owned(),
            band,
        })
    }

    /// Admission of a submit of `spec` against its owner's quota in its band.
    pub(crate) fn admit(&self, spec: &JobSpec) -> Result<(), StateError> {
        let band = Band::of(spec.priority);
        if !band.needs_quota() {
            return Ok(());
        }
        let Some(limit) = self.quotas.get(&(spec.owner.clone(), band)) else {
            return Err(StateError::NoQuota {
                user: spec.owner.clone(),
                band: band.name().into(),
                job: spec.name.clone(),
                priority: spec.priority,
            });
        };
        let current = self
            .jobs
            .get(&spec.name)
            .filter(|j| {
                !j.is_finished() && j.spec.owner == spec.owner && Band::of(j.spec.priority) == band
            })
            .map(|j| job_total(&j.spec))
            .unwrap_or(Resources::ZERO);
        let growth = job_total(spec).saturating_sub(&current);
        let remaining = limit.saturating_sub(&self.quota_used(&spec.owner, band));
        let shortfalls: Vec<Shortfall> = growth
            .exceeded_dimensions(&remaining)
            .into_iter()
            .map(|dimension| Shortfall {
                dimension: dimension.into(),
                needed: dimension_of(&growth, dimension),
                remaining: dimension_of(&remaining, dimension),
            })
            .collect();
        if shortfalls.is_empty() {
            return Ok(());
        }
        Err(StateError::QuotaExceeded {
            user: spec.owner.clone(),
            band: band.name().into(),
            job: spec.name.clone(),
            shortfalls,
        })
    }

    /// Totals of `user`'s active jobs in `band`.
    fn quota_used(&self, user: &str, band: Band) -> Resources {
        self.jobs
            .values()
            .filter(|j| {
                !j.is_finished() && j.spec.owner == user && Band::of(j.spec.priority) == band
            })
            .fold(Resources::ZERO, |sum, j| sum + job_total(&j.spec))
    }

    /// Quotas (of `user` if given) in (user, band) order with their use: one pass over the
    /// jobs, not one per quota.
    pub fn quotas_view(&self, user: Option<&str>) -> Vec<QuotaUsage> {
        let mut used: BTreeMap<(&str, Band), Resources> = BTreeMap::new();
        for job in self.jobs.values().filter(|j| !j.is_finished()) {
            if user.is_some_and(|want| job.spec.owner != want) {
                continue;
            }
            *used
                .entry((job.spec.owner.as_str(), Band::of(job.spec.priority)))
                .or_default() += job_total(&job.spec);
        }
        self.quotas
            .iter()
            .filter(|((u, _), _)| user.is_none_or(|want| u == want))
            .map(|((u, band), limit)| QuotaUsage {
                user: u.clone(),
                band: *band,
                limit: *limit,
                used: used
                    .get(&(u.as_str(), *band))
                    .copied()
                    .unwrap_or(Resources::ZERO),
            })
            .collect()
    }
}

fn dimension_of(resources: &Resources, dimension: &str) -> u64 {
    match dimension {
        "cpu" => resources.cpu_millis,
        "ram" => resources.ram_bytes,
        "disk" => resources.disk_bytes,
        _ => u64::from(resources.gpus),
    }
}
