//! An interactive `borg ssh` session: a PTY inside the task, relayed through the master.
//! The local terminal is put in raw mode (restored on the way out) so keys such as Ctrl-C
//! reach the task's terminal; window size changes follow SIGWINCH. When stdin is not a
//! terminal (a script), its end is sent as Ctrl-D so the shell ends as it would on a terminal.

use super::super::GlobalArgs;
use super::access_client;
use crate::cli::logs::ACCESS_MESSAGE_MAX_BYTES;
use crate::cli::rpc::cell_client;
use anyhow::{bail, Context};
use borg_proto::v1;
use borg_proto::v1::shell_input::Input;
use borg_proto::v1::shell_output::Output;
use borg_proto::v1::task_access_service_client::TaskAccessServiceClient;
use nix::libc;
use std::io::{Read, Write};
use tokio::sync::mpsc;

/// Keystroke messages queued toward the master.
const INPUT_QUEUE_MAX: usize = 64;
/// Bytes of stdin per message.
const INPUT_CHUNK_BYTES: usize = 4_096;
/// Deadline of opening the session (not of the session itself).
const OPEN_TIMEOUT_MS: u64 = 10_000;
/// The terminal's end-of-file key.
const CTRL_D: u8 = 0x04;
/// Window size when stdin is not a terminal.
const DEFAULT_WINDOW: v1::WindowSize = v1::WindowSize { rows: 24, cols: 80 };

/// The local terminal's settings, put back when dropped.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        // SAFETY: termios calls on stdin with a zeroed struct they fill in.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            (libc::tcsetattr(0, libc::TCSANOW, &raw) == 0).then_some(RawMode { saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter`.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

fn stdin_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(0) == 1 }
}

/// The local terminal's size, if stdout or stdin is one.
fn window_size() -> Option<v1::WindowSize> {
    [1, 0].into_iter().find_map(|fd| {
        // SAFETY: TIOCGWINSZ fills in a winsize struct.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0;
        (ok && size.ws_row > 0).then(|| v1::WindowSize {
            rows: u32::from(size.ws_row),
            cols: u32::from(size.ws_col),
        })
    })
}

/// Runs the session to its end; returns the remote exit code.
pub async fn run(
    global: &GlobalArgs,
    job: String,
    index: u32,
    command: Vec<String>,
) -> anyhow::Result<i32> {
    let terminal = stdin_is_terminal();
    let (inputs, receiver) = mpsc::channel(INPUT_QUEUE_MAX);
    let start = v1::ShellStart {
        job: job.clone(),
        index,
        command,
        window: Some(window_size().unwrap_or(DEFAULT_WINDOW)),
        term: std::env::var("TERM").unwrap_or_default(),
        ..Default::default()
    };
    inputs
        .send(v1::ShellInput {
            input: Some(Input::Start(start)),
        })
        .await
        .context("queueing the session's start")?;
    // A channel to a replica that answers (and accepts the token); the session cannot be
    // retried elsewhere once keystrokes flow, so it is opened once.
    let channel = access_client(global, OPEN_TIMEOUT_MS)?
        .call(|channel| async move {
            cell_client(channel.clone())
                .who_am_i(v1::WhoAmIRequest {})
                .await?;
            Ok(channel)
        })
        .await
        .context("reaching a master")?;
    let mut outputs = TaskAccessServiceClient::new(channel)
        .max_decoding_message_size(ACCESS_MESSAGE_MAX_BYTES)
        .shell(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .with_context(|| format!("opening a shell in {job}/{index}"))?
        .into_inner();
    let raw = if terminal { RawMode::enter() } else { None };
    let forward = tokio::spawn(forward_input(inputs, terminal));
    let mut stdout = std::io::stdout();
    let mut closed = None;
    let result = loop {
        match outputs.message().await {
            Ok(Some(v1::ShellOutput {
                output: Some(Output::Data(data)),
            })) => {
                stdout.write_all(&data)?;
                stdout.flush()?;
            }
            Ok(Some(v1::ShellOutput {
                output: Some(Output::ExitCode(code)),
            })) => break Ok(code),
            Ok(Some(v1::ShellOutput {
                output: Some(Output::Closed(reason)),
            })) => closed = Some(reason),
            Ok(Some(v1::ShellOutput { output: None })) => {}
            Ok(None) => break Err(anyhow::anyhow!("the session ended without an exit status")),
            Err(status) => break Err(anyhow::Error::new(status).context("the session broke")),
        }
    };
    forward.abort();
    drop(raw);
    if let Some(reason) = closed {
        eprintln!("\nborg ssh: {reason}");
    }
    match result {
        Ok(code) => Ok(code),
        Err(error) => bail!("{error:#}"),
    }
}

/// Reads stdin on a thread of its own (a blocking read cannot be cancelled) into `chunks`;
/// an empty chunk means stdin ended.
fn read_stdin(chunks: mpsc::Sender<Vec<u8>>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0u8; INPUT_CHUNK_BYTES];
        loop {
            let n = stdin.read(&mut buffer).unwrap_or(0);
            if chunks.blocking_send(buffer[..n].to_vec()).is_err() || n == 0 {
                return;
            }
        }
    });
}

/// Sends stdin and window size changes until stdin ends (then Ctrl-D, unless it is a
/// terminal), and keeps the stream open until the session ends and this is aborted.
async fn forward_input(inputs: mpsc::Sender<v1::ShellInput>, terminal: bool) {
    let send = |input| v1::ShellInput { input: Some(input) };
    let mut resized =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
    let (chunks, mut stdin) = mpsc::channel(INPUT_QUEUE_MAX);
    read_stdin(chunks);
    let mut open = true;
    loop {
        tokio::select! {
            chunk = stdin.recv(), if open => match chunk {
                Some(bytes) if !bytes.is_empty() => {
                    if inputs.send(send(Input::Stdin(bytes))).await.is_err() {
                        return;
                    }
                }
                _ => {
                    open = false;
                    if !terminal && inputs.send(send(Input::Stdin(vec![CTRL_D]))).await.is_err() {
                        return;
                    }
                }
            },
            Some(()) = async { match resized.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            } } => {
                if let Some(size) = window_size() {
                    if inputs.send(send(Input::Resize(size))).await.is_err() {
                        return;
                    }
                }
            }
            else => std::future::pending::<()>().await,
        }
    }
}
