//! The Alibaba GPU 2023 reader on the real lists in ../shared/traces (read in place, never
//! copied). Skips with a note when the traces are absent.

use borg_model::Band;
use sim::trace::alibaba2023::{self, GPU_MILLI_PER_GPU};
use std::path::PathBuf;

fn trace_dir() -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces/alibaba-gpu-2023");
    if dir.join(alibaba2023::PODS_DEFAULT_FILE).is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: Alibaba GPU 2023 lists not found at {}",
            dir.display()
        );
        None
    }
}

#[test]
fn the_default_lists_match_their_provenance() {
    let Some(dir) = trace_dir() else { return };
    let workload = alibaba2023::load(
        &dir.join(alibaba2023::NODES_ALL_FILE),
        &dir.join(alibaba2023::PODS_DEFAULT_FILE),
    )
    .expect("the lists read without errors");
    // PROVENANCE.txt: 1,523 nodes with 125,514 cores, 597,684 GiB and 6,212 GPUs; 8,152 pods.
    assert_eq!(workload.machines.len(), 1_523);
    assert_eq!(workload.tasks.len(), 8_152);
    let cores: u64 = workload
        .machines
        .iter()
        .map(|m| m.capacity.cpu_millis)
        .sum::<u64>()
        / 1000;
    let gib: u64 = workload
        .machines
        .iter()
        .map(|m| m.capacity.ram_bytes)
        .sum::<u64>()
        >> 30;
    let gpus: u32 = workload
        .machines
        .iter()
        .map(|m| m.capacity.gpus)
        .sum::<u32>()
        / GPU_MILLI_PER_GPU;
    assert_eq!((cores, gib, gpus), (125_514, 597_684, 6_212));
    // Pods request about 68% of the cores; sharing pods ask for less than a whole GPU.
    let pod_cores: u64 = workload
        .tasks
        .iter()
        .map(|t| t.request.cpu_millis)
        .sum::<u64>()
        / 1000;
    assert!((85_000..=86_000).contains(&pod_cores), "{pod_cores}");
    assert!(workload
        .tasks
        .iter()
        .any(|t| t.request.gpus > 0 && t.request.gpus < GPU_MILLI_PER_GPU));
    assert!(workload
        .tasks
        .iter()
        .any(|t| Band::of(t.priority).is_prod()));
}
