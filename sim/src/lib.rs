//! Cell-compaction simulator and trace readers; runs the real scheduler library.

pub mod trace;
