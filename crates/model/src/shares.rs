//! Skiff-managed file shares: the self-hosted stand-in for Azure Files behind `azureFile`
//! volumes. A share is named by (storage account, share) like in Azure and carries an access
//! key; a volume must present the same key to mount it.

use serde::{Deserialize, Serialize};

use crate::error::ArmError;

pub const SHARES_PREFIX: &str = "shares/";

/// Store key of a share (names are case-insensitive).
pub fn share_key(account: &str, share: &str) -> String {
    format!("{SHARES_PREFIX}{}/{}", account.to_ascii_lowercase(), share.to_ascii_lowercase())
}

/// A share as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareRecord {
    pub storage_account_name: String,
    pub share_name: String,
    /// The access key (write-only: returned only when the share is created).
    pub storage_account_key: String,
    pub created_at: String,
}

impl ShareRecord {
    /// The JSON served: the key only when `with_key`.
    pub fn to_json(&self, with_key: bool) -> serde_json::Value {
        let mut v = serde_json::json!({
            "storageAccountName": self.storage_account_name,
            "shareName": self.share_name,
            "createdAt": self.created_at,
        });
        if with_key {
            v["storageAccountKey"] = self.storage_account_key.clone().into();
        }
        v
    }

    /// Whether `key` opens this share (constant time).
    pub fn key_matches(&self, key: &str) -> bool {
        let (a, b) = (self.storage_account_key.as_bytes(), key.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Azure's rules: account 3–24 lowercase letters and digits; share 3–63 lowercase letters,
/// digits and single hyphens, starting and ending with a letter or digit.
pub fn validate_share_names(account: &str, share: &str) -> Result<(), ArmError> {
    let account_ok = (3..=24).contains(&account.len()) && account.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !account_ok {
        return Err(ArmError::bad_request("InvalidStorageAccountName", format!("The storage account name '{account}' is invalid: use 3 to 24 lowercase letters and digits.")));
    }
    let share_ok = (3..=63).contains(&share.len())
        && share.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !share.starts_with('-')
        && !share.ends_with('-')
        && !share.contains("--");
    if !share_ok {
        return Err(ArmError::bad_request("InvalidShareName", format!("The share name '{share}' is invalid: use 3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit.")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_and_keys() {
        assert!(validate_share_names("acct1", "data-share").is_ok());
        assert!(validate_share_names("Acct", "data").is_err());
        assert!(validate_share_names("acct", "-data").is_err());
        assert!(validate_share_names("acct", "da--ta").is_err());
        assert!(validate_share_names("acct", "../x").is_err());
        assert_eq!(share_key("Acct", "Data"), "shares/acct/data");
        let r = ShareRecord { storage_account_name: "a".into(), share_name: "s".into(), storage_account_key: "k1".into(), created_at: "t".into() };
        assert!(r.key_matches("k1") && !r.key_matches("k2") && !r.key_matches("k1x"));
        assert!(r.to_json(false).get("storageAccountKey").is_none());
        assert_eq!(r.to_json(true)["storageAccountKey"], "k1");
    }

    proptest! {
        /// A valid share name is always a single safe path component.
        #[test]
        fn valid_names_are_safe_path_components(a in "[a-z0-9./-]{0,30}", s in "[a-zA-Z0-9./-]{0,70}") {
            if validate_share_names(&a, &s).is_ok() {
                prop_assert!(!a.contains('/') && !a.contains('.') && !s.contains('/') && !s.contains('.'));
            }
        }
    }
}
