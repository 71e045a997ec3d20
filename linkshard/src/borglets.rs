//! Channels to the shard's borglets and one bounded poll of a borglet.

use borg_common::master_client::TokenInterceptor;
use borg_proto::v1::borglet_service_client::BorgletServiceClient;
use borg_proto::v1::{PollRequest, PollResponse};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A channel to one borglet that sends the cluster token with every call (a borglet obeys
/// only the control plane).
pub type BorgletChannel = InterceptedService<Channel, TokenInterceptor>;

/// Why a poll produced no report.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PollFailure {
    #[error("borglet address {address:?} is not a valid host:port: {reason}")]
    BadAddress { address: String, reason: String },
    #[error("no answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("poll failed: {code:?}: {message}")]
    Rpc { code: tonic::Code, message: String },
    /// The address answers for another machine (a stale address, or a misconfigured borglet).
    #[error("the borglet at this address answers as machine {answered:?}")]
    WrongMachine { answered: String },
}

/// Cached channels, one per machine; a machine that left the shard or moved loses its channel.
pub struct BorgletPool {
    poll_timeout: Duration,
    token: TokenInterceptor,
    channels: HashMap<String, (String, Channel)>,
}

impl BorgletPool {
    /// `token` adds the cluster token to every poll.
    pub fn new(poll_timeout: Duration, token: TokenInterceptor) -> Self {
        BorgletPool {
            poll_timeout,
            token,
            channels: HashMap::new(),
        }
    }

    /// Drops channels of machines that are no longer in the shard.
    pub fn retain(&mut self, machines: &BTreeSet<String>) {
        self.channels
            .retain(|machine, _| machines.contains(machine));
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// A channel to `machine`'s borglet at `address` (connected lazily, reconnecting by itself).
    pub fn channel(&mut self, machine: &str, address: &str) -> Result<BorgletChannel, PollFailure> {
        if let Some((cached_address, channel)) = self.channels.get(machine) {
            if cached_address == address {
                return Ok(InterceptedService::new(channel.clone(), self.token.clone()));
            }
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| PollFailure::BadAddress {
                address: address.to_owned(),
                reason: e.to_string(),
            })?
            .connect_timeout(self.poll_timeout)
            .timeout(self.poll_timeout)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        self.channels
            .insert(machine.to_owned(), (address.to_owned(), channel.clone()));
        Ok(InterceptedService::new(channel, self.token.clone()))
    }
}

/// One poll: the desired set down, the full report back, within `timeout`.
pub async fn poll(
    channel: BorgletChannel,
    request: PollRequest,
    timeout: Duration,
) -> Result<PollResponse, PollFailure> {
    let machine = request.machine.clone();
    let mut client = BorgletServiceClient::new(channel);
    let call = client.poll(request);
    let response = match tokio::time::timeout(timeout, call).await {
        Err(_) => {
            return Err(PollFailure::Timeout {
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })
        }
        Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
            return Err(PollFailure::Timeout {
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })
        }
        Ok(Err(status)) => {
            return Err(PollFailure::Rpc {
                code: status.code(),
                message: status.message().to_owned(),
            })
        }
        Ok(Ok(response)) => response.into_inner(),
    };
    // An empty name is a borglet that does not say; trust the address then.
    if !response.machine.is_empty() && response.machine != machine {
        return Err(PollFailure::WrongMachine {
            answered: response.machine,
        });
    }
    Ok(response)
}
