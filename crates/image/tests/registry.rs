//! Integration tests against real registries speaking the distribution API.
//!
//! Needs (set by the lead's test script, or by `tests/registry-fixture.sh`):
//! - `SKIFF_TEST_REGISTRY`: host:port of an anonymous registry with `busybox:latest`;
//! - `SKIFF_TEST_REGISTRY_AUTH`: host:port of an htpasswd registry (user `skiff`,
//!   password `skiff-pass`) with `busybox:latest`.
//!
//! Must run as root (overlay mounts, whiteout device nodes).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use skiff_image::{ImageError, ImageStore, ImageStoreConfig, PullProgress, RegistryAuth};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need a registry with busybox:latest \
             (start one with crates/image/tests/registry-fixture.sh WORKDIR PORT1 PORT2)"
        )
    })
}

fn anon_registry() -> String {
    env("SKIFF_TEST_REGISTRY")
}

fn auth_registry() -> String {
    env("SKIFF_TEST_REGISTRY_AUTH")
}

fn creds() -> RegistryAuth {
    RegistryAuth::Basic {
        username: "skiff".into(),
        password: "skiff-pass".into(),
    }
}

fn store(dir: &Path) -> ImageStore {
    ImageStore::open(ImageStoreConfig {
        root: dir.join("images"),
        insecure_registries: vec![],
        max_concurrent_layers: 3,
    })
    .unwrap()
}

fn no_progress(_: PullProgress) {}

/// Unmounts on drop so a failing assertion does not leak a mount.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = ImageStore::unmount_rootfs(&self.0);
    }
}

#[tokio::test]
async fn anonymous_pull_lookup_mount_unmount() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let reference = format!("{}/busybox", anon_registry());
    assert!(s.lookup(&reference).unwrap().is_none());

    let seen = Mutex::new(Vec::<PullProgress>::new());
    let img = s
        .pull(&reference, &RegistryAuth::Anonymous, &|p| {
            seen.lock().unwrap().push(p)
        })
        .await
        .unwrap();
    assert_eq!(img.reference, format!("{}/busybox:latest", anon_registry()));
    assert!(img.manifest_digest.starts_with("sha256:"));
    assert_eq!(img.config.cmd, ["sh"]);
    assert!(!img.layer_dirs.is_empty());
    assert!(img.size_bytes > 0);
    let seen = seen.into_inner().unwrap();
    let last = seen.last().expect("progress was reported");
    assert_eq!(last.layers_done, last.layers_total);
    assert_eq!(last.done_bytes, last.total_bytes);
    assert!(
        s.blob_fetches() >= 2,
        "config and at least one layer were fetched"
    );
    // Layers are unpacked as they stream in and kept only unpacked: the blob store holds
    // the manifest and the config, and no temp directory is left.
    let stored: Vec<String> = std::fs::read_dir(s.root().join("blobs/sha256")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
    assert_eq!(stored.len(), 2, "manifest and config only: {stored:?}");
    assert!(stored.iter().any(|h| img.manifest_digest.ends_with(h.as_str())));
    let layer_dirs: Vec<String> = std::fs::read_dir(s.root().join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n != skiff_image::unpack::UNSYNCED_DIR)
        .collect();
    assert_eq!(layer_dirs.len(), img.layer_dirs.len(), "{layer_dirs:?}");
    assert!(layer_dirs.iter().all(|d| !d.starts_with(".tmp")), "{layer_dirs:?}");

    // Fast path: no registry involved (same answer, no fetch).
    let fetches = s.blob_fetches();
    let found = s.lookup(&reference).unwrap().expect("cached");
    assert_eq!(found, img);
    assert_eq!(
        s.lookup(&format!("{reference}:latest")).unwrap().as_ref(),
        Some(&img)
    );
    assert_eq!(s.list_cached().unwrap(), vec![img.clone()]);

    // Second pull: manifest only, no blob.
    let again = s
        .pull(&reference, &RegistryAuth::Anonymous, &no_progress)
        .await
        .unwrap();
    assert_eq!(again, img);
    assert_eq!(
        s.blob_fetches(),
        fetches,
        "second pull must not fetch blobs"
    );

    // Rootfs.
    let cdir = tmp.path().join("c1");
    let _g = MountGuard(cdir.clone());
    let rootfs = s.mount_rootfs(&img, &cdir).unwrap();
    assert_eq!(rootfs, cdir.join("rootfs"));
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(s.mount_rootfs(&img, &cdir).unwrap(), rootfs, "idempotent");
    std::fs::write(rootfs.join("tmp/written"), b"x").unwrap();
    assert!(
        cdir.join("upper/tmp/written").is_file(),
        "writes go to the upper dir"
    );
    assert!(!img
        .layer_dirs
        .iter()
        .any(|l| l.join("tmp/written").exists()));
    ImageStore::unmount_rootfs(&cdir).unwrap();
    ImageStore::unmount_rootfs(&cdir).unwrap();
    for d in ["rootfs", "upper", "work"] {
        assert!(!cdir.join(d).exists(), "{d} removed");
    }
}

