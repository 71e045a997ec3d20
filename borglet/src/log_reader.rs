//! Reading a task's log file for `ReadLogs`: from its start or its tail and, when following,
//! what is appended, across rotations (the keeper renames `stdout` to `stdout.1` and starts a
//! new `stdout`; a reader still holding the old file finishes it, then opens the new one).

use borg_proto::v1;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tonic::Status;

/// Largest chunk sent in one message.
pub const LOG_CHUNK_MAX_BYTES: usize = 64 * 1024;
/// Chunks queued for a slow reader before reading pauses.
pub const LOG_STREAM_QUEUE_MAX: usize = 16;
/// Pause between looks for appended output when following.
pub const LOG_FOLLOW_POLL_MS: u64 = 200;
/// Log streams served at once by one borglet.
pub const LOG_READERS_MAX: usize = 64;

pub type LogSender = mpsc::Sender<Result<v1::LogChunk, Status>>;

/// What to read.
#[derive(Debug, Clone)]
pub struct LogRead {
    pub path: PathBuf,
    pub incarnation: u64,
    pub tail_bytes: u64,
    pub follow: bool,
}

/// Opens the log file; `None` when there is none: its keeper creates it on the task's first
/// output, so a task that wrote nothing has none. A follower of a live task waits for it
/// while the task lives and the receiver listens.
async fn open_log(
    read: &LogRead,
    live: &impl Fn() -> bool,
    sender: &LogSender,
) -> std::io::Result<Option<tokio::fs::File>> {
    loop {
        // Asked before the open: a file created before the task ended is then seen.
        let waiting = read.follow && live();
        match tokio::fs::File::open(&read.path).await {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if !waiting {
                    return Ok(None);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(LOG_FOLLOW_POLL_MS)) => {}
                    _ = sender.closed() => return Ok(None),
                }
            }
            opened => return opened.map(Some),
        }
    }
}

/// Streams the file into `sender` until its end (or, when following, until `live` says the
/// task is over and everything is sent, or the receiver is gone).
pub async fn stream_log(read: LogRead, live: impl Fn() -> bool, sender: LogSender) {
    let unreadable = |error: std::io::Error| {
        Status::not_found(format!(
            "cannot read the log file {}: {error}",
            read.path.display()
        ))
    };
    let mut file = match open_log(&read, &live, &sender).await {
        Ok(Some(file)) => file,
        Ok(None) => return,
        Err(error) => {
            let _ = sender.send(Err(unreadable(error))).await;
            return;
        }
    };
    let (mut inode, length) = match file.metadata().await {
        Ok(m) => (m.ino(), m.len()),
        Err(error) => {
            let _ = sender.send(Err(unreadable(error))).await;
            return;
        }
    };
    let mut position = if read.tail_bytes > 0 {
        length.saturating_sub(read.tail_bytes)
    } else {
        0
    };
    if file.seek(std::io::SeekFrom::Start(position)).await.is_err() {
        position = 0;
    }
    let mut buffer = vec![0u8; LOG_CHUNK_MAX_BYTES];
    let mut last_pass = false;
    loop {
        let n = match file.read(&mut buffer).await {
            Ok(n) => n,
            Err(error) => {
                let _ = sender.send(Err(unreadable(error))).await;
                return;
            }
        };
        if n > 0 {
            position += n as u64;
            let chunk = v1::LogChunk {
                data: buffer[..n].to_vec(),
                incarnation: read.incarnation,
            };
            if sender.send(Ok(chunk)).await.is_err() {
                return;
            }
            continue;
        }
        if !read.follow || last_pass {
            return;
        }
        // At the end of what is written: rotated or truncated meanwhile?
        if let Ok(now) = tokio::fs::metadata(&read.path).await {
            if now.ino() != inode {
                if let Ok(next) = tokio::fs::File::open(&read.path).await {
                    (file, inode, position) = (next, now.ino(), 0);
                    continue;
                }
            } else if now.len() < position {
                position = 0;
                let _ = file.seek(std::io::SeekFrom::Start(0)).await;
                continue;
            }
        }
        if !live() {
            // Whatever the task wrote before it ended, then stop.
            last_pass = true;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(LOG_FOLLOW_POLL_MS)) => {}
            _ = sender.closed() => return,
        }
    }
}
