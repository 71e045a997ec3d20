//! `SchedulerService`: the cell stream the scheduler plans from, and its plans.

use super::{accepted, unexpected};
use crate::context::ReplicaContext;
use crate::state::{Command, Outcome};
use crate::wire;
use borg_proto::leader::not_leader;
use borg_proto::v1;
use borg_proto::v1::scheduler_service_server::SchedulerService;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct SchedulerApi {
    pub ctx: Arc<ReplicaContext>,
}

#[tonic::async_trait]
impl SchedulerService for SchedulerApi {
    type WatchCellStream = ReceiverStream<Result<v1::CellUpdate, Status>>;

    /// The leader's snapshot, then one change per applied entry that touched something. A
    /// watcher that falls `watch_buffer_max` changes behind, or whose replica stops leading,
    /// is cut off with UNAVAILABLE and re-subscribes (getting a fresh snapshot).
    async fn watch_cell(
        &self,
        request: Request<v1::WatchCellRequest>,
    ) -> Result<Response<Self::WatchCellStream>, Status> {
        let scheduler_id = request.into_inner().scheduler_id;
        self.ctx.require_leader()?;
        let (snapshot, mut updates) = {
            let state = self.ctx.state()?;
            // Subscribing under the read lock: the loop publishes under the write lock, so
            // the stream continues exactly where the snapshot ends.
            let updates = self.ctx.updates.subscribe();
            let snapshot = v1::CellUpdate {
                index: state.applied_index(),
                update: Some(v1::cell_update::Update::Snapshot(state.snapshot_view())),
            };
            (snapshot, updates)
        };
        tracing::info!(%scheduler_id, index = snapshot.index, "scheduler watching the cell");
        let (tx, rx) = tokio::sync::mpsc::channel(self.ctx.watch_buffer_max.max(1));
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            if tx.send(Ok(snapshot)).await.is_err() {
                return;
            }
            let mut leader = ctx.leader.clone();
            loop {
                let update = tokio::select! {
                    _ = ctx.shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("the master replica is shutting down; reconnect"))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                    changed = leader.changed() => {
                        let info = leader.borrow_and_update().clone();
                        if changed.is_err() || !info.is_self {
                            let _ = tx.send(Err(not_leader(info.leader_address.as_deref()))).await;
                            return;
                        }
                        continue;
                    }
                    update = updates.recv() => update,
                };
                match update {
                    Ok(update) => {
                        // A full buffer means the scheduler is not keeping up: cut it off.
                        if tx.try_send(Ok(update.as_ref().clone())).is_err() {
                            ctx.metrics.watchers_lagged.inc();
                            let _ = tx.send(Err(Status::unavailable("watcher fell behind the cell's changes; re-subscribe for a fresh snapshot"))).await;
                            return;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        ctx.metrics.watchers_lagged.inc();
                        tracing::warn!(%scheduler_id, missed, "cell watcher lagged; disconnecting");
                        let _ = tx.send(Err(Status::unavailable(format!("watcher missed {missed} changes; re-subscribe for a fresh snapshot")))).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn commit_plan(
        &self,
        request: Request<v1::CommitPlanRequest>,
    ) -> Result<Response<v1::CommitPlanResponse>, Status> {
        let request = request.into_inner();
        let request_id = wire::request_id(&request.request_id)?;
        let placements = wire::placements(request.placements)?;
        let incarnations: BTreeMap<_, _> = placements
            .iter()
            .map(|p| (p.task.clone(), p.incarnation))
            .collect();
        let committed = self
            .ctx
            .propose(request_id, Command::CommitPlan { placements })
            .await?;
        match accepted(committed.outcome)? {
            Outcome::PlanApplied { results } => Ok(Response::new(v1::CommitPlanResponse {
                results: results
                    .into_iter()
                    .map(|r| v1::PlacementResult {
                        task: Some(v1::TaskRef {
                            incarnation: incarnations.get(&r.task).copied().unwrap_or(0),
                            job: r.task.job,
                            index: r.task.index,
                        }),
                        accepted: r.accepted,
                        reason: r.reason,
                    })
                    .collect(),
                index: committed.index,
            })),
            other => Err(unexpected(&other)),
        }
    }
}
