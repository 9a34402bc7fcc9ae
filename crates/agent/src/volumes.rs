//! Preparing a group's volumes on the host before its containers start. Every volume ends up
//! as a host directory that the containers bind-mount ([`MountPlan`]):
//! - `emptyDir`: a tmpfs of `--empty-dir-mb` at `DIR/volumes/<name>`, shared by the
//!   containers that mount it, unmounted with the group (a size limit the kernel enforces,
//!   which a plain directory on the data disk would not have);
//! - `secret`: a tmpfs at `DIR/volumes/<name>` with one file (mode 0400) per key, so the values
//!   never reach the disk; unmounted with the group;
//! - `gitRepo`: cloned into `DIR/volumes/<name>` (into `directory`, `.` = the volume itself);
//! - `azureFile`: a Skiff-managed share `DATA/shares/<account>/<share>`, opened with its key;
//!   it outlives groups and may be mounted by several at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use skiff_model::arm::VolumeMount;
use skiff_model::records::GroupRecord;
use skiff_model::shares::{share_key, ShareRecord};
use skiff_runtime::MountPlan;

use crate::Shared;

/// A volume that cannot be prepared: an ARM error code and a message for the group's events.
#[derive(Debug)]
pub(crate) struct VolumeError {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: String) -> VolumeError {
    VolumeError { code, message }
}

/// A prepared volume: its host directory and whether the volume itself is read-only.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub source: PathBuf,
    pub read_only: bool,
}

pub(crate) fn volumes_dir(group_dir: &Path) -> PathBuf {
    group_dir.join("volumes")
}

/// Directory of a Skiff-managed share.
pub fn share_dir(data_dir: &Path, account: &str, share: &str) -> PathBuf {
    data_dir.join("shares").join(account.to_ascii_lowercase()).join(share.to_ascii_lowercase())
}

/// Prepare every volume of `rec` (after [`unmount_all`] of an earlier generation).
pub(crate) async fn prepare(sh: &Shared, rec: &GroupRecord, group_dir: &Path) -> Result<HashMap<String, Prepared>, VolumeError> {
    let root = volumes_dir(group_dir);
    let io = |what: &str, e: std::io::Error| err("VolumePreparationFailed", format!("{what}: {e}"));
    let mut out = HashMap::new();
    for v in rec.spec.properties.volumes.iter().flatten() {
        let dir = root.join(&v.name);
        let prepared = if let Some(share) = &v.azure_file {
            let key = share.storage_account_key.as_deref().unwrap_or("");
            let found = sh.store.get(&share_key(&share.storage_account_name, &share.share_name)).await.map_err(|e| err("VolumePreparationFailed", format!("reading share '{}': {e}", share.share_name)))?;
            let mut record: Option<ShareRecord> = found.and_then(|kv| serde_json::from_slice(&kv.value).ok());
            if let (Some(r), Some(k)) = (record.as_mut(), &sh.cfg.secrets) {
                r.storage_account_key = k.open(&r.storage_account_key).map_err(|e| err("VolumePreparationFailed", format!("volume '{}': {e}", v.name)))?;
            }
            let Some(record) = record else {
                return Err(err("StorageShareNotFound", format!("volume '{}': the file share '{}' of storage account '{}' does not exist (create it with `skiff share create`).", v.name, share.share_name, share.storage_account_name)));
            };
            if !record.key_matches(key) {
                return Err(err("InvalidStorageAccountKey", format!("volume '{}': the storage account key of share '{}' in account '{}' is wrong.", v.name, share.share_name, share.storage_account_name)));
            }
            let source = share_dir(&sh.cfg.data_dir, &share.storage_account_name, &share.share_name);
            std::fs::create_dir_all(&source).map_err(|e| io("creating the share directory", e))?;
            Prepared { source, read_only: share.read_only.unwrap_or(false) }
        } else if let Some(files) = &v.secret {
            fresh_dir(&dir).map_err(|e| io("creating the secret volume", e))?;
            mount_tmpfs(&dir, "mode=0755,size=4m", true).map_err(|e| io("mounting the secret volume's tmpfs", e))?;
            for (name, b64) in files {
                let value = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|_| err("InvalidSecretVolume", format!("volume '{}': the value of '{name}' is not valid base64.", v.name)))?;
                write_secret(&dir.join(name), &value).map_err(|e| io("writing a secret file", e))?;
            }
            Prepared { source: dir, read_only: true }
        } else if let Some(repo) = &v.git_repo {
            fresh_dir(&dir).map_err(|e| io("creating the gitRepo volume", e))?;
            let sub = match repo.directory.as_deref() {
                Some(".") => None,
                Some(d) if !d.is_empty() => Some(d.to_string()),
                _ => Some(crate::git::default_directory(&repo.repository)),
            };
            let dest = match &sub {
                Some(d) => dir.join(d),
                None => dir.clone(),
            };
            crate::git::clone(&repo.repository, &dest, repo.revision.as_deref())
                .await
                .map_err(|m| err("GitRepoCloneFailed", format!("volume '{}': cloning '{}' failed: {m}", v.name, repo.repository)))?;
            Prepared { source: dir, read_only: false }
        } else {
            // emptyDir: writable by any user of the containers, like Kubernetes' emptyDir. Its
            // data lives as long as the group: a restart or an update keeps the tmpfs.
            if !skiff_image::is_mounted_at(&dir).map_err(|e| io("inspecting the emptyDir volume", e))? {
                fresh_dir(&dir).map_err(|e| io("creating the emptyDir volume", e))?;
                let opts = format!("mode=0777,size={}k", sh.cfg.empty_dir_bytes.div_ceil(1024));
                mount_tmpfs(&dir, &opts, false).map_err(|e| io("mounting the emptyDir volume's tmpfs", e))?;
            }
            Prepared { source: dir, read_only: false }
        };
        out.insert(v.name.clone(), prepared);
    }
    Ok(out)
}

