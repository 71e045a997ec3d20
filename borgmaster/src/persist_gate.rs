//! Persist-then-send (as etcd's raft does with `Ready`): what a replica tells its peers about
//! its stored state leaves only after the fsync that covers it, while that fsync runs off the
//! Paxos loop so heartbeats and ticks never wait for the disk.
//!
//! Invariants (the loop in `paxos` relies on them):
//! - Outgoing: a SequencePaxos message that claims stored state (`Accepted`, `Promise`,
//!   `Prepare`, `AcceptSync`, ...) waits for the sync covering every write made before it
//!   was taken from OmniPaxos. The leader's `AcceptDecide` and `Decide` go at once: their
//!   entries are proposals, not claims, and the decided index they carry is covered by the
//!   incoming rule below; the followers write the entries while the leader does. They still
//!   queue behind a held message to the same peer, since OmniPaxos expects a peer's
//!   messages in order.
//! - Incoming: a follower's `Accepted` reaches the leader's OmniPaxos only once the leader's
//!   own copy of the entries it names is durable (`ReplicaDb::durable_log_end`). OmniPaxos
//!   decides only on an `Accepted`, counting the leader itself, so a decided entry, and so
//!   every answered write, is on a majority's disks, the leader's counted only after its own
//!   sync covers it. SequencePaxos messages behind a held one wait in order. An `Accepted`
//!   naming positions past the log's end is stale (from a ballot whose log was replaced
//!   since; OmniPaxos ignores it) and waits for nothing.
//! - BLE messages (heartbeats) persist and claim nothing: they never wait, in either
//!   direction.

use crate::entry::PaxosMessage;
use crate::storage::LogPositions;
use omnipaxos::messages::sequence_paxos::{PaxosMessage as SeqMessage, PaxosMsg};
use omnipaxos::messages::Message;
use std::collections::{BTreeMap, VecDeque};

/// Most messages held in each direction while a sync is slow; more are dropped (and counted),
/// as a full peer queue drops them: OmniPaxos resends or re-syncs.
pub const HELD_MESSAGES_MAX: usize = 16_384;

#[derive(Default)]
pub struct PersistGate {
    /// Per receiver, in order: the write number a sync must cover, and the message.
    outgoing: BTreeMap<u64, VecDeque<(u64, PaxosMessage)>>,
    outgoing_held: usize,
    /// In order: the log end that must be durable here, and the message.
    incoming: VecDeque<(usize, PaxosMessage)>,
    /// Messages dropped since the last `take_dropped`: (outgoing, incoming).
    dropped: (u64, u64),
}

impl PersistGate {
    /// An outgoing message taken from OmniPaxos after the writes numbered up to `written_seq`:
    /// returned if it may leave now (writes up to `synced_seq` are durable), else held.
    pub fn outgoing(
        &mut self,
        message: PaxosMessage,
        written_seq: u64,
        synced_seq: u64,
    ) -> Option<PaxosMessage> {
        let needs_seq = match &message {
            Message::BLE(_) => return Some(message),
            Message::SequencePaxos(SeqMessage {
                msg: PaxosMsg::AcceptDecide(_) | PaxosMsg::Decide(_),
                ..
            }) => 0,
            _ => written_seq,
        };
        let queue = self.outgoing.entry(message.get_receiver()).or_default();
        if queue.is_empty() && needs_seq <= synced_seq {
            return Some(message);
        }
        if self.outgoing_held >= HELD_MESSAGES_MAX {
            self.dropped.0 += 1;
            return None;
        }
        queue.push_back((needs_seq, message));
        self.outgoing_held += 1;
        None
    }

    /// Moves the held outgoing messages that writes up to `synced_seq` cover into `out`.
    pub fn release_outgoing(&mut self, synced_seq: u64, out: &mut Vec<PaxosMessage>) {
        for queue in self.outgoing.values_mut() {
            while queue.front().is_some_and(|(needs, _)| *needs <= synced_seq) {
                if let Some((_, message)) = queue.pop_front() {
                    out.push(message);
                    self.outgoing_held -= 1;
                }
            }
        }
        self.outgoing.retain(|_, queue| !queue.is_empty());
    }

    /// A message from a peer: returned if OmniPaxos may handle it now (given where this
    /// replica's log ends and is durable), else held.
    pub fn incoming(&mut self, message: PaxosMessage, log: LogPositions) -> Option<PaxosMessage> {
        let needs_log_end = match &message {
            Message::BLE(_) => return Some(message),
            Message::SequencePaxos(SeqMessage {
                msg: PaxosMsg::Accepted(accepted),
                ..
            }) => accepted.accepted_idx,
            _ => 0,
        };
        if self.incoming.is_empty() && may_handle(needs_log_end, log) {
            return Some(message);
        }
        if self.incoming.len() >= HELD_MESSAGES_MAX {
            self.dropped.1 += 1;
            return None;
        }
        self.incoming.push_back((needs_log_end, message));
        None
    }

    /// Moves the held incoming messages that may be handled now (`log`) into `out`.
    pub fn release_incoming(&mut self, log: LogPositions, out: &mut Vec<PaxosMessage>) {
        while self
            .incoming
            .front()
            .is_some_and(|(needs, _)| may_handle(*needs, log))
        {
            if let Some((_, message)) = self.incoming.pop_front() {
                out.push(message);
            }
        }
    }

