//! The Google ClusterData2011 reader on the real slice in ../shared/traces (read in place,
//! never copied). Skips with a note when the traces are absent.

use borg_model::{Band, TaskState};
use sim::trace::google2011::{self, Google2011Options, TRACE_WINDOW_START_US};
use std::path::PathBuf;

fn slice_dir() -> Option<PathBuf> {
    // The workspace root is the parent of this crate's manifest directory.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces/google-2011");
    if dir.join("task_events").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: Google 2011 trace slice not found at {}",
            dir.display()
        );
        None
    }
}

/// Share of `capacity` that `demand` makes, in percent.
fn percent(demand: u64, capacity: u64) -> f64 {
    demand as f64 * 100.0 / capacity as f64
}

#[test]
fn the_slice_at_the_window_start_matches_its_provenance() {
    let Some(dir) = slice_dir() else { return };
    let trace = google2011::load(&dir, &Google2011Options::new(TRACE_WINDOW_START_US))
        .expect("the slice reads without errors");
    let workload = &trace.workload;
    let running: Vec<_> = workload
        .tasks
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .collect();
    let pending = workload.tasks.len() - running.len();
    let cpu_capacity: u64 = workload
        .machines
        .iter()
        .map(|m| m.capacity.cpu_millis)
        .sum();
    let ram_capacity: u64 = workload.machines.iter().map(|m| m.capacity.ram_bytes).sum();
    let cpu_running: u64 = running.iter().map(|t| t.request.cpu_millis).sum();
    let ram_running: u64 = running.iter().map(|t| t.request.ram_bytes).sum();
    let prod = running.iter().filter(|t| Band::of(t.priority).is_prod());
    let (cpu_prod, ram_prod) = prod.fold((0, 0), |(c, r), t| {
        (c + t.request.cpu_millis, r + t.request.ram_bytes)
    });
    eprintln!(
        "machines {} running {} pending {} cpu {:.1}% ram {:.1}% prod cpu {:.1}% ram {:.1}% {:?}",
        workload.machines.len(),
        running.len(),
        pending,
        percent(cpu_running, cpu_capacity),
        percent(ram_running, ram_capacity),
        percent(cpu_prod, cpu_capacity),
        percent(ram_prod, ram_capacity),
        trace.stats
    );
    // PROVENANCE.txt: about 12,477 machines up, 133k running and 11k pending tasks; running
    // requests about 113% of CPU and 93% of memory, production alone 73% and 58%.
    assert_eq!(workload.machines.len(), 12_477);
    assert!(
        (132_000..=134_000).contains(&running.len()),
        "{}",
        running.len()
    );
    assert!((10_800..=11_800).contains(&pending), "{pending}");
    assert!((112.5..=114.5).contains(&percent(cpu_running, cpu_capacity)));
    assert!((92.3..=94.3).contains(&percent(ram_running, ram_capacity)));
    assert!((72.2..=74.2).contains(&percent(cpu_prod, cpu_capacity)));
    assert!((57.5..=59.5).contains(&percent(ram_prod, ram_capacity)));
    assert_eq!(trace.stats.machines_without_capacity, 0);
    // Every running task names a machine of the list; names are valid everywhere.
    let names: std::collections::HashSet<&str> =
        workload.machines.iter().map(|m| m.name.as_str()).collect();
    for task in &workload.tasks {
        assert!(borg_model::is_valid_name(&task.id.job), "{}", task.id);
        assert!(borg_model::is_valid_name(&task.owner), "{}", task.owner);
        if let Some(machine) = &task.machine {
            assert!(names.contains(machine.as_str()), "{machine}");
        }
    }
}

#[test]
fn a_missing_table_is_named() {
    let dir = std::env::temp_dir().join(format!("borg-sim-empty-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("machine_events")).unwrap();
    let result = google2011::load(&dir, &Google2011Options::new(0));
    std::fs::remove_dir_all(&dir).unwrap();
    let error = result.unwrap_err();
    assert!(
        matches!(
            error,
            sim::trace::TraceError::MissingTable {
                table: "machine_events",
                ..
            }
        ),
        "{error}"
    );
}
