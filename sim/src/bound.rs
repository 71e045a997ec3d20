//! The packing lower bound: no placement can run the work on fewer machines.
//!
//! Per dimension, the demand is the sum of the tasks' requests less the `allowance` largest
//! (those tasks may stay pending). Machine shapes count: the fewest machines whose capacity
//! covers the demand are the largest ones in that dimension, so the bound for a dimension is
//! the smallest `k` whose `k` largest machines cover it; the bound is the largest over the
//! dimensions. Within one trial, where the cell is a prefix of a random machine order, the
//! prefix must cover every dimension at once: [`prefix_bound`] is that tighter figure.

use borg_model::{MachineInfo, Resources};

/// Reads one dimension of a resource vector.
pub type Amount = fn(&Resources) -> u64;

/// The dimensions, by name, as `u64` amounts.
pub const DIMENSIONS: [(&str, Amount); 4] = [
    ("cpu", |r| r.cpu_millis),
    ("ram", |r| r.ram_bytes),
    ("disk", |r| r.disk_bytes),
    ("gpu", |r| u64::from(r.gpus)),
];

/// Demand per dimension (in [`DIMENSIONS`] order) that must be placed when `allowance` tasks
/// may stay pending: the sum less the `allowance` largest requests.
pub fn demand(requests: &[Resources], allowance: usize) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (d, (_, amount)) in DIMENSIONS.iter().enumerate() {
        let mut values: Vec<u64> = requests.iter().map(amount).collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        out[d] = values
            .iter()
            .skip(allowance)
            .fold(0u64, |sum, v| sum.saturating_add(*v));
    }
    out
}

/// Whether any demand remains, i.e. at least one machine is needed.
fn needs_a_machine(requests: &[Resources], allowance: usize) -> bool {
    requests.len() > allowance
}

/// The shape-aware lower bound on the number of machines that can run `requests` with up
/// to `allowance` left pending, when the cell is a subset of `machines` plus up to
/// `clones_max` copies of them (a grown cell); `None` when even that cannot.
pub fn lower_bound(
    machines: &[MachineInfo],
    requests: &[Resources],
    allowance: usize,
    clones_max: usize,
) -> Option<usize> {
    let demand = demand(requests, allowance);
    let mut bound = usize::from(needs_a_machine(requests, allowance));
    for (d, (_, amount)) in DIMENSIONS.iter().enumerate() {
        if demand[d] == 0 {
            continue;
        }
        let mut capacities: Vec<u64> = machines.iter().map(|m| amount(&m.capacity)).collect();
        capacities.sort_unstable_by(|a, b| b.cmp(a));
        let mut covered = 0u64;
        let k = match capacities.iter().position(|c| {
            covered = covered.saturating_add(*c);
            covered >= demand[d]
        }) {
            Some(k) => k + 1,
            // Clones at best copy the largest machine.
            None => {
                let largest = capacities.first().copied().filter(|c| *c > 0)?;
                let clones = (demand[d] - covered).div_ceil(largest);
                if clones > u64::try_from(clones_max).unwrap_or(u64::MAX) {
                    return None;
                }
                capacities.len() + usize::try_from(clones).ok()?
            }
        };
        bound = bound.max(k);
    }
    Some(bound)
}

/// The smallest prefix of `machines` (in the given order) whose capacity covers `demand` in
/// every dimension; `None` when the whole list does not.
pub fn prefix_bound(
    machines: &[&MachineInfo],
    demand: &[u64; 4],
    at_least: usize,
) -> Option<usize> {
    let mut covered = [0u64; 4];
    let covers = |covered: &[u64; 4]| covered.iter().zip(demand).all(|(c, d)| c >= d);
    if covers(&covered) {
        return Some(at_least.min(machines.len()));
    }
    for (k, machine) in machines.iter().enumerate() {
        for (d, (_, amount)) in DIMENSIONS.iter().enumerate() {
            covered[d] = covered[d].saturating_add(amount(&machine.capacity));
        }
        if covers(&covered) {
            return Some((k + 1).max(at_least).min(machines.len()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(cpu: u64, ram: u64) -> MachineInfo {
        MachineInfo {
            name: format!("m{cpu}-{ram}"),
            capacity: Resources::new(cpu, ram),
            ..Default::default()
        }
    }

    #[test]
    fn the_bound_counts_the_largest_machines_per_dimension() {
        // CPU demand 25 needs the 20- and 10-CPU machines; RAM 6 needs three 2-RAM machines.
        let machines = vec![machine(20, 2), machine(10, 2), machine(5, 2), machine(5, 1)];
        let requests = vec![Resources::new(10, 2), Resources::new(15, 4)];
        assert_eq!(lower_bound(&machines, &requests, 0, 0), Some(3));
        // Leaving the largest request pending leaves CPU 10 and RAM 2: one machine.
        assert_eq!(lower_bound(&machines, &requests, 1, 0), Some(1));
        assert_eq!(lower_bound(&machines, &requests, 2, 0), Some(0));
        // CPU 100 exceeds the cell's 40: three clones of the 20-CPU machine at best.
        let too_much = vec![Resources::new(100, 1)];
        assert_eq!(lower_bound(&machines, &too_much, 0, 2), None);
        assert_eq!(lower_bound(&machines, &too_much, 0, 3), Some(7));
    }

    #[test]
    fn a_prefix_must_cover_every_dimension() {
        let machines = [machine(20, 1), machine(1, 20), machine(5, 5)];
        let refs: Vec<&MachineInfo> = machines.iter().collect();
        assert_eq!(prefix_bound(&refs, &[20, 2, 0, 0], 0), Some(2));
        assert_eq!(prefix_bound(&refs, &[30, 2, 0, 0], 0), None);
        assert_eq!(prefix_bound(&refs, &[0, 0, 0, 0], 1), Some(1));
    }
}