#[tokio::test]
async fn concurrent_pulls_fetch_each_blob_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let reference = format!("{}/busybox:latest", anon_registry());
    let (a, b) = tokio::join!(
        s.pull(&reference, &RegistryAuth::Anonymous, &no_progress),
        s.pull(&reference, &RegistryAuth::Anonymous, &no_progress)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert_eq!(
        s.blob_fetches(),
        1 + a.layer_dirs.len() as u64,
        "config + each layer once"
    );
}

#[tokio::test]
async fn auth_registry_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let reg = auth_registry();
    let reference = format!("{reg}/busybox:latest");

    match s
        .pull(&reference, &RegistryAuth::Anonymous, &no_progress)
        .await
    {
        Err(ImageError::Unauthorized { registry }) => assert_eq!(registry, reg),
        other => panic!("anonymous pull from auth registry: expected Unauthorized, got {other:?}"),
    }
    let wrong = RegistryAuth::Basic {
        username: "skiff".into(),
        password: "wrong".into(),
    };
    let err = s.pull(&reference, &wrong, &no_progress).await.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("unauthorized: authentication required for {reg}")
    );
    assert!(s.lookup(&reference).unwrap().is_none());

    let img = s.pull(&reference, &creds(), &no_progress).await.unwrap();
    assert_eq!(img.reference, reference);
    assert!(img.layer_dirs.iter().all(|d| d.join("bin").is_dir()));
}

#[tokio::test]
async fn layers_are_shared_between_registries() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let a = s
        .pull(
            &format!("{}/busybox", anon_registry()),
            &RegistryAuth::Anonymous,
            &no_progress,
        )
        .await
        .unwrap();
    let fetches = s.blob_fetches();
    let b = s
        .pull(
            &format!("{}/busybox", auth_registry()),
            &creds(),
            &no_progress,
        )
        .await
        .unwrap();
    assert_eq!(
        a.manifest_digest, b.manifest_digest,
        "same image pushed to both"
    );
    assert_eq!(a.layer_dirs, b.layer_dirs);
    assert_eq!(
        s.blob_fetches(),
        fetches,
        "present blobs are not fetched again"
    );
}

#[tokio::test]
async fn unknown_tag_and_repo_are_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    for r in ["busybox:no-such-tag", "no-such-repo:latest"] {
        let reference = format!("{}/{r}", anon_registry());
        match s
            .pull(&reference, &RegistryAuth::Anonymous, &no_progress)
            .await
        {
            Err(ImageError::NotFound { reference: got }) => assert_eq!(got, reference),
            other => panic!("{reference}: expected NotFound, got {other:?}"),
        }
    }
    let reference = format!("{}/busybox:no-such-tag", auth_registry());
    let err = s
        .pull(&reference, &creds(), &no_progress)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn pull_by_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let img = s
        .pull(
            &format!("{}/busybox", anon_registry()),
            &RegistryAuth::Anonymous,
            &no_progress,
        )
        .await
        .unwrap();
    let pinned = format!("{}/busybox@{}", anon_registry(), img.manifest_digest);
    let by_digest = s
        .pull(&pinned, &RegistryAuth::Anonymous, &no_progress)
        .await
        .unwrap();
    assert_eq!(by_digest.manifest_digest, img.manifest_digest);
    assert_eq!(by_digest.reference, pinned);
    assert!(s.lookup(&pinned).unwrap().is_some());
}

