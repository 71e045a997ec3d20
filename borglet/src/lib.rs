//! The machine agent: registers its machine with the master, runs the tasks the link shard
//! assigns to it as real processes in cgroups, restarts them per their policy, stops the ones
//! that leave its desired set, and reports their states.
//!
//! Layout: `cgroups` (one trait, v1 and v2), `runner` (processes), `supervisor` (desired set,
//! restarts, reports), `restart` (the pure policy), `sandbox` (a directory per task),
//! `state_dir` (the journal of task records), `service` (gRPC), `register` (machine
//! registration), `machine` (capacity).

pub mod assignment;
pub mod auth;
pub mod cgroups;
pub mod child;
pub mod config;
pub mod enforce;
pub mod error;
pub mod keeper;
pub mod log_reader;
pub mod log_rotation;
pub mod machine;
pub mod metrics;
pub mod ports;
pub mod pressure;
pub mod pty;
pub mod register;
pub mod report_changes;
pub mod restart;
pub mod runner;
pub mod sandbox;
pub mod service;
pub mod shell;
pub mod state_dir;
pub mod substitute;
pub mod supervisor;

pub use config::{BorgletConfig, CgroupMode, IsolationMode};
pub use error::BorgletError;
pub use machine::{detect_capacity, detect_capacity_at, CapacityError};

use borg_common::{serve_metrics, MasterClient};
use borg_model::MachineInfo;
use borg_proto::v1::borglet_service_server::BorgletServiceServer;
use cgroups::detect::Detected;
use cgroups::TaskCgroups;
use metrics::BorgletMetrics;
use prometheus::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use supervisor::{Supervisor, SupervisorSettings};
use tokio_util::sync::CancellationToken;

/// Largest Poll request accepted: room for `desired_tasks_max` (10,000) tasks with large
/// templates; tonic's default of 4 MiB is too small for that.
pub const POLL_REQUEST_MAX_BYTES: usize = 64 << 20;

/// Runs a borglet until `shutdown` is cancelled, then stops serving and, when
/// `kill_tasks_on_exit` is set, stops every task before returning.
pub async fn run(config: BorgletConfig, shutdown: CancellationToken) -> Result<(), BorgletError> {
    Borglet::bind(config).await?.run(shutdown).await
}

/// A borglet that has bound its port and is ready to run; lets a caller learn the address
/// (port 0) before running it.
pub struct Borglet {
    config: BorgletConfig,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    info: MachineInfo,
    registry: Registry,
    metrics: BorgletMetrics,
    cgroups: Option<Arc<dyn TaskCgroups>>,
    supervisor: Arc<Supervisor>,
}

fn validate(config: &BorgletConfig) -> Result<(), BorgletError> {
    if !borg_model::is_valid_name(&config.machine_name) {
        return Err(BorgletError::InvalidConfig {
            field: "machine_name",
            reason: format!(
                "{:?} is not a valid name: use 1-128 letters, digits, '-', '_' or '.'",
                config.machine_name
            ),
        });
    }
    if cgroups::validate_relative(&config.cgroup_parent).is_err() {
        return Err(BorgletError::InvalidConfig {
            field: "cgroup_parent",
            reason: format!(
                "{:?} must be a relative path of valid names such as \"borg\" or \"borg/cell-a\"",
                config.cgroup_parent
            ),
        });
    }
    if config.isolation == IsolationMode::Auto && !borg_model::is_valid_name(&config.task_user) {
        return Err(BorgletError::InvalidConfig {
            field: "task_user",
            reason: format!("{:?} is not a valid user name", config.task_user),
        });
    }
    if config.starts_in_flight_max == 0 {
        return Err(BorgletError::InvalidConfig {
            field: "starts_in_flight_max",
            reason: "must be at least 1".to_owned(),
        });
    }
    if config.shell_idle_timeout_s == 0 {
        return Err(BorgletError::InvalidConfig {
            field: "shell_idle_timeout_s",
            reason: "must be at least 1 (idle interactive sessions are closed after it)".to_owned(),
        });
    }
    if config.desired_tasks_max == 0 {
        return Err(BorgletError::InvalidConfig {
            field: "desired_tasks_max",
            reason: "must be at least 1".to_owned(),
        });
    }
    Ok(())
}

