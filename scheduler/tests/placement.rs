//! Behaviour of `schedule`: order, feasibility, scoring, accounting within a plan, and the
//! reasons recorded for tasks that stay pending.

mod common;

use borg_model::{ConstraintOp, MachineState, Resources, TaskId};
use common::*;
use scheduler::{
    schedule, schedule_among, schedule_among_except, FitPolicy, PlacementConfig, ScoreCache,
};

const GI: u64 = 1 << 30;

#[test]
fn owners_take_turns_within_a_priority_and_high_priority_goes_first() {
    // Room for exactly three tasks.
    let view = view_of(vec![machine("m1", 300, GI, &[])], vec![]);
    let r = Resources::new(100, 1);
    let pending = vec![
        pending("a", 0, "alice", 100, r, vec![]),
        pending("a", 1, "alice", 100, r, vec![]),
        pending("a", 2, "alice", 100, r, vec![]),
        pending("b", 0, "bob", 100, r, vec![]),
        pending("low", 0, "carol", 50, r, vec![]),
        pending("high", 0, "dave", 150, r, vec![]),
    ];
    let plan = schedule(&view, &pending, &PlacementConfig::new(), 1);
    let placed: Vec<String> = plan.placements.iter().map(|p| p.task.to_string()).collect();
    assert_eq!(placed, vec!["high/0", "a/0", "b/0"]);
    let unplaced: Vec<String> = plan.unplaced.iter().map(|(t, _)| t.to_string()).collect();
    assert_eq!(unplaced, vec!["a/1", "a/2", "low/0"]);
}

#[test]
fn a_plan_accounts_its_own_placements() {
    let view = view_of(
        vec![machine("m1", 1000, GI, &[]), machine("m2", 1000, GI, &[])],
        vec![],
    );
    let pending: Vec<_> = (0..5)
        .map(|i| pending("j", i, "alice", 100, Resources::new(400, 1), vec![]))
        .collect();
    let plan = schedule(&view, &pending, &PlacementConfig::new(), 3);
    // Two fit per machine; the fifth fits nowhere.
    assert_eq!(plan.placements.len(), 4);
    for m in ["m1", "m2"] {
        assert_eq!(plan.placements.iter().filter(|p| p.machine == m).count(), 2);
    }
    assert_eq!(plan.unplaced.len(), 1);
    assert_eq!(plan.unplaced[0].1.resource_shortfalls.get("cpu"), Some(&2));
}

#[test]
fn the_same_seed_gives_the_same_plan() {
    let machines: Vec<_> = (0..40)
        .map(|i| machine(&format!("m{i:02}"), 1000 + i * 10, GI, &[]))
        .collect();
    let pending: Vec<_> = (0..100)
        .map(|i| {
            pending(
                &format!("j{}", i % 7),
                i,
                &format!("u{}", i % 3),
                100 + (i % 2) * 100,
                Resources::new(150, 1),
                vec![],
            )
        })
        .collect();
    let view = view_of(machines, vec![]);
    let mut config = PlacementConfig::new();
    config.feasible_candidates_max = 3;
    let first = schedule(&view, &pending, &config, 42);
    let second = schedule(&view, &pending, &config, 42);
    assert_eq!(first, second);
    assert!(!first.placements.is_empty());
}

#[test]
fn placing_without_preemption_is_preferred() {
    let view = view_of(
        vec![
            machine("busy", 1000, GI, &[]),
            machine("idle", 1000, GI, &[]),
        ],
        vec![
            running_job("batch", 100, Resources::new(900, 1), &["busy"]),
            running_job("other", 100, Resources::new(500, 1), &["idle"]),
        ],
    );
    let task = pending("p", 0, "alice", 200, Resources::new(400, 1), vec![]);
    for seed in 0..10 {
        let plan = schedule(
            &view,
            std::slice::from_ref(&task),
            &PlacementConfig::new(),
            seed,
        );
        assert_eq!(plan.placements[0].machine, "idle", "seed {seed}");
        assert!(plan.placements[0].preempt.is_empty());
    }
}

