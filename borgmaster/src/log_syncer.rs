//! The replica's fsync thread: one sync of the log at a time, off the Paxos loop's task.
//!
//! The loop starts a sync (`start`) and learns of its end in its `select!` (`finished`),
//! ticking and answering heartbeats meanwhile. It may also wait for it a short, bounded while
//! (`finished_within`, `ReplicaConfig::sync_inline_wait_ms`; off by default).

use crate::storage::{ReplicaDb, StorageError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Default)]
struct SyncState {
    /// The target of a sync to run (from `ReplicaDb::begin_sync`).
    request: Option<u64>,
    /// The finished sync's result, not taken yet.
    result: Option<Result<u64, StorageError>>,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<SyncState>,
    /// The thread waits on it for a request, `finished_within` for a result.
    changed: Condvar,
    /// Wakes `finished`.
    done: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        // Nothing panics while holding it; a poisoned lock still holds a whole state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The fsync thread of one replica; stopped and joined when dropped.
pub struct LogSyncer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogSyncer {
    pub fn spawn(db: ReplicaDb) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-sync".into())
            .spawn(move || run(db, &worker))?;
        Ok(LogSyncer {
            shared,
            thread: Some(thread),
        })
    }

    /// Starts the sync up to `target` (the caller has none in flight).
    pub fn start(&self, target: u64) {
        self.shared.lock().request = Some(target);
        self.shared.changed.notify_all();
    }

    /// The sync's result if it finishes within `wait` (blocking this thread meanwhile).
    pub fn finished_within(&self, wait: Duration) -> Option<Result<u64, StorageError>> {
        let state = self.shared.lock();
        let (mut state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, wait, |s| s.result.is_none() && !s.stop)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.result.take()
    }

    /// The sync's result, once it finishes.
    pub async fn finished(&self) -> Result<u64, StorageError> {
        loop {
            // A result posted between the check and the wait leaves a permit in `done`.
            let notified = self.shared.done.notified();
            if let Some(result) = self.shared.lock().result.take() {
                return result;
            }
            notified.await;
        }
    }
}

impl Drop for LogSyncer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            // A sync in flight finishes first (the database stays open under it).
            let _ = thread.join();
        }
    }
}

fn run(db: ReplicaDb, shared: &Shared) {
    loop {
        let target = {
            let mut state = shared.lock();
            loop {
                if state.stop {
                    return;
                }
                if let Some(target) = state.request.take() {
                    break target;
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        let result = db.sync_to(target);
        shared.lock().result = Some(result);
        shared.changed.notify_all();
        shared.done.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnipaxos::storage::Storage;

    /// A database (with `stall_ms` added to each fsync) holding one unsynced log entry, and
    /// the target of the sync that covers it.
    fn one_unsynced_write(stall_ms: u64) -> (tempfile::TempDir, ReplicaDb, u64) {
        let dir = tempfile::tempdir().unwrap();
        let db = ReplicaDb::open(dir.path())
            .unwrap()
            .with_fault_fsync_stall_ms(stall_ms);
        let mut storage =
            crate::storage::RocksStorage::<crate::entry::SharedEntry>::open(db.clone()).unwrap();
        storage
            .append_entry(crate::entry::SharedEntry::new(Vec::new()))
            .unwrap();
        let target = db.begin_sync().expect("a write to sync");
        (dir, db, target)
    }

    #[test]
    fn a_sync_makes_the_writes_before_it_durable_and_reports_back() {
        let (_dir, db, target) = one_unsynced_write(0);
        let syncer = LogSyncer::spawn(db.clone()).unwrap();
        assert_eq!(db.log_positions().durable_end, 0);
        syncer.start(target);
        let result = syncer
            .finished_within(Duration::from_secs(30))
            .expect("the sync finished");
        assert_eq!(result.unwrap(), target);
        assert_eq!(db.synced_seq(), target);
        assert_eq!(db.log_positions().durable_end, 1);
    }

    #[tokio::test]
    async fn a_slow_sync_is_reported_to_the_async_waiter() {
        let (_dir, db, target) = one_unsynced_write(50);
        let syncer = LogSyncer::spawn(db).unwrap();
        syncer.start(target);
        assert!(
            syncer.finished_within(Duration::from_millis(1)).is_none(),
            "a 50 ms stall is not over in 1 ms"
        );
        let result = tokio::time::timeout(Duration::from_secs(30), syncer.finished())
            .await
            .expect("the sync finished");
        assert_eq!(result.unwrap(), target);
    }
}
