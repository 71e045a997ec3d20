//! One tonic server on the replica's address with every service.

use crate::context::ReplicaContext;
use crate::services::auth::Authenticator;
use crate::services::cell::CellApi;
use crate::services::link::LinkApi;
use crate::services::replica::ReplicaApi;
use crate::services::scheduler::SchedulerApi;
use crate::services::task_access::TaskAccessApi;
use borg_proto::v1::cell_service_server::CellServiceServer;
use borg_proto::v1::link_service_server::LinkServiceServer;
use borg_proto::v1::replica_service_server::ReplicaServiceServer;
use borg_proto::v1::scheduler_service_server::SchedulerServiceServer;
use borg_proto::v1::task_access_service_server::TaskAccessServiceServer;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

/// Serves until `shutdown` fires.
pub async fn serve(
    ctx: Arc<ReplicaContext>,
    listener: TcpListener,
    client_message_max_bytes: usize,
    replica_message_max_bytes: usize,
    auth: Authenticator,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let client_max = client_message_max_bytes;
    // Every service authenticates first (services::auth); the replicas' own service then
    // requires the cluster token (services::replica) and checks that the sender is a peer.
    let cell = InterceptedService::new(
        CellServiceServer::new(CellApi {
            ctx: ctx.clone(),
            metrics: auth.metrics.clone(),
        })
        .max_decoding_message_size(client_max)
        .max_encoding_message_size(client_max),
        auth.any_caller(),
    );
    let scheduler = InterceptedService::new(
        SchedulerServiceServer::new(SchedulerApi { ctx: ctx.clone() })
            .max_decoding_message_size(client_max)
            .max_encoding_message_size(client_max),
        auth.control_plane_only("SchedulerService"),
    );
    let link = InterceptedService::new(
        LinkServiceServer::new(LinkApi { ctx: ctx.clone() })
            .max_decoding_message_size(client_max)
            .max_encoding_message_size(client_max),
        auth.control_plane_only("LinkService"),
    );
    let task_access = InterceptedService::new(
        TaskAccessServiceServer::new(TaskAccessApi::new(ctx.clone())),
        auth.any_caller(),
    );
    let replica = InterceptedService::new(
        ReplicaServiceServer::new(ReplicaApi {
            ctx,
            auth_metrics: auth.metrics.clone(),
        })
        .max_decoding_message_size(replica_message_max_bytes)
        .max_encoding_message_size(replica_message_max_bytes),
        auth.any_caller(),
    );
    Server::builder()
        .add_service(cell)
        .add_service(scheduler)
        .add_service(link)
        .add_service(task_access)
        .add_service(replica)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await
}
