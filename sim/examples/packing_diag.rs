//! What limits the packing: places the Google slice's production tasks on the first K
//! machines of a trial's order and prints, per dimension, the cell's use, the room stranded
//! on machines where another dimension is exhausted, and the shapes of the tasks left
//! pending.
//!
//! (Replaces the why_pending example: it also prints why tasks stay pending.)
//!
//! Arguments: `K [SEED] [POLICY] [CANDIDATES] [EXAMINED] [ORDER]` (defaults: seed 0, hybrid,
//! the scheduler's default numbers of feasible candidates and machines examined, its
//! default queue order; ORDER `largest-first` presents the tasks largest first).
use sim::compact::machine_order;
use sim::trace::google2011;
use std::collections::{BTreeMap, HashMap};

/// A machine counts as exhausted in a dimension above this use (per mille).
const EXHAUSTED_PERMILLE: u64 = 950;

fn main() {
    let arg = |i: usize| std::env::args().nth(i).filter(|a| !a.is_empty());
    let k: usize = arg(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let seed: u64 = arg(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut config = scheduler::PlacementConfig::new();
    if let Some(policy) = arg(3).and_then(|p| sim::policy::parse(&p)) {
        config.fit_policy = policy;
    }
    if let Some(candidates) = arg(4).and_then(|s| s.parse().ok()) {
        config.feasible_candidates_max = candidates;
    }
    if let Some(examined) = arg(5).and_then(|s| s.parse().ok()) {
        config.machines_examined_max = examined;
    }
    if arg(6).as_deref() == Some("largest-first") {
        config.queue_order = scheduler::QueueOrder::LargestFirst;
    }
    let dir = std::path::Path::new("../shared/traces/google-2011");
    let options = google2011::Google2011Options::new(google2011::TRACE_WINDOW_START_US);
    let trace = match google2011::load(dir, &options) {
        Ok(trace) => trace,
        Err(error) => return eprintln!("{error}"),
    };
    let workload = sim::workload::production(trace.workload);
    let order = machine_order(&workload.machines, 0, seed);
    let cell = &order[..k.min(order.len())];
    let pending = sim::cell::pending_tasks(&workload.tasks);
    let started = std::time::Instant::now();
    let plan = sim::cell::place(cell, &pending, &config, seed);
    println!(
        "k {k} seed {seed} {}: {} placed, {} unplaced, {:.1} s",
        config.fit_policy.name(),
        plan.placements.len(),
        plan.unplaced.len(),
        started.elapsed().as_secs_f64()
    );
    let limits: HashMap<_, _> = pending.iter().map(|t| (&t.id, t.limits)).collect();
    let mut used: HashMap<&str, borg_model::Resources> = HashMap::new();
    for p in &plan.placements {
        if let Some(l) = limits.get(&p.task) {
            *used.entry(p.machine.as_str()).or_default() += *l;
        }
    }
    // Per dimension (cpu, ram): capacity, used, free on machines exhausted in the other.
    let (mut cap, mut use_, mut stranded) = ([0u128; 2], [0u128; 2], [0u128; 2]);
    let mut buckets: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for m in cell {
        let u = used.get(m.name.as_str()).copied().unwrap_or_default();
        let c = [m.capacity.cpu_millis, m.capacity.ram_bytes];
        let v = [u.cpu_millis, u.ram_bytes];
        let permille = |d: usize| (v[d] as u128 * 1000 / c[d].max(1) as u128) as u64;
        for d in 0..2 {
            cap[d] += c[d] as u128;
            use_[d] += v[d] as u128;
            if permille(1 - d) >= EXHAUSTED_PERMILLE {
                stranded[d] += (c[d] - v[d].min(c[d])) as u128;
            }
        }
        *buckets
            .entry((permille(0) / 100 * 10, permille(1) / 100 * 10))
            .or_default() += 1;
    }
    let demand = pending.iter().fold([0u128; 2], |sum, t| {
        [
            sum[0] + u128::from(t.limits.cpu_millis),
            sum[1] + u128::from(t.limits.ram_bytes),
        ]
    });
    for (d, name) in ["cpu", "ram"].iter().enumerate() {
        println!(
            "{name}: the work asks for {:.1}% of the cell",
            demand[d] as f64 * 100.0 / cap[d] as f64
        );
        println!(
            "{name}: used {:.1}% of the cell; free {:.1}% of the cell, of which {:.1}% of the cell stranded (the other dimension >= {}%)",
            use_[d] as f64 * 100.0 / cap[d] as f64,
            (cap[d] - use_[d]) as f64 * 100.0 / cap[d] as f64,
            stranded[d] as f64 * 100.0 / cap[d] as f64,
            EXHAUSTED_PERMILLE / 10
        );
    }
    println!("machines by (cpu %, ram %) used, in 10% buckets:");
    for ((c, r), n) in &buckets {
        if *n >= k / 200 {
            println!("  cpu {c:>3}% ram {r:>3}%: {n}");
        }
    }
    let mut shapes: BTreeMap<(u64, u64, u32), usize> = BTreeMap::new();
    for (id, _) in &plan.unplaced {
        if let Some(l) = limits.get(id) {
            let p = pending
                .iter()
                .find(|t| &t.id == id)
                .map_or(0, |t| t.priority);
            *shapes
                .entry((l.cpu_millis, l.ram_bytes >> 20, p))
                .or_default() += 1;
        }
    }
    println!("unplaced shapes (cpu millis, ram MiB, priority): count");
    let mut shapes: Vec<_> = shapes.into_iter().collect();
    shapes.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for ((c, r, p), n) in shapes.iter().take(15) {
        println!("  {c:>6} {r:>7} {p:>4}: {n}");
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (_, reason) in &plan.unplaced {
        *reasons.entry(reason.to_string()).or_default() += 1;
    }
    for (reason, count) in reasons.iter().take(5) {
        println!("{count:>6}  {reason}");
    }
}
