//! [`ImageStore`]: pull, cache, mount and collect images.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;

use crate::layer_path::short_id;
use crate::manifest::{
    layer_compression, parse_image_config, parse_manifest, select_platform, sha256_hex, Descriptor,
    ImageConfig, Manifest, ACCEPTED_MANIFESTS,
};
use crate::reference::{is_loopback_registry, parse_reference};
use crate::{sys, unpack, ImageError};

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum RegistryAuth {
    /// No credentials.
    Anonymous,
    /// Username/password; oci-client does the bearer token dance itself, or
    /// falls back to plain Basic when the registry asks for it.
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryAuth::Anonymous => f.write_str("Anonymous"),
            RegistryAuth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
        }
    }
}

impl RegistryAuth {
    fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            RegistryAuth::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            RegistryAuth::Basic { username, password } => {
                oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone())
            }
        }
    }
}

/// Progress of one pull, reported as bytes arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// Normalized reference being pulled.
    pub reference: String,
    /// Sum of the (compressed) layer sizes.
    pub total_bytes: u64,
    /// Bytes downloaded or found locally so far.
    pub done_bytes: u64,
    /// Number of layers.
    pub layers_total: usize,
    /// Layers present and unpacked.
    pub layers_done: usize,
}

/// A pulled image, ready to mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedImage {
    /// Normalized reference, e.g. `127.0.0.1:5000/busybox:latest`.
    pub reference: String,
    /// Digest of the (platform) image manifest.
    pub manifest_digest: String,
    /// Runtime config from the image.
    pub config: ImageConfig,
    /// Unpacked layer directories, bottom first.
    pub layer_dirs: Vec<PathBuf>,
    /// Sum of compressed layer sizes.
    pub size_bytes: u64,
}

/// A user-namespace id range: container ids `0..size` are host ids `host_base..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub host_base: u32,
    pub size: u32,
}

/// Bind mounts shifted onto one [`IdMap`] (for volumes of a group in a user namespace: the
/// directory keeps real ownership on disk, the group sees it through its own ids).
pub struct IdMapper {
    userns: std::os::fd::OwnedFd,
}

impl IdMapper {
    pub fn new(ids: IdMap) -> io::Result<IdMapper> {
        Ok(IdMapper { userns: sys::userns_with_mapping(ids.host_base, ids.size)? })
    }

    /// Bind `src` at `target` (created if missing) through the mapping; a no-op when
    /// something is already mounted there.
    pub fn bind(&self, src: &Path, target: &Path) -> io::Result<()> {
        use std::os::fd::AsFd;
        fs::create_dir_all(target)?;
        if sys::is_mounted_at(target)? {
            return Ok(());
        }
        sys::idmapped_bind(src, target, self.userns.as_fd())
    }
}

/// Detach whatever is mounted at `target` (stacked mounts included) and check that nothing is
/// left, so removing the directory afterwards cannot reach into the mounted source.
pub fn unmount_all_at(target: &Path) -> io::Result<()> {
    for _ in 0..8 {
        if !sys::is_mounted_at(target)? {
            return Ok(());
        }
        sys::unmount(target)?;
    }
    Err(io::Error::new(io::ErrorKind::ResourceBusy, format!("{} is still mounted", target.display())))
}

/// Configuration of an [`ImageStore`].
#[derive(Debug, Clone)]
pub struct ImageStoreConfig {
    /// Store root (created if missing). Must not contain ',' or ':' (overlay options).
    pub root: PathBuf,
    /// `host[:port]` of registries that may be reached over plain HTTP.
    /// Loopback registries (127.x, localhost, ::1) are always allowed.
    pub insecure_registries: Vec<String>,
    /// Layers fetched concurrently per pull (0 is treated as 1).
    pub max_concurrent_layers: usize,
}

/// What [`ImageStore::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// References whose records were removed.
    pub images_removed: Vec<String>,
    /// Blob files removed.
    pub blobs_removed: usize,
    /// Unpacked layer directories removed.
    pub layers_removed: usize,
    /// Bytes of blob files freed (layer dirs not counted).
    pub bytes_freed: u64,
}

/// Per-reference record on disk (`images/<sha256(reference)>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageRecord {
    version: u32,
    reference: String,
    manifest_digest: String,
    config_digest: String,
    config: ImageConfig,
    layers: Vec<Descriptor>,
    size_bytes: u64,
    pulled_at_unix: u64,
}

