//! An interactive borgssh session: relays keystrokes and window sizes from the caller's
//! stream to a PTY inside the task, and what the PTY prints back, until the program exits;
//! then sends its exit code. A caller that goes away hangs the terminal up, and so does a
//! session with neither input nor output for the idle timeout (after telling the caller why).

use crate::pty::PtyMaster;
use crate::runner::{signal_group, TaskExit};
use borg_proto::v1;
use borg_proto::v1::shell_input::Input;
use borg_proto::v1::shell_output::Output;
use nix::sys::signal::Signal;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

/// Output messages queued toward the caller.
pub const SHELL_OUTPUT_QUEUE_MAX: usize = 64;
/// Bytes read from the PTY per output message.
const SHELL_READ_BYTES: usize = 16 * 1024;
/// After the program exits, how long output still buffered in the PTY may take to arrive.
const SHELL_DRAIN_MS: u64 = 500;
/// After the caller hangs up, how long the program has to end on SIGHUP before SIGKILL.
const SHELL_HANGUP_GRACE_MS: u64 = 2_000;

/// Runs the session to its end. `inputs` are the caller's messages after `start`; the
/// session is closed after `idle_timeout` with neither input nor output.
pub async fn relay(
    master: PtyMaster,
    mut process: tokio::process::Child,
    mut inputs: tonic::Streaming<v1::ShellInput>,
    outputs: mpsc::Sender<Result<v1::ShellOutput, Status>>,
    idle_timeout: Duration,
) {
    let pid = process.id().unwrap_or(0);
    let mut buffer = vec![0u8; SHELL_READ_BYTES];
    let send = |output| v1::ShellOutput {
        output: Some(output),
    };
    let mut output_open = true;
    let mut idle_since = tokio::time::Instant::now();
    let status = loop {
        tokio::select! {
            status = process.wait() => break status,
            _ = tokio::time::sleep_until(idle_since + idle_timeout) => {
                let reason = format!(
                    "session closed after {} s without input or output (the borglet's shell idle timeout)",
                    idle_timeout.as_secs()
                );
                tracing::info!(pid, "closing an idle borgssh session");
                let _ = outputs.send(Ok(send(Output::Closed(reason)))).await;
                let status = hang_up(master, process, pid).await;
                let _ = outputs.send(Ok(send(Output::ExitCode(exit_code(status))))).await;
                return;
            }
            read = master.read(&mut buffer), if output_open => match read {
                Ok(n) if n > 0 => {
                    idle_since = tokio::time::Instant::now();
                    if outputs.send(Ok(send(Output::Data(buffer[..n].to_vec())))).await.is_err() {
                        hang_up(master, process, pid).await;
                        return;
                    }
                }
                _ => output_open = false,
            },
            input = inputs.message() => match input {
                Ok(Some(v1::ShellInput { input: Some(Input::Stdin(bytes)) })) => {
                    idle_since = tokio::time::Instant::now();
                    if let Err(error) = master.write_all(&bytes).await {
                        tracing::debug!(%error, "a borgssh terminal took no input");
                    }
                }
                Ok(Some(v1::ShellInput { input: Some(Input::Resize(size)) })) => {
                    idle_since = tokio::time::Instant::now();
                    let _ = master.set_window(window_dimension(size.rows), window_dimension(size.cols));
                }
                Ok(Some(_)) => {}
                // The caller went away.
                Ok(None) | Err(_) => {
                    hang_up(master, process, pid).await;
                    return;
                }
            },
        }
    };
    // The program ended: what it printed last may still be on its way through the PTY.
    let drain = async {
        while output_open {
            match master.read(&mut buffer).await {
                Ok(n) if n > 0 => {
                    if outputs
                        .send(Ok(send(Output::Data(buffer[..n].to_vec()))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                _ => output_open = false,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(SHELL_DRAIN_MS), drain).await;
    let _ = outputs
        .send(Ok(send(Output::ExitCode(exit_code(status.ok())))))
        .await;
}

/// The reported code of a session's program (SIGKILL's when unknown).
fn exit_code(status: Option<std::process::ExitStatus>) -> i32 {
    status
        .map_or(TaskExit::Signal(9), TaskExit::from_status)
        .exit_code()
}

/// Closes the terminal (its session gets SIGHUP) and kills the session's leader group if it
/// has not ended within the grace period; returns how the program ended.
async fn hang_up(
    master: PtyMaster,
    mut process: tokio::process::Child,
    pid: u32,
) -> Option<std::process::ExitStatus> {
    drop(master);
    let grace = Duration::from_millis(SHELL_HANGUP_GRACE_MS);
    match tokio::time::timeout(grace, process.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            signal_group(pid, Signal::SIGKILL);
            process.wait().await.ok()
        }
    }
}

/// A window dimension as the kernel takes it (at least 1).
pub fn window_dimension(value: u32) -> u16 {
    u16::try_from(value).unwrap_or(u16::MAX).max(1)
}
