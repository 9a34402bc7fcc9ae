//! Pulls from a tiny in-process registry on 127.0.0.1 that serves hostile
//! content: a layer whose bytes do not match its digest, and a layer with a
//! path-traversal entry. Needs no external registry.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::Digest;
use skiff_image::{ImageError, ImageStore, ImageStoreConfig, RegistryAuth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// path -> (content type, body)
type Routes = HashMap<String, (&'static str, Vec<u8>)>;

fn add_image(
    routes: &mut Routes,
    repo: &str,
    layer_digest: &str,
    layer_body: Vec<u8>,
    layer_size: usize,
) {
    let config = br#"{"os":"linux","architecture":"amd64","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]
    });
    routes.insert(
        format!("/v2/{repo}/manifests/latest"),
        (
            "application/vnd.oci.image.manifest.v1+json",
            serde_json::to_vec(&manifest).unwrap(),
        ),
    );
    routes.insert(
        format!("/v2/{repo}/blobs/{}", digest(&config)),
        ("application/octet-stream", config),
    );
    routes.insert(
        format!("/v2/{repo}/blobs/{layer_digest}"),
        ("application/octet-stream", layer_body),
    );
}

async fn serve(routes: Routes) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, ct, body) = if path == "/v2/" {
                    ("200 OK", "application/json", b"{}".to_vec())
                } else if let Some((ct, body)) = routes.get(&path) {
                    ("200 OK", *ct, body.clone())
                } else {
                    (
                        "404 Not Found",
                        "application/json",
                        br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#.to_vec(),
                    )
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

fn evil_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    let name = b"../../escaped-by-skiff-test";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    b.into_inner().unwrap()
}

#[tokio::test]
async fn hostile_registry_content_is_rejected() {
    let mut routes = Routes::new();
    let good = b"this is the real layer".to_vec();
    add_image(
        &mut routes,
        "mismatch",
        &digest(&good),
        b"this is NOT the real layer".to_vec(),
        good.len(),
    );
    let evil = evil_tar();
    add_image(
        &mut routes,
        "evil",
        &digest(&evil),
        evil.clone(),
        evil.len(),
    );
    let reg = serve(routes).await;

    let tmp = tempfile::tempdir().unwrap();
    let s = ImageStore::open(ImageStoreConfig {
        root: tmp.path().join("store"),
        insecure_registries: vec![],
        max_concurrent_layers: 2,
    })
    .unwrap();
    let none = |_| {};

    let err = s
        .pull(&format!("{reg}/mismatch"), &RegistryAuth::Anonymous, &none)
        .await
        .unwrap_err();
    match &err {
        ImageError::DigestMismatch { expected, actual } => {
            assert_eq!(expected, &digest(&good));
            assert_ne!(actual, expected);
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    let blob = tmp
        .path()
        .join("store/blobs/sha256")
        .join(&digest(&good)[7..]);
    assert!(!blob.exists(), "a mismatching blob is not stored");
    // The layer was being unpacked while it streamed in: nothing of it stays, not even a
    // temp directory.
    let layers: Vec<_> = std::fs::read_dir(tmp.path().join("store/layers")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(layers.is_empty(), "no (temp) layer directory of the bad blob: {layers:?}");
    assert_eq!(
        std::fs::read_dir(tmp.path().join("store/blobs/tmp"))
            .unwrap()
            .count(),
        0
    );

    let err = s
        .pull(&format!("{reg}/evil"), &RegistryAuth::Anonymous, &none)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::UnsafeLayer { .. }), "{err:?}");
    assert!(err.to_string().contains(&digest(&evil)), "{err}");
    assert!(s.lookup(&format!("{reg}/evil")).unwrap().is_none());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("store/layers"))
            .unwrap()
            .count(),
        0
    );
    assert!(!tmp.path().join("escaped-by-skiff-test").exists());

    let err = s
        .pull(&format!("{reg}/missing"), &RegistryAuth::Anonymous, &none)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
}
