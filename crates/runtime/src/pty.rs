//! Terminal plumbing for `exec` with a TTY: receiving the PTY master that
//! `crun exec --tty --console-socket` hands over, and resizing it. The only
//! module with the `SCM_RIGHTS` and `TIOCSWINSZ` calls.

use std::io;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

/// Receive one file descriptor sent with `SCM_RIGHTS` on `conn` (crun sends the
/// PTY master right after connecting to the console socket).
pub fn recv_fd(conn: &UnixStream, timeout: Duration) -> io::Result<OwnedFd> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(timeout))?;
    let mut data = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut data)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<UnixAddr>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut got: Option<OwnedFd> = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed this descriptor in our table; we own it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if got.is_none() {
                    got = Some(owned);
                }
            }
        }
    }
    got.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no descriptor on the console socket"))
}

/// Set the window size of the terminal behind `fd` (the foreground process
/// group gets `SIGWINCH`).
pub fn set_winsize(fd: &impl AsRawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws as *const libc::winsize) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The window size of the terminal behind `fd`, if it is one.
pub fn get_winsize(fd: &impl AsRawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` to the pointer, which is valid for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_a_pty_master_and_resizes_it() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let fds = [pty.master.as_raw_fd()];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(b"x")];
        nix::sys::socket::sendmsg::<UnixAddr>(a.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
            .unwrap();
        let master = recv_fd(&b, Duration::from_secs(5)).unwrap();
        set_winsize(&master, 33, 101).unwrap();
        assert_eq!(get_winsize(&pty.slave), Some((33, 101)));
    }
}
