//! Machines of the cell.

use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Ports a machine offers tasks when its borglet does not say (registrations from before
/// the field existed): the size of the borglet's default `--port-range`, 20000-29999.
pub const MACHINE_PORT_CAPACITY_DEFAULT: u32 = 10_000;

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
    /// How many ports the borglet hands out to tasks (the size of its `--port-range`);
    /// `None`: not reported, `MACHINE_PORT_CAPACITY_DEFAULT`.
    #[serde(default)]
    pub port_capacity: Option<u32>,
}

impl MachineInfo {
    /// Ports tasks may hold on the machine at once.
    pub fn ports(&self) -> u32 {
        self.port_capacity.unwrap_or(MACHINE_PORT_CAPACITY_DEFAULT)
    }
}

/// Ports of a machine's range one task holds: one per distinct port name (the borglet
/// allocates by name; `%port%` is the first named port, not an extra one).
pub fn ports_needed(names: &[String]) -> u32 {
    let distinct: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    u32::try_from(distinct.len()).unwrap_or(u32::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_count_distinct_names_and_capacity_has_a_default() {
        let names = ["http".to_string(), "admin".into(), "http".into()];
        assert_eq!(ports_needed(&names), 2);
        assert_eq!(ports_needed(&[]), 0);
        assert_eq!(
            MachineInfo::default().ports(),
            MACHINE_PORT_CAPACITY_DEFAULT
        );
        let info = MachineInfo {
            port_capacity: Some(3),
            ..MachineInfo::default()
        };
        assert_eq!(info.ports(), 3);
    }
}
