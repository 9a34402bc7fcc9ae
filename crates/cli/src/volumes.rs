//! az's volume flags of `container create` → the group's `volumes` and the container's
//! `volumeMounts` (volumes named `azurefile`, `gitrepo` and `secrets`, as az names them). Pure.

use base64::Engine;
use skiff_model::arm::{AzureFileVolume, GitRepoVolume, Volume, VolumeMount};

use crate::error::CliError;
use crate::CreateArgs;

fn mount(name: &str, path: &Option<String>, flag: &str) -> Result<VolumeMount, CliError> {
    let path = path.as_deref().filter(|p| !p.is_empty()).ok_or_else(|| CliError::usage(format!("{flag} is required with this volume")))?;
    Ok(VolumeMount { name: name.to_string(), mount_path: path.to_string(), read_only: None })
}

/// The volumes and mounts the flags ask for (empty when none is given).
pub fn volumes_from_args(a: &CreateArgs) -> Result<(Vec<Volume>, Vec<VolumeMount>), CliError> {
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    let azure = [&a.azure_file_volume_share_name, &a.azure_file_volume_account_name, &a.azure_file_volume_account_key, &a.azure_file_volume_mount_path];
    if azure.iter().any(|o| o.is_some()) {
        let need = |v: &Option<String>, flag: &str| v.clone().filter(|s| !s.is_empty()).ok_or_else(|| CliError::usage(format!("{flag} is required for an Azure File volume")));
        volumes.push(Volume {
            name: "azurefile".into(),
            azure_file: Some(AzureFileVolume {
                share_name: need(&a.azure_file_volume_share_name, "--azure-file-volume-share-name")?,
                storage_account_name: need(&a.azure_file_volume_account_name, "--azure-file-volume-account-name")?,
                storage_account_key: Some(need(&a.azure_file_volume_account_key, "--azure-file-volume-account-key")?),
                read_only: None,
            }),
            ..Default::default()
        });
        mounts.push(mount("azurefile", &a.azure_file_volume_mount_path, "--azure-file-volume-mount-path")?);
    }
    if a.gitrepo_url.is_some() || a.gitrepo_mount_path.is_some() {
        let url = a.gitrepo_url.clone().ok_or_else(|| CliError::usage("--gitrepo-url is required for a git repository volume"))?;
        volumes.push(Volume {
            name: "gitrepo".into(),
            git_repo: Some(GitRepoVolume { repository: url, directory: Some(a.gitrepo_dir.clone().unwrap_or_else(|| ".".into())), revision: a.gitrepo_revision.clone() }),
            ..Default::default()
        });
        mounts.push(mount("gitrepo", &a.gitrepo_mount_path, "--gitrepo-mount-path")?);
    }
    if !a.secrets.is_empty() || a.secrets_mount_path.is_some() {
        let mut files = std::collections::BTreeMap::new();
        for kv in &a.secrets {
            let (k, v) = kv.split_once('=').ok_or_else(|| CliError::usage(format!("--secrets takes NAME=VALUE, not '{kv}'")))?;
            files.insert(k.to_string(), base64::engine::general_purpose::STANDARD.encode(v));
        }
        volumes.push(Volume { name: "secrets".into(), secret: Some(files), ..Default::default() });
        mounts.push(mount("secrets", &a.secrets_mount_path, "--secrets-mount-path")?);
    }
    Ok((volumes, mounts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command, ContainerCommand};
    use clap::Parser;

    fn args(extra: &[&str]) -> CreateArgs {
        let mut v = vec!["skiff", "container", "create", "-g", "rg", "-n", "x", "--image", "i"];
        v.extend_from_slice(extra);
        let Command::Container(ContainerCommand::Create(a)) = Cli::try_parse_from(v).unwrap().command else { panic!() };
        *a
    }

    #[test]
    fn az_volume_flags() {
        assert_eq!(volumes_from_args(&args(&[])).unwrap(), (vec![], vec![]));
        let (v, m) = volumes_from_args(&args(&["--secrets", "a=hello", "b=x=y", "--secrets-mount-path", "/s", "--gitrepo-url", "/r.git", "--gitrepo-mount-path", "/src"])).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].git_repo.as_ref().unwrap().directory.as_deref(), Some("."));
        let s = v[1].secret.as_ref().unwrap();
        assert_eq!((s["a"].as_str(), s["b"].as_str()), ("aGVsbG8=", "eD15"));
        assert_eq!(m.iter().map(|m| m.mount_path.as_str()).collect::<Vec<_>>(), ["/src", "/s"]);
        let (v, _) = volumes_from_args(&args(&[
            "--azure-file-volume-share-name", "data", "--azure-file-volume-account-name", "acct",
            "--azure-file-volume-account-key", "k", "--azure-file-volume-mount-path", "/data",
        ]))
        .unwrap();
        assert_eq!(v[0].azure_file.as_ref().unwrap().storage_account_key.as_deref(), Some("k"));
        assert!(volumes_from_args(&args(&["--azure-file-volume-share-name", "data"])).is_err());
        assert!(volumes_from_args(&args(&["--secrets", "a=b"])).is_err());
    }
}
