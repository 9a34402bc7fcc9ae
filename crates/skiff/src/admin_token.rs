//! The admin token file: `<data-dir>/admin.token`, mode 0600, made on first start.
//!
//! The secret is shown once on stderr when it is created; the store keeps only its hash. Local
//! root clients (the `skiff` CLI, `skiff bench`) read the file when they are given no token.

use std::path::Path;

use anyhow::Context;
use skiff_store::Store;

pub const FILE: &str = "admin.token";

/// Load the admin token (creating it on first start) and make sure the store knows it.
pub async fn ensure(store: &dyn Store, data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join(FILE);
    let secret = match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        Ok(_) => anyhow::bail!("{} is empty: remove it to have a new admin token made", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = skiff_api::auth::new_secret();
            crate::private_file::write_atomically(&path, &format!("{secret}\n"), 0o600)?;
            eprintln!("skiff: created the admin token (shown once; kept in {} with mode 0600):\n\n    {secret}\n", path.display());
            secret
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    skiff_api::auth::ensure_admin(store, &secret).await.context("registering the admin token")?;
    Ok(())
}