type ClientKey = (String, RegistryAuth);

/// The image store. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct ImageStore {
    root: PathBuf,
    insecure: Vec<String>,
    max_concurrent_layers: usize,
    /// One oci-client per (registry, credentials): oci-client keeps the first
    /// credentials it sees per registry, so clients must not be shared across
    /// different credentials.
    clients: Mutex<HashMap<ClientKey, oci_client::Client>>,
    /// Per-digest in-flight locks: one download/unpack per blob.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Digests used by pulls in progress (refcounted); gc keeps them. gc holds
    /// this lock for its whole run, so a pull pins before checking presence.
    pins: Mutex<HashMap<String, usize>>,
    blob_fetches: AtomicU64,
    tmp_seq: AtomicU64,
    /// This boot's id (`/proc/sys/kernel/random/boot_id`): layers named before they were
    /// synced are marked with it (see [`unpack::commit_layers_unsynced`]).
    boot_id: String,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

struct Progress<'a> {
    reference: String,
    total: u64,
    layers_total: usize,
    done: AtomicU64,
    layers_done: AtomicUsize,
    last_report: AtomicU64,
    cb: &'a (dyn Fn(PullProgress) + Send + Sync),
}

impl Progress<'_> {
    fn report(&self) {
        (self.cb)(PullProgress {
            reference: self.reference.clone(),
            total_bytes: self.total,
            done_bytes: self.done.load(Ordering::Relaxed).min(self.total),
            layers_total: self.layers_total,
            layers_done: self.layers_done.load(Ordering::Relaxed),
        })
    }
    fn add_bytes(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        // Report at most every 256 KiB.
        let last = self.last_report.load(Ordering::Relaxed);
        if done >= last + 256 * 1024 || done >= self.total {
            self.last_report.store(done, Ordering::Relaxed);
            self.report();
        }
    }
    fn layer_done(&self) {
        self.layers_done.fetch_add(1, Ordering::Relaxed);
        self.report();
    }
}

struct KeyGuard<'a> {
    store: &'a ImageStore,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.store.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map and we hold it: nobody waits, drop the entry.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.key);
        }
    }
}

struct PinGuard<'a> {
    store: &'a ImageStore,
    digests: Vec<String>,
}

impl Drop for PinGuard<'_> {
    fn drop(&mut self) {
        let mut pins = self.store.pins.lock().unwrap_or_else(|e| e.into_inner());
        for d in &self.digests {
            if let Some(n) = pins.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(d);
                }
            }
        }
    }
}

/// Writes to a file while hashing and counting.
struct HashingWriter<'a, 'b> {
    /// Where the blob is stored; `None` for a layer, which is only unpacked (from `tee`).
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    written: u64,
    progress: Option<&'a Progress<'b>>,
    /// Every chunk also goes here (to a layer's unpacker); the download waits when it is full.
    tee: Option<tokio_util::sync::PollSender<io::Result<bytes::Bytes>>>,
}

