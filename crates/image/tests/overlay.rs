//! Overlay assembly from locally unpacked layers (no registry): whiteouts and
//! opaque directories converted by the unpacker must hide lower content.
//! Runs as root.

use std::fs;
use std::path::Path;

use skiff_image::unpack::unpack_tar;
use skiff_image::{ImageConfig, ImageStore, ImageStoreConfig, ResolvedImage};

fn tar(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, name, *d).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn layer(root: &Path, name: &str, entries: &[(&str, Option<&[u8]>)]) -> std::path::PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    unpack_tar(&tar(entries)[..], &dir, name).unwrap();
    dir
}

#[test]
fn whiteouts_hide_lower_content_in_the_mounted_rootfs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(ImageStoreConfig {
        root: tmp.path().join("store"),
        insecure_registries: vec![],
        max_concurrent_layers: 1,
    })
    .unwrap();
    let bottom = layer(
        tmp.path(),
        "l0",
        &[
            ("etc/", None),
            ("etc/motd", Some(b"hello")),
            ("etc/keep", Some(b"k")),
            ("cache/", None),
            ("cache/old", Some(b"o")),
        ],
    );
    let top = layer(
        tmp.path(),
        "l1",
        &[
            ("etc/.wh.motd", Some(b"")),
            ("cache/", None),
            ("cache/.wh..wh..opq", Some(b"")),
            ("cache/new", Some(b"n")),
        ],
    );
    let image = ResolvedImage {
        reference: "local/test:latest".into(),
        manifest_digest: "sha256:00".into(),
        config: ImageConfig::default(),
        layer_dirs: vec![bottom, top],
        size_bytes: 0,
    };
    let cdir = tmp.path().join("c");
    let rootfs = store.mount_rootfs(&image, &cdir).unwrap();
    let check = || {
        assert!(!rootfs.join("etc/motd").exists(), "whiteout hides etc/motd");
        assert_eq!(fs::read(rootfs.join("etc/keep")).unwrap(), b"k");
        assert!(
            !rootfs.join("cache/old").exists(),
            "opaque dir hides lower content"
        );
        assert_eq!(fs::read(rootfs.join("cache/new")).unwrap(), b"n");
    };
    let result = std::panic::catch_unwind(check);
    ImageStore::unmount_rootfs(&cdir).unwrap();
    assert!(!cdir.join("rootfs").exists());
    result.unwrap();

    // A single-layer image mounts too.
    let single = ResolvedImage {
        layer_dirs: image.layer_dirs[..1].to_vec(),
        ..image
    };
    let rootfs = store.mount_rootfs(&single, &cdir).unwrap();
    let ok = rootfs.join("etc/motd").is_file();
    ImageStore::unmount_rootfs(&cdir).unwrap();
    assert!(ok);
}

#[test]
fn idmapped_layers_shift_ownership_and_leave_the_cache_untouched() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(ImageStoreConfig { root: tmp.path().join("store"), insecure_registries: vec![], max_concurrent_layers: 1 }).unwrap();
    let l0 = layer(tmp.path(), "l0", &[("etc/", None), ("etc/motd", Some(b"hello"))]);
    let image = ResolvedImage { reference: "local/idmap:1".into(), manifest_digest: "sha256:00".into(), config: ImageConfig::default(), layer_dirs: vec![l0.clone()], size_bytes: 0 };
    let cdir = tmp.path().join("c");
    let ids = skiff_image::IdMap { host_base: 3_000_000, size: 65536 };
    let rootfs = store.mount_rootfs_mapped(&image, &cdir, Some(ids)).unwrap();
    let seen = fs::metadata(rootfs.join("etc/motd")).unwrap();
    assert_eq!((seen.uid(), seen.gid()), (3_000_000, 3_000_000), "image root appears as the range's root");
    assert_eq!(fs::metadata(rootfs.join(".")).unwrap().uid(), 3_000_000, "the writable layer belongs to the range's root");
    fs::write(rootfs.join("etc/new"), b"x").unwrap();
    assert_eq!(fs::metadata(l0.join("etc/motd")).unwrap().uid(), 0, "the shared layer on disk keeps real ids");
    assert!(!l0.join("etc/new").exists(), "writes go to the container's own layer");
    ImageStore::unmount_rootfs(&cdir).unwrap();
    assert!(!cdir.join("lower").exists() && !cdir.join("rootfs").exists());
    assert_eq!(fs::read(l0.join("etc/motd")).unwrap(), b"hello", "unmounting never touches the layer");
}
