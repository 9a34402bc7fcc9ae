use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Expect, Revision, Store, StoreError};

/// Get `key` and decode it as JSON. Returns the value and its mod_revision.
pub async fn get_json<T: DeserializeOwned>(
    store: &(impl Store + ?Sized),
    key: &str,
) -> Result<Option<(T, Revision)>, StoreError> {
    match store.get(key).await? {
        None => Ok(None),
        Some(kv) => {
            let v = serde_json::from_slice(&kv.value).map_err(|source| StoreError::Codec {
                key: key.to_owned(),
                source,
            })?;
            Ok(Some((v, kv.mod_revision)))
        }
    }
}

/// Encode `value` as JSON and put it under `key` with the given precondition.
pub async fn put_json<T: Serialize + ?Sized>(
    store: &(impl Store + ?Sized),
    key: &str,
    value: &T,
    expect: Expect,
) -> Result<Revision, StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Codec {
        key: key.to_owned(),
        source,
    })?;
    store.put(key, bytes, expect).await
}

/// Method-syntax form of [`get_json`] / [`put_json`], for any [`Store`]
/// (including `dyn Store`).
#[async_trait::async_trait]
pub trait StoreJsonExt: Store {
    async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, Revision)>, StoreError> {
        get_json(self, key).await
    }

    async fn put_json<T: Serialize + Sync + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expect: Expect,
    ) -> Result<Revision, StoreError> {
        put_json(self, key, value, expect).await
    }
}

impl<S: Store + ?Sized> StoreJsonExt for S {}
