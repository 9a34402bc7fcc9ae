//! The group's network namespace holder: a netns bind-mounted at a path.
//!
//! The namespace is created from a short-lived dedicated thread (`unshare` only
//! affects the calling thread), so this is safe to call from a multi-threaded
//! daemon as well as from the supervisor; no fork is needed.

use std::io;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Make sure a network namespace is mounted at `path` (with `lo` up).
/// Idempotent: an existing netns mount is reused. Returns `true` if created.
pub fn ensure_netns(path: &Path) -> io::Result<bool> {
    if crate::sys::is_nsfs(path) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if !path.exists() {
        std::fs::File::create(path)?;
    }
    let target = path.to_owned();
    std::thread::Builder::new()
        .name("skiff-netns".into())
        .spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            crate::sys::loopback_up()?;
            // Containers run as root of their own user namespace, which does not own this
            // network namespace: without these they could not bind ports below 1024 (ACI
            // groups serve 80/443) or ping (no CAP_NET_RAW). Both are per namespace.
            std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0")?;
            std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647")?;
            let tid = nix::unistd::gettid();
            let me = format!("/proc/self/task/{tid}/ns/net");
            mount(
                Some(me.as_str()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })?
        .join()
        .map_err(|_| io::Error::other("netns thread panicked"))??;
    Ok(true)
}

/// Unmount and remove a netns created by [`ensure_netns`]. Missing is fine.
pub fn remove_netns(path: &Path) -> io::Result<()> {
    if crate::sys::is_nsfs(path) {
        umount2(path, MntFlags::MNT_DETACH)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
