//! Ports as a feasibility dimension, from the wire: machines report the size of their
//! borglet's port range at registration, a job's tasks hold one port per port name, and a
//! job asking for more ports than any machine offers stays pending, with "ports" named as
//! the exhausted dimension and the smallest change proposed.

mod common;

use borg_model::MACHINE_PORT_CAPACITY_DEFAULT;
use borg_proto::v1;
use common::{wire_job, wire_machine};
use scheduler::why::Change;
use scheduler::{schedule, why_pending, FitPolicy, PlacementConfig, ViewSync};

fn synced(machines: Vec<v1::Machine>, jobs: Vec<v1::Job>) -> ViewSync {
    let mut sync = ViewSync::new();
    let skipped = sync
        .apply(v1::CellUpdate {
            index: 1,
            update: Some(v1::cell_update::Update::Snapshot(v1::CellSnapshot {
                machines,
                jobs,
            })),
        })
        .expect("a snapshot applies");
    assert!(skipped.is_empty(), "{skipped:?}");
    sync
}

#[test]
fn a_machine_that_does_not_report_ports_gets_the_default_range() {
    let sync = synced(
        vec![
            wire_machine("old", 4000, None),
            wire_machine("new", 4000, Some(7)),
        ],
        vec![],
    );
    let view = sync.view();
    assert_eq!(
        view.machine("old").unwrap().port_capacity,
        MACHINE_PORT_CAPACITY_DEFAULT
    );
    assert_eq!(view.machine("new").unwrap().port_capacity, 7);
}

#[test]
fn a_job_with_more_ports_than_any_range_stays_pending_with_the_reason() {
    let sync = synced(
        vec![
            wire_machine("m2", 4000, Some(2)),
            wire_machine("m3", 4000, Some(3)),
        ],
        vec![
            wire_job("wide", 1, 100, &["http", "admin", "debug", "metrics"]),
            // A repeated name is one port: three ports.
            wire_job("fits", 1, 100, &["http", "admin", "debug", "http"]),
        ],
    );
    let view = sync.view();
    let pending = view.pending_tasks();
    let plan = schedule(view, &pending, &PlacementConfig::new(), 0);

    assert_eq!(plan.placements.len(), 1, "{plan:?}");
    assert_eq!(plan.placements[0].task.job, "fits");
    assert_eq!(plan.placements[0].machine, "m3");
    let (task, reason) = &plan.unplaced[0];
    assert_eq!(task.job, "wide");
    assert_eq!(
        reason.resource_shortfalls.get("ports"),
        Some(&2),
        "{reason}"
    );
    assert!(reason.to_string().contains("2 short of ports"), "{reason}");

    let wide = pending.iter().find(|t| t.id.job == "wide").unwrap();
    let why = why_pending(view, wide, FitPolicy::Hybrid);
    assert!(why.best.is_empty());
    assert_eq!(why.ports, 4);
    assert_eq!(why.resource_shortfalls.get("ports"), Some(&2));
    assert!(
        why.to_string().contains("2 machines short of ports"),
        "{why}"
    );
    // The smallest change: three ports fit on m3 (cpu and ram stay as asked).
    let lower = why
        .changes
        .iter()
        .find(|c| matches!(c, Change::LowerRequest { .. }))
        .expect("a lower request");
    let Change::LowerRequest {
        request,
        ports,
        machine,
    } = lower
    else {
        unreachable!()
    };
    assert_eq!((*ports, machine.as_str()), (3, "m3"));
    assert_eq!(request.cpu_millis, 100);
    assert!(lower.to_string().contains("3 ports"), "{lower}");
}

#[test]
fn placements_in_one_plan_share_a_machine_ports() {
    // Three tasks of two ports each on one machine of five ports: two fit.
    let sync = synced(
        vec![wire_machine("m5", 4000, Some(5))],
        vec![wire_job("pairs", 3, 100, &["a", "b"])],
    );
    let view = sync.view();
    let plan = schedule(view, &view.pending_tasks(), &PlacementConfig::new(), 0);
    assert_eq!(plan.placements.len(), 2);
    assert_eq!(plan.unplaced.len(), 1);
    assert_eq!(
        plan.unplaced[0].1.resource_shortfalls.get("ports"),
        Some(&1)
    );
}
