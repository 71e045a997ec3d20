//! Configuration of one master replica.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything a replica needs; `ReplicaConfig::new` gives the defaults.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This replica's id (1-based); a key of `peers`.
    pub id: u64,
    /// Every replica, this one included: id → `host:port`. The replica listens on its own entry.
    pub peers: BTreeMap<u64, String>,
    /// RocksDB directory (log, Paxos metadata, checkpoints). Created if missing.
    pub data_dir: PathBuf,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_address: Option<SocketAddr>,
    /// Period of OmniPaxos' logical clock.
    pub tick_interval_ms: u64,
    /// Length of a heartbeat round, in ticks: a replica that hears from no leader in a round
    /// turns unhappy, and takes over when every replica it hears from is unhappy too (about
    /// 2.5 rounds after a leader dies: ~285 ms at 10). 8 fails over in ~215 ms, but under
    /// load 14 on 2 cores one master_bench run saw leaders change during its throughput phase
    /// (none in four others), so the default keeps 10.
    pub election_timeout_ticks: u64,
    /// Ticks before an unanswered Paxos message is resent.
    pub resend_timeout_ticks: u64,
    /// Entries the leader gathers before writing them to its log in one synced batch. 1
    /// writes each at once; more groups bursts of writes into one fsync, at the cost of up to
    /// one tick of latency (the batch is flushed every tick).
    pub append_batch_max: usize,
    /// How long a write waits for its entry to be decided before answering UNAVAILABLE (the
    /// client retries; the request id makes that safe).
    pub proposal_timeout_ms: u64,
    /// Proposals waiting for the Paxos loop; more are refused with UNAVAILABLE.
    pub proposal_queue_max: usize,
    /// Incoming Paxos messages waiting for the loop; more are dropped (Paxos resends).
    pub incoming_queue_max: usize,
    /// Outgoing Paxos messages queued per peer; more are dropped and counted.
    pub outgoing_queue_max: usize,
    /// Most messages sent to a peer in one `Deliver` call.
    pub deliver_batch_max: usize,
    /// Deadline for opening a delivery stream to a peer.
    pub deliver_timeout_ms: u64,
    /// Changes buffered per `WatchCell`/`StreamEvents` subscriber before it is cut off as lagging.
    pub watch_buffer_max: usize,
    /// Write a checkpoint of the cell state after this many applied entries (0: not by count).
    /// After each checkpoint the log below it is trimmed (see `paxos::compaction`).
    pub checkpoint_every_entries: u64,
    /// Also write one when this many seconds passed since the last and something was applied
    /// (0: not by time).
    pub checkpoint_every_s: u64,
    /// Log entries the leader keeps past its checkpoint for replicas that have not accepted
    /// them (down or slow). Beyond this it trims anyway, and such a replica catches up by
    /// fetching a checkpoint when it returns.
    pub trim_lag_max_entries: u64,
    /// Accept `ReplicaService.SetPeerFilter` (fault tests cut replicas apart with it). Off by
    /// default: a production replica refuses it.
    pub peer_filter_enabled: bool,
    /// A replica starting on an empty data directory asks its peers for a checkpoint (snapshot
    /// transfer) for at most this long; if none has one it starts empty (a new cell).
    pub bootstrap_fetch_timeout_ms: u64,
    /// Largest gRPC message accepted from clients, schedulers, link shards and borglets.
    pub client_message_max_bytes: usize,
    /// Token files of the bootstrap admin and the control plane; None: authentication is off
    /// (every caller is trusted; for tests of replication alone).
    pub auth: Option<crate::services::auth::AuthConfig>,
    /// Largest Paxos message (and `Deliver` call) between replicas; a recovering replica may
    /// be sent a long log suffix in one message.
    pub replica_message_max_bytes: usize,
    /// How long a pass of the Paxos loop waits for the fsync it started before going on
    /// without it (the fsync runs on its own thread; see `paxos`). 0, the default, never
    /// waits: in 6 alternated master_bench runs it matched the old inline fsync at 1 and 64
    /// in flight (0.97x, 1.0x), where 5 ms gave 0.82x and 1.13x. A stalled disk costs the
    /// loop no more than this; ticks and heartbeats go on.
    pub sync_inline_wait_ms: u64,
    /// When the delivery stream to the leader breaks (its process died: the kernel closes
    /// its connections at once), OmniPaxos' clock runs this many times faster (1: off), so
    /// heartbeat rounds are that much shorter and the followers elect a new leader in a
    /// fraction of the election timeout; for at most `leader_lost_fast_ms`, or until a
    /// leader is elected. A leader that only lost a connection but lives keeps its place:
    /// it still answers heartbeats, and a replica takes over only when all it hears from
    /// are unhappy.
    pub leader_lost_tick_speedup: u64,
    pub leader_lost_fast_ms: u64,
    /// Fault injection, off (0) by default: every fsync of this replica's log takes this many
    /// ms longer, as when the disk stalls. Tests and benchmarks turn it on to show that a
    /// slow disk does not cost the cell its leader. `new` reads it from the environment
    /// variable `BORG_FAULT_FSYNC_STALL_MS` (see `FAULT_FSYNC_STALL_ENV`).
    pub fault_fsync_stall_ms: u64,
}

