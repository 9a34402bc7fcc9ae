//! Naming rules of the resources Skiff serves, as Azure enforces them.

use crate::error::ArmError;

/// Container group and container names: 1–63 lowercase alphanumerics or '-', not starting or
/// ending with '-', no "--" (ACI's rule; it keeps names usable as DNS labels and host object names).
pub fn is_valid_dns_style_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && !name.contains("--")
}

pub fn validate_group_name(name: &str) -> Result<(), ArmError> {
    if is_valid_dns_style_name(name) {
        return Ok(());
    }
    Err(ArmError::bad_request(
        "InvalidContainerGroupName",
        format!(
            "The container group name '{name}' is invalid. A container group name must contain no more than 63 characters and only lowercase alphanumeric characters and '-'. It can not start or end with '-' and can not have '--'."
        ),
    ))
}

pub fn validate_container_name(name: &str) -> Result<(), ArmError> {
    if is_valid_dns_style_name(name) {
        return Ok(());
    }
    Err(ArmError::bad_request(
        "InvalidContainerName",
        format!(
            "The container name '{name}' is invalid. A container name must contain no more than 63 characters and only lowercase alphanumeric characters and '-'. It can not start or end with '-' and can not have '--'."
        ),
    ))
}

/// Resource group names: 1–90 characters of letters, digits, '_', '(', ')', '-', '.'; not ending in '.'.
pub fn validate_resource_group_name(name: &str) -> Result<(), ArmError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 90
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '(' | ')' | '-' | '.'))
        && !name.ends_with('.');
    if ok {
        return Ok(());
    }
    Err(ArmError::bad_request(
        "InvalidResourceGroupName",
        format!(
            "Resource group name '{name}' is invalid. It must be 1-90 characters of letters, digits, underscores, parentheses, hyphens and periods, and must not end in a period."
        ),
    ))
}

/// Subscription ids are GUIDs in Azure; Skiff accepts any short identifier that is safe in a path.
pub fn validate_subscription_id(id: &str) -> Result<(), ArmError> {
    let ok = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        return Ok(());
    }
    Err(ArmError::bad_request("InvalidSubscriptionId", format!("The provided subscription identifier '{id}' is malformed or invalid.")))
}

/// Volume names follow the DNS-label rule too (they become directory names on the host).
pub fn validate_volume_name(name: &str) -> Result<(), ArmError> {
    if is_valid_dns_style_name(name) {
        return Ok(());
    }
    Err(ArmError::bad_request(
        "InvalidVolumeName",
        format!("The volume name '{name}' is invalid. A volume name must contain no more than 63 characters and only lowercase alphanumeric characters and '-', and can not start or end with '-'."),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dns_style_names() {
        for ok in ["a", "hello", "web-1", "a1-b2-c3", &"x".repeat(63)] {
            assert!(is_valid_dns_style_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "Hello", "a_b", "a.b", &"x".repeat(64), "é"] {
            assert!(!is_valid_dns_style_name(bad), "{bad}");
        }
    }

    #[test]
    fn resource_group_names() {
        assert!(validate_resource_group_name("demo").is_ok());
        assert!(validate_resource_group_name("My_RG(1).x-y").is_ok());
        assert!(validate_resource_group_name("rg.").is_err());
        assert!(validate_resource_group_name("a/b").is_err());
        assert!(validate_resource_group_name("").is_err());
    }

    proptest! {
        #[test]
        fn valid_names_are_safe_path_components(name in "[a-z0-9-]{1,70}") {
            if is_valid_dns_style_name(&name) {
                prop_assert!(!name.contains('/') && !name.starts_with('-') && name.len() <= 63);
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(name in ".{0,100}") {
            let _ = validate_group_name(&name);
            let _ = validate_resource_group_name(&name);
            let _ = validate_subscription_id(&name);
        }
    }
}
