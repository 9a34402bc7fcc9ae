//! Secrets at rest: every write-only value of a container group (environment `secureValue`,
//! registry `password`, `azureFile` `storageAccountKey`, `secret` volume contents) is sealed
//! with ChaCha20-Poly1305 (ring) before the group record is written to the store, and opened
//! by the agent when it builds the containers. The 256-bit key lives in a file of the data
//! directory, created with mode 0600 on first start.
//!
//! A sealed value is `skiff-sealed:v1:<base64(nonce ‖ ciphertext ‖ tag)>`; the associated data
//! binds it to the format version, so a value cannot be replayed under another one. Values
//! without the prefix (written before sealing existed) are read as they are.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use skiff_model::ContainerGroup;

const PREFIX: &str = "skiff-sealed:v1:";
const KEY_LEN: usize = 32;

/// Errors of the key file or of opening a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// the key file cannot be read or created
    #[error("secret key file {path}: {source}")]
    KeyFile { path: String, source: std::io::Error },
    /// the key file has the wrong size or permissions
    #[error("secret key file {0} is invalid (it must hold {KEY_LEN} bytes and be readable by its owner only)")]
    BadKeyFile(String),
    /// a sealed value does not open with this key (wrong key or tampered store)
    #[error("a sealed secret does not open with this host's key")]
    Open,
    /// the system random generator failed
    #[error("the system random number generator failed")]
    Random,
}

/// The sealing key.
pub struct SecretKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: &[u8]) -> Option<SecretKey> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes).ok()?;
        Some(SecretKey { key: LessSafeKey::new(unbound), rng: SystemRandom::new() })
    }

    /// Read the key at `path`, or create it (random, mode 0600) if there is none. An existing
    /// file that others may read is refused rather than silently used.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, SecretError> {
        let shown = path.display().to_string();
        let io = |source| SecretError::KeyFile { path: shown.clone(), source };
        match std::fs::read(path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
                if bytes.len() != KEY_LEN || mode & 0o077 != 0 {
                    return Err(SecretError::BadKeyFile(shown));
                }
                SecretKey::from_bytes(&bytes).ok_or(SecretError::BadKeyFile(shown))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; KEY_LEN];
                SystemRandom::new().fill(&mut bytes).map_err(|_| SecretError::Random)?;
                // create_new: two daemons racing on one data dir cannot both write a key.
                let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
                f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(io)?;
                SecretKey::from_bytes(&bytes).ok_or(SecretError::BadKeyFile(shown))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Seal one value (already sealed values are kept as they are).
    pub fn seal(&self, plain: &str) -> Result<String, SecretError> {
        if is_sealed(plain) {
            return Ok(plain.to_string());
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SecretError::Random)?;
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(PREFIX.as_bytes()), &mut data)
            .map_err(|_| SecretError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)))
    }

    /// Open one value; values that are not sealed are returned unchanged.
    pub fn open(&self, value: &str) -> Result<String, SecretError> {
        let Some(b64) = value.strip_prefix(PREFIX) else { return Ok(value.to_string()) };
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64).map_err(|_| SecretError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SecretError::Open);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Open)?;
        let mut ct = ct.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(PREFIX.as_bytes()), &mut ct).map_err(|_| SecretError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Open)
    }
}

pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// Every write-only value of a group, in place.
fn for_each_secret(g: &mut ContainerGroup, f: &mut dyn FnMut(&mut String) -> Result<(), SecretError>) -> Result<(), SecretError> {
    let p = &mut g.properties;
    for c in &mut p.containers {
        for e in c.properties.environment_variables.iter_mut().flatten() {
            if let Some(v) = e.secure_value.as_mut() {
                f(v)?;
            }
        }
    }
    for c in p.init_containers.iter_mut().flatten() {
        for e in c.properties.environment_variables.iter_mut().flatten() {
            if let Some(v) = e.secure_value.as_mut() {
                f(v)?;
            }
        }
    }
    for r in p.image_registry_credentials.iter_mut().flatten() {
        if let Some(v) = r.password.as_mut() {
            f(v)?;
        }
    }
    for v in p.volumes.iter_mut().flatten() {
        if let Some(k) = v.azure_file.as_mut().and_then(|a| a.storage_account_key.as_mut()) {
            f(k)?;
        }
        for value in v.secret.iter_mut().flat_map(|s| s.values_mut()) {
            f(value)?;
        }
    }
    Ok(())
}

