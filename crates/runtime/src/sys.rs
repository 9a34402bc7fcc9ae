//! The only module with raw (`unsafe`) system calls. Each function is small and
//! documents why it is sound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `NSFS_MAGIC` from `linux/magic.h`: the filesystem type of `/proc/*/ns/*` and their bind mounts.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Become a child subreaper: orphaned descendants (the container inits that
/// `crun run -d` leaves behind) are reparented to us, so we can `waitpid` them.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Hard `RLIMIT_NOFILE` of the calling process.
pub fn nofile_hard_limit() -> u64 {
    rlimit_hard(libc::RLIMIT_NOFILE)
}

/// Hard `RLIMIT_NPROC` of the calling process.
pub fn nproc_hard_limit() -> u64 {
    rlimit_hard(libc::RLIMIT_NPROC)
}

fn rlimit_hard(resource: libc::__rlimit_resource_t) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    let r = unsafe { libc::getrlimit(resource, &mut lim) };
    if r == 0 {
        lim.rlim_max
    } else {
        0
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise_nofile_soft() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Whether `path` is a namespace file (nsfs), e.g. a mounted netns.
#[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
pub fn is_nsfs(path: &Path) -> bool {
    match nix::sys::statfs::statfs(path) {
        Ok(st) => st.filesystem_type().0 as i64 == NSFS_MAGIC,
        Err(_) => false,
    }
}

/// Set `IFF_UP` on the interface `lo` of the calling thread's network namespace.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket() returns a new fd or -1, which we check before owning it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we exclusively own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the interface name and writes ifr_flags in `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member ifru_flags was just filled in by the kernel.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Outcome of [`fork`].
pub enum Forked {
    Parent(u32),
    Child,
}

/// `fork()`. Only call while the process is single-threaded (the supervisor
/// calls it before it starts any runtime or thread).
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the caller guarantees the process is single-threaded, so the child
    // may run arbitrary code.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child.as_raw() as u32)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Leave the process immediately without running destructors or atexit hooks
/// (for the intermediate process of a double fork).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is always safe to call.
    unsafe { libc::_exit(code) }
}

/// SIGKILL process `pid` only if it is (still) in cgroup `cgroup` (in some hierarchy).
/// Through a pidfd: once it is open, a recycled pid can no longer redirect the signal to
/// another process. Returns whether the signal was sent.
pub fn kill_in_cgroup(pid: i32, cgroup: &str) -> io::Result<bool> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned to us and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    // `hierarchy-id:controllers:path`: the path compared whole, so `/g/main` is not `/g/main2`.
    if !cgroups.lines().any(|l| l.splitn(3, ':').nth(2) == Some(cgroup)) {
        return Ok(false);
    }
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn kill_in_cgroup_spares_a_process_outside_the_cgroup() {
        let mut child = std::process::Command::new("sleep").arg("100").spawn().expect("sleep");
        let pid = child.id() as i32;
        assert!(!super::kill_in_cgroup(pid, "/no-such-skiff-cgroup/").expect("pidfd"));
        assert!(child.try_wait().expect("wait").is_none(), "a process outside the cgroup was killed");
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
        let path = own.lines().filter_map(|l| l.splitn(3, ':').nth(2)).find(|p| p.len() > 1).unwrap_or("/").to_string();
        assert!(super::kill_in_cgroup(pid, &path).expect("pidfd"));
        let status = child.wait().expect("wait");
        assert!(!status.success());
    }
}
