//! Every file under examples/ loads, and the newcomer's examples say what the docs promise.

use borg_model::{JobType, Resources};
use std::path::{Path, PathBuf};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn bcl_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("examples/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            bcl_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "bcl") {
            out.push(path);
        }
    }
}

#[test]
fn every_example_loads() {
    let mut files = Vec::new();
    bcl_files(&examples_dir(), &mut files);
    assert!(files.len() >= 4, "examples found: {files:?}");
    for file in files {
        if let Err(d) = bcl::load_file(&file) {
            panic!("{} does not load:\n{d}", file.display());
        }
    }
}

#[test]
fn hello_is_three_small_batch_band_replicas_without_owner() {
    let loaded = bcl::load_file(&examples_dir().join("hello.bcl")).unwrap();
    assert_eq!(loaded.jobs.len(), 1);
    let job = &loaded.jobs[0];
    assert_eq!(job.name, "hello");
    assert_eq!(job.owner, "");
    assert_eq!(job.priority, 100);
    assert_eq!(job.replicas, 3);
    assert_eq!(job.job_type, JobType::Service);
    assert_eq!(job.task.resources, Resources::new(100, 32 << 20));
    assert_eq!(job.task.command, "/bin/sh");
    assert!(
        job.task.args[1].contains("%task_index%"),
        "{:?}",
        job.task.args
    );
}

#[test]
fn batch_runs_to_completion() {
    let loaded = bcl::load_file(&examples_dir().join("batch.bcl")).unwrap();
    let job = &loaded.jobs[0];
    assert_eq!(job.job_type, JobType::Batch);
    assert_eq!(job.replicas, 4);
    assert_eq!(job.restart.max_attempts, 2);
    assert_eq!(job.restart.interval_s, 300);
    assert_eq!(job.restart.delay_ms, 1000);
}

#[test]
fn template_inherits_across_an_import() {
    let loaded = bcl::load_file(&examples_dir().join("template.bcl")).unwrap();
    let names: Vec<&str> = loaded.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["web", "web_canary"]);
    let web = &loaded.jobs[0];
    assert_eq!(web.replicas, 3);
    assert_eq!(web.task.resources, Resources::new(100, 64 << 20));
    assert_eq!(web.task.ports, ["http"]);
    assert_eq!(web.task.env["LOG_LEVEL"], "info");
    assert_eq!(web.task.env["STAGE"], "staging");
    assert_eq!(web.restart.max_attempts, 5);
    assert!(web.constraints[0].soft);
    let leader = loaded.task_template("web", 0).unwrap();
    assert_eq!(leader.env["ROLE"], "leader");
    assert_eq!(leader.env["STAGE"], "staging");
    assert!(!loaded
        .task_template("web", 1)
        .unwrap()
        .env
        .contains_key("ROLE"));
    let canary = &loaded.jobs[1];
    assert_eq!(canary.replicas, 1);
    assert_eq!(canary.task.env["CANARY"], "true");
    assert_eq!(canary.task.env["STAGE"], "staging");
}

#[test]
fn alloc_example_places_two_jobs_in_one_set() {
    let loaded = bcl::load_file(&examples_dir().join("alloc.bcl")).unwrap();
    assert_eq!(loaded.allocs.len(), 1);
    assert_eq!(loaded.allocs[0].set.replicas, 2);
    assert_eq!(
        loaded.allocs[0].set.resources,
        Resources::new(500, 128 << 20)
    );
    assert_eq!(loaded.job_extras["server"].alloc.as_deref(), Some("shared"));
    assert_eq!(
        loaded.job_extras["logsaver"].alloc.as_deref(),
        Some("shared")
    );
}
