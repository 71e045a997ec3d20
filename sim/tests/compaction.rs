//! Correctness of cell compaction on small synthetic instances: the binary search finds the
//! same minimum as trying every cell size, the result never beats an exhaustive optimal
//! packing nor the lower bound, and the same seed gives the same answer.

use borg_model::{AppClass, MachineInfo, Resources, TaskId, TaskState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sim::bound;
use sim::compact::{self, CompactConfig, Compaction};
use sim::trace::{TraceTask, Workload};

fn machine(i: usize, cpu: u64, ram: u64) -> MachineInfo {
    MachineInfo {
        name: format!("m{i}"),
        capacity: Resources::new(cpu, ram),
        ..Default::default()
    }
}

/// A task of its own job (so the scheduler's spreading term never matters).
fn task(i: usize, cpu: u64, ram: u64, priority: u32) -> TraceTask {
    TraceTask {
        id: TaskId::new(format!("job{i}"), 0),
        owner: format!("owner{}", i % 3),
        priority,
        trace_priority: 0,
        scheduling_class: 0,
        app_class: AppClass::Batch,
        request: Resources::new(cpu, ram),
        different_machines: false,
        constraints: Vec::new(),
        state: TaskState::Pending,
        machine: None,
    }
}

fn random_workload(rng: &mut ChaCha8Rng, identical_tasks: bool) -> Workload {
    let machines = (0..rng.random_range(3..=7))
        .map(|i| machine(i, rng.random_range(4..=12), rng.random_range(4..=12)))
        .collect();
    let (cpu, ram) = (rng.random_range(1..=4), rng.random_range(1..=4));
    let tasks = (0..rng.random_range(4..=10))
        .map(|i| {
            if identical_tasks {
                task(i, cpu, ram, 100)
            } else {
                task(
                    i,
                    rng.random_range(1..=6),
                    rng.random_range(1..=6),
                    rng.random_range(0..300),
                )
            }
        })
        .collect();
    Workload { machines, tasks }
}

fn config(seed: u64) -> CompactConfig {
    let mut config = CompactConfig::new();
    config.trials = 3;
    config.seed = seed;
    config.threads = 1;
    config.grow_max_percent = 0;
    config
}

/// Whether `requests` (all but `allowance` of them) can be packed on `machines`: exhaustive
/// backtracking, largest requests first.
fn packs(machines: &[MachineInfo], requests: &[Resources], allowance: usize) -> bool {
    fn place(free: &mut [Resources], requests: &[Resources], skips: usize) -> bool {
        let Some((first, rest)) = requests.split_first() else {
            return true;
        };
        for m in 0..free.len() {
            if first.fits_in(&free[m]) {
                let before = free[m];
                free[m] = before.saturating_sub(first);
                let ok = place(free, rest, skips);
                free[m] = before;
                if ok {
                    return true;
                }
            }
        }
        skips > 0 && place(free, rest, skips - 1)
    }
    let mut sorted = requests.to_vec();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.cpu_millis + r.ram_bytes));
    let mut free: Vec<Resources> = machines.iter().map(|m| m.capacity).collect();
    place(&mut free, &sorted, allowance)
}

/// The smallest prefix of `order` on which some packing exists.
fn optimum(order: &[MachineInfo], requests: &[Resources], allowance: usize) -> Option<usize> {
    (0..=order.len()).find(|&k| packs(&order[..k], requests, allowance))
}

#[test]
fn the_search_finds_the_true_minimum_on_small_instances() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (mut instances, mut monotone) = (0, 0);
    while instances < 60 {
        let identical = instances % 3 == 0;
        let workload = random_workload(&mut rng, identical);
        let config = config(instances as u64);
        let Ok(compaction) = Compaction::new(&workload, &config) else {
            continue;
        };
        let requests: Vec<Resources> = workload.tasks.iter().map(|t| t.request).collect();
        let allowance = compaction.allowance();
        for trial in 0..config.trials {
            let seed = config.seed + trial as u64;
            let order = compact::machine_order(&workload.machines, 0, seed);
            // Brute force with the same scheduler: try every cell size.
            let fits: Vec<bool> = (0..=order.len())
                .map(|k| compaction.pending_on(&order, k, seed) <= allowance)
                .collect();
            let Some(scan) = fits.iter().position(|f| *f) else {
                assert!(compaction.trial(trial).is_err());
                continue;
            };
            instances += 1;
            let result = compaction.trial(trial).expect("fits the whole cell");
            let best = optimum(&order, &requests, allowance).expect("a packing exists");
            assert!(
                result.machines >= best,
                "{result:?} beats the optimum {best}"
            );
            assert!(best >= compaction.lower_bound());
            assert!(result.prefix_bound <= best);
            if fits[scan..].iter().all(|f| *f) {
                monotone += 1;
                assert_eq!(result.machines, scan, "{workload:?} trial {trial}");
            }
            if identical {
                // Identical tasks: any non-overcommitting placement is optimal.
                assert_eq!(result.machines, best, "{workload:?}");
            }
        }
    }
    // Fit is monotone in the cell size for nearly every instance.
    assert!(monotone * 10 >= instances * 9, "{monotone} of {instances}");
}