/// Memory reclamation and CPU capping every `enforcement_interval_ms` until `stop`.
async fn enforce_loop(supervisor: Arc<Supervisor>, config: BorgletConfig, stop: CancellationToken) {
    let pressure: Arc<dyn pressure::MachinePressure> = config
        .pressure
        .clone()
        .unwrap_or_else(|| Arc::new(pressure::ProcfsPressure::new()));
    let limits = supervisor::EnforcementSettings {
        reclaim_free_memory_min_bytes: config.reclaim_free_memory_min_bytes,
        cpu_busy_threshold_permille: config.cpu_busy_threshold_percent.saturating_mul(10),
    };
    let interval = std::time::Duration::from_millis(config.enforcement_interval_ms.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        let (supervisor, pressure) = (Arc::clone(&supervisor), Arc::clone(&pressure));
        // Reads procfs and cgroup files: off the async threads.
        let round =
            tokio::task::spawn_blocking(move || supervisor.enforce(pressure.as_ref(), &limits));
        if let Err(error) = round.await {
            tracing::warn!(%error, "an enforcement round failed");
        }
    }
}

/// Namespaces and the task user when configured and possible (root); none otherwise.
fn task_isolation(config: &BorgletConfig) -> Result<runner::Isolation, BorgletError> {
    if config.isolation == IsolationMode::Off {
        tracing::warn!("task isolation is off: tasks run as the borglet's user in its namespaces");
        return Ok(runner::Isolation::default());
    }
    if !nix::unistd::geteuid().is_root() {
        tracing::warn!(
            "not running as root: tasks run WITHOUT namespaces, as the borglet's own user"
        );
        return Ok(runner::Isolation::default());
    }
    let invalid = |reason: String| BorgletError::InvalidConfig {
        field: "task_user",
        reason,
    };
    let user = nix::unistd::User::from_name(&config.task_user)
        .map_err(|e| invalid(format!("cannot look up {:?}: {e}", config.task_user)))?
        .ok_or_else(|| {
            invalid(format!(
                "user {:?} does not exist; create it (useradd --system {0}) or name another",
                config.task_user
            ))
        })?;
    if user.uid.is_root() {
        return Err(invalid(format!(
            "{:?} is root; tasks never run as root",
            config.task_user
        )));
    }
    tracing::info!(user = %config.task_user, uid = user.uid.as_raw(),
        "tasks run in their own PID, mount and UTS namespaces as an unprivileged user");
    Ok(runner::Isolation {
        namespaces: true,
        private_tmp: None,
        user: Some(runner::TaskUser {
            name: config.task_user.clone(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }),
    })
}

/// The address to register: the configured host with the bound port; a wildcard host is
/// replaced by the machine's host name, which other machines can resolve.
fn advertised_address(listen_address: &str, bound: SocketAddr) -> String {
    let host = listen_address
        .rsplit_once(':')
        .map(|(host, _)| host)
        .unwrap_or(listen_address);
    let wildcard = matches!(host, "" | "0.0.0.0" | "[::]" | "::");
    let host = if wildcard {
        nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .unwrap_or_else(|| bound.ip().to_string())
    } else {
        host.to_owned()
    };
    format!("{host}:{}", bound.port())
}

impl Borglet {
    /// Checks the configuration, reads the machine's capacity, sets up cgroups and binds the
    /// gRPC port.
    pub async fn bind(mut config: BorgletConfig) -> Result<Borglet, BorgletError> {
        validate(&config)?;
        let data_dir_error = |source| BorgletError::DataDir {
            path: config.data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(config.data_dir.join(sandbox::SANDBOXES_DIR))
            .map_err(data_dir_error)?;
        // Tasks get absolute paths (HOME, BORG_SANDBOX) whatever the borglet's cwd.
        config.data_dir = std::fs::canonicalize(&config.data_dir).map_err(data_dir_error)?;
        let capacity = match config.capacity_override {
            Some(capacity) => capacity,
            None => machine::detect_capacity_at(&config.data_dir)?,
        };
        let registry = Registry::new();
        let metrics = BorgletMetrics::new(&registry)?;
        let cgroups = match cgroups::detect(
            config.cgroups,
            &config.cgroup_parent,
            config.cgroup_spares_max,
        ) {
            Detected::Enabled(cgroups) => {
                tracing::info!(version = cgroups.version().name(), parent = %config.cgroup_parent,
                    "tasks run in cgroups");
                metrics.cgroups_enabled.set(1);
                Some(cgroups)
            }
            Detected::Disabled { reason } => {
                tracing::warn!(%reason, "tasks run WITHOUT cgroups: no memory or cpu limits are enforced");
                metrics.cgroups_enabled.set(0);
                None
            }
        };
        if let Some(program) = &config.keeper_program {
            keeper::check_program(program)?;
        }
        let isolation = task_isolation(&config)?;
        metrics
            .isolation_enabled
            .set(i64::from(isolation.namespaces));
        let listener = tokio::net::TcpListener::bind(&config.listen_address)
            .await
            .map_err(|source| BorgletError::Bind {
                address: config.listen_address.clone(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| BorgletError::Bind {
            address: config.listen_address.clone(),
            source,
        })?;
        let info = MachineInfo {
            name: config.machine_name.clone(),
            address: advertised_address(&config.listen_address, local_addr),
            capacity,
            attributes: config.attributes.clone(),
            // The size of --port-range (given either way round, as the allocator takes it).
            port_capacity: Some(u32::from(config.port_range.0.abs_diff(config.port_range.1)) + 1),
        };
        let settings = SupervisorSettings {
            machine_name: config.machine_name.clone(),
            cell_name: config.cell_name.clone(),
            port_range: config.port_range,
            data_dir: config.data_dir.clone(),
            stop_grace_period_ms: config.stop_grace_period_ms,
            task_pids_max: config.task_pids_max,
            task_path: config.task_path.clone(),
            desired_tasks_max: config.desired_tasks_max,
            finished_sandboxes_max: config.finished_sandboxes_max,
            isolation,
            log: log_rotation::LogLimits {
                max_bytes: config.log_max_bytes,
                files_kept: config.log_files_kept,
            },
            starts_in_flight_max: config.starts_in_flight_max,
            poll_start_wait_ms: config.poll_start_wait_ms,
            keeper_program: config.keeper_program.clone(),
            usage_sample_interval_ms: config.usage_sample_interval_ms,
        };
        match &config.keeper_program {
            Some(program) => {
                tracing::info!(program = %program.display(), "task keepers are exec'd")
            }
            None => tracing::info!(
                "task keepers are forks of the borglet (no {} beside the binary)",
                keeper::KEEPER_PROGRAM_NAME
            ),
        }
        let supervisor = Arc::new(Supervisor::new(settings, cgroups.clone(), metrics.clone()));
        supervisor
            .state_dir()
            .create()
            .map_err(|error| BorgletError::DataDir {
                path: config.data_dir.clone(),
                source: std::io::Error::other(error.to_string()),
            })?;
        match supervisor.state_dir().load_all() {
            Ok(records) if !records.is_empty() => {
                let found = records.len();
                let adopted = supervisor.adopt(records).await;
                tracing::info!(found, adopted, "tasks of a previous run re-adopted");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read task records of a previous run"),
        }
        supervisor.retain_leftover_sandboxes();
        Ok(Borglet {
            config,
            listener,
            local_addr,
            info,
            registry,
            metrics,
            cgroups,
            supervisor,
        })
    }

    /// The bound gRPC address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What is registered with the master.
    pub fn machine_info(&self) -> &MachineInfo {
        &self.info
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The cgroups tasks run in, when enabled.
    pub fn cgroups(&self) -> Option<Arc<dyn TaskCgroups>> {
        self.cgroups.clone()
    }

    /// Serves Poll, registers with the master and supervises tasks until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BorgletError> {
        // Stops the helpers below also when the server fails on its own.
        let stop = shutdown.child_token();
        if let Some(address) = self.config.metrics_address {
            let bound = serve_metrics(address, self.registry.clone(), stop.clone())
                .await
                .map_err(|source| BorgletError::MetricsServe { address, source })?;
            tracing::info!(%bound, "borglet metrics served at /metrics");
        }
        let registration = if self.config.masters.is_empty() {
            tracing::warn!("no master addresses configured: the machine is not registered");
            None
        } else {
            match MasterClient::new(borg_common::MasterClientConfig {
                token: self.config.master_token.clone(),
                ..borg_common::MasterClientConfig::new(self.config.masters.clone())
            }) {
                Ok(client) => {
                    let registration = register::Registration {
                        client,
                        info: self.info.clone(),
                        retry_max_ms: self.config.register_retry_max_ms,
                        reregister_interval_ms: self.config.reregister_interval_ms,
                        metrics: self.metrics.clone(),
                    };
                    Some(tokio::spawn(registration.run(stop.clone())))
                }
                Err(status) => {
                    return Err(BorgletError::InvalidConfig {
                        field: "masters",
                        reason: status.message().to_owned(),
                    })
                }
            }
        };
        let enforcement = tokio::spawn(enforce_loop(
            Arc::clone(&self.supervisor),
            self.config.clone(),
            stop.clone(),
        ));
        tracing::info!(machine = %self.info.name, address = %self.local_addr, "borglet serving");
        let service = BorgletServiceServer::new(service::BorgletRpc {
            supervisor: Arc::clone(&self.supervisor),
            info: self.info.clone(),
            metrics: self.metrics.clone(),
            log_readers: Arc::new(tokio::sync::Semaphore::new(log_reader::LOG_READERS_MAX)),
            exec_admin_users: self.config.exec_admin_users.clone(),
            exec_timeout_max_ms: self.config.exec_timeout_max_ms,
            shell_sessions: Arc::new(tokio::sync::Semaphore::new(service::SHELL_SESSIONS_MAX)),
            shell_sessions_per_task: Default::default(),
            shell_idle_timeout: std::time::Duration::from_secs(self.config.shell_idle_timeout_s),
        })
        .max_decoding_message_size(POLL_REQUEST_MAX_BYTES);
        if self.config.master_token.is_none() {
            tracing::warn!("no cluster token configured: this borglet obeys any caller");
        }
        let service = tonic::service::interceptor::InterceptedService::new(
            service,
            auth::ControlPlaneOnly::new(
                self.config.master_token.as_deref(),
                self.metrics.requests_unauthenticated.clone(),
            ),
        );
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let served = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stop.cancelled())
            .await;
        stop.cancel();
        let _ = enforcement.await;
        if let Some(registration) = registration {
            let _ = registration.await;
        }
        self.supervisor
            .shutdown(self.config.kill_tasks_on_exit)
            .await;
        if let Some(cgroups) = &self.cgroups {
            cgroups.drain_spares();
            if self.config.kill_tasks_on_exit {
                if let Err(error) = cgroups.remove_parent() {
                    tracing::info!(%error, "the parent cgroup stays");
                }
            }
        }
        tracing::info!(machine = %self.info.name, "borglet stopped");
        served.map_err(BorgletError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_can_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<BorgletError>();
    }

    #[test]
    fn the_advertised_address_carries_the_bound_port() {
        let bound: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        assert_eq!(advertised_address("127.0.0.1:0", bound), "127.0.0.1:4567");
        assert_eq!(advertised_address("localhost:0", bound), "localhost:4567");
        let wildcard = advertised_address("0.0.0.0:0", bound);
        assert!(
            wildcard.ends_with(":4567") && !wildcard.starts_with("0.0.0.0"),
            "{wildcard}"
        );
    }

    #[test]
    fn bad_names_are_refused_before_anything_happens() {
        let mut config = BorgletConfig::new(vec![], "127.0.0.1:0", "m1", "/nonexistent");
        config.cgroup_parent = "../escape".into();
        assert!(matches!(
            validate(&config),
            Err(BorgletError::InvalidConfig {
                field: "cgroup_parent",
                ..
            })
        ));
        config.cgroup_parent = "borg".into();
        config.machine_name = "a/b".into();
        assert!(matches!(
            validate(&config),
            Err(BorgletError::InvalidConfig {
                field: "machine_name",
                ..
            })
        ));
    }
}
