//! Outgoing Paxos messages: one bounded queue and one sender task per peer.
//!
//! The sender keeps one `ReplicaService.DeliverStream` open to its peer and sends what is
//! queued in batches (up to `deliver_batch_max` messages and `DELIVER_BATCH_MAX_BYTES`) on
//! it: one HTTP/2 data frame per batch instead of a unary call per batch (measured in
//! `master_bench`, see BENCHMARKS.md). A full queue or a broken stream drops messages and
//! counts them: Paxos resends what matters.

use crate::entry::{encode_message, PaxosMessage};
use crate::metrics::ReplicaMetrics;
use crate::paxos::Incoming;
use crate::services::replica::DELIVER_STREAM_FROM_HEADER;
use borg_common::master_client::TokenInterceptor;
use borg_proto::v1::replica_service_client::ReplicaServiceClient;
use borg_proto::v1::DeliverRequest;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Most bytes of messages sent in one `Deliver` call (a single larger message goes alone).
pub const DELIVER_BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Pause after a failed call, so an unreachable peer costs little.
const PEER_RETRY_BACKOFF_MS: u64 = 100;
/// Connect timeout towards a peer.
const PEER_CONNECT_TIMEOUT_MS: u64 = 500;
/// Batches handed to an open delivery stream and not yet sent; more are dropped.
const STREAM_BATCHES_QUEUED_MAX: usize = 64;
/// HTTP/2 keep-alive on the connection to a peer: a ping this often, even while idle, and the
/// connection (and its delivery stream) counts as broken when one goes unanswered this long,
/// so a peer that vanished without closing it (a partition, a frozen host) is noticed and
/// re-dialled. Long on purpose: a late answer on a busy machine must not break a healthy
/// stream (the loss costs a re-sync), and heartbeats, not pings, decide who leads.
const PEER_KEEPALIVE_INTERVAL_MS: u64 = 5_000;
const PEER_KEEPALIVE_TIMEOUT_MS: u64 = 20_000;

/// A client of another replica's `ReplicaService` that sends the cluster token (if any).
pub type PeerClient = ReplicaServiceClient<InterceptedService<Channel, TokenInterceptor>>;

/// `channel` as a peer client with `token` and the replicas' message size limit.
pub fn peer_client(
    channel: Channel,
    token: &TokenInterceptor,
    message_max_bytes: usize,
) -> PeerClient {
    ReplicaServiceClient::with_interceptor(channel, token.clone())
        .max_encoding_message_size(message_max_bytes)
        .max_decoding_message_size(message_max_bytes)
}

pub struct TransportSettings {
    pub id: u64,
    pub peers: BTreeMap<u64, String>,
    pub outgoing_queue_max: usize,
    pub deliver_batch_max: usize,
    pub deliver_timeout_ms: u64,
    /// Largest encoded message (and gRPC message) between replicas.
    pub message_max_bytes: usize,
    /// Attaches the cluster token to every `Deliver` (peers refuse calls without it).
    pub token: TokenInterceptor,
}

/// Replicas whose Paxos traffic is dropped both ways. Set only through
/// `ReplicaService.SetPeerFilter`, which exists for fault tests (a partition on loopback).
#[derive(Debug, Default)]
pub struct PeerFilter {
    blocked: RwLock<BTreeSet<u64>>,
}

impl PeerFilter {
    pub fn set(&self, blocked: impl IntoIterator<Item = u64>) {
        if let Ok(mut set) = self.blocked.write() {
            *set = blocked.into_iter().collect();
        }
    }

    pub fn blocks(&self, peer: u64) -> bool {
        self.blocked.read().is_ok_and(|set| set.contains(&peer))
    }
}

/// The queues towards every other replica.
pub struct PeerSenders {
    queues: BTreeMap<u64, mpsc::Sender<Vec<u8>>>,
    message_max_bytes: u64,
    metrics: ReplicaMetrics,
    filter: Arc<PeerFilter>,
}

