//! Safe layer unpacking: tar (plain/gzip/zstd) → a directory usable as an
//! overlayfs lower layer.
//!
//! Every archive path is sanitized (no `..`, no absolute paths); parent
//! directories are walked with `lstat` and a symlink anywhere on the way is
//! rejected, and files are created with `O_NOFOLLOW | O_EXCL`, so nothing is
//! ever written through a symlink. Hardlinks must point at an earlier entry of
//! the same layer. OCI whiteouts become overlay whiteouts (char 0:0) and
//! opaque markers become `trusted.overlay.opaque=y`. Other device nodes are
//! skipped. The layer is unpacked into a temp dir that is renamed into place
//! only when complete.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::layer_path::{classify, sanitize, WhiteoutKind};
use crate::manifest::Compression;
use crate::{sys, ImageError};

/// Counters from one unpack.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries written (files, dirs, links, whiteouts).
    pub entries: u64,
    /// Device nodes that were skipped.
    pub skipped_devices: u64,
}

/// Wrap a blob reader in the decompressor for its media type.
pub fn decompress<'a, R: Read + 'a>(r: R, c: Compression) -> io::Result<Box<dyn Read + 'a>> {
    let r = BufReader::with_capacity(256 * 1024, r);
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    })
}

/// Unpack a compressed layer stream into a fresh temp directory beside `layers_dir/<id>` and
/// return it. Nothing is in place yet: the caller names it ([`commit_layers_unsynced`]) once
/// it knows the stream was the right one (its digest checked), or removes it.
pub fn unpack_to_temp(reader: impl Read, compression: Compression, layers_dir: &Path, id: &str, label: &str) -> Result<PathBuf, ImageError> {
    let tmp = layers_dir.join(format!(".tmp-{id}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)
            .map_err(|e| ImageError::io(format!("removing stale {}", tmp.display()), e))?;
    }
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&tmp)
        .map_err(|e| ImageError::io(format!("creating {}", tmp.display()), e))?;
    let result = (|| {
        let mut r = decompress(reader, compression)
            .map_err(|e| ImageError::io(format!("decompressing {label}"), e))?;
        unpack_tar(&mut r, &tmp, label)?;
        // Read to the end of the stream past tar's end marker, so a streamed download is
        // consumed (and digested) whole.
        io::copy(&mut r, &mut io::sink()).map_err(|e| ImageError::io(format!("decompressing {label}"), e))
    })();
    match result {
        Ok(_) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Where layers named before their files reached the disk are marked: an empty file
/// `<id>@<boot id>` per layer (see [`commit_layers_unsynced`]).
pub const UNSYNCED_DIR: &str = ".unsynced";

/// Name unpacked layers (from [`unpack_to_temp`]) at once, without waiting for their files to
/// reach the disk: each is first marked in [`UNSYNCED_DIR`] with the boot it was written in
/// (the markers made durable before any rename), and [`sync_layers`] clears the marks once a
/// sync has run. After a power loss, [`recover_unsynced`] finds the marks of the previous boot
/// and removes those layers, which may have lost data. Waiting for the disk here instead cost
/// a third of a cold pull.
pub fn commit_layers_unsynced(layers_dir: &Path, pending: &[(PathBuf, String)], boot_id: &str) -> Result<(), ImageError> {
    if pending.is_empty() {
        return Ok(());
    }
    let marks = layers_dir.join(UNSYNCED_DIR);
    let io_err = |what: String| move |e| ImageError::io(what, e);
    let marked = (|| {
        fs::create_dir_all(&marks).map_err(io_err(format!("creating {}", marks.display())))?;
        for (_, id) in pending {
            File::create(marks.join(format!("{id}@{boot_id}"))).map_err(io_err(format!("marking layer {id}")))?;
        }
        File::open(&marks).and_then(|d| d.sync_all()).map_err(io_err(format!("syncing {}", marks.display())))
    })();
    if let Err(e) = marked {
        for (tmp, _) in pending {
            let _ = fs::remove_dir_all(tmp);
        }
        return Err(e);
    }
    for (tmp, id) in pending {
        let final_dir = layers_dir.join(id);
        if let Err(e) = fs::rename(tmp, &final_dir) {
            let _ = fs::remove_dir_all(tmp);
            // Another process may have won the race.
            if !final_dir.is_dir() {
                return Err(ImageError::io(format!("renaming {} into place", tmp.display()), e));
            }
        }
    }
    Ok(())
}

/// Sync the layers' filesystem and clear the marks of this boot's unsynced layers that
/// existed when it started.
pub fn sync_layers(layers_dir: &Path, boot_id: &str) -> io::Result<()> {
    let marks = layers_dir.join(UNSYNCED_DIR);
    let mine: Vec<PathBuf> = match fs::read_dir(&marks) {
        Ok(entries) => entries.flatten().map(|e| e.path()).filter(|p| mark_of(p).is_some_and(|(_, b)| b == boot_id)).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if mine.is_empty() {
        return Ok(());
    }
    sys::syncfs(layers_dir)?;
    for m in mine {
        let _ = fs::remove_file(m);
    }
    Ok(())
}

/// At start: sync what this boot left unsynced (the daemon restarted), and remove the layers
/// a previous boot never synced. Returns the ids of the removed layers.
pub fn recover_unsynced(layers_dir: &Path, boot_id: &str) -> io::Result<Vec<String>> {
    let marks = layers_dir.join(UNSYNCED_DIR);
    let entries = match fs::read_dir(&marks) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut lost = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Some((id, boot)) = mark_of(&path) else { continue };
        if boot != boot_id {
            match fs::remove_dir_all(layers_dir.join(id)) {
                Ok(()) => lost.push(id.to_string()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            fs::remove_file(&path)?;
        }
    }
    sync_layers(layers_dir, boot_id)?;
    Ok(lost)
}

/// `(layer id, boot id)` of a mark's path.
fn mark_of(path: &Path) -> Option<(&str, &str)> {
    let name = path.file_name()?.to_str()?;
    let (id, boot) = name.split_once('@')?;
    (!id.is_empty() && !id.contains('/') && !id.starts_with('.')).then_some((id, boot))
}

/// A [`Read`] over chunks sent from async code (a download), for a blocking consumer such as
/// [`unpack_to_temp`]. The channel is bounded, so the download waits for the unpacker;
/// a sender dropped with `Err` (a failed or wrong download) fails the read.
pub struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl ChunkReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>) -> ChunkReader {
        ChunkReader { rx, current: bytes::Bytes::new() }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Unpack a tar stream into the existing, empty directory `root`.
pub fn unpack_tar<R: Read>(reader: R, root: &Path, label: &str) -> Result<UnpackStats, ImageError> {
    let mut u = Unpacker {
        root,
        label,
        dirs: Vec::new(),
        stats: UnpackStats::default(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| ImageError::io(format!("reading {label}"), e))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| ImageError::io(format!("reading tar entry of {label}"), e))?;
        u.entry(&mut entry)?;
    }
    // Directory mtimes last: creating children changes them.
    for (path, mtime) in u.dirs.iter().rev() {
        let _ = sys::set_mtime_nofollow(path, *mtime);
    }
    Ok(u.stats)
}

struct Unpacker<'a> {
    root: &'a Path,
    label: &'a str,
    dirs: Vec<(PathBuf, i64)>,
    stats: UnpackStats,
}

impl Unpacker<'_> {
    fn unsafe_layer(&self, reason: impl std::fmt::Display) -> ImageError {
        ImageError::UnsafeLayer {
            reason: format!("{} in {}", reason, self.label),
        }
    }

    fn io(&self, what: &str, p: &Path, e: io::Error) -> ImageError {
        ImageError::io(
            format!("{what} {} (unpacking {})", p.display(), self.label),
            e,
        )
    }

    /// Create missing parents of `rel` as real directories; reject symlinks
    /// or non-directories on the way. Returns the absolute path of `rel`.
    fn prepare_parents(&self, rel: &Path) -> Result<PathBuf, ImageError> {
        let mut cur = self.root.to_path_buf();
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                cur.push(c);
                match fs::symlink_metadata(&cur) {
                    Ok(m) if m.file_type().is_dir() => {}
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(self.unsafe_layer(format_args!(
                            "entry {rel:?} would be written through symlink {:?}",
                            cur.strip_prefix(self.root).unwrap_or(&cur)
                        )))
                    }
                    Ok(_) => {
                        return Err(self.unsafe_layer(format_args!(
                            "entry {rel:?} has a non-directory parent"
                        )))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::DirBuilder::new()
                            .mode(0o755)
                            .create(&cur)
                            .map_err(|e| self.io("creating directory", &cur, e))?;
                    }
                    Err(e) => return Err(self.io("inspecting", &cur, e)),
                }
            }
        }
        Ok(self.root.join(rel))
    }

    /// Remove whatever is at `path` unless both it and the new entry are dirs.
    /// Returns true when an existing directory is kept.
    fn clear(&self, path: &Path, new_is_dir: bool) -> Result<bool, ImageError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_dir() => {
                if new_is_dir {
                    return Ok(true);
                }
                fs::remove_dir_all(path).map_err(|e| self.io("replacing", path, e))?;
            }
            Ok(_) => fs::remove_file(path).map_err(|e| self.io("replacing", path, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io("inspecting", path, e)),
        }
        Ok(false)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw_path = entry
            .path()
            .map_err(|e| self.io("decoding path of entry", Path::new("?"), e))?
            .into_owned();
        let rel = sanitize(&raw_path).map_err(|r| self.unsafe_layer(r))?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        if rel.as_os_str().is_empty() {
            // The layer root itself ("./"): only metadata matters; keep ours.
            return Ok(());
        }
        match classify(&rel).map_err(|r| self.unsafe_layer(r))? {
            WhiteoutKind::Whiteout(target) => {
                let path = self.prepare_parents(&target)?;
                self.clear(&path, false)?;
                sys::mknod_whiteout(&path).map_err(|e| self.io("creating whiteout", &path, e))?;
                self.stats.entries += 1;
                return Ok(());
            }
            WhiteoutKind::Opaque(dir) => {
                let path = if dir.as_os_str().is_empty() {
                    self.root.to_path_buf()
                } else {
                    let p = self.prepare_parents(&dir)?;
                    if !self.clear(&p, true)? {
                        fs::DirBuilder::new()
                            .mode(0o755)
                            .create(&p)
                            .map_err(|e| self.io("creating directory", &p, e))?;
                    }
                    p
                };
                sys::lsetxattr(&path, "trusted.overlay.opaque", b"y")
                    .map_err(|e| self.io("marking opaque", &path, e))?;
                self.stats.entries += 1;
                return Ok(());
            }
            WhiteoutKind::Normal => {}
        }

        let xattrs = pax_xattrs(entry);
        let h = entry.header().clone();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let uid = h.uid().unwrap_or(0) as u32;
        let gid = h.gid().unwrap_or(0) as u32;
        let mtime = h.mtime().unwrap_or(0) as i64;

        let path = self.prepare_parents(&rel)?;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.clear(&path, false)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| self.io("creating", &path, e))?;
                io::copy(entry, &mut f).map_err(|e| self.io("writing", &path, e))?;
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                    .map_err(|e| self.io("chown", &path, e))?;
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|e| self.io("chmod", &path, e))?;
                drop(f);
                self.xattrs(&path, &xattrs);
                let _ = sys::set_mtime_nofollow(&path, mtime);
            }
            EntryType::Directory => {
                if !self.clear(&path, true)? {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&path)
                        .map_err(|e| self.io("creating directory", &path, e))?;
                }
                sys::lchown(&path, uid, gid).map_err(|e| self.io("chown", &path, e))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|e| self.io("chmod", &path, e))?;
                self.xattrs(&path, &xattrs);
                self.dirs.push((path, mtime));
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.io("decoding symlink target of", &path, e))?
                    .ok_or_else(|| {
                        self.unsafe_layer(format_args!("symlink {rel:?} without target"))
                    })?
                    .into_owned();
                self.clear(&path, false)?;
                // The target is stored verbatim: it is resolved inside the
                // container's rootfs, never by us.
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| self.io("creating symlink", &path, e))?;
                sys::lchown(&path, uid, gid).map_err(|e| self.io("chown", &path, e))?;
                self.xattrs(&path, &xattrs);
                let _ = sys::set_mtime_nofollow(&path, mtime);
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.io("decoding hardlink target of", &path, e))?
                    .ok_or_else(|| {
                        self.unsafe_layer(format_args!("hardlink {rel:?} without target"))
                    })?
                    .into_owned();
                let target_rel = sanitize(&target).map_err(|r| {
                    self.unsafe_layer(format_args!("hardlink {rel:?} escapes the layer: {r}"))
                })?;
                let target_abs = self.existing_inside(&target_rel).map_err(|r| {
                    self.unsafe_layer(format_args!("hardlink {rel:?} -> {target:?}: {r}"))
                })?;
                if target_abs == path {
                    return Ok(());
                }
                self.clear(&path, false)?;
                fs::hard_link(&target_abs, &path)
                    .map_err(|e| self.io("creating hardlink", &path, e))?;
            }
            EntryType::Fifo => {
                self.clear(&path, false)?;
                sys::mkfifo(&path, mode).map_err(|e| self.io("creating fifo", &path, e))?;
                sys::lchown(&path, uid, gid).map_err(|e| self.io("chown", &path, e))?;
                let _ = fs::set_permissions(&path, fs::Permissions::from_mode(mode));
            }
            EntryType::Char | EntryType::Block => {
                let major = h.device_major().ok().flatten().unwrap_or(1);
                let minor = h.device_minor().ok().flatten().unwrap_or(1);
                if kind == EntryType::Char && major == 0 && minor == 0 {
                    // Already an overlay-style whiteout.
                    self.clear(&path, false)?;
                    sys::mknod_whiteout(&path)
                        .map_err(|e| self.io("creating whiteout", &path, e))?;
                } else {
                    tracing::debug!(path = %rel.display(), layer = self.label, "skipping device node");
                    self.stats.skipped_devices += 1;
                    return Ok(());
                }
            }
            other => {
                tracing::debug!(path = %rel.display(), ?other, layer = self.label, "skipping tar entry type");
                return Ok(());
            }
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// Resolve an existing, non-directory entry of this layer without
    /// following any symlink on the way.
    fn existing_inside(&self, rel: &Path) -> Result<PathBuf, String> {
        if rel.as_os_str().is_empty() {
            return Err("target is the layer root".into());
        }
        let mut cur = self.root.to_path_buf();
        let n = rel.components().count();
        for (i, c) in rel.components().enumerate() {
            cur.push(c);
            let m = fs::symlink_metadata(&cur)
                .map_err(|_| "target does not exist in this layer".to_string())?;
            let last = i + 1 == n;
            if !last && !m.file_type().is_dir() {
                return Err("target path goes through a symlink or file".into());
            }
            if last && m.file_type().is_dir() {
                return Err("target is a directory".into());
            }
        }
        Ok(cur)
    }

    fn xattrs(&self, path: &Path, xattrs: &[(String, Vec<u8>)]) {
        for (name, value) in xattrs {
            if let Err(e) = sys::lsetxattr(path, name, value) {
                tracing::debug!(path = %path.display(), name, error = %e, "cannot set xattr");
            }
        }
    }
}