#[test]
fn preemption_evicts_lower_bands_and_never_production() {
    let view = view_of(
        vec![machine("m1", 1000, GI, &[]), machine("m2", 1000, GI, &[])],
        vec![
            running_job("batch", 150, Resources::new(800, 1), &["m1"]),
            running_job("prod", 250, Resources::new(800, 1), &["m2"]),
        ],
    );
    let prod = pending("p", 0, "alice", 200, Resources::new(500, 1), vec![]);
    let plan = schedule(
        &view,
        std::slice::from_ref(&prod),
        &PlacementConfig::new(),
        0,
    );
    assert_eq!(plan.placements.len(), 1);
    let placement = &plan.placements[0];
    assert_eq!(placement.machine, "m1");
    assert_eq!(placement.machine_version, 7);
    assert_eq!(placement.preempt.len(), 1);
    assert_eq!(placement.preempt[0].task, TaskId::new("batch", 0));
    assert_eq!(placement.preempt[0].incarnation, 3);

    // A batch task at a lower batch priority may not evict the batch task.
    let batch = pending("b", 0, "alice", 120, Resources::new(500, 1), vec![]);
    let plan = schedule(
        &view,
        std::slice::from_ref(&batch),
        &PlacementConfig::new(),
        0,
    );
    assert!(plan.placements.is_empty());
    assert_eq!(plan.unplaced[0].1.resource_shortfalls.get("cpu"), Some(&2));
}

#[test]
fn a_victim_is_evicted_once_per_plan() {
    let view = view_of(
        vec![machine("m1", 1000, GI, &[])],
        vec![running_job("batch", 100, Resources::new(1000, 1), &["m1"])],
    );
    let pending: Vec<_> = (0..2)
        .map(|i| pending("p", i, "alice", 200, Resources::new(500, 1), vec![]))
        .collect();
    let plan = schedule(&view, &pending, &PlacementConfig::new(), 0);
    assert_eq!(plan.placements.len(), 2);
    assert_eq!(plan.placements[0].preempt.len(), 1);
    assert!(
        plan.placements[1].preempt.is_empty(),
        "the room was freed by the first"
    );
}

#[test]
fn best_fit_packs_and_worst_fit_spreads() {
    let view = view_of(
        vec![
            machine("full", 1000, GI, &[]),
            machine("empty", 1000, GI, &[]),
        ],
        vec![running_job(
            "x",
            100,
            Resources::new(600, GI / 2),
            &["full"],
        )],
    );
    let task = pending("j", 0, "alice", 100, Resources::new(100, 1), vec![]);
    let mut config = PlacementConfig::new();
    let plan = schedule(&view, std::slice::from_ref(&task), &config, 0);
    assert_eq!(plan.placements[0].machine, "full");
    config.fit_policy = FitPolicy::WorstFit;
    let plan = schedule(&view, std::slice::from_ref(&task), &config, 0);
    assert_eq!(plan.placements[0].machine, "empty");
}

#[test]
fn soft_constraints_and_spreading_steer_the_choice() {
    let view = view_of(
        vec![
            machine("a", 1000, GI, &[("rack", "r1")]),
            machine("b", 1000, GI, &[("rack", "r2")]),
            machine("c", 1000, GI, &[("rack", "r2")]),
        ],
        vec![],
    );
    let prefer_r1 = vec![constraint("rack", ConstraintOp::Eq, &["r1"], true)];
    let task = pending("j", 0, "alice", 100, Resources::new(100, 1), prefer_r1);
    assert_eq!(machines_chosen(&view, &task), ["a"]);
    // Three tasks of one job land on three machines.
    let tasks: Vec<_> = (0..3)
        .map(|i| pending("j", i, "alice", 100, Resources::new(100, 1), vec![]))
        .collect();
    let plan = schedule(&view, &tasks, &PlacementConfig::new(), 9);
    let mut machines: Vec<_> = plan.placements.iter().map(|p| p.machine.clone()).collect();
    machines.sort();
    assert_eq!(machines, vec!["a", "b", "c"]);
}

#[test]
fn hard_constraints_are_respected_and_failures_counted() {
    let mut down = machine("down", 1000, GI, &[("rack", "r1")]);
    down.state = MachineState::Down;
    let view = view_of(
        vec![
            machine("r1-small", 100, GI, &[("rack", "r1")]),
            machine("r2", 1000, GI, &[("rack", "r2")]),
            machine("r3", 1000, GI, &[("rack", "r3")]),
            down,
        ],
        vec![],
    );
    let on_r1 = vec![constraint("rack", ConstraintOp::Eq, &["r1"], false)];
    let tasks = vec![
        pending("j", 0, "alice", 100, Resources::new(500, 1), on_r1.clone()),
        pending("j", 1, "alice", 100, Resources::new(500, 1), on_r1),
    ];
    let plan = schedule(&view, &tasks, &PlacementConfig::new(), 0);
    assert!(plan.placements.is_empty());
    assert_eq!(plan.unplaced.len(), 2);
    let reason = &plan.unplaced[0].1;
    assert_eq!(reason.machines_total, 4);
    assert_eq!(reason.machines_examined, 4);
    assert_eq!(reason.machines_not_up, 1);
    assert_eq!(reason.constraint_failures.len(), 1);
    assert_eq!(reason.constraint_failures[0].machines, 2);
    assert_eq!(reason.resource_shortfalls.get("cpu"), Some(&1));
    let text = reason.to_string();
    assert!(text.contains("2 failed constraint rack == r1"), "{text}");
    assert!(text.contains("1 short of cpu"), "{text}");

    let on_r2 = vec![constraint("rack", ConstraintOp::In, &["r2"], false)];
    let task = pending("k", 0, "alice", 100, Resources::new(500, 1), on_r2);
    let plan = schedule(
        &view,
        std::slice::from_ref(&task),
        &PlacementConfig::new(),
        0,
    );
    assert_eq!(placed_on(&plan).get("k/0").map(String::as_str), Some("r2"));
}