    /// Messages held now, in both directions.
    pub fn held(&self) -> usize {
        self.outgoing_held + self.incoming.len()
    }

    /// Messages dropped (outgoing, incoming) since the last call.
    pub fn take_dropped(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.dropped)
    }
}

/// A message that needs the log durable up to `needs_log_end` may be handled: it is, or the
/// positions it names are not in the log (any more).
fn may_handle(needs_log_end: usize, log: LogPositions) -> bool {
    needs_log_end <= log.durable_end || needs_log_end > log.end
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnipaxos::ballot_leader_election::Ballot;
    use omnipaxos::messages::ballot_leader_election::{BLEMessage, HeartbeatMsg, HeartbeatRequest};
    use omnipaxos::messages::sequence_paxos::{Accepted, Decide};

    fn sequence(from: u64, to: u64, msg: PaxosMsg<crate::entry::SharedEntry>) -> PaxosMessage {
        Message::SequencePaxos(SeqMessage { from, to, msg })
    }

    fn accepted(from: u64, to: u64, index: usize) -> PaxosMessage {
        sequence(
            from,
            to,
            PaxosMsg::Accepted(Accepted {
                n: Ballot::default(),
                accepted_idx: index,
            }),
        )
    }

    fn decide(from: u64, to: u64, index: usize) -> PaxosMessage {
        sequence(
            from,
            to,
            PaxosMsg::Decide(Decide {
                n: Ballot::default(),
                seq_num: Default::default(),
                decided_idx: index,
            }),
        )
    }

    fn heartbeat(from: u64, to: u64) -> PaxosMessage {
        Message::BLE(BLEMessage {
            from,
            to,
            msg: HeartbeatMsg::Request(HeartbeatRequest { round: 1 }),
        })
    }

    fn accepted_index(message: &PaxosMessage) -> Option<usize> {
        match message {
            Message::SequencePaxos(SeqMessage {
                msg: PaxosMsg::Accepted(a),
                ..
            }) => Some(a.accepted_idx),
            _ => None,
        }
    }

    #[test]
    fn claims_wait_for_their_sync_and_heartbeats_never_wait() {
        let mut gate = PersistGate::default();
        // Writes 1..=3 made, 1 synced: an Accepted claiming them waits; a heartbeat goes.
        assert!(gate.outgoing(accepted(2, 1, 7), 3, 1).is_none());
        assert!(gate.outgoing(heartbeat(2, 1), 3, 1).is_some());
        // A leader's Decide to the same peer queues behind the held message (order)...
        assert!(gate.outgoing(decide(2, 1, 5), 3, 1).is_none());
        // ...but goes at once to a peer with nothing held.
        assert!(gate.outgoing(decide(2, 3, 5), 3, 1).is_some());
        assert_eq!(gate.held(), 2);
        let mut out = Vec::new();
        gate.release_outgoing(2, &mut out);
        assert!(out.is_empty(), "write 3 is not durable yet");
        gate.release_outgoing(3, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(accepted_index(&out[0]), Some(7), "in order");
        assert_eq!(gate.held(), 0);
    }

    fn log(durable_end: usize, end: usize) -> LogPositions {
        LogPositions { durable_end, end }
    }

    #[test]
    fn an_accepted_counts_only_once_the_leaders_own_copy_is_durable() {
        let mut gate = PersistGate::default();
        assert!(gate.incoming(accepted(2, 1, 4), log(4, 12)).is_some());
        assert!(gate.incoming(accepted(2, 1, 9), log(4, 12)).is_none());
        assert!(gate.incoming(heartbeat(3, 1), log(4, 12)).is_some());
        // Another peer's message waits behind the held one.
        assert!(gate.incoming(decide(3, 1, 2), log(4, 12)).is_none());
        let mut out = Vec::new();
        gate.release_incoming(log(8, 12), &mut out);
        assert!(out.is_empty());
        gate.release_incoming(log(9, 12), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(accepted_index(&out[0]), Some(9));
    }

    #[test]
    fn a_stale_accepted_past_the_log_end_waits_for_nothing() {
        let mut gate = PersistGate::default();
        assert!(gate.incoming(accepted(2, 1, 20), log(4, 12)).is_some());
        // Held, then the log is replaced by a shorter one: released, not held forever.
        assert!(gate.incoming(accepted(2, 1, 10), log(4, 12)).is_none());
        let mut out = Vec::new();
        gate.release_incoming(log(4, 6), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn held_messages_are_bounded() {
        let mut gate = PersistGate::default();
        for i in 0..HELD_MESSAGES_MAX + 5 {
            assert!(gate
                .incoming(accepted(2, 1, i + 1), log(0, usize::MAX))
                .is_none());
            assert!(gate.outgoing(accepted(1, 2, i + 1), 1, 0).is_none());
        }
        assert_eq!(gate.held(), 2 * HELD_MESSAGES_MAX);
        assert_eq!(gate.take_dropped(), (5, 5));
        assert_eq!(gate.take_dropped(), (0, 0));
    }
}
