//! One tonic server on the replica's address with every service.

use crate::context::ReplicaContext;
use crate::services::cell::CellApi;
use crate::services::link::LinkApi;
use crate::services::replica::ReplicaApi;
use crate::services::scheduler::SchedulerApi;
use borg_proto::v1::cell_service_server::CellServiceServer;
use borg_proto::v1::link_service_server::LinkServiceServer;
use borg_proto::v1::replica_service_server::ReplicaServiceServer;
use borg_proto::v1::scheduler_service_server::SchedulerServiceServer;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

/// Serves until `shutdown` fires.
pub async fn serve(
    ctx: Arc<ReplicaContext>,
    listener: TcpListener,
    client_message_max_bytes: usize,
    replica_message_max_bytes: usize,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let client_max = client_message_max_bytes;
    let cell = CellServiceServer::new(CellApi { ctx: ctx.clone() })
        .max_decoding_message_size(client_max)
        .max_encoding_message_size(client_max);
    let scheduler = SchedulerServiceServer::new(SchedulerApi { ctx: ctx.clone() })
        .max_decoding_message_size(client_max)
        .max_encoding_message_size(client_max);
    let link = LinkServiceServer::new(LinkApi { ctx: ctx.clone() })
        .max_decoding_message_size(client_max)
        .max_encoding_message_size(client_max);
    let replica = ReplicaServiceServer::new(ReplicaApi { ctx })
        .max_decoding_message_size(replica_message_max_bytes)
        .max_encoding_message_size(replica_message_max_bytes);
    Server::builder()
        .add_service(cell)
        .add_service(scheduler)
        .add_service(link)
        .add_service(replica)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await
}
