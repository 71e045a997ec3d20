//! A client of the master replicas that finds and follows the leader.
//!
//! Any replica serves reads. A follower answers writes with `UNAVAILABLE` and the leader's
//! address (see `borg_proto::leader`); this client retries there at once. When a replica is
//! down or no leader is known it tries the next one, backing off after each full round.
//! Retrying writes is safe because every mutation carries a request id.

use borg_proto::leader::leader_hint;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

#[derive(Debug, Clone)]
pub struct MasterClientConfig {
    /// `host:port` of every master replica.
    pub endpoints: Vec<String>,
    pub connect_timeout_ms: u64,
    /// Per-attempt deadline of a unary call.
    pub request_timeout_ms: u64,
    /// Give up after this long of failed attempts.
    pub call_deadline_ms: u64,
    /// First back-off after a full round of replicas failed; doubles up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl MasterClientConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        MasterClientConfig {
            endpoints,
            connect_timeout_ms: 1_000,
            request_timeout_ms: 10_000,
            call_deadline_ms: 15_000,
            backoff_initial_ms: 50,
            backoff_max_ms: 1_000,
        }
    }
}

/// Most attempts of one call, whatever the deadline says: a bound on every retry loop.
const CALL_ATTEMPTS_MAX: u32 = 200;

pub struct MasterClient {
    config: MasterClientConfig,
    /// Endpoint believed to lead (index into a list that may grow with leader hints).
    state: Mutex<ClientState>,
}

struct ClientState {
    endpoints: Vec<String>,
    current: usize,
    channels: HashMap<String, Channel>,
}

impl MasterClient {
    pub fn new(config: MasterClientConfig) -> Result<Self, Status> {
        if config.endpoints.is_empty() {
            return Err(Status::invalid_argument(
                "no master endpoints given: pass --master HOST:PORT (comma-separated for several)",
            ));
        }
        let endpoints = config.endpoints.clone();
        Ok(MasterClient {
            config,
            state: Mutex::new(ClientState {
                endpoints,
                current: 0,
                channels: HashMap::new(),
            }),
        })
    }

    pub fn from_endpoints(endpoints: Vec<String>) -> Result<Self, Status> {
        Self::new(MasterClientConfig::new(endpoints))
    }

    /// Address the client currently sends to.
    pub fn current_endpoint(&self) -> String {
        let state = self.state.lock().expect("master client lock");
        state.endpoints[state.current].clone()
    }

    fn channel(&self, address: &str) -> Result<Channel, Status> {
        let mut state = self.state.lock().expect("master client lock");
        if let Some(channel) = state.channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Status::invalid_argument(format!("bad master address {address:?}: {e}")))?
            .connect_timeout(Duration::from_millis(self.config.connect_timeout_ms))
            .timeout(Duration::from_millis(self.config.request_timeout_ms))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        state.channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    fn follow(&self, leader: &str) {
        let mut state = self.state.lock().expect("master client lock");
        match state.endpoints.iter().position(|e| e == leader) {
            Some(i) => state.current = i,
            None => {
                state.endpoints.push(leader.to_owned());
                state.current = state.endpoints.len() - 1;
            }
        }
    }

    /// Moves to the next replica; returns true when a full round has been tried.
    fn advance(&self, round_start: usize) -> bool {
        let mut state = self.state.lock().expect("master client lock");
        state.current = (state.current + 1) % state.endpoints.len();
        state.current == round_start
    }

    /// Runs `op` on a channel to the leader (or any replica, for reads that any replica
    /// serves), following leader hints and retrying unavailable replicas within the bounds
    /// of the configuration.
    pub async fn call<T, F, Fut>(&self, mut op: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.call_deadline_ms);
        let mut backoff_ms = self.config.backoff_initial_ms;
        let mut round_start = self.state.lock().expect("master client lock").current;
        let mut last_error = Status::unavailable("no master replica answered");
        for _ in 0..CALL_ATTEMPTS_MAX {
            let address = self.current_endpoint();
            let channel = self.channel(&address)?;
            match op(channel).await {
                Ok(value) => return Ok(value),
                Err(status) => {
                    if let Some(leader) = leader_hint(&status) {
                        if leader != address {
                            tracing::debug!(from = %address, to = %leader, "following leader hint");
                            self.follow(&leader);
                            round_start = self.state.lock().expect("master client lock").current;
                            last_error = status;
                            continue;
                        }
                    }
                    if !is_retryable(&status) {
                        return Err(status);
                    }
                    tracing::debug!(replica = %address, error = %status.message(), "master replica unavailable");
                    last_error = status;
                    if self.advance(round_start) {
                        if tokio::time::Instant::now() + Duration::from_millis(backoff_ms) > deadline
                        {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                        backoff_ms = (backoff_ms * 2).min(self.config.backoff_max_ms);
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        Err(Status::new(
            last_error.code(),
            format!(
                "no master replica could serve the request (tried {}): {}",
                self.state
                    .lock()
                    .expect("master client lock")
                    .endpoints
                    .join(", "),
                last_error.message()
            ),
        ))
    }
}

/// Unavailable replicas and transport failures are worth another replica; everything else
/// (bad arguments, permission, not found, ...) is the answer.
fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_endpoint_list_is_refused() {
        assert!(MasterClient::from_endpoints(vec![]).is_err());
    }

    #[tokio::test]
    async fn leader_hints_are_followed_and_errors_returned() {
        let client =
            MasterClient::from_endpoints(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()])
                .unwrap();
        let mut seen = Vec::new();
        let result: Result<u32, Status> = client
            .call(|_channel| {
                let address = client.current_endpoint();
                seen.push(address.clone());
                async move {
                    if address == "127.0.0.1:3" {
                        Ok(7)
                    } else {
                        Err(borg_proto::leader::not_leader(Some("127.0.0.1:3")))
                    }
                }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(seen, vec!["127.0.0.1:1", "127.0.0.1:3"]);

        let denied: Result<(), Status> = client
            .call(|_| async { Err(Status::permission_denied("no")) })
            .await;
        assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    }

    #[tokio::test]
    async fn unavailable_replicas_are_retried_within_the_deadline() {
        let mut config = MasterClientConfig::new(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()]);
        config.call_deadline_ms = 300;
        config.backoff_initial_ms = 10;
        let client = MasterClient::new(config).unwrap();
        let mut attempts = 0;
        let result: Result<(), Status> = client
            .call(|_| {
                attempts += 1;
                async { Err(Status::unavailable("down")) }
            })
            .await;
        let error = result.unwrap_err();
        assert_eq!(error.code(), Code::Unavailable);
        assert!(error.message().contains("127.0.0.1:2"), "{}", error.message());
        assert!(attempts >= 2 && attempts < CALL_ATTEMPTS_MAX as usize);
    }
}
