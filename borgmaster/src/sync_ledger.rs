//! Which of the replica's log writes are durable: the writes since the last finished fsync,
//! so the Paxos loop can let a message go (or count an acceptance) once the sync that covers
//! what it claims has finished, while later writes go on (see `paxos` and `persist_gate`).
//!
//! Writes are numbered (`written_seq`); a sync takes every write so far as its target and,
//! once finished, makes them durable (`synced_seq`). At most one sync is in flight: the
//! writes made meanwhile wait for the next one (group commit). Besides the numbers, the
//! ledger tracks log positions, so the leader can tell whether its own copy of entries up to
//! a position is durable: `durable_log_end`.

/// Writes summarised: the last one's number, the lowest log position any of them wrote
/// (`usize::MAX`: none), and the log's end after the last.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    last_seq: u64,
    first_position: usize,
    log_end: usize,
}

impl Span {
    fn extend(previous: Option<Span>, seq: u64, first_position: usize, log_end: usize) -> Span {
        Span {
            last_seq: seq,
            first_position: previous
                .map_or(first_position, |p| p.first_position.min(first_position)),
            log_end,
        }
    }
}

#[derive(Debug, Default)]
pub struct SyncLedger {
    written_seq: u64,
    synced_seq: u64,
    /// The log's end after the last synced write: positions below it are durable unless a
    /// later write replaced them.
    synced_log_end: usize,
    /// Writes the sync in flight covers.
    syncing: Option<Span>,
    /// Writes after those.
    newer: Option<Span>,
}

impl SyncLedger {
    /// A ledger for a log ending at `log_end`, all of it durable.
    pub fn new(log_end: usize) -> Self {
        SyncLedger {
            synced_log_end: log_end,
            ..SyncLedger::default()
        }
    }

    /// Records a write (not durable yet) that wrote log positions from `first_position` (None:
    /// none) and left the log ending at `log_end`; returns its number.
    pub fn record_write(&mut self, first_position: Option<usize>, log_end: usize) -> u64 {
        self.written_seq += 1;
        let first = first_position.unwrap_or(usize::MAX);
        self.newer = Some(Span::extend(self.newer, self.written_seq, first, log_end));
        self.written_seq
    }

    /// Starts a sync of every write so far and returns its target, unless one is in flight
    /// or everything is durable already.
    pub fn begin_sync(&mut self) -> Option<u64> {
        if self.syncing.is_some() || self.written_seq == self.synced_seq {
            return None;
        }
        self.syncing = self.newer.take();
        Some(self.written_seq)
    }

    /// The sync up to `target` finished: those writes are durable. A sync that a `reset`
    /// overtook changes nothing.
    pub fn finish_sync(&mut self, target: u64) {
        if let Some(span) = self.syncing.filter(|s| s.last_seq == target) {
            self.synced_seq = target;
            self.synced_log_end = span.log_end;
            self.syncing = None;
        }
    }

    /// The sync up to `target` failed: its writes are not durable and wait for the next one.
    pub fn fail_sync(&mut self, target: u64) {
        if let Some(span) = self.syncing.filter(|s| s.last_seq == target) {
            self.syncing = None;
            self.newer = Some(match self.newer {
                Some(newer) => Span {
                    first_position: newer.first_position.min(span.first_position),
                    ..newer
                },
                None => span,
            });
        }
    }

    /// Everything written so far is durable (after a synced write of the whole state) and the
    /// log ends at `log_end`.
    pub fn reset(&mut self, log_end: usize) {
        self.written_seq += 1;
        self.synced_seq = self.written_seq;
        self.synced_log_end = log_end;
        self.syncing = None;
        self.newer = None;
    }

    pub fn written_seq(&self) -> u64 {
        self.written_seq
    }

    pub fn synced_seq(&self) -> u64 {
        self.synced_seq
    }

    /// The log's end after the last write, durable or not.
    pub fn log_end(&self) -> usize {
        self.newer
            .or(self.syncing)
            .map_or(self.synced_log_end, |span| span.log_end)
    }

    /// Positions below this are durable in this replica's log.
    pub fn durable_log_end(&self) -> usize {
        [self.syncing, self.newer]
            .into_iter()
            .flatten()
            .map(|span| span.first_position)
            .fold(self.synced_log_end, usize::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_covers_the_writes_made_before_it_began() {
        let mut ledger = SyncLedger::new(10);
        assert_eq!(ledger.begin_sync(), None, "nothing to sync");
        ledger.record_write(Some(10), 12);
        ledger.record_write(None, 12); // metadata only
        let target = ledger.begin_sync().expect("a sync");
        assert_eq!(target, 2);
        assert_eq!(ledger.begin_sync(), None, "one sync in flight");
        ledger.record_write(Some(12), 15);
        assert_eq!(ledger.durable_log_end(), 10);
        assert_eq!(ledger.log_end(), 15);
        ledger.finish_sync(target);
        assert_eq!(ledger.synced_seq(), 2);
        assert_eq!(
            ledger.durable_log_end(),
            12,
            "the newer write is not durable"
        );
        let next = ledger.begin_sync().expect("the newer write");
        ledger.finish_sync(next);
        assert_eq!(ledger.durable_log_end(), 15);
        assert_eq!(ledger.synced_seq(), ledger.written_seq());
    }

    #[test]
    fn a_replaced_suffix_is_not_durable_until_synced() {
        let mut ledger = SyncLedger::new(20);
        // A new leader's log replaces positions 15.. with a shorter suffix, then extends it.
        ledger.record_write(Some(15), 17);
        ledger.record_write(Some(17), 25);
        assert_eq!(ledger.durable_log_end(), 15);
        let target = ledger.begin_sync().unwrap();
        ledger.finish_sync(target);
        assert_eq!(ledger.durable_log_end(), 25);
    }

    #[test]
    fn a_failed_sync_leaves_its_writes_for_the_next_and_a_reset_overtakes_one_in_flight() {
        let mut ledger = SyncLedger::new(0);
        ledger.record_write(Some(0), 3);
        let target = ledger.begin_sync().unwrap();
        ledger.record_write(Some(3), 4);
        ledger.fail_sync(target);
        assert_eq!(ledger.durable_log_end(), 0);
        let retry = ledger.begin_sync().unwrap();
        assert_eq!(retry, 2);
        ledger.finish_sync(retry);
        assert_eq!(ledger.durable_log_end(), 4);

        ledger.record_write(Some(4), 9);
        let stale = ledger.begin_sync().unwrap();
        ledger.reset(30);
        ledger.finish_sync(stale);
        assert_eq!(ledger.durable_log_end(), 30);
        assert_eq!(ledger.synced_seq(), ledger.written_seq());
    }
}
