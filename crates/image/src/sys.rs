//! The only module with raw syscalls: overlay mount/unmount, whiteout
//! device nodes, xattrs, ownership and timestamps without following symlinks.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Mount overlayfs at `target` with the given option string.
pub fn mount_overlay(target: &Path, options: &str) -> io::Result<()> {
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options),
    )
    .map_err(io::Error::from)
}

/// Lazily detach whatever is mounted at `target`.
pub fn unmount_detach(target: &Path) -> io::Result<()> {
    umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)
}

/// Unmount `target` now if nothing uses it, else detach it lazily.
pub fn unmount(target: &Path) -> io::Result<()> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => unmount_detach(target),
        Err(e) => Err(e.into()),
    }
}

/// Is something mounted exactly at `dir`? Unlike [`is_mount_point`] this also sees bind
/// mounts from the same filesystem (which keep the device number).
///
/// One `statx` (the kernel's mount-root attribute), not a scan of the mount table, which
/// grows with every group on the host and was read several times per group start.
pub fn is_mounted_at(dir: &Path) -> io::Result<bool> {
    let c = cpath(dir)?;
    // SAFETY: an all-zero statx is a valid value of the plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `stx` is writable for the call.
    let rc = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT, libc::STATX_BASIC_STATS, &mut stx) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::NotFound { Ok(false) } else { Err(e) };
    }
    let root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & root == 0 {
        // A kernel older than 5.8 does not report the attribute: read the mount table.
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        let want = dir.to_string_lossy();
        return Ok(info.lines().filter_map(|l| l.split(' ').nth(4)).any(|m| m == want));
    }
    Ok(stx.stx_attributes & root != 0)
}

/// Is `dir` a mount point (different device than its parent)?
pub fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let md = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let pmd = std::fs::symlink_metadata(parent)?;
    Ok(md.dev() != pmd.dev() || md.ino() == pmd.ino())
}

