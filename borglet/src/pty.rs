//! Pseudo-terminals for interactive borgssh sessions: allocating a pair, sizing its window,
//! and reading and writing the master side without blocking the runtime.

use nix::libc::{self, c_int};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;

/// Longest path of a PTY's slave device (`/dev/pts/N`).
const PTS_NAME_MAX_BYTES: usize = 128;

/// A new PTY: the master stays with the borglet, the slave becomes the session's terminal.
pub struct PtyPair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

fn check(result: c_int) -> io::Result<c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// Allocates a PTY of `rows` x `cols`; `owner` (uid, gid) gets the slave device, so a task
/// user can reopen its terminal.
pub fn open(rows: u16, cols: u16, owner: Option<(u32, u32)>) -> io::Result<PtyPair> {
    // SAFETY: plain system calls; every descriptor is wrapped in an OwnedFd at once.
    unsafe {
        let raw = check(libc::posix_openpt(
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?;
        let master = OwnedFd::from_raw_fd(raw);
        check(libc::grantpt(raw))?;
        check(libc::unlockpt(raw))?;
        let mut name = [0 as libc::c_char; PTS_NAME_MAX_BYTES];
        let failed = libc::ptsname_r(raw, name.as_mut_ptr(), name.len());
        if failed != 0 {
            return Err(io::Error::from_raw_os_error(failed));
        }
        let slave = OwnedFd::from_raw_fd(check(libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?);
        if let Some((uid, gid)) = owner {
            check(libc::fchown(slave.as_raw_fd(), uid, gid))?;
        }
        set_window(&master, rows, cols)?;
        Ok(PtyPair { master, slave })
    }
}

/// Sets the terminal's window size (the session's processes get SIGWINCH).
pub fn set_window(fd: &impl AsRawFd, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) }).map(drop)
}

/// The master side of a PTY, non-blocking, driven by the runtime.
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    pub fn new(master: OwnedFd) -> io::Result<PtyMaster> {
        // SAFETY: sets O_NONBLOCK on a descriptor we own.
        unsafe {
            let flags = check(libc::fcntl(master.as_raw_fd(), libc::F_GETFL))?;
            check(libc::fcntl(
                master.as_raw_fd(),
                libc::F_SETFL,
                flags | libc::O_NONBLOCK,
            ))?;
        }
        // SAFETY: an OwnedFd is a valid descriptor that stays open and the same until the
        // AsyncFd, which owns it, is dropped.
        let fd = unsafe { AsyncFd::register(master) }.map_err(|e| e.into_parts().1)?;
        Ok(PtyMaster { fd })
    }

    /// What the session printed; `Ok(0)` once every holder of the slave closed it.
    pub async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|fd| {
                // SAFETY: reads into the caller's buffer.
                let n =
                    unsafe { libc::read(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(Ok(n)) => return Ok(n),
                // The slave side is closed by everyone: the end of the output.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Types `bytes` into the terminal, waiting while its input buffer is full.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let mut guard = self.fd.writable().await?;
            let result = guard.try_io(|fd| {
                // SAFETY: writes from the caller's buffer.
                let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    pub fn set_window(&self, rows: u16, cols: u16) -> io::Result<()> {
        set_window(self.fd.get_ref(), rows, cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_is_typed_on_the_master_is_echoed_back() {
        let pair = open(30, 100, None).unwrap();
        let master = PtyMaster::new(pair.master).unwrap();
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::ioctl(pair.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) },
            0
        );
        assert_eq!((size.ws_row, size.ws_col), (30, 100));
        master.write_all(b"hello\n").await.unwrap();
        let mut echoed = Vec::new();
        let mut buffer = [0u8; 64];
        while !echoed.ends_with(b"\r\n") {
            let n = master.read(&mut buffer).await.unwrap();
            assert!(n > 0);
            echoed.extend_from_slice(&buffer[..n]);
        }
        assert_eq!(echoed, b"hello\r\n");
        drop(pair.slave);
        let mut rest = [0u8; 64];
        assert_eq!(master.read(&mut rest).await.unwrap(), 0);
    }
}
