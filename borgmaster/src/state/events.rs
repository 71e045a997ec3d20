//! The cell's bounded event log: what happened, for `borg job events` and "why pending".

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Events kept; older ones are dropped (a reader asking from before the oldest retained
/// event gets what is left).
pub const EVENTS_RETAINED_MAX: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Event {
    /// Sequence number, starting at 1, increasing by one per event (not the log index:
    /// one entry can produce many events).
    pub index: u64,
    pub time_ms: u64,
    pub kind: String,
    pub job: String,
    pub task_index: Option<u32>,
    pub machine: String,
    pub message: String,
}

/// Longest message of a recorded task event, in bytes.
pub const TASK_EVENT_MESSAGE_MAX_LEN: usize = 1_024;

/// Events about a task that the master witnesses outside the log (sessions through its task
/// access service) and records with `Command::RecordTaskEvent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskEventKind {
    /// An interactive `borg ssh` shell.
    SshSession,
    /// One command run with `borg ssh JOB/INDEX -- CMD`.
    SshCommand,
}

impl TaskEventKind {
    /// The event's `kind` in the log.
    pub fn name(self) -> &'static str {
        match self {
            TaskEventKind::SshSession => "task_ssh_session",
            TaskEventKind::SshCommand => "task_ssh_command",
        }
    }
}

/// An event an entry produced, before it gets its index and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewEvent {
    pub kind: &'static str,
    pub job: String,
    pub task_index: Option<u32>,
    pub machine: String,
    pub message: String,
}

impl NewEvent {
    pub fn job(kind: &'static str, job: &str, message: String) -> Self {
        NewEvent {
            kind,
            job: job.to_string(),
            task_index: None,
            machine: String::new(),
            message,
        }
    }

    pub fn task(kind: &'static str, job: &str, index: u32, machine: &str, message: String) -> Self {
        NewEvent {
            kind,
            job: job.to_string(),
            task_index: Some(index),
            machine: machine.to_string(),
            message,
        }
    }

    pub fn machine(kind: &'static str, machine: &str, message: String) -> Self {
        NewEvent {
            kind,
            job: String::new(),
            task_index: None,
            machine: machine.to_string(),
            message,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct EventLog {
    events: VecDeque<Event>,
    /// Index the next event gets.
    next_index: u64,
}

impl EventLog {
    pub fn push(&mut self, time_ms: u64, event: NewEvent) {
        let index = self.next_index.max(1);
        self.next_index = index + 1;
        self.events.push_back(Event {
            index,
            time_ms,
            kind: event.kind.to_string(),
            job: event.job,
            task_index: event.task_index,
            machine: event.machine,
            message: event.message,
        });
        while self.events.len() > EVENTS_RETAINED_MAX {
            self.events.pop_front();
        }
    }

    /// Index of the newest event (0 when there is none yet).
    pub fn last_index(&self) -> u64 {
        self.next_index.saturating_sub(1)
    }

    /// Up to `limit` events with index >= `from_index`, of `job` if given, oldest first.
    pub fn since(&self, from_index: u64, job: Option<&str>, limit: usize) -> Vec<&Event> {
        let start = self.events.partition_point(|e| e.index < from_index);
        self.events
            .range(start..)
            .filter(|e| job.is_none_or(|j| e.job == j))
            .take(limit.min(EVENTS_RETAINED_MAX))
            .collect()
    }

    /// The newest `limit` events of task `index` of `job`, oldest first.
    pub fn of_task(&self, job: &str, index: u32, limit: usize) -> Vec<&Event> {
        let mut newest_first: Vec<&Event> = self
            .events
            .iter()
            .rev()
            .filter(|e| e.job == job && e.task_index == Some(index))
            .take(limit.min(EVENTS_RETAINED_MAX))
            .collect();
        newest_first.reverse();
        newest_first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_and_read_from_an_index() {
        let mut log = EventLog::default();
        for i in 0..(EVENTS_RETAINED_MAX + 5) {
            let job = if i % 2 == 0 { "even" } else { "odd" };
            log.push(i as u64, NewEvent::job("k", job, String::new()));
        }
        assert_eq!(log.last_index(), (EVENTS_RETAINED_MAX + 5) as u64);
        let all = log.since(0, None, usize::MAX);
        assert_eq!(all.len(), EVENTS_RETAINED_MAX);
        assert_eq!(all[0].index, 6, "the five oldest were dropped");
        let tail = log.since(log.last_index() - 3, Some("odd"), 10);
        assert!(tail.iter().all(|e| e.job == "odd"));
        assert_eq!(tail.len(), 2);
        assert_eq!(log.since(1, None, 3).len(), 3);
    }

    #[test]
    fn a_tasks_newest_events_are_read_oldest_first() {
        let mut log = EventLog::default();
        for i in 0..10u32 {
            log.push(
                u64::from(i),
                NewEvent::task("k", "web", i % 2, "m", format!("{i}")),
            );
        }
        log.push(99, NewEvent::job("k", "web", "job-level".into()));
        let events = log.of_task("web", 1, 3);
        let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["5", "7", "9"]);
        assert!(log.of_task("other", 1, 3).is_empty());
    }
}