/// Create the overlay whiteout (character device 0:0) at `path`.
pub fn mknod_whiteout(path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: c is a valid NUL-terminated path; mknod does not retain it.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Create a FIFO at `path`.
pub fn mkfifo(path: &Path, mode: u32) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: valid C string.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set an extended attribute on `path` itself (never a symlink's target).
pub fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid C strings and a live buffer of value.len() bytes.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Read an extended attribute of `path` itself (tests and checks).
#[cfg_attr(not(test), allow(dead_code))]
pub fn lgetxattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let c = cpath(path)?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings; buf is writable for buf.len() bytes.
    let rc = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(rc as usize);
    Ok(buf)
}

/// Set atime/mtime of `path` without following a final symlink.
pub fn set_mtime_nofollow(path: &Path, secs: i64) -> io::Result<()> {
    let c = cpath(path)?;
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    // SAFETY: valid C string and a 2-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Change owner of `path` itself.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// Flush the filesystem holding `path` to disk.
pub fn syncfs(path: &Path) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: f is an open descriptor for the call's duration.
    let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// Mount-API constants (linux/mount.h, linux/fcntl.h), spelled out so the code does not
// depend on which libc release exports them.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_EMPTY_PATH: libc::c_int = 0x1000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A user namespace in which ids `0..size` are host ids `host_base..host_base + size`, held
/// by the returned fd. Made by a forked child (a multi-threaded process cannot unshare a user
/// namespace itself); the child only unshares and waits on pipes, which is async-signal-safe.
pub fn userns_with_mapping(host_base: u32, size: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    let (ready_r, ready_w) = nix::unistd::pipe().map_err(io::Error::from)?;
    let (go_r, go_w) = nix::unistd::pipe().map_err(io::Error::from)?;
    // SAFETY: the child calls only unshare, write, read and _exit before it ends.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Child => {
            // SAFETY: raw async-signal-safe syscalls on fds this process owns.
            unsafe {
                // This copy of the "go" pipe's write end would keep our own read below from
                // ever seeing end-of-file.
                libc::close(go_w.as_raw_fd());
                libc::close(ready_r.as_raw_fd());
                let ok: u8 = u8::from(libc::unshare(libc::CLONE_NEWUSER) == 0);
                libc::write(ready_w.as_raw_fd(), (&ok as *const u8).cast(), 1);
                let mut b = 0u8;
                libc::read(go_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            let finish = |go_w: OwnedFd| {
                // A byte, not only end-of-file: a helper forked at the same moment by another
                // thread inherits a copy of this write end, so EOF alone may never come (two
                // such helpers held each other's pipe and froze both runtime workers in waitpid).
                let _ = nix::unistd::write(&go_w, &[1u8]);
                drop(go_w);
                let _ = nix::sys::wait::waitpid(child, None);
            };
            let mut ok = [0u8; 1];
            let n = nix::unistd::read(&ready_r, &mut ok).unwrap_or(0);
            if n != 1 || ok[0] != 1 {
                finish(go_w);
                return Err(io::Error::other("the helper could not create a user namespace"));
            }
            let map = format!("0 {host_base} {size}\n");
            let write_map = |file: &str| -> io::Result<()> {
                let mut f = std::fs::OpenOptions::new().write(true).open(format!("/proc/{child}/{file}"))?;
                f.write_all(map.as_bytes())
            };
            let result = write_map("uid_map").and_then(|_| write_map("gid_map")).and_then(|_| {
                let path = cpath(Path::new(&format!("/proc/{child}/ns/user")))?;
                // SAFETY: valid C string; the fd returned is owned by us from here on.
                let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: fd was just opened and is not shared.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            });
            finish(go_w);
            result
        }
    }
}

/// Bind-mount `src` at `target` with its ids shifted by the mapping of `userns` (an idmapped
/// mount: files owned by 0 appear owned by the namespace's host base).
pub fn idmapped_bind(src: &Path, target: &Path, userns: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let src_c = cpath(src)?;
    let target_c = cpath(target)?;
    let empty = CString::default();
    // SAFETY: valid C strings; the returned fd is owned below.
    let tree = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, src_c.as_ptr(), OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint) };
    if tree < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a fresh fd.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    // SAFETY: attr lives across the call and its size is passed.
    let rc = unsafe { libc::syscall(libc::SYS_mount_setattr, tree.as_raw_fd(), empty.as_ptr(), AT_EMPTY_PATH, &attr as *const MountAttr, std::mem::size_of::<MountAttr>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: valid fds and C strings.
    let rc = unsafe { libc::syscall(libc::SYS_move_mount, tree.as_raw_fd(), empty.as_ptr(), libc::AT_FDCWD, target_c.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    /// The mount-root check sees a bind mount from the same filesystem (same device, which
    /// `is_mount_point` cannot tell), and nothing once it is unmounted.
    #[test]
    fn is_mounted_at_sees_same_filesystem_binds() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, target) = (tmp.path().join("src"), tmp.path().join("target"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&target).unwrap();
        assert!(!super::is_mounted_at(&target).unwrap());
        assert!(!super::is_mounted_at(&tmp.path().join("missing")).unwrap());
        nix::mount::mount(Some(&src), &target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap();
        let (mounted, by_device) = (super::is_mounted_at(&target), super::is_mount_point(&target));
        let _ = nix::mount::umount(&target);
        assert!(mounted.unwrap(), "a bind mount at the target");
        assert!(!by_device.unwrap(), "same device: invisible to is_mount_point");
        assert!(!super::is_mounted_at(&target).unwrap());
        assert!(super::is_mounted_at(std::path::Path::new("/")).unwrap());
    }

    /// Regression: helpers forked at the same moment by two threads used to inherit each
    /// other's "go" pipe and wait for an end-of-file that never came, freezing both callers in
    /// waitpid (found by `bench/run.sh restart`). Needs root; a watchdog turns a hang into a
    /// failure (the stuck threads are left behind, the test process ends anyway).
    #[test]
    fn concurrent_userns_helpers_do_not_deadlock() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let (tx, rx) = mpsc::channel();
        for t in 0..4u32 {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    if let Err(e) = super::userns_with_mapping(3_000_000 + t * 65_536, 65_536) {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
                let _ = tx.send(Ok(()));
            });
        }
        drop(tx);
        for _ in 0..4 {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("userns_with_mapping failed: {e}"),
                Err(_) => panic!("userns helpers deadlocked (no progress within 60 s)"),
            }
        }
    }
}