#[test]
fn bounds_defer_and_limit_examination() {
    let machines: Vec<_> = (0..20)
        .map(|i| machine(&format!("m{i}"), 1000, GI, &[]))
        .collect();
    let view = view_of(machines, vec![]);
    let tasks: Vec<_> = (0..10)
        .map(|i| pending("j", i, "alice", 100, Resources::new(2000, 1), vec![]))
        .collect();
    let mut config = PlacementConfig::new();
    config.tasks_max = 4;
    config.machines_examined_max = 5;
    let plan = schedule(&view, &tasks, &config, 0);
    assert_eq!(plan.deferred, 6);
    assert_eq!(plan.unplaced.len(), 4);
    // Unplaced only after every machine was examined: none of the sample of 5 fitted.
    assert_eq!(plan.unplaced[0].1.machines_examined, 20);
    assert_eq!(plan.unplaced[0].1.machines_total, 20);
}

#[test]
fn a_task_that_fits_one_machine_outside_its_sample_is_placed_there() {
    // 200 machines, one large enough; a sample of 5 almost never holds it.
    let mut machines: Vec<_> = (0..199)
        .map(|i| machine(&format!("small{i}"), 1000, GI, &[]))
        .collect();
    machines.push(machine("large", 4000, GI, &[]));
    let view = view_of(machines, vec![]);
    let task = pending("j", 0, "alice", 100, Resources::new(2000, 1), vec![]);
    let small = pending("k", 0, "alice", 100, Resources::new(100, 1), vec![]);
    let mut config = PlacementConfig::new();
    config.machines_examined_max = 5;
    for seed in 0..20 {
        let plan = schedule(&view, &[task.clone(), small.clone()], &config, seed);
        let on: Vec<_> = plan.placements.iter().map(|p| p.machine.as_str()).collect();
        assert_eq!(on.len(), 2, "seed {seed}: {:?}", plan.unplaced);
        assert_eq!(on[0], "large", "seed {seed}");
    }
    // A task that fits anywhere stops within its sample.
    let plan = schedule(&view, &[small], &config, 7);
    assert!(plan.machines_examined <= 5, "{}", plan.machines_examined);
}

#[test]
fn an_empty_cell_explains_itself() {
    let view = view_of(vec![], vec![]);
    let task = pending("j", 0, "alice", 100, Resources::new(1, 1), vec![]);
    let plan = schedule(&view, &[task], &PlacementConfig::new(), 0);
    assert_eq!(plan.unplaced[0].1.to_string(), "no machines in the cell");
}

/// The machines a lone task is placed on over several seeds (one, when the score decides).
fn machines_chosen(view: &scheduler::CellView, task: &scheduler::PendingTask) -> Vec<String> {
    let mut chosen: Vec<String> = (0..5)
        .map(|seed| {
            let plan = schedule(
                view,
                std::slice::from_ref(task),
                &PlacementConfig::new(),
                seed,
            );
            plan.placements[0].machine.clone()
        })
        .collect();
    chosen.sort();
    chosen.dedup();
    chosen
}

#[test]
fn a_job_spreads_across_racks_and_power_domains() {
    // Two racks in one power domain, a third rack in another; one task of the job already
    // runs in rack r1.
    let view = view_of(
        vec![
            machine("a1", 1000, GI, &[("rack", "r1"), ("power", "p1")]),
            machine("a2", 1000, GI, &[("rack", "r1"), ("power", "p1")]),
            machine("b1", 1000, GI, &[("rack", "r2"), ("power", "p1")]),
            machine("c1", 1000, GI, &[("rack", "r3"), ("power", "p2")]),
        ],
        vec![running_job("j", 100, Resources::new(100, 1), &["a1"])],
    );
    let task = pending("j", 1, "alice", 100, Resources::new(100, 1), vec![]);
    // Not a1 (same machine), not a2 (same rack), not b1 (same power domain).
    assert_eq!(machines_chosen(&view, &task), ["c1"]);
}

