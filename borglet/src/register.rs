//! Registering this machine with the master: retried with bounded back-off until it succeeds
//! (or shutdown), then repeated periodically (idempotent; it refreshes the machine's info and
//! tells a master that marked the machine down that it is back).

use crate::metrics::BorgletMetrics;
use borg_common::{new_request_id, MasterClient};
use borg_model::MachineInfo;
use borg_proto::v1;
use borg_proto::v1::link_service_client::LinkServiceClient;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// First back-off after a failed registration; doubles up to `register_retry_max_ms`.
pub const REGISTER_RETRY_INITIAL_MS: u64 = 100;

pub struct Registration {
    pub client: MasterClient,
    pub info: MachineInfo,
    pub retry_max_ms: u64,
    pub reregister_interval_ms: u64,
    pub metrics: BorgletMetrics,
}

impl Registration {
    async fn register_once(&self) -> Result<(), tonic::Status> {
        let request = v1::RegisterMachineRequest {
            info: Some(self.info.clone().into()),
            request_id: new_request_id("borglet-register"),
        };
        self.client
            .call(|channel| {
                let request = request.clone();
                async move {
                    LinkServiceClient::new(channel)
                        .register_machine(request)
                        .await
                        .map(|_| ())
                }
            })
            .await
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff_ms = REGISTER_RETRY_INITIAL_MS;
        let mut registered_before = false;
        loop {
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                attempt = self.register_once() => attempt,
            };
            let wait_ms = match attempt {
                Ok(()) => {
                    self.metrics.registrations.with_label_values(&["ok"]).inc();
                    if !registered_before {
                        tracing::info!(machine = %self.info.name, address = %self.info.address,
                            capacity = %self.info.capacity, "machine registered");
                        registered_before = true;
                    }
                    backoff_ms = REGISTER_RETRY_INITIAL_MS;
                    self.reregister_interval_ms
                }
                Err(status) => {
                    self.metrics
                        .registrations
                        .with_label_values(&["error"])
                        .inc();
                    tracing::warn!(machine = %self.info.name, error = %status.message(),
                        retry_in_ms = backoff_ms, "registration failed");
                    let wait = backoff_ms;
                    backoff_ms = backoff_ms.saturating_mul(2).min(self.retry_max_ms.max(1));
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
            }
        }
    }
}