impl AsyncWrite for HashingWriter<'_, '_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(tee) = this.tee.as_mut() {
            match tee.poll_reserve(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {}
                // The unpacker stopped (it failed): the blob is still downloaded and checked.
                Poll::Ready(Err(_)) => this.tee = None,
            }
        }
        let written = match this.file.as_mut() {
            Some(f) => Pin::new(f).poll_write(cx, buf),
            None => Poll::Ready(Ok(buf.len())),
        };
        match written {
            Poll::Ready(Ok(n)) => {
                this.hasher.update(&buf[..n]);
                this.written += n as u64;
                if let Some(p) = this.progress {
                    p.add_bytes(n as u64);
                }
                if let Some(tee) = this.tee.as_mut() {
                    if tee.send_item(Ok(bytes::Bytes::copy_from_slice(&buf[..n]))).is_err() {
                        this.tee = None;
                    }
                }
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.file.as_mut() {
            Some(f) => Pin::new(f).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.file.as_mut() {
            Some(f) => Pin::new(f).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let c = context.into();
    move |e| ImageError::io(c, e)
}

/// Write `data` to `path` atomically: temp file, fsync, rename, fsync dir.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".tmp-{}-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(io_ctx(format!("writing {}", path.display())))
}

fn sha256_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl ImageStore {
    /// Open (and create) a store rooted at `cfg.root`.
    pub fn open(cfg: ImageStoreConfig) -> Result<Self, ImageError> {
        let root = cfg.root;
        let s = root.to_string_lossy();
        if s.contains(',') || s.contains(':') {
            return Err(ImageError::io(
                format!("image store root {s:?}"),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "must not contain ',' or ':' (overlayfs options)",
                ),
            ));
        }
        for d in ["blobs/sha256", "blobs/tmp", "layers", "images", "empty"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_ctx(format!("creating {}", p.display())))?;
        }
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|b| b.trim().to_string()).unwrap_or_else(|_| "unknown".to_string());
        let store = ImageStore {
            root,
            insecure: cfg.insecure_registries,
            max_concurrent_layers: cfg.max_concurrent_layers.max(1),
            clients: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            pins: Mutex::new(HashMap::new()),
            blob_fetches: AtomicU64::new(0),
            tmp_seq: AtomicU64::new(0),
            boot_id,
        };
        store.recover_unsynced()?;
        Ok(store)
    }

    /// Layers a previous boot named but never synced may have lost data in a power loss:
    /// remove them, and the image records that need them (those images are pulled again).
    fn recover_unsynced(&self) -> Result<(), ImageError> {
        let layers = self.root.join("layers");
        let lost = unpack::recover_unsynced(&layers, &self.boot_id).map_err(io_ctx(format!("recovering unsynced layers in {}", layers.display())))?;
        if lost.is_empty() {
            return Ok(());
        }
        tracing::warn!(layers = ?lost, "removed layers a previous boot never synced; their images will be pulled again");
        for (path, rec) in self.all_records()? {
            let needs_lost = rec.layers.iter().any(|l| sha256_hex(&l.digest).is_ok_and(|h| lost.iter().any(|id| id == short_id(h))));
            if needs_lost {
                fs::remove_file(&path).map_err(io_ctx(format!("removing {}", path.display())))?;
            }
        }
        Ok(())
    }

    /// Root directory of the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of blobs downloaded from registries since `open` (metrics, tests).
    pub fn blob_fetches(&self) -> u64 {
        self.blob_fetches.load(Ordering::Relaxed)
    }

    fn record_path(&self, reference: &str) -> PathBuf {
        self.root.join("images").join(format!(
            "{}.json",
            hex::encode(Sha256::digest(reference.as_bytes()))
        ))
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex)
    }

    fn layer_dir(&self, hex: &str) -> PathBuf {
        self.root.join("layers").join(short_id(hex))
    }

    fn resolved(&self, r: &ImageRecord) -> Result<ResolvedImage, ImageError> {
        let layer_dirs = r
            .layers
            .iter()
            .map(|l| sha256_hex(&l.digest).map(|h| self.layer_dir(h)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ResolvedImage {
            reference: r.reference.clone(),
            manifest_digest: r.manifest_digest.clone(),
            config: r.config.clone(),
            layer_dirs,
            size_bytes: r.size_bytes,
        })
    }

    fn read_record(path: &Path) -> Result<Option<ImageRecord>, ImageError> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                ImageError::io(
                    format!("reading image record {}", path.display()),
                    io::Error::new(io::ErrorKind::InvalidData, e),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io(
                format!("reading image record {}", path.display()),
                e,
            )),
        }
    }

    fn all_records(&self) -> Result<Vec<(PathBuf, ImageRecord)>, ImageError> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_ctx(format!("listing {}", dir.display())))? {
            let e = e.map_err(io_ctx(format!("listing {}", dir.display())))?;
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json")
                && !e.file_name().to_string_lossy().starts_with('.')
            {
                match Self::read_record(&p) {
                    Ok(Some(r)) => out.push((p, r)),
                    Ok(None) => {}
                    Err(err) => tracing::warn!(error = %err, "skipping unreadable image record"),
                }
            }
        }
        Ok(out)
    }

    /// Fast path: the locally recorded image for `reference`, without
    /// contacting any registry (one small file read).
    pub fn lookup(&self, reference: &str) -> Result<Option<ResolvedImage>, ImageError> {
        let canonical = parse_reference(reference)?.to_string();
        match Self::read_record(&self.record_path(&canonical))? {
            Some(r) => self.resolved(&r).map(Some),
            None => Ok(None),
        }
    }

    /// All locally recorded images, sorted by reference.
    pub fn list_cached(&self) -> Result<Vec<ResolvedImage>, ImageError> {
        let mut v = self
            .all_records()?
            .iter()
            .map(|(_, r)| self.resolved(r))
            .collect::<Result<Vec<_>, _>>()?;
        v.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(v)
    }

    fn client_for(&self, registry: &str, auth: &RegistryAuth) -> oci_client::Client {
        let key = (registry.to_string(), auth.clone());
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return c.clone();
        }
        if clients.len() > 64 {
            clients.clear();
        }
        let insecure =
            is_loopback_registry(registry) || self.insecure.iter().any(|r| r == registry);
        let protocol = if insecure {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        };
        let client = oci_client::Client::new(ClientConfig {
            protocol,
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(15)),
            read_timeout: Some(std::time::Duration::from_secs(120)),
            max_concurrent_download: self.max_concurrent_layers,
            ..Default::default()
        });
        clients.insert(key, client.clone());
        client
    }

    /// Take the in-flight lock for `key`; the map entry goes away with the
    /// last holder.
    async fn lock_key(&self, key: &str) -> KeyGuard<'_> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        KeyGuard {
            store: self,
            key: key.to_string(),
            lock,
            guard: Some(guard),
        }
    }

    fn pin(&self, digests: Vec<String>) -> PinGuard<'_> {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        for d in &digests {
            *pins.entry(d.clone()).or_insert(0) += 1;
        }
        drop(pins);
        PinGuard {
            store: self,
            digests,
        }
    }

    /// Resolve `reference` at its registry and fetch whatever is missing.
    /// Concurrent pulls of the same blob download it once.
    pub async fn pull(
        &self,
        reference: &str,
        auth: &RegistryAuth,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<ResolvedImage, ImageError> {
        let parsed = parse_reference(reference)?;
        let canonical = parsed.to_string();
        let registry = parsed.registry.clone();
        let oref: oci_client::Reference =
            canonical
                .parse()
                .map_err(|e| ImageError::InvalidReference {
                    reference: reference.to_string(),
                    reason: format!("{e}"),
                })?;
        let client = self.client_for(&registry, auth);
        let oauth = auth.to_oci();
        let map = |e| ImageError::from_oci(e, &registry, &canonical);

        let (body, digest) = client
            .pull_manifest_raw(&oref, &oauth, ACCEPTED_MANIFESTS)
            .await
            .map_err(map)?;
        let (body, digest, manifest) = match parse_manifest(&body, None)? {
            Manifest::Index { manifests } => {
                let entry = select_platform(&manifests, "linux", "amd64").ok_or_else(|| {
                    ImageError::Unsupported {
                        media_type: format!(
                            "image index of {canonical} without a linux/amd64 manifest"
                        ),
                    }
                })?;
                let pref = oref.clone_with_digest(entry.digest.clone());
                let (b, d) = client
                    .pull_manifest_raw(&pref, &oauth, ACCEPTED_MANIFESTS)
                    .await
                    .map_err(map)?;
                let m = parse_manifest(&b, None)?;
                (b, d, m)
            }
            m => (body, digest, m),
        };
        let Manifest::Image { config, layers } = manifest else {
            return Err(ImageError::Unsupported {
                media_type: "nested image index".into(),
            });
        };
        let actual = sha256_of(&body);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                expected: digest,
                actual,
            });
        }
        // Validate everything before touching the disk.
        let manifest_hex = sha256_hex(&digest)?.to_string();
        sha256_hex(&config.digest)?;
        for l in &layers {
            sha256_hex(&l.digest)?;
            layer_compression(&l.media_type)?;
        }

        let mut pinned = vec![digest.clone(), config.digest.clone()];
        pinned.extend(layers.iter().map(|l| l.digest.clone()));
        let _pins = self.pin(pinned);

        let mpath = self.blob_path(&manifest_hex);
        if !mpath.exists() {
            write_atomic(&mpath, &body)?;
        }

        let config_path = self
            .ensure_blob(&client, &oref, &config, None, &registry, &canonical)
            .await?;
        let config_body =
            fs::read(&config_path).map_err(io_ctx(format!("reading {}", config_path.display())))?;
        let image_config = parse_image_config(&config_body)?;

        let total: u64 = layers.iter().map(|l| l.size.max(0) as u64).sum();
        let prog = Progress {
            reference: canonical.clone(),
            total,
            layers_total: layers.len(),
            done: AtomicU64::new(0),
            layers_done: AtomicUsize::new(0),
            last_report: AtomicU64::new(0),
            cb: progress,
        };
        prog.report();
        // Futures are lazy: building them all up front and buffering bounds the
        // concurrency (and, unlike a mapping closure, keeps the pull future Send).
        let jobs: Vec<_> = layers
            .iter()
            .map(|l| self.ensure_layer(&client, &oref, l, &prog, &registry, &canonical))
            .collect();
        let added: Vec<bool> = futures::stream::iter(jobs)
            .buffer_unordered(self.max_concurrent_layers)
            .try_collect()
            .await?;
        // The new layers were named as each was done (marked unsynced); one sync for all of
        // them follows in the background.
        if added.contains(&true) {
            let (layers_dir, boot_id) = (self.root.join("layers"), self.boot_id.clone());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = unpack::sync_layers(&layers_dir, &boot_id) {
                    tracing::warn!(error = %e, "syncing new layers failed; they stay marked unsynced");
                }
            });
        }

        let record = ImageRecord {
            version: 1,
            reference: canonical.clone(),
            manifest_digest: digest,
            config_digest: config.digest.clone(),
            config: image_config,
            layers,
            size_bytes: total,
            pulled_at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let json = serde_json::to_vec_pretty(&record).expect("record serializes");
        write_atomic(&self.record_path(&canonical), &json)?;
        self.resolved(&record)
    }

    /// Make sure blob `desc` is in `blobs/sha256/`, downloading it if needed.
    async fn ensure_blob(
        &self,
        client: &oci_client::Client,
        oref: &oci_client::Reference,
        desc: &Descriptor,
        progress: Option<&Progress<'_>>,
        registry: &str,
        reference: &str,
    ) -> Result<PathBuf, ImageError> {
        let hex = sha256_hex(&desc.digest)?;
        let path = self.blob_path(hex);
        let present = |p: &Progress<'_>| p.add_bytes(desc.size.max(0) as u64);
        if path.exists() {
            progress.map(present);
            return Ok(path);
        }
        let _g = self.lock_key(&format!("blob:{}", desc.digest)).await;
        if path.exists() {
            progress.map(present);
            return Ok(path);
        }
        let tmp = self.root.join("blobs/tmp").join(format!(
            "{hex}.{}.{}",
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(io_ctx(format!("creating {}", tmp.display())))?;
        let mut w = HashingWriter {
            file: Some(file),
            hasher: Sha256::new(),
            written: 0,
            progress,
            tee: None,
        };
        let res = self.fetch(client, oref, desc, &mut w, registry, reference).await;
        let finish = async {
            res?;
            if let Some(f) = w.file.as_mut() {
                f.sync_all().await.map_err(io_ctx(format!("syncing {}", tmp.display())))?;
            }
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(io_ctx(format!("storing blob {}", path.display())))
        };
        if let Err(e) = finish.await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        Ok(path)
    }

    /// Fetch blob `desc` through `w` and check its digest.
    async fn fetch(
        &self,
        client: &oci_client::Client,
        oref: &oci_client::Reference,
        desc: &Descriptor,
        w: &mut HashingWriter<'_, '_>,
        registry: &str,
        reference: &str,
    ) -> Result<(), ImageError> {
        self.blob_fetches.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(digest = %desc.digest, size = desc.size, "fetching blob");
        let res = client.pull_blob(oref, desc.digest.as_str(), &mut *w).await;
        // End an unpacker's stream whatever happened: the download's verdict is ours.
        w.tee = None;
        res.map_err(|e| ImageError::from_oci(e, registry, reference))?;
        let actual = format!("sha256:{}", hex::encode(w.hasher.clone().finalize()));
        if actual != desc.digest {
            return Err(ImageError::DigestMismatch { expected: desc.digest.clone(), actual });
        }
        Ok(())
    }

    /// Make sure layer `desc` is unpacked in `layers/<short id>/`.
    async fn ensure_layer(
        &self,
        client: &oci_client::Client,
        oref: &oci_client::Reference,
        desc: &Descriptor,
        progress: &Progress<'_>,
        registry: &str,
        reference: &str,
    ) -> Result<bool, ImageError> {
        let hex = sha256_hex(&desc.digest)?;
        let dir = self.layer_dir(hex);
        if dir.is_dir() {
            progress.add_bytes(desc.size.max(0) as u64);
            progress.layer_done();
            return Ok(false);
        }
        let compression = layer_compression(&desc.media_type)?;
        let layer_lock = self.lock_key(&format!("layer:{}", desc.digest)).await;
        if dir.is_dir() {
            progress.add_bytes(desc.size.max(0) as u64);
            progress.layer_done();
            return Ok(false);
        }
        let layers = self.root.join("layers");
        let id = short_id(hex).to_string();
        let label = format!("layer {}", desc.digest);
        // Unpack while downloading: the layer is decompressed as its bytes arrive, into a
        // temp directory that takes its name only once the whole blob's digest checked out.
        // The compressed blob itself is not kept: the unpacked layer is what the store serves,
        // so each layer is on disk once and written once.
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let (l, i, lb) = (layers.clone(), id.clone(), label.clone());
        let unpacker = tokio::task::spawn_blocking(move || unpack::unpack_to_temp(unpack::ChunkReader::new(rx), compression, &l, &i, &lb));
        let mut w = HashingWriter { file: None, hasher: Sha256::new(), written: 0, progress: Some(progress), tee: Some(tokio_util::sync::PollSender::new(tx)) };
        let downloaded = self.fetch(client, oref, desc, &mut w, registry, reference).await;
        drop(w);
        let unpacked = unpacker.await.map_err(|e| ImageError::io("unpack task", io::Error::other(e)))?;
        match (downloaded, unpacked) {
            (Ok(_), Ok(tmp)) => {
                // Named now, under this layer's lock alone: holding it until the whole pull is
                // done deadlocked two pulls that shared layers and locked them in other orders.
                let boot_id = self.boot_id.clone();
                tokio::task::spawn_blocking(move || unpack::commit_layers_unsynced(&layers, &[(tmp, id)], &boot_id))
                    .await
                    .map_err(|e| ImageError::io("unpack task", io::Error::other(e)))??;
                drop(layer_lock);
                progress.layer_done();
                Ok(true)
            }
            (Err(e), Ok(tmp)) => {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                Err(e)
            }
            (Err(e), Err(_)) | (Ok(_), Err(e)) => Err(e),
        }
    }

    /// Mount the image's rootfs at `container_dir/rootfs` (overlayfs; upper
    /// and work dirs under `container_dir`). Idempotent.
    pub fn mount_rootfs(
        &self,
        image: &ResolvedImage,
        container_dir: &Path,
    ) -> Result<PathBuf, ImageError> {
        self.mount_rootfs_mapped(image, container_dir, None)
    }

    /// [`ImageStore::mount_rootfs`] for a container in a user namespace: the shared layers are
    /// seen through idmapped mounts shifted onto `ids`, so image files keep their ownership
    /// inside the container while the cache on disk stays one copy owned by real ids; the
    /// writable layer belongs to the range's root.
    pub fn mount_rootfs_mapped(
        &self,
        image: &ResolvedImage,
        container_dir: &Path,
        ids: Option<IdMap>,
    ) -> Result<PathBuf, ImageError> {
        let rootfs = container_dir.join("rootfs");
        if sys::is_mount_point(&rootfs)
            .map_err(io_ctx(format!("inspecting {}", rootfs.display())))?
        {
            return Ok(rootfs);
        }
        let upper = container_dir.join("upper");
        let work = container_dir.join("work");
        for d in [&rootfs, &upper, &work] {
            let s = d.to_string_lossy();
            if s.contains(',') || s.contains(':') {
                return Err(ImageError::io(
                    format!("container dir {s:?}"),
                    io::Error::new(io::ErrorKind::InvalidInput, "must not contain ',' or ':'"),
                ));
            }
            fs::create_dir_all(d).map_err(io_ctx(format!("creating {}", d.display())))?;
        }
        let mut lowers: Vec<PathBuf> = image.layer_dirs.iter().rev().cloned().collect();
        if lowers.is_empty() {
            lowers.push(self.root.join("empty"));
        }
        for l in &lowers {
            if !l.is_dir() {
                return Err(ImageError::io(
                    format!(
                        "layer {} of image {} is missing (garbage-collected?)",
                        l.display(),
                        image.reference
                    ),
                    io::Error::from(io::ErrorKind::NotFound),
                ));
            }
        }
        if let Some(ids) = ids {
            lowers = self.idmapped_lowers(&lowers, container_dir, ids)?;
            for d in [&upper, &work] {
                std::os::unix::fs::chown(d, Some(ids.host_base), Some(ids.host_base))
                    .map_err(io_ctx(format!("chowning {}", d.display())))?;
            }
        }
        let lowerdir = lowers
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let opts = format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        if opts.len() >= 4000 {
            return Err(ImageError::io(
                format!(
                    "image {} has too many layers for one overlay mount",
                    image.reference
                ),
                io::Error::from(io::ErrorKind::InvalidInput),
            ));
        }
        sys::mount_overlay(&rootfs, &opts)
            .map_err(io_ctx(format!("mounting overlay at {}", rootfs.display())))?;
        Ok(rootfs)
    }

    /// Unmount `container_dir/rootfs` (lazy detach) and remove rootfs, upper
    /// and work. Idempotent.
    fn idmapped_lowers(&self, lowers: &[PathBuf], container_dir: &Path, ids: IdMap) -> Result<Vec<PathBuf>, ImageError> {
        let userns = sys::userns_with_mapping(ids.host_base, ids.size).map_err(io_ctx("creating a user namespace for idmapped layers".to_string()))?;
        let mut mapped = Vec::with_capacity(lowers.len());
        for (i, layer) in lowers.iter().enumerate() {
            let target = container_dir.join("lower").join(i.to_string());
            fs::create_dir_all(&target).map_err(io_ctx(format!("creating {}", target.display())))?;
            if !sys::is_mounted_at(&target).map_err(io_ctx(format!("inspecting {}", target.display())))? {
                use std::os::fd::AsFd;
                sys::idmapped_bind(layer, &target, userns.as_fd()).map_err(io_ctx(format!("idmapping layer {} at {}", layer.display(), target.display())))?;
            }
            mapped.push(target);
        }
        Ok(mapped)
    }

    pub fn unmount_rootfs(container_dir: &Path) -> Result<(), ImageError> {
        let rootfs = container_dir.join("rootfs");
        for _ in 0..16 {
            if !sys::is_mount_point(&rootfs)
                .map_err(io_ctx(format!("inspecting {}", rootfs.display())))?
            {
                break;
            }
            sys::unmount(&rootfs)
                .map_err(io_ctx(format!("unmounting {}", rootfs.display())))?;
        }
        if sys::is_mount_point(&rootfs).unwrap_or(true) {
            return Err(ImageError::io(
                format!("{} is still mounted", rootfs.display()),
                io::Error::from(io::ErrorKind::ResourceBusy),
            ));
        }
        // Idmapped layer mounts sit below the overlay: detach them after it.
        if let Ok(entries) = fs::read_dir(container_dir.join("lower")) {
            for e in entries.flatten() {
                for _ in 0..4 {
                    if !sys::is_mounted_at(&e.path()).unwrap_or(false) {
                        break;
                    }
                    sys::unmount(&e.path()).map_err(io_ctx(format!("unmounting {}", e.path().display())))?;
                }
                // Removing the directory below must never reach into a shared layer.
                if sys::is_mounted_at(&e.path()).unwrap_or(true) {
                    return Err(ImageError::io(format!("{} is still mounted", e.path().display()), io::Error::from(io::ErrorKind::ResourceBusy)));
                }
            }
        }
        for d in ["rootfs", "upper", "work", "lower"] {
            let p = container_dir.join(d);
            // A lazily detached layer mount releases its mount point a moment later.
            let mut result = fs::remove_dir_all(&p);
            for _ in 0..50 {
                match &result {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        result = fs::remove_dir_all(&p);
                    }
                    _ => break,
                }
            }
            match result {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io(format!("removing {}", p.display()), e)),
            }
        }
        Ok(())
    }

    /// Remove records of images whose manifest digest is not in `keep`, then
    /// every blob and layer no remaining image (or pull in progress) uses.
    /// Callers must put the digests of images used by existing containers in `keep`.
    pub fn gc(&self, keep: &HashSet<String>) -> Result<GcReport, ImageError> {
        // Held for the whole run: pulls pin their digests before checking presence.
        let pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        let mut report = GcReport::default();
        let mut live: HashSet<String> = pins.keys().cloned().collect();
        for (path, r) in self.all_records()? {
            if keep.contains(&r.manifest_digest) {
                live.insert(r.manifest_digest.clone());
                live.insert(r.config_digest.clone());
                live.extend(r.layers.iter().map(|l| l.digest.clone()));
            } else {
                match fs::remove_file(&path) {
                    Ok(()) => report.images_removed.push(r.reference.clone()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(ImageError::io(format!("removing {}", path.display()), e))
                    }
                }
            }
        }
        let live_ids: HashSet<String> = live
            .iter()
            .filter_map(|d| d.strip_prefix("sha256:"))
            .map(|h| short_id(h).to_string())
            .collect();
        let no_pulls = pins.is_empty();

        let blobs = self.root.join("blobs/sha256");
        for e in fs::read_dir(&blobs).map_err(io_ctx(format!("listing {}", blobs.display())))? {
            let e = e.map_err(io_ctx(format!("listing {}", blobs.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && !no_pulls {
                continue; // a manifest being written by a pull
            }
            if !live.contains(&format!("sha256:{name}")) {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                if fs::remove_file(e.path()).is_ok() {
                    report.blobs_removed += 1;
                    report.bytes_freed += len;
                }
            }
        }
        if no_pulls {
            let images = self.root.join("images");
            for e in fs::read_dir(&images)
                .map_err(io_ctx(format!("listing {}", images.display())))?
                .flatten()
            {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_file(e.path());
                }
            }
            let tmp = self.root.join("blobs/tmp");
            for e in fs::read_dir(&tmp)
                .map_err(io_ctx(format!("listing {}", tmp.display())))?
                .flatten()
            {
                let _ = fs::remove_file(e.path());
            }
        }
        let layers = self.root.join("layers");
        for e in fs::read_dir(&layers).map_err(io_ctx(format!("listing {}", layers.display())))? {
            let e = e.map_err(io_ctx(format!("listing {}", layers.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let stale_tmp = name.starts_with(".tmp-") && no_pulls;
            if stale_tmp || (!name.starts_with('.') && !live_ids.contains(&name)) {
                match fs::remove_dir_all(e.path()) {
                    Ok(()) if !stale_tmp => report.layers_removed += 1,
                    Ok(()) => {}
                    Err(err) => {
                        tracing::warn!(path = %e.path().display(), error = %err, "gc: cannot remove layer")
                    }
                }
            }
        }
        drop(pins);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent spawns pulls on tokio: the future and the store must be Send/Sync.
    #[allow(dead_code)]
    fn pull_future_is_send(s: &ImageStore) {
        fn is_send<T: Send>(_: &T) {}
        fn is_sync<T: Send + Sync>() {}
        is_sync::<ImageStore>();
        let f = s.pull("x", &RegistryAuth::Anonymous, &|_| {});
        is_send(&f);
    }

    #[test]
    fn lookup_is_cheap_and_offline() {
        let tmp = tempfile::tempdir().unwrap();
        let s = ImageStore::open(ImageStoreConfig {
            root: tmp.path().to_path_buf(),
            insecure_registries: vec![],
            max_concurrent_layers: 1,
        })
        .unwrap();
        let rec = ImageRecord {
            version: 1,
            reference: "docker.io/library/busybox:latest".into(),
            manifest_digest: format!("sha256:{}", "1".repeat(64)),
            config_digest: format!("sha256:{}", "2".repeat(64)),
            config: ImageConfig::default(),
            layers: vec![Descriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest: format!("sha256:{}", "3".repeat(64)),
                size: 10,
                platform: None,
            }],
            size_bytes: 10,
            pulled_at_unix: 0,
        };
        write_atomic(
            &s.record_path(&rec.reference),
            &serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap();
        let start = std::time::Instant::now();
        for _ in 0..1000 {
            s.lookup("busybox").unwrap().unwrap();
        }
        let per = start.elapsed() / 1000;
        let img = s.lookup("busybox:latest").unwrap().unwrap();
        assert_eq!(
            img.layer_dirs,
            vec![tmp.path().join("layers").join("3".repeat(16))]
        );
        assert!(s.lookup("busybox:other").unwrap().is_none());
        // Generous bound (debug build, noisy machine); typically tens of µs.
        assert!(
            per < std::time::Duration::from_millis(2),
            "lookup took {per:?}"
        );
    }
}
