//! Ports for tasks' named ports (`ports = ['http', 'admin']` in BCL): handed out from the
//! borglet's range, held for the life of an incarnation (restarts keep them, so clients can
//! reconnect), skipped when another process on the machine has them bound, and released when
//! the incarnation ends.

use crate::assignment::TaskKey;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// First and last port of the range handed out when not configured otherwise.
pub const PORT_RANGE_DEFAULT: (u16, u16) = (20_000, 29_999);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("no free port left in {first}-{last} for port {name:?} (the machine's range is used up; free tasks or widen the borglet's port range)")]
    Exhausted { name: String, first: u16, last: u16 },
}

/// A task's ports, by port name.
pub type TaskPorts = BTreeMap<String, u16>;

#[derive(Debug)]
pub struct PortAllocator {
    first: u16,
    last: u16,
    /// Whether nothing else on the machine holds a port (`bindable`; tests replace it).
    is_free: fn(u16) -> bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    by_task: BTreeMap<TaskKey, TaskPorts>,
    in_use: BTreeSet<u16>,
    /// Where the next search starts: ports are handed out round the range, so a port just
    /// released is not reused at once (a client of the old task may still dial it).
    next: u16,
}

impl PortAllocator {
    /// Hands out ports `first..=last` (swapped if given the wrong way round).
    pub fn new(first: u16, last: u16) -> PortAllocator {
        PortAllocator::with_probe(first, last, bindable)
    }

    fn with_probe(first: u16, last: u16, is_free: fn(u16) -> bool) -> PortAllocator {
        let (first, last) = (first.min(last), first.max(last));
        PortAllocator {
            first,
            last,
            is_free,
            state: Mutex::new(State {
                next: first,
                ..State::default()
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ports of `key`, allocating those of `names` it does not hold yet.
    pub fn ports_of(&self, key: &TaskKey, names: &[String]) -> Result<TaskPorts, PortError> {
        let mut state = self.state();
        let mut held = state.by_task.get(key).cloned().unwrap_or_default();
        for name in names {
            if held.contains_key(name) {
                continue;
            }
            let Some(port) = self.find_free(&mut state) else {
                // Keep what was handed out so far: release happens with the task.
                state.by_task.insert(key.clone(), held);
                return Err(PortError::Exhausted {
                    name: name.clone(),
                    first: self.first,
                    last: self.last,
                });
            };
            state.in_use.insert(port);
            held.insert(name.clone(), port);
        }
        state.by_task.insert(key.clone(), held.clone());
        Ok(held)
    }

    /// Scans the range once from `next` for a port no task holds and nothing has bound.
    fn find_free(&self, state: &mut State) -> Option<u16> {
        let size = u32::from(self.last - self.first) + 1;
        let start = u32::from(state.next.clamp(self.first, self.last) - self.first);
        (0..size)
            .map(|step| self.first + ((start + step) % size) as u16)
            .find(|port| !state.in_use.contains(port) && (self.is_free)(*port))
            .inspect(|port| {
                state.next = if *port == self.last {
                    self.first
                } else {
                    port + 1
                };
            })
    }

    /// Takes back ports recorded by an earlier run of the borglet (re-adoption).
    pub fn restore(&self, key: &TaskKey, ports: &TaskPorts) {
        if ports.is_empty() {
            return;
        }
        let mut state = self.state();
        state.in_use.extend(ports.values().copied());
        state.by_task.insert(key.clone(), ports.clone());
    }

    /// The ports `key` holds (empty if none).
    pub fn held(&self, key: &TaskKey) -> TaskPorts {
        self.state().by_task.get(key).cloned().unwrap_or_default()
    }

    /// Frees the ports of an incarnation that ended.
    pub fn release(&self, key: &TaskKey) {
        let mut state = self.state();
        if let Some(ports) = state.by_task.remove(key) {
            for port in ports.values() {
                state.in_use.remove(port);
            }
        }
    }
}

/// Whether a TCP listener could bind the port on every address now.
fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// The environment name of a port: `BORG_PORT_` and the name in upper case, other
/// characters as `_`.
pub fn env_name(port_name: &str) -> String {
    let suffix: String = port_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("BORG_PORT_{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(index: u32) -> TaskKey {
        TaskKey {
            job: "web".into(),
            index,
            incarnation: 1,
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// TEST DOUBLE for the bind probe: every port is free, so the tests of the bookkeeping
    /// do not depend on what other tests have bound at the moment.
    fn all_free(_port: u16) -> bool {
        true
    }

    fn allocator(first: u16, last: u16) -> PortAllocator {
        PortAllocator::with_probe(first, last, all_free)
    }

    #[test]
    fn a_task_keeps_its_ports_and_tasks_never_share_one() {
        let (first, last) = (40_000, 40_007);
        let ports = allocator(first, last);
        let a = ports.ports_of(&key(0), &names(&["http", "admin"])).unwrap();
        assert_eq!(a.len(), 2);
        assert!(a.values().all(|p| (first..=last).contains(p)));
        assert_eq!(
            ports.ports_of(&key(0), &names(&["http", "admin"])).unwrap(),
            a
        );
        let b = ports.ports_of(&key(1), &names(&["http"])).unwrap();
        assert!(
            !a.values().any(|p| b.values().any(|q| p == q)),
            "{a:?} {b:?}"
        );
        assert_eq!(ports.held(&key(1)), b);
    }

    #[test]
    fn an_exhausted_range_is_a_clear_error_and_release_frees_ports() {
        let ports = allocator(40_000, 40_001);
        ports.ports_of(&key(0), &names(&["a", "b"])).unwrap();
        let error = ports.ports_of(&key(1), &names(&["http"])).unwrap_err();
        assert!(error.to_string().contains("no free port left"), "{error}");
        ports.release(&key(0));
        assert!(ports.held(&key(0)).is_empty());
        assert_eq!(ports.ports_of(&key(1), &names(&["http"])).unwrap().len(), 1);
    }

    #[test]
    fn a_port_another_process_has_bound_is_skipped() {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let taken = listener.local_addr().unwrap().port();
        // The real probe; a wide range, as other tests bind ports next to `taken` too.
        let ports = PortAllocator::new(taken, taken.saturating_add(200));
        let got = ports.ports_of(&key(0), &names(&["http"])).unwrap();
        assert_ne!(got["http"], taken);
    }

    #[test]
    fn restored_ports_are_not_handed_out_again() {
        let (first, last) = (40_000, 40_001);
        let ports = allocator(first, last);
        ports.restore(&key(0), &TaskPorts::from([("http".to_string(), first)]));
        let got = ports.ports_of(&key(1), &names(&["http"])).unwrap();
        assert_eq!(got["http"], last);
    }

    #[test]
    fn env_names_are_upper_case_identifiers() {
        assert_eq!(env_name("http"), "BORG_PORT_HTTP");
        assert_eq!(env_name("grpc-admin.2"), "BORG_PORT_GRPC_ADMIN_2");
    }
}
