//! Registering machines. A registration of a known machine updates its info and brings it
//! back `Up` if it was `Down` (its old tasks were re-pended when it went down, so they are
//! not in its desired set and its borglet stops them). A capacity below what is already
//! allocated is accepted: nothing is evicted, the scheduler just places nothing more there.

use super::context::Ctx;
use super::events::NewEvent;
use super::outcome::{Outcome, StateError};
use super::records::MachineRecord;
use super::CellState;
use borg_model::{MachineInfo, MachineState, Resources};
use std::collections::BTreeSet;

/// Most machines a cell holds.
pub const MACHINES_MAX: usize = 100_000;

impl CellState {
    pub(crate) fn register_machine(
        &mut self,
        ctx: &mut Ctx,
        info: &MachineInfo,
    ) -> Result<Outcome, StateError> {
        validate(info)?;
        let outcome = Outcome::MachineRegistered {
            name: info.name.clone(),
        };
        let Some(machine) = self.machines.get_mut(&info.name) else {
            if self.machines.len() >= MACHINES_MAX {
                return Err(StateError::CellFull {
                    what: "machines".into(),
                    count: self.machines.len(),
                });
            }
            self.machines.insert(
                info.name.clone(),
                MachineRecord {
                    info: info.clone(),
                    state: MachineState::Up,
                    version: 1,
                    last_report_ms: 0,
                    usage: Resources::ZERO,
                    placed: BTreeSet::new(),
                },
            );
            ctx.touch_machine(&info.name);
            ctx.event(NewEvent::machine(
                "machine_registered",
                &info.name,
                format!("at {} with {}", info.address, info.capacity),
            ));
            return Ok(outcome);
        };
        if machine.info == *info && machine.state != MachineState::Down {
            return Ok(outcome);
        }
        if machine.state == MachineState::Down {
            machine.state = MachineState::Up;
            ctx.event(NewEvent::machine(
                "machine_up",
                &info.name,
                "registered again".into(),
            ));
        }
        if machine.info != *info {
            ctx.event(NewEvent::machine(
                "machine_registered",
                &info.name,
                format!("updated: at {} with {}", info.address, info.capacity),
            ));
            machine.info = info.clone();
        }
        machine.version += 1;
        ctx.touch_machine(&info.name);
        Ok(outcome)
    }
}

fn validate(info: &MachineInfo) -> Result<(), StateError> {
    let reason = if !borg_model::is_valid_name(&info.name) {
        format!(
            "machine name {:?} is invalid: use 1-128 letters, digits, '-', '_' or '.'",
            info.name
        )
    } else if info.address.trim().is_empty() {
        format!(
            "machine {:?} has no address: set the borglet's host:port",
            info.name
        )
    } else if info.capacity.cpu_millis == 0 || info.capacity.ram_bytes == 0 {
        format!(
            "machine {:?} offers no cpu or no ram ({}): set its capacity",
            info.name, info.capacity
        )
    } else {
        return Ok(());
    };
    Err(StateError::InvalidMachine { reason })
}