#[tokio::test]
async fn gc_removes_unreferenced_images() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let img = s
        .pull(
            &format!("{}/busybox", anon_registry()),
            &RegistryAuth::Anonymous,
            &no_progress,
        )
        .await
        .unwrap();

    // Kept: nothing removed.
    let keep: HashSet<String> = [img.manifest_digest.clone()].into();
    let r = s.gc(&keep).unwrap();
    assert!(
        r.images_removed.is_empty() && r.blobs_removed == 0 && r.layers_removed == 0,
        "{r:?}"
    );
    assert!(s.lookup(&img.reference).unwrap().is_some());

    // Not kept: record, blobs and layers go.
    let r = s.gc(&HashSet::new()).unwrap();
    assert_eq!(r.images_removed, vec![img.reference.clone()]);
    assert_eq!(r.layers_removed, img.layer_dirs.len());
    assert!(r.blobs_removed >= 2 && r.bytes_freed > 0, "{r:?}");
    assert!(s.lookup(&img.reference).unwrap().is_none());
    assert!(img.layer_dirs.iter().all(|d| !d.exists()));
    assert!(s.list_cached().unwrap().is_empty());

    // Pulling again fetches again.
    let fetched = s.blob_fetches();
    s.pull(&img.reference, &RegistryAuth::Anonymous, &no_progress)
        .await
        .unwrap();
    assert!(s.blob_fetches() > fetched);
}

/// Pushes a Docker v2 manifest and an OCI index (arm64 first, then amd64)
/// built from the pulled image, then pulls them back.
#[tokio::test]
async fn docker_v2_manifest_and_image_index() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let reg = anon_registry();
    let img = s
        .pull(
            &format!("{reg}/busybox"),
            &RegistryAuth::Anonymous,
            &no_progress,
        )
        .await
        .unwrap();
    let hex = img.manifest_digest.strip_prefix("sha256:").unwrap();
    let oci_body = std::fs::read(s.root().join("blobs/sha256").join(hex)).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&oci_body).unwrap();
    m["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json".into();
    m["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json".into();
    for l in m["layers"].as_array_mut().unwrap() {
        let mt = l["mediaType"].as_str().unwrap().to_string();
        assert!(mt.ends_with("+gzip"), "fixture layers are gzip: {mt}");
        l["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip".into();
    }
    let docker_body = serde_json::to_vec(&m).unwrap();

    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let push = |tag: &str, body: Vec<u8>, ct: &'static str| {
        let r: oci_client::Reference = format!("{reg}/busybox:{tag}").parse().unwrap();
        let client = client.clone();
        async move {
            client
                .push_manifest_raw(&r, body, ct.parse().unwrap())
                .await
                .unwrap();
        }
    };
    push(
        "skiff-test-v2s2",
        docker_body.clone(),
        "application/vnd.docker.distribution.manifest.v2+json",
    )
    .await;
    let docker_digest = format!("sha256:{}", sha256_hex(&docker_body));

    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": docker_digest,
             "size": docker_body.len(), "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.manifest_digest,
             "size": oci_body.len(), "platform": {"architecture": "amd64", "os": "linux"}}
        ]
    });
    push(
        "skiff-test-index",
        serde_json::to_vec(&index).unwrap(),
        "application/vnd.oci.image.index.v1+json",
    )
    .await;

    let fetches = s.blob_fetches();
    let d = s
        .pull(
            &format!("{reg}/busybox:skiff-test-v2s2"),
            &RegistryAuth::Anonymous,
            &no_progress,
        )
        .await
        .unwrap();
    assert_eq!(d.manifest_digest, docker_digest);
    assert_eq!(d.layer_dirs, img.layer_dirs);
    assert_eq!(d.config, img.config);

    let i = s
        .pull(
            &format!("{reg}/busybox:skiff-test-index"),
            &RegistryAuth::Anonymous,
            &no_progress,
        )
        .await
        .unwrap();
    assert_eq!(
        i.manifest_digest, img.manifest_digest,
        "linux/amd64 entry chosen"
    );
    assert_eq!(s.blob_fetches(), fetches, "all blobs were already present");
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[tokio::test]
async fn unreachable_registry_is_a_registry_error() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    // Port 1 on loopback: nothing listens there.
    let err = s
        .pull(
            "127.0.0.1:1/busybox",
            &RegistryAuth::Anonymous,
            &no_progress,
        )
        .await
        .unwrap_err();
    match &err {
        ImageError::Registry {
            registry, message, ..
        } => {
            assert_eq!(registry, "127.0.0.1:1");
            assert!(
                message.to_lowercase().contains("connection refused"),
                "{message}"
            );
        }
        other => panic!("expected Registry error, got {other:?}"),
    }
    let bad = s
        .pull("Not A Reference", &RegistryAuth::Anonymous, &no_progress)
        .await
        .unwrap_err();
    assert!(
        matches!(bad, ImageError::InvalidReference { .. }),
        "{bad:?}"
    );
}