#[test]
fn the_same_seed_gives_the_same_answer() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let machines: Vec<MachineInfo> = (0..40)
        .map(|i| machine(i, rng.random_range(8..=32), rng.random_range(8..=32)))
        .collect();
    let tasks: Vec<TraceTask> = (0..150)
        .map(|i| {
            task(
                i,
                rng.random_range(1..=6),
                rng.random_range(1..=6),
                rng.random_range(0..300),
            )
        })
        .collect();
    let workload = Workload { machines, tasks };
    let mut one = config(5);
    one.trials = 4;
    one.grow_max_percent = 50;
    let mut two = one.clone();
    two.threads = 2;
    let a = compact::compact(&workload, &one, &|_, _, _| {}).unwrap();
    let b = compact::compact(&workload, &two, &|_, _, _| {}).unwrap();
    let sizes = |r: &compact::CompactReport| {
        r.trials
            .iter()
            .map(|t| (t.trial, t.seed, t.machines, t.pending))
            .collect::<Vec<_>>()
    };
    assert_eq!(sizes(&a), sizes(&b));
    assert_eq!(a.machines_at_percentile, b.machines_at_percentile);
    assert!(a.machines_min >= a.lower_bound);
    let mut other = one.clone();
    other.seed = 99;
    let c = compact::compact(&workload, &other, &|_, _, _| {}).unwrap();
    assert_ne!(
        sizes(&a),
        sizes(&c),
        "another seed draws other machine orders"
    );
}

#[test]
fn a_cell_too_small_grows_by_cloning() {
    let machines = vec![machine(0, 10, 10), machine(1, 10, 10)];
    let tasks = (0..6).map(|i| task(i, 5, 5, 100)).collect();
    let workload = Workload { machines, tasks };
    let mut config = config(1);
    assert!(matches!(
        compact::compact(&workload, &config, &|_, _, _| {}),
        Err(compact::CompactError::DoesNotFit { .. })
    ));
    config.grow_max_percent = 100;
    let report = compact::compact(&workload, &config, &|_, _, _| {}).unwrap();
    assert_eq!(report.lower_bound, 3);
    assert_eq!(report.machines_at_percentile, 3);
    assert!((report.ratio_to_bound() - 1.0).abs() < 1e-9);
}

#[test]
fn progress_is_reported_per_trial() {
    let workload = Workload {
        machines: (0..4).map(|i| machine(i, 10, 10)).collect(),
        tasks: (0..8).map(|i| task(i, 3, 3, 100)).collect(),
    };
    let config = config(3);
    let seen = std::sync::Mutex::new(Vec::new());
    let report = compact::compact(&workload, &config, &|done, total, _| {
        seen.lock().unwrap().push((done, total));
    })
    .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![(1, 3), (2, 3), (3, 3)]);
    assert_eq!(report.trials.len(), 3);
    // 8 tasks of 3 on machines of 10 (3 each): 3 machines, and the bound says 24/10 → 3.
    assert_eq!(report.machines_at_percentile, 3);
    assert_eq!(
        bound::lower_bound(&workload.machines, &[Resources::new(3, 3); 8], 0, 0),
        Some(3)
    );
}

#[test]
fn reclamation_at_full_reservation_is_charging_by_limits() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let machines: Vec<MachineInfo> = (0..30).map(|i| machine(i, 16, 16)).collect();
    // Half production (priority 200), half batch.
    let tasks: Vec<TraceTask> = (0..120)
        .map(|i| {
            task(
                i,
                rng.random_range(1..=4),
                rng.random_range(1..=4),
                if i % 2 == 0 { 200 } else { 100 },
            )
        })
        .collect();
    let workload = Workload { machines, tasks };
    // Borg's queue order: largest-first sizes a task by its share of the cell's capacity,
    // which the reservations shrink for the second pass, so only an order that does not
    // depend on the capacity gives exactly the same plan.
    let mut limits = config(2);
    limits.placement.queue_order = scheduler::QueueOrder::RoundRobin;
    let full = CompactConfig {
        charging: sim::cell::Charging::Reclaim {
            cpu_reservation_percent: 100,
            ram_reservation_percent: 100,
        },
        ..limits.clone()
    };
    let half = CompactConfig {
        charging: sim::cell::Charging::Reclaim {
            cpu_reservation_percent: 50,
            ram_reservation_percent: 50,
        },
        ..limits.clone()
    };
    let by_limits = compact::compact(&workload, &limits, &|_, _, _| {}).unwrap();
    let at_full = compact::compact(&workload, &full, &|_, _, _| {}).unwrap();
    let at_half = compact::compact(&workload, &half, &|_, _, _| {}).unwrap();
    let sizes =
        |r: &compact::CompactReport| r.trials.iter().map(|t| t.machines).collect::<Vec<_>>();
    assert_eq!(sizes(&by_limits), sizes(&at_full));
    assert!(
        at_half.machines_at_percentile < by_limits.machines_at_percentile,
        "{} vs {}",
        at_half.machines_at_percentile,
        by_limits.machines_at_percentile
    );
}