#[test]
fn machines_with_the_package_are_preferred() {
    let mut ran = running_job("web", 100, Resources::new(100, 1), &["warm"]);
    ran.package = std::sync::Arc::from("/bin/web");
    ran.tasks.get_mut(&0).expect("task 0").state = borg_model::TaskState::Succeeded;
    let view = view_of(
        vec![
            machine("cold", 1000, GI, &[]),
            machine("warm", 1000, GI, &[]),
        ],
        vec![ran],
    );
    // A new task of the same job (same command): the machine that ran it has the package.
    let task = pending("web", 1, "alice", 100, Resources::new(100, 1), vec![]);
    assert_eq!(machines_chosen(&view, &task), ["warm"]);
}

#[test]
fn non_prod_fits_into_reclaimed_resources_and_prod_does_not() {
    let mut view = view_of(
        vec![machine("m1", 1000, GI, &[])],
        vec![running_job("prod", 200, Resources::new(800, 1), &["m1"])],
    );
    // The prod task is expected to use only half of its limit.
    assert!(view.set_reservation("m1", &TaskId::new("prod", 0), Resources::new(400, 1)));
    let batch = pending("b", 0, "alice", 100, Resources::new(500, 1), vec![]);
    let prod = pending("p", 0, "alice", 200, Resources::new(500, 1), vec![]);
    let plan = schedule(&view, &[batch, prod], &PlacementConfig::new(), 0);
    let placed: Vec<String> = plan.placements.iter().map(|p| p.task.to_string()).collect();
    assert_eq!(placed, vec!["b/0"], "prod is checked against limits");
}

#[test]
fn a_plan_among_named_machines_places_only_there_and_none_means_every_machine() {
    let machines: Vec<_> = (0..30)
        .map(|i| machine(&format!("m{i:02}"), 1000, GI, &[]))
        .collect();
    let view = view_of(machines, vec![]);
    let pending: Vec<_> = (0..8)
        .map(|i| pending("j", i, "alice", 100, Resources::new(400, 1), vec![]))
        .collect();
    let config = PlacementConfig::new();
    let mut cache = ScoreCache::new(config.score_cache_entries_max);
    let among = ["m07".to_owned(), "m21".to_owned(), "gone".to_owned()];
    let plan = schedule_among(&view, &pending, &config, 5, &mut cache, Some(&among));
    // Two fit on each of the two machines that exist; the rest fit nowhere among them.
    assert_eq!(plan.placements.len(), 4);
    assert!(plan
        .placements
        .iter()
        .all(|p| p.machine == "m07" || p.machine == "m21"));
    assert_eq!(plan.unplaced.len(), 4);

    let mut cache = ScoreCache::new(config.score_cache_entries_max);
    let all = schedule_among(&view, &pending, &config, 5, &mut cache, None);
    assert_eq!(all, schedule(&view, &pending, &config, 5));
    assert_eq!(all.placements.len(), 8);
}

#[test]
fn a_plan_except_named_machines_never_uses_them_and_an_empty_list_changes_nothing() {
    let machines: Vec<_> = (0..30)
        .map(|i| machine(&format!("m{i:02}"), 1000, GI, &[]))
        .collect();
    let view = view_of(machines, vec![]);
    let pending: Vec<_> = (0..40)
        .map(|i| pending("j", i, "alice", 100, Resources::new(400, 1), vec![]))
        .collect();
    let config = PlacementConfig::new();
    let except: Vec<String> = (0..10)
        .map(|i| format!("m{i:02}"))
        .chain(["gone".to_owned()])
        .collect();
    let mut cache = ScoreCache::new(config.score_cache_entries_max);
    let plan = schedule_among_except(&view, &pending, &config, 5, &mut cache, None, &except);
    // Two fit on each of the 20 machines left.
    assert_eq!(plan.placements.len(), 40);
    assert!(plan.placements.iter().all(|p| !except.contains(&p.machine)));

    // Among and except together: only the named machines not excepted.
    let among = ["m05".to_owned(), "m25".to_owned()];
    let plan = schedule_among_except(
        &view,
        &pending,
        &config,
        5,
        &mut cache,
        Some(&among),
        &except,
    );
    assert_eq!(plan.placements.len(), 2);
    assert!(plan.placements.iter().all(|p| p.machine == "m25"));

    let mut cache = ScoreCache::new(config.score_cache_entries_max);
    let all = schedule_among_except(&view, &pending, &config, 5, &mut cache, None, &[]);
    assert_eq!(all, schedule(&view, &pending, &config, 5));
}
