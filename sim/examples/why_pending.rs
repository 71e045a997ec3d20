//! Prints why tasks stay pending when the Google slice's production tasks are placed on the
//! first K machines of trial 0's order (a diagnostic of compaction results).
use sim::compact::machine_order;
use sim::trace::google2011;
use std::collections::BTreeMap;

fn main() {
    let k: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let dir = std::path::Path::new("../shared/traces/google-2011");
    let options = google2011::Google2011Options::new(google2011::TRACE_WINDOW_START_US);
    let trace = match google2011::load(dir, &options) {
        Ok(trace) => trace,
        Err(error) => return eprintln!("{error}"),
    };
    let workload = sim::workload::production(trace.workload);
    let order = machine_order(&workload.machines, 0, 0);
    let pending = sim::cell::pending_tasks(&workload.tasks);
    let plan = sim::cell::place(
        &order[..k.min(order.len())],
        &pending,
        &Default::default(),
        0,
    );
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (_, reason) in &plan.unplaced {
        *reasons.entry(reason.to_string()).or_default() += 1;
    }
    println!(
        "k {k}: {} placed, {} unplaced",
        plan.placements.len(),
        plan.unplaced.len()
    );
    for (reason, count) in reasons.iter().take(10) {
        println!("{count:>6}  {reason}");
    }
}