/// A copy of `g` with its secrets sealed (what goes into the store).
pub fn seal_group(key: &SecretKey, g: &ContainerGroup) -> Result<ContainerGroup, SecretError> {
    let mut out = g.clone();
    for_each_secret(&mut out, &mut |v| {
        *v = key.seal(v)?;
        Ok(())
    })?;
    Ok(out)
}

/// A copy of `g` with its secrets opened (what the agent runs).
pub fn open_group(key: &SecretKey, g: &ContainerGroup) -> Result<ContainerGroup, SecretError> {
    let mut out = g.clone();
    for_each_secret(&mut out, &mut |v| {
        *v = key.open(v)?;
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SecretKey {
        SecretKey::from_bytes(&[7u8; KEY_LEN]).unwrap()
    }

    #[test]
    fn seal_open_and_tamper() {
        let k = key();
        let s = k.seal("hunter2").unwrap();
        assert!(is_sealed(&s) && !s.contains("hunter2"));
        assert_ne!(s, k.seal("hunter2").unwrap(), "nonces must differ");
        assert_eq!(k.open(&s).unwrap(), "hunter2");
        assert_eq!(k.seal(&s).unwrap(), s, "sealing is idempotent");
        assert_eq!(k.open("plain legacy").unwrap(), "plain legacy");
        let mut bad = s.clone();
        bad.pop();
        bad.push(if s.ends_with('A') { 'B' } else { 'A' });
        assert!(k.open(&bad).is_err());
        let other = SecretKey::from_bytes(&[8u8; KEY_LEN]).unwrap();
        assert!(other.open(&s).is_err());
    }

    #[test]
    fn key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let a = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = a.seal("x").unwrap();
        let b = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(b.open(&sealed).unwrap(), "x");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(SecretKey::load_or_create(&path), Err(SecretError::BadKeyFile(_))));
    }

    #[test]
    fn groups_seal_every_write_only_field() {
        let g: ContainerGroup = serde_json::from_value(serde_json::json!({"properties": {
            "containers": [{"name": "a", "properties": {"image": "i", "environmentVariables": [{"name": "P", "value": "plain"}, {"name": "S", "secureValue": "env-secret"}]}}],
            "initContainers": [{"name": "b", "properties": {"image": "i", "environmentVariables": [{"name": "S", "secureValue": "init-secret"}]}}],
            "imageRegistryCredentials": [{"server": "r", "username": "u", "password": "reg-secret"}],
            "volumes": [{"name": "f", "azureFile": {"shareName": "s", "storageAccountName": "a", "storageAccountKey": "share-secret"}},
                        {"name": "v", "secret": {"k": "dm9sLXNlY3JldA=="}}]
        }})).unwrap();
        let k = key();
        let sealed = seal_group(&k, &g).unwrap();
        let text = serde_json::to_string(&sealed).unwrap();
        for s in ["env-secret", "init-secret", "reg-secret", "share-secret", "dm9sLXNlY3JldA=="] {
            assert!(!text.contains(s), "{s} left in clear: {text}");
        }
        assert!(text.contains("plain"));
        assert_eq!(open_group(&k, &sealed).unwrap(), g);
    }

    proptest! {
        #[test]
        fn round_trips(s in ".*") {
            let k = key();
            prop_assert_eq!(k.open(&k.seal(&s).unwrap()).unwrap(), s);
        }
    }
}
