//! Sending a plan to the master: wire conversion and batching to `plan_batch_max`.

use crate::plan::{Placement, Victim};
use borg_common::MasterClient;
use borg_model::TaskId;
use borg_proto::v1;
use borg_proto::v1::scheduler_service_client::SchedulerServiceClient;
use tonic::Status;

/// The master's answer to a whole plan (possibly several requests).
#[derive(Debug, Default)]
pub struct CommitOutcome {
    pub accepted: Vec<TaskId>,
    pub rejected: Vec<(TaskId, String)>,
    /// Tasks of batches that got no answer (the call failed).
    pub unanswered: Vec<TaskId>,
    /// Highest log index among the answers.
    pub index: u64,
    pub error: Option<Status>,
}

fn task_ref(task: &TaskId, incarnation: u64) -> v1::TaskRef {
    v1::TaskRef {
        job: task.job.clone(),
        index: task.index,
        incarnation,
    }
}

pub fn placement_to_wire(placement: &Placement) -> v1::Placement {
    v1::Placement {
        task: Some(task_ref(&placement.task, placement.incarnation)),
        machine: placement.machine.clone(),
        machine_version: placement.machine_version,
        preempt: placement
            .preempt
            .iter()
            .map(
                |Victim {
                     task, incarnation, ..
                 }| task_ref(task, *incarnation),
            )
            .collect(),
    }
}

/// Commits `placements` in batches of at most `batch_max`, each with its own request id.
/// Stops at the first failed call; later batches are reported unanswered.
pub async fn commit_plan(
    client: &MasterClient,
    scheduler_id: &str,
    placements: &[Placement],
    batch_max: usize,
) -> CommitOutcome {
    let mut outcome = CommitOutcome::default();
    for batch in placements.chunks(batch_max.max(1)) {
        if outcome.error.is_some() {
            outcome
                .unanswered
                .extend(batch.iter().map(|p| p.task.clone()));
            continue;
        }
        let request = v1::CommitPlanRequest {
            scheduler_id: scheduler_id.to_owned(),
            request_id: borg_common::new_request_id(&format!("plan-{scheduler_id}")),
            placements: batch.iter().map(placement_to_wire).collect(),
        };
        let answer = client
            .call(|channel| {
                let request = request.clone();
                async move {
                    SchedulerServiceClient::new(channel)
                        .commit_plan(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await;
        match answer {
            Ok(response) => {
                outcome.index = outcome.index.max(response.index);
                record_results(&mut outcome, batch, response.results);
            }
            Err(status) => {
                outcome
                    .unanswered
                    .extend(batch.iter().map(|p| p.task.clone()));
                outcome.error = Some(status);
            }
        }
    }
    outcome
}

/// Sorts a batch's results into accepted and rejected; a placement the master did not
/// mention counts as rejected.
fn record_results(
    outcome: &mut CommitOutcome,
    batch: &[Placement],
    results: Vec<v1::PlacementResult>,
) {
    let mut answered = std::collections::BTreeMap::new();
    for result in results {
        if let Some(task) = result.task {
            answered.insert(
                TaskId::new(task.job, task.index),
                (result.accepted, result.reason),
            );
        }
    }
    for placement in batch {
        match answered.remove(&placement.task) {
            Some((true, _)) => outcome.accepted.push(placement.task.clone()),
            Some((false, reason)) => outcome.rejected.push((placement.task.clone(), reason)),
            None => outcome.rejected.push((
                placement.task.clone(),
                "the master's answer did not mention it".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_convert_with_their_victims() {
        let placement = Placement {
            task: TaskId::new("web", 3),
            incarnation: 2,
            machine: "m1".into(),
            machine_version: 7,
            preempt: vec![Victim {
                task: TaskId::new("batch", 0),
                incarnation: 5,
                priority: 100,
            }],
        };
        let wire = placement_to_wire(&placement);
        assert_eq!(wire.machine, "m1");
        assert_eq!(wire.machine_version, 7);
        let task = wire.task.unwrap();
        assert_eq!(
            (task.job.as_str(), task.index, task.incarnation),
            ("web", 3, 2)
        );
        assert_eq!(wire.preempt.len(), 1);
        assert_eq!(wire.preempt[0].incarnation, 5);
    }

    #[test]
    fn unmentioned_placements_count_as_rejected() {
        let batch: Vec<Placement> = (0..3)
            .map(|i| Placement {
                task: TaskId::new("j", i),
                incarnation: 1,
                machine: "m".into(),
                machine_version: 1,
                preempt: vec![],
            })
            .collect();
        let mut outcome = CommitOutcome::default();
        record_results(
            &mut outcome,
            &batch,
            vec![
                v1::PlacementResult {
                    task: Some(task_ref(&TaskId::new("j", 0), 1)),
                    accepted: true,
                    reason: String::new(),
                },
                v1::PlacementResult {
                    task: Some(task_ref(&TaskId::new("j", 1), 1)),
                    accepted: false,
                    reason: "ram exhausted".into(),
                },
            ],
        );
        assert_eq!(outcome.accepted, vec![TaskId::new("j", 0)]);
        assert_eq!(outcome.rejected.len(), 2);
        assert_eq!(outcome.rejected[0].1, "ram exhausted");
    }
}
