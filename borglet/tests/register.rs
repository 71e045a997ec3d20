//! The borglet registers its machine through `LinkService.RegisterMachine`, retrying until a
//! master answers. The master here is a minimal LinkService on loopback that records what it
//! is sent (the real master lives in another crate and needs a replicated log).

use borg_proto::v1;
use borg_proto::v1::link_service_server::{LinkService, LinkServiceServer};
use borglet::{Borglet, BorgletConfig, CgroupMode};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Refuses the first `refusals` registrations (a master that is not ready), then records.
#[derive(Default, Clone)]
struct RecordingLink {
    refusals: Arc<Mutex<u32>>,
    registered: Arc<Mutex<Vec<v1::RegisterMachineRequest>>>,
}

#[tonic::async_trait]
impl LinkService for RecordingLink {
    async fn register_machine(
        &self,
        request: Request<v1::RegisterMachineRequest>,
    ) -> Result<Response<v1::RegisterMachineResponse>, Status> {
        {
            let mut refusals = self.refusals.lock().unwrap();
            if *refusals > 0 {
                *refusals -= 1;
                return Err(Status::internal("not ready yet"));
            }
        }
        self.registered.lock().unwrap().push(request.into_inner());
        Ok(Response::new(v1::RegisterMachineResponse { machine: None }))
    }

    async fn get_assignment(
        &self,
        _: Request<v1::GetAssignmentRequest>,
    ) -> Result<Response<v1::GetAssignmentResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }

    async fn forward_diffs(
        &self,
        _: Request<v1::ForwardDiffsRequest>,
    ) -> Result<Response<v1::ForwardDiffsResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }
}

fn registrations(registry: &prometheus::Registry, result: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == "borglet_registrations_total")
        .flat_map(|family| family.get_metric())
        .filter(|metric| metric.get_label().iter().any(|l| l.value() == result))
        .map(|metric| metric.get_counter().get_value())
        .sum()
}

#[tokio::test]
async fn the_machine_is_registered_after_refusals_are_retried() {
    let link = RecordingLink::default();
    *link.refusals.lock().unwrap() = 2;
    let master_shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master_address = listener.local_addr().unwrap();
    let master = {
        let link = link.clone();
        let stop = master_shutdown.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(LinkServiceServer::new(link))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    stop.cancelled(),
                )
                .await
        })
    };

    let data_dir = tempfile::tempdir().unwrap();
    let mut config = BorgletConfig::new(
        vec![master_address.to_string()],
        "127.0.0.1:0",
        "m-register",
        data_dir.path(),
    );
    config.cgroups = CgroupMode::Off;
    config.attributes.insert("rack".into(), "r7".into());
    config.register_retry_max_ms = 200;
    config.metrics_address = Some("127.0.0.1:0".parse().unwrap());
    let borglet = Borglet::bind(config).await.unwrap();
    let address = borglet.local_addr();
    let capacity = borglet.machine_info().capacity;
    assert!(
        capacity.cpu_millis >= 1000 && capacity.ram_bytes > 0,
        "{capacity:?}"
    );
    let registry = borglet.registry().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(borglet.run(shutdown.clone()));

    let deadline = Instant::now() + Duration::from_secs(30);
    let request = loop {
        if let Some(request) = link.registered.lock().unwrap().first().cloned() {
            break request;
        }
        assert!(Instant::now() < deadline, "the borglet never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let info = request.info.unwrap();
    assert_eq!(info.name, "m-register");
    assert_eq!(info.address, address.to_string());
    assert_eq!(info.attributes.get("rack").map(String::as_str), Some("r7"));
    assert_eq!(info.capacity.unwrap().cpu_millis, capacity.cpu_millis);
    assert!(!request.request_id.is_empty());
    assert_eq!(registrations(&registry, "error"), 2.0);
    while registrations(&registry, "ok") < 1.0 {
        assert!(Instant::now() < deadline, "the success was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    shutdown.cancel();
    server.await.unwrap().unwrap();
    master_shutdown.cancel();
    master.await.unwrap().unwrap();
}
