//! Machines of the cell.

use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a borglet registers about its machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MachineInfo {
    /// Unique machine name in the cell.
    pub name: String,
    /// `host:port` of the borglet's RPC endpoint, polled by the link shard.
    pub address: String,
    /// What tasks may be given on this machine.
    pub capacity: Resources,
    /// Attributes for constraints and failure domains (`rack`, `power`, `os_version`, ...).
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MachineState {
    #[default]
    Up,
    /// Its link shard lost contact; its tasks were marked lost.
    Down,
    /// An operator asked that nothing new be placed here.
    Draining,
}

impl MachineState {
    pub fn name(self) -> &'static str {
        match self {
            MachineState::Up => "up",
            MachineState::Down => "down",
            MachineState::Draining => "draining",
        }
    }
}