/// A layer a previous boot named but never synced (a power loss right after a pull) is removed
/// when the store opens, with the record of the image that needs it: that image is pulled
/// again, not served half-written.
#[tokio::test]
async fn layers_a_previous_boot_never_synced_are_pulled_again() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = format!("{}/busybox-multilayer", anon_registry());
    let img = {
        let s = store(tmp.path());
        s.pull(&reference, &RegistryAuth::Anonymous, &no_progress).await.unwrap()
    };
    let layers = img.layer_dirs.last().unwrap().parent().unwrap().to_path_buf();
    let top = img.layer_dirs.last().unwrap().file_name().unwrap().to_string_lossy().to_string();
    let marks = layers.join(skiff_image::unpack::UNSYNCED_DIR);
    std::fs::create_dir_all(&marks).unwrap();
    std::fs::write(marks.join(format!("{top}@a-boot-before-this-one")), b"").unwrap();

    let s = store(tmp.path());
    assert!(s.lookup(&reference).unwrap().is_none(), "the image needing the lost layer is no longer cached");
    assert!(!layers.join(&top).exists(), "the layer that may have lost data is gone");
    assert!(img.layer_dirs[0].is_dir(), "synced layers stay");
    let again = s.pull(&reference, &RegistryAuth::Anonymous, &no_progress).await.unwrap();
    assert_eq!(again.layer_dirs, img.layer_dirs);
    assert!(layers.join(&top).join("data/b.txt").exists());
}

/// Regression: pulls of images that share layers, started at once, all finish. A pull used to
/// hold each new layer's lock until all its layers were done, so two pulls that took the shared
/// layers' locks in different orders waited for each other forever (a CI hang).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_images_sharing_layers_all_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(store(tmp.path()));
    let images = ["busybox-httpd", "busybox-multilayer", "busybox-probe", "busybox"];
    let pulls: Vec<_> = (0..12)
        .map(|i| {
            let s = s.clone();
            let reference = format!("{}/{}:latest", anon_registry(), images[i % images.len()]);
            tokio::spawn(async move { s.pull(&reference, &RegistryAuth::Anonymous, &no_progress).await })
        })
        .collect();
    let all = tokio::time::timeout(std::time::Duration::from_secs(60), futures::future::join_all(pulls)).await.expect("the pulls deadlocked");
    for p in all {
        assert!(!p.unwrap().unwrap().layer_dirs.is_empty());
    }
}