/// Environment variable read by `ReplicaConfig::new` into `fault_fsync_stall_ms` (fault
/// injection: a number of ms added to every fsync of the replica's log).
pub const FAULT_FSYNC_STALL_ENV: &str = "BORG_FAULT_FSYNC_STALL_MS";

impl ReplicaConfig {
    pub fn new(id: u64, peers: BTreeMap<u64, String>, data_dir: PathBuf) -> Self {
        ReplicaConfig {
            id,
            peers,
            data_dir,
            metrics_address: None,
            tick_interval_ms: 10,
            election_timeout_ticks: 10,
            resend_timeout_ticks: 50,
            append_batch_max: 1,
            proposal_timeout_ms: 5_000,
            proposal_queue_max: 1_024,
            incoming_queue_max: 4_096,
            outgoing_queue_max: 4_096,
            deliver_batch_max: 256,
            deliver_timeout_ms: 1_000,
            watch_buffer_max: 1_024,
            checkpoint_every_entries: 10_000,
            checkpoint_every_s: 60,
            trim_lag_max_entries: 100_000,
            peer_filter_enabled: false,
            bootstrap_fetch_timeout_ms: 5_000,
            client_message_max_bytes: 16 * 1024 * 1024,
            auth: None,
            replica_message_max_bytes: 256 * 1024 * 1024,
            sync_inline_wait_ms: 0,
            leader_lost_tick_speedup: 4,
            leader_lost_fast_ms: 500,
            fault_fsync_stall_ms: fault_fsync_stall_ms_from_env(),
        }
    }

    /// Parses a peer list `ID=HOST:PORT,ID=HOST:PORT,...` (ids 1 or more, each once).
    pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, PeersParseError> {
        let mut peers = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || PeersParseError::Item {
                item: item.to_owned(),
            };
            let (id, address) = item.split_once('=').ok_or_else(bad)?;
            let id: u64 = id.trim().parse().map_err(|_| bad())?;
            let address = address.trim();
            if id == 0 || address.is_empty() || !address.contains(':') {
                return Err(bad());
            }
            if peers.insert(id, address.to_owned()).is_some() {
                return Err(PeersParseError::Duplicate { id });
            }
        }
        if peers.is_empty() {
            return Err(PeersParseError::Empty);
        }
        Ok(peers)
    }

    /// This replica's own `host:port`.
    pub fn own_address(&self) -> Option<&str> {
        self.peers.get(&self.id).map(String::as_str)
    }
}

/// `FAULT_FSYNC_STALL_ENV` as a number of ms; unset or not a number: 0 (off), with a warning
/// for the latter.
fn fault_fsync_stall_ms_from_env() -> u64 {
    let Ok(text) = std::env::var(FAULT_FSYNC_STALL_ENV) else {
        return 0;
    };
    text.trim().parse().unwrap_or_else(|_| {
        tracing::warn!(value = %text, "{FAULT_FSYNC_STALL_ENV} is not a number of ms; no fsync stall injected");
        0
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeersParseError {
    #[error("peer {item:?} is not ID=HOST:PORT with an id of 1 or more")]
    Item { item: String },
    #[error("replica id {id} is listed twice")]
    Duplicate { id: u64 },
    #[error("no replicas listed: give ID=HOST:PORT for every replica, comma-separated")]
    Empty,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_lists_parse_and_bad_ones_are_named() {
        let peers = ReplicaConfig::parse_peers("1=127.0.0.1:7101, 2=localhost:7102").unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[&2], "localhost:7102");
        assert!(matches!(
            ReplicaConfig::parse_peers("1=a:1,1=b:2"),
            Err(PeersParseError::Duplicate { id: 1 })
        ));
        assert!(ReplicaConfig::parse_peers("0=a:1").is_err());
        assert!(ReplicaConfig::parse_peers("x=a:1").is_err());
        assert!(ReplicaConfig::parse_peers("1=nohostport").is_err());
        assert_eq!(ReplicaConfig::parse_peers(""), Err(PeersParseError::Empty));
    }
}
