//! One sealed in-memory copy of the OCI runtime binary per daemon, shared with its supervisors.
//!
//! crun guards against CVE-2019-5736 (a container rewriting the host's runtime through
//! `/proc/PID/exe`) by re-executing itself from a sealed memfd copy on every call unless it
//! already runs from one. Measured here that re-exec (the binary copied, its libraries loaded
//! twice) is about half of a short call (`crun list`: 3.4 ms, 1.9 ms from a sealed copy), paid
//! by every create, exec, exec probe, kill and delete; on a group's cold start it is ~2 ms,
//! within the noise. Running crun from a copy that is already sealed keeps the protection
//! (the file cannot be written, shrunk or grown) and skips the re-exec. The daemon makes the
//! copy once ([`install`]); each supervisor opens the same copy through the daemon's `/proc`
//! entry when it starts ([`install_from_handoff`]: one copy in memory however many groups
//! run) and keeps it after the daemon is gone. Without a copy, crun runs from its own path.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};

/// Environment variable that hands a supervisor the daemon's copy (`/proc/PID/fd/N`).
pub const HANDOFF_ENV: &str = "SKIFF_SEALED_RUNTIME";

/// The seals crun checks for before it trusts that it runs from a copy.
fn seals() -> SealFlag {
    SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

struct Sealed {
    /// The binary the copy was made from: only calls of that binary use the copy.
    source: PathBuf,
    fd: OwnedFd,
}

static SEALED: OnceLock<Sealed> = OnceLock::new();

/// Make the sealed copy of `binary` for this process (the daemon). Idempotent.
pub fn install(binary: &Path) -> io::Result<()> {
    if SEALED.get().is_some() {
        return Ok(());
    }
    let fd = nix::sys::memfd::memfd_create("skiff-oci-runtime", nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING)?;
    let mut copy = std::fs::File::from(fd);
    io::copy(&mut std::fs::File::open(binary)?, &mut copy)?;
    let fd = OwnedFd::from(copy);
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals()))?;
    let _ = SEALED.set(Sealed { source: binary.to_owned(), fd });
    Ok(())
}

/// Open the daemon's copy named by [`HANDOFF_ENV`] (if set) for this process (a supervisor),
/// for calls of `binary`. The copy must carry every seal, or it is not used.
pub fn install_from_handoff(binary: &Path) -> io::Result<()> {
    let Some(path) = std::env::var_os(HANDOFF_ENV) else { return Ok(()) };
    std::env::remove_var(HANDOFF_ENV);
    let fd = OwnedFd::from(std::fs::File::open(Path::new(&path))?);
    let have = SealFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GET_SEALS)?);
    if !have.contains(seals()) {
        return Err(io::Error::other(format!("{} is not a sealed copy", Path::new(&path).display())));
    }
    let _ = SEALED.set(Sealed { source: binary.to_owned(), fd });
    Ok(())
}

/// The path to execute for `binary`: the sealed copy (`/proc/self/fd/N`: resolved by the
/// child before its close-on-exec descriptors close) when there is one of that binary.
pub fn path_for(binary: &Path) -> Option<PathBuf> {
    SEALED.get().filter(|s| s.source == binary).map(|s| PathBuf::from(format!("/proc/self/fd/{}", s.fd.as_fd().as_raw_fd())))
}

/// What a supervisor spawned now should open to share this process's copy.
pub fn handoff() -> Option<String> {
    SEALED.get().map(|s| format!("/proc/{}/fd/{}", std::process::id(), s.fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_sealed_executable_and_only_used_for_its_binary() {
        let true_bin = PathBuf::from("/bin/true");
        install(&true_bin).expect("sealed copy");
        let path = path_for(&true_bin).expect("a path for the copied binary");
        assert!(path_for(Path::new("/bin/false")).is_none());
        let status = std::process::Command::new(&path).status().expect("run the copy");
        assert!(status.success());
        let f = std::fs::OpenOptions::new().write(true).open(&path);
        // Opening for writing works on a memfd, but every write is refused by the seals.
        if let Ok(mut f) = f {
            use std::io::Write;
            assert!(f.write_all(b"x").is_err(), "a sealed copy must refuse writes");
        }
        let handoff = handoff().expect("handoff path");
        assert!(handoff.starts_with(&format!("/proc/{}/fd/", std::process::id())));
    }
}