impl PeerSenders {
    /// Spawns one sender task per peer; they stop on `shutdown`.
    pub fn spawn(
        settings: &TransportSettings,
        incoming: mpsc::Sender<Incoming>,
        metrics: ReplicaMetrics,
        filter: Arc<PeerFilter>,
        shutdown: CancellationToken,
    ) -> Result<Self, tonic::transport::Error> {
        let mut queues = BTreeMap::new();
        for (&peer, address) in &settings.peers {
            if peer == settings.id {
                continue;
            }
            let (tx, rx) = mpsc::channel(settings.outgoing_queue_max.max(1));
            let endpoint = Endpoint::from_shared(format!("http://{address}"))?
                .connect_timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS))
                .timeout(Duration::from_millis(settings.deliver_timeout_ms))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_millis(PEER_KEEPALIVE_INTERVAL_MS))
                .keep_alive_timeout(Duration::from_millis(PEER_KEEPALIVE_TIMEOUT_MS))
                .keep_alive_while_idle(true);
            let client = peer_client(
                endpoint.connect_lazy(),
                &settings.token,
                settings.message_max_bytes,
            );
            let sender = PeerSender {
                from: settings.id,
                peer,
                client,
                queue: rx,
                batch_max: settings.deliver_batch_max.max(1),
                incoming: incoming.clone(),
                metrics: metrics.clone(),
            };
            tokio::spawn(sender.run(shutdown.clone()));
            queues.insert(peer, tx);
        }
        Ok(PeerSenders {
            queues,
            message_max_bytes: settings.message_max_bytes as u64,
            metrics,
            filter,
        })
    }

    /// Queues `message` for its receiver, or drops it (counted) when that queue is full.
    pub fn send(&self, message: PaxosMessage) {
        let receiver = message.get_receiver();
        if self.filter.blocks(receiver) {
            self.metrics.outgoing_dropped.inc();
            return;
        }
        let Some(queue) = self.queues.get(&receiver) else {
            tracing::warn!(receiver, "Paxos message for an unknown replica dropped");
            self.metrics.outgoing_dropped.inc();
            return;
        };
        let bytes = match encode_message(&message, self.message_max_bytes) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(receiver, %error, "Paxos message dropped");
                self.metrics.outgoing_dropped.inc();
                return;
            }
        };
        if queue.try_send(bytes).is_err() {
            self.metrics.outgoing_dropped.inc();
        }
    }
}

struct PeerSender {
    from: u64,
    peer: u64,
    client: PeerClient,
    queue: mpsc::Receiver<Vec<u8>>,
    batch_max: usize,
    incoming: mpsc::Sender<Incoming>,
    metrics: ReplicaMetrics,
}

/// Why a delivery stream ended.
enum StreamEnd {
    Shutdown,
    /// The stream could not be opened or broke off (the peer is down, restarted, or refused).
    Broken(String),
}

impl PeerSender {
    /// Keeps one delivery stream open to the peer, reopening it after
    /// `PEER_RETRY_BACKOFF_MS` when it fails. When a stream opens after a failure, the loop
    /// hears `Reconnected` (OmniPaxos re-syncs the peer).
    async fn run(mut self, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            match self.stream(&shutdown, &mut failing).await {
                StreamEnd::Shutdown => return,
                StreamEnd::Broken(reason) => {
                    if !failing {
                        failing = true;
                        tracing::warn!(peer = self.peer, error = %reason, "cannot deliver to peer");
                        // Bounded like `Reconnected`: if the loop is busy, heartbeats decide.
                        let _ = self.incoming.try_send(Incoming::PeerLost(self.peer));
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(PEER_RETRY_BACKOFF_MS)) => {}
            }
        }
    }

    /// Opens a stream and sends queued messages on it, in batches, until it ends.
    async fn stream(&mut self, shutdown: &CancellationToken, failing: &mut bool) -> StreamEnd {
        let (batches, outbound) = mpsc::channel(STREAM_BATCHES_QUEUED_MAX);
        let mut request = tonic::Request::new(ReceiverStream::new(outbound));
        request.metadata_mut().insert(
            DELIVER_STREAM_FROM_HEADER,
            tonic::metadata::MetadataValue::from(self.from),
        );
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return StreamEnd::Shutdown,
            opened = self.client.deliver_stream(request) => opened,
        };
        let mut answers = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => return StreamEnd::Broken(status.message().to_owned()),
        };
        if *failing {
            *failing = false;
            tracing::info!(peer = self.peer, "peer reachable again");
            // Bounded: if the loop is busy, the next resend timeout heals anyway.
            let _ = self.incoming.try_send(Incoming::Reconnected(self.peer));
        }
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return StreamEnd::Shutdown,
                answer = answers.message() => {
                    return StreamEnd::Broken(match answer {
                        Err(status) => status.message().to_owned(),
                        Ok(_) => "the peer ended the delivery stream".to_owned(),
                    });
                }
                next = self.queue.recv() => match next {
                    Some(bytes) => bytes,
                    None => return StreamEnd::Shutdown,
                },
            };
            let batch = self.batch(first);
            let count = batch.messages.len() as u64;
            match batches.try_send(batch) {
                Ok(()) => {}
                // The peer reads slower than we send: drop (Paxos resends what matters).
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.metrics.outgoing_dropped.inc_by(count);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.metrics.outgoing_dropped.inc_by(count);
                    return StreamEnd::Broken("the delivery stream closed".to_owned());
                }
            }
        }
    }

    /// `first` and whatever else is queued, up to `batch_max` messages and
    /// `DELIVER_BATCH_MAX_BYTES`.
    fn batch(&mut self, first: Vec<u8>) -> DeliverRequest {
        let mut bytes_total = first.len();
        let mut messages = vec![first];
        while messages.len() < self.batch_max && bytes_total < DELIVER_BATCH_MAX_BYTES {
            match self.queue.try_recv() {
                Ok(bytes) => {
                    bytes_total += bytes.len();
                    messages.push(bytes);
                }
                Err(_) => break,
            }
        }
        DeliverRequest {
            from: self.from,
            messages,
        }
    }
}