/// xattrs from PAX `SCHILY.xattr.*` records, minus overlay-private ones
/// (a layer must not steer overlayfs through `trusted.overlay.*`).
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    if !name.starts_with("trusted.overlay.") {
                        out.push((name.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use tar::{Builder, Header};

    /// Builds archives, writing names raw so hostile paths survive.
    struct T(Builder<Vec<u8>>);

    impl T {
        fn new() -> Self {
            T(Builder::new(Vec::new()))
        }
        fn header(name: &str, kind: EntryType, size: u64, mode: u32) -> Header {
            let mut h = Header::new_ustar();
            let n = name.as_bytes();
            h.as_old_mut().name[..n.len()].copy_from_slice(n);
            h.set_entry_type(kind);
            h.set_size(size);
            h.set_mode(mode);
            h.set_uid(1234);
            h.set_gid(4321);
            h.set_mtime(1_000_000);
            h
        }
        fn file(mut self, name: &str, data: &[u8]) -> Self {
            let mut h = Self::header(name, EntryType::Regular, data.len() as u64, 0o640);
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }
        fn dir(mut self, name: &str, mode: u32) -> Self {
            let mut h = Self::header(name, EntryType::Directory, 0, mode);
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }
        fn link(mut self, kind: EntryType, name: &str, target: &str) -> Self {
            let mut h = Self::header(name, kind, 0, 0o777);
            let t = target.as_bytes();
            h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }
        fn dev(mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> Self {
            let mut h = Self::header(name, kind, 0, 0o666);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }
        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("layer");
        let outside = tmp.path().join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"keep").unwrap();
        Fixture {
            root,
            outside,
            _tmp: tmp,
        }
    }

    fn unpack(f: &Fixture, tar: Vec<u8>) -> Result<UnpackStats, ImageError> {
        unpack_tar(&tar[..], &f.root, "test layer")
    }

    fn assert_unsafe(r: Result<UnpackStats, ImageError>) {
        match r {
            Err(ImageError::UnsafeLayer { reason }) => {
                assert!(reason.contains("test layer"), "{reason}")
            }
            other => panic!("expected UnsafeLayer, got {other:?}"),
        }
    }

    #[test]
    fn parent_traversal_is_rejected() {
        let f = fixture();
        let depth = "../".repeat(f.root.components().count() + 2);
        let name = format!("{depth}etc/passwd-skiff-test");
        assert_unsafe(unpack(&f, T::new().file(&name, b"pwned").bytes()));
        assert_unsafe(unpack(
            &f,
            T::new().file("../outside/secret", b"pwned").bytes(),
        ));
        assert_eq!(fs::read(f.outside.join("secret")).unwrap(), b"keep");
        assert!(!Path::new("/etc/passwd-skiff-test").exists());
    }

    #[test]
    fn absolute_path_is_rejected() {
        let f = fixture();
        let name = format!("{}/secret", f.outside.display());
        assert_unsafe(unpack(&f, T::new().file(&name, b"pwned").bytes()));
        assert_eq!(fs::read(f.outside.join("secret")).unwrap(), b"keep");
    }

    #[test]
    fn write_through_absolute_symlink_is_rejected() {
        let f = fixture();
        let out = f.outside.display().to_string();
        let tar = T::new()
            .link(EntryType::Symlink, "evil", &out)
            .file("evil/secret", b"pwned")
            .bytes();
        assert_unsafe(unpack(&f, tar));
        assert_eq!(fs::read(f.outside.join("secret")).unwrap(), b"keep");
    }

    #[test]
    fn file_replacing_symlink_does_not_follow_it() {
        let f = fixture();
        let target = format!("{}/secret", f.outside.display());
        let tar = T::new()
            .link(EntryType::Symlink, "s", &target)
            .file("s", b"new")
            .bytes();
        unpack(&f, tar).unwrap();
        assert_eq!(fs::read(f.outside.join("secret")).unwrap(), b"keep");
        let m = fs::symlink_metadata(f.root.join("s")).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(fs::read(f.root.join("s")).unwrap(), b"new");
    }

    #[test]
    fn symlinks_are_stored_verbatim() {
        let f = fixture();
        unpack(
            &f,
            T::new()
                .link(EntryType::Symlink, "bin/sh", "/bin/busybox")
                .bytes(),
        )
        .unwrap();
        assert_eq!(
            fs::read_link(f.root.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
    }

    #[test]
    fn escaping_hardlinks_are_rejected() {
        let f = fixture();
        assert_unsafe(unpack(
            &f,
            T::new()
                .link(EntryType::Link, "h", "../outside/secret")
                .bytes(),
        ));
        let abs = format!("{}/secret", f.outside.display());
        assert_unsafe(unpack(
            &f,
            T::new().link(EntryType::Link, "h2", &abs).bytes(),
        ));
        let out = f.outside.display().to_string();
        let tar = T::new()
            .link(EntryType::Symlink, "sym", &out)
            .link(EntryType::Link, "h3", "sym/secret")
            .bytes();
        assert_unsafe(unpack(&f, tar));
        assert_eq!(fs::metadata(f.outside.join("secret")).unwrap().nlink(), 1);
    }

    #[test]
    fn inside_hardlinks_work() {
        let f = fixture();
        unpack(
            &f,
            T::new()
                .file("a/f", b"x")
                .link(EntryType::Link, "b/g", "a/f")
                .bytes(),
        )
        .unwrap();
        let a = fs::metadata(f.root.join("a/f")).unwrap();
        let b = fs::metadata(f.root.join("b/g")).unwrap();
        assert_eq!(a.ino(), b.ino());
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        let f = fixture();
        let tar = T::new()
            .dir("etc/", 0o755)
            .file("etc/.wh.motd", b"")
            .file(".wh.tmp", b"")
            .dir("var/cache/", 0o755)
            .file("var/cache/.wh..wh..opq", b"")
            .file("var/cache/new", b"n")
            .file("opq-implicit/.wh..wh..opq", b"")
            .bytes();
        unpack(&f, tar).unwrap();
        for p in ["etc/motd", "tmp"] {
            let m = fs::symlink_metadata(f.root.join(p)).unwrap();
            assert!(m.file_type().is_char_device(), "{p}");
            assert_eq!(m.rdev(), 0, "{p}");
        }
        assert!(!f.root.join("etc/.wh.motd").exists());
        assert!(!f.root.join("var/cache/.wh..wh..opq").exists());
        for d in ["var/cache", "opq-implicit"] {
            assert_eq!(
                sys::lgetxattr(&f.root.join(d), "trusted.overlay.opaque").unwrap(),
                b"y",
                "{d}"
            );
        }
        assert!(f.root.join("var/cache/new").is_file());
    }

    #[test]
    fn device_nodes_are_skipped_except_whiteouts() {
        let f = fixture();
        let tar = T::new()
            .dev("dev/null", EntryType::Char, 1, 3)
            .dev("dev/sda", EntryType::Block, 8, 0)
            .dev("gone", EntryType::Char, 0, 0)
            .bytes();
        let s = unpack(&f, tar).unwrap();
        assert_eq!(s.skipped_devices, 2);
        assert!(fs::symlink_metadata(f.root.join("dev/null")).is_err());
        assert!(fs::symlink_metadata(f.root.join("dev/sda")).is_err());
        assert!(fs::symlink_metadata(f.root.join("gone"))
            .unwrap()
            .file_type()
            .is_char_device());
    }

    #[test]
    fn metadata_is_preserved() {
        let f = fixture();
        unpack(&f, T::new().dir("d/", 0o750).file("d/f", b"hello").bytes()).unwrap();
        let m = fs::metadata(f.root.join("d/f")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!((m.uid(), m.gid()), (1234, 4321));
        assert_eq!(m.mtime(), 1_000_000);
        let d = fs::metadata(f.root.join("d")).unwrap();
        assert_eq!(d.mode() & 0o7777, 0o750);
        assert_eq!(d.mtime(), 1_000_000);
    }

    /// Layers named before a sync are marked with their boot; a sync clears this boot's marks;
    /// a later boot removes the layers an earlier one never synced (and nothing else).
    #[test]
    fn unsynced_layers_survive_a_restart_and_not_a_power_loss() {
        let tmp = tempfile::tempdir().unwrap();
        let layers = tmp.path().join("layers");
        fs::create_dir(&layers).unwrap();
        let stage = |id: &str| {
            let t = unpack_to_temp(&T::new().file("f", id.as_bytes()).bytes()[..], Compression::None, &layers, id, "l").unwrap();
            (t, id.to_string())
        };
        let marks = |l: &Path| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(l.join(UNSYNCED_DIR)).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect()).unwrap_or_default();
            v.sort();
            v
        };
        commit_layers_unsynced(&layers, &[stage("a"), stage("b")], "boot1").unwrap();
        assert_eq!(fs::read(layers.join("a/f")).unwrap(), b"a", "named at once");
        assert_eq!(marks(&layers), ["a@boot1", "b@boot1"]);
        // The daemon restarts in the same boot: the layers are synced and kept.
        assert!(recover_unsynced(&layers, "boot1").unwrap().is_empty());
        assert!(marks(&layers).is_empty() && layers.join("a").is_dir());
        // Named in boot1, never synced, and the host rebooted: only that layer goes.
        commit_layers_unsynced(&layers, &[stage("c")], "boot1").unwrap();
        assert_eq!(recover_unsynced(&layers, "boot2").unwrap(), ["c"]);
        assert!(!layers.join("c").exists() && layers.join("a").is_dir() && layers.join("b").is_dir());
        assert!(marks(&layers).is_empty());
        // A normal sync clears only its own boot's marks.
        commit_layers_unsynced(&layers, &[stage("d")], "boot2").unwrap();
        sync_layers(&layers, "boot3").unwrap();
        assert_eq!(marks(&layers), ["d@boot2"]);
        sync_layers(&layers, "boot2").unwrap();
        assert!(marks(&layers).is_empty());
    }

    #[test]
    fn unpacked_layers_decompress_and_a_bad_one_leaves_nothing() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let layers = tmp.path().join("layers");
        fs::create_dir(&layers).unwrap();
        let tar = T::new().file("hello", b"world").bytes();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        };
        let zs = zstd::encode_all(&tar[..], 1).unwrap();
        for (i, (data, c)) in [
            (tar.clone(), Compression::None),
            (gz, Compression::Gzip),
            (zs, Compression::Zstd),
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("id{i}");
            let unpacked = unpack_to_temp(&data[..], c, &layers, &id, "l").unwrap();
            commit_layers_unsynced(&layers, &[(unpacked, id.clone())], "boot").unwrap();
            assert_eq!(fs::read(layers.join(&id).join("hello")).unwrap(), b"world");
        }
        // A bad layer leaves no directory behind, neither final nor temp.
        let bad = T::new().file("../x", b"").bytes();
        assert!(unpack_to_temp(&bad[..], Compression::None, &layers, "bad", "l").is_err());
        let names: Vec<_> = fs::read_dir(&layers)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != UNSYNCED_DIR)
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}
