//! Pure path logic for layer unpacking: sanitizing archive paths and
//! recognising OCI whiteouts.

use std::path::{Component, Path, PathBuf};

/// Prefix of an OCI whiteout file.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Turn an archive path into a relative path beneath the layer root.
///
/// `./` components are dropped; `..` components and absolute paths are
/// rejected (an error string says why). The empty path (the root itself) is
/// returned as an empty `PathBuf`.
pub fn sanitize(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("path {path:?} contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("path {path:?} is absolute"))
            }
        }
    }
    Ok(out)
}

/// What an archive entry's name means for overlayfs.
#[derive(Debug, PartialEq, Eq)]
pub enum WhiteoutKind {
    /// An ordinary entry.
    Normal,
    /// `.wh.<name>`: delete `<name>` from lower layers (overlay: char dev 0:0).
    Whiteout(PathBuf),
    /// `.wh..wh..opq`: the parent directory hides all lower content.
    Opaque(PathBuf),
}

/// Classify a sanitized relative path.
pub fn classify(rel: &Path) -> Result<WhiteoutKind, String> {
    let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
        return Ok(WhiteoutKind::Normal);
    };
    let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
    if name == OPAQUE_MARKER {
        return Ok(WhiteoutKind::Opaque(parent));
    }
    if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
        if target.is_empty()
            || target == "."
            || target == ".."
            || target.starts_with(WHITEOUT_PREFIX)
        {
            return Err(format!("invalid whiteout {rel:?}"));
        }
        return Ok(WhiteoutKind::Whiteout(parent.join(target)));
    }
    Ok(WhiteoutKind::Normal)
}

/// Short id of a layer directory: 16 hex chars of the blob digest (keeps the
/// overlay mount option string well under one page).
pub fn short_id(hex: &str) -> &str {
    &hex[..16.min(hex.len())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sanitize_cases() {
        assert_eq!(
            sanitize(Path::new("./usr/bin/")).unwrap(),
            PathBuf::from("usr/bin")
        );
        assert_eq!(sanitize(Path::new("./")).unwrap(), PathBuf::new());
        assert!(sanitize(Path::new("../../etc/passwd")).is_err());
        assert!(sanitize(Path::new("a/../../b")).is_err());
        assert!(sanitize(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn whiteouts() {
        assert_eq!(
            classify(Path::new("a/b/.wh.c")).unwrap(),
            WhiteoutKind::Whiteout("a/b/c".into())
        );
        assert_eq!(
            classify(Path::new(".wh.top")).unwrap(),
            WhiteoutKind::Whiteout("top".into())
        );
        assert_eq!(
            classify(Path::new("d/.wh..wh..opq")).unwrap(),
            WhiteoutKind::Opaque("d".into())
        );
        assert_eq!(
            classify(Path::new("d/x.wh.y")).unwrap(),
            WhiteoutKind::Normal
        );
        assert!(classify(Path::new("d/.wh.")).is_err());
        assert!(classify(Path::new("d/.wh..")).is_err());
    }

    proptest! {
        #[test]
        fn sanitized_paths_stay_inside(parts in proptest::collection::vec(prop_oneof![
            Just("..".to_string()), Just(".".to_string()), Just("".to_string()), "[a-z.]{1,6}"
        ], 0..8), abs in any::<bool>()) {
            let mut s = if abs { "/".to_string() } else { String::new() };
            s.push_str(&parts.join("/"));
            let p = Path::new(&s);
            match sanitize(p) {
                Ok(out) => {
                    prop_assert!(!p.has_root());
                    prop_assert!(out.is_relative());
                    prop_assert!(out.components().all(|c| matches!(c, Component::Normal(_))));
                    // Joining never leaves the root.
                    let root = Path::new("/layer");
                    prop_assert!(root.join(&out).starts_with(root));
                }
                Err(_) => {
                    prop_assert!(p.has_root() || p.components().any(|c| c == Component::ParentDir));
                }
            }
        }
    }
}
