//! Borg-style placement library (pure) and the scheduler process loop.
//!
//! The placement library (`view`, `view_sync`, `constraint`, `class`, `order`, `work`,
//! `feasibility`, `scoring`, `schedule`, `plan`, `alloc`) does no I/O and reads no clock: the
//! simulator calls `schedule` exactly as the scheduler process does. The process loop
//! (`service`, with `config`, `commit`, `in_flight`, `metrics`, `error`) follows the master's
//! cell-state stream and commits plans.

pub mod alloc;
pub mod backlog;
pub mod cache;
pub mod class;
pub mod commit;
pub mod config;
pub mod constraint;
pub mod error;
pub mod feasibility;
pub mod in_flight;
pub mod metrics;
pub mod order;
pub mod plan;
pub mod room;
pub mod schedule;
pub mod scoring;
pub mod service;
pub mod spread;
pub mod view;
pub mod view_sync;
pub mod why;
pub mod work;

pub use cache::ScoreCache;
pub use config::SchedulerConfig;
pub use error::SchedulerError;
pub use order::QueueOrder;
pub use plan::{ConstraintFailure, Placement, Plan, UnplacedReason, Victim};
pub use schedule::{
    schedule, schedule_among, schedule_among_except, schedule_with_cache, PlacementConfig,
};
pub use scoring::FitPolicy;
pub use service::run;
pub use view::{CellView, JobView, MachineRef, MachineView, PendingTask, PlacedTask, TaskView};
pub use view_sync::{ViewSync, ViewSyncError};
pub use why::{why_pending, Change, WhyPending};
