//! Cell-compaction simulator and trace readers; runs the real scheduler library.

pub mod bound;
pub mod cell;
pub mod compact;
pub mod experiment;
pub mod figure;
pub mod fit;
pub mod font;
pub mod online;
pub mod policy;
pub mod trace;
pub mod workload;