/// The bind mounts of one container.
pub(crate) fn mounts_for(prepared: &HashMap<String, Prepared>, mounts: Option<&[VolumeMount]>) -> Vec<MountPlan> {
    mounts
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            let p = prepared.get(&m.name)?;
            Some(MountPlan { source: p.source.clone(), destination: m.mount_path.clone(), read_only: p.read_only || m.read_only.unwrap_or(false) })
        })
        .collect()
}

fn fresh_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)
}

/// A tmpfs at `dir` (nosuid, nodev; noexec when `noexec`) with the given `mode=…,size=…`.
pub(crate) fn mount_tmpfs(dir: &Path, options: &str, noexec: bool) -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if noexec {
        flags |= MsFlags::MS_NOEXEC;
    }
    mount(Some("tmpfs"), dir, Some("tmpfs"), flags, Some(options)).map_err(std::io::Error::from)
}

fn write_secret(path: &Path, value: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(path)?;
    f.write_all(value)
}

/// For a group in a user namespace: every volume is seen through an idmapped mount of its
/// source at `DIR/vmaps/<name>`, so files keep their real ownership on disk (a share written by
/// one group is owned by the same ids for the next) while each group sees them as its own.
pub(crate) fn map_ids(group_dir: &Path, prepared: &mut HashMap<String, Prepared>, ids: skiff_image::IdMap) -> Result<(), VolumeError> {
    if prepared.is_empty() {
        return Ok(());
    }
    let io = |e: std::io::Error| err("VolumePreparationFailed", format!("mapping volume ownership into the group's user namespace: {e}"));
    let mapper = skiff_image::IdMapper::new(ids).map_err(io)?;
    for (name, p) in prepared.iter_mut() {
        let target = group_dir.join("vmaps").join(name);
        mapper.bind(&p.source, &target).map_err(io)?;
        p.source = target;
    }
    Ok(())
}

/// Unmount every volume of the group (before it stops or its directory is removed).
pub(crate) fn unmount_all(group_dir: &Path) {
    unmount_except(group_dir, &[]);
}

/// Unmount the group's volumes, except the emptyDir volumes named in `keep`, whose data lives
/// as long as the group (before a new generation prepares its volumes).
pub(crate) fn unmount_except(group_dir: &Path, keep: &[&str]) {
    // Mappings first: they sit on top of the volumes' own mounts.
    for (dir, keep) in [(group_dir.join("vmaps"), &[][..]), (volumes_dir(group_dir), keep)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if keep.iter().any(|k| entry.file_name() == *k) {
                continue;
            }
            if let Err(e) = skiff_image::unmount_all_at(&entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "unmounting a volume failed");
            }
        }
    }
}

/// The emptyDir volumes of a group document.
pub(crate) fn empty_dirs(rec: &GroupRecord) -> Vec<&str> {
    rec.spec.properties.volumes.iter().flatten().filter(|v| v.empty_dir.is_some()).map(|v| v.name.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_follow_the_volume_and_the_mount_read_only_flags() {
        let prepared: HashMap<String, Prepared> = [
            ("data".to_string(), Prepared { source: "/g/volumes/data".into(), read_only: false }),
            ("sec".to_string(), Prepared { source: "/g/volumes/sec".into(), read_only: true }),
        ]
        .into();
        let m = |name: &str, path: &str, ro: Option<bool>| VolumeMount { name: name.into(), mount_path: path.into(), read_only: ro };
        let got = mounts_for(&prepared, Some(&[m("data", "/rw", None), m("data", "/ro", Some(true)), m("sec", "/s", Some(false)), m("gone", "/x", None)]));
        let summary: Vec<(&str, bool)> = got.iter().map(|p| (p.destination.as_str(), p.read_only)).collect();
        assert_eq!(summary, [("/rw", false), ("/ro", true), ("/s", true)]);
        assert!(mounts_for(&prepared, None).is_empty());
    }
}
