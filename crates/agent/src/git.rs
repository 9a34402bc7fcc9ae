//! The only place that runs `git`: cloning `gitRepo` volumes.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Longest a clone may take before the group fails to provision.
const CLONE_TIMEOUT: Duration = Duration::from_secs(300);

/// `git clone -- REPO DEST`, then `checkout REVISION` if given. The error is git's own message.
pub async fn clone(repository: &str, dest: &Path, revision: Option<&str>) -> Result<(), String> {
    let mut clone = tokio::process::Command::new("git");
    // Validation admits only remote URLs; git's own protocol policy enforces the same here
    // (no file://, ext:: or fd:: transports, not even through redirects or submodules).
    // `--` keeps a repository starting with '-' from being read as an option.
    clone.args(["-c", "protocol.allow=never"]);
    for proto in ["https", "http", "git", "ssh"] {
        clone.args(["-c", &format!("protocol.{proto}.allow=always")]);
    }
    clone.args(["clone", "--quiet", "--no-hardlinks", "--"]).arg(repository).arg(dest);
    run(clone).await?;
    if let Some(rev) = revision.filter(|r| !r.is_empty()) {
        let mut checkout = tokio::process::Command::new("git");
        checkout.arg("-C").arg(dest).args(["checkout", "--quiet", "--detach", rev, "--"]);
        run(checkout).await?;
    }
    Ok(())
}

async fn run(mut cmd: tokio::process::Command) -> Result<(), String> {
    cmd.env("GIT_TERMINAL_PROMPT", "0").env("GIT_ASKPASS", "/bin/false").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    let out = tokio::time::timeout(CLONE_TIMEOUT, cmd.output()).await.map_err(|_| format!("git did not finish within {} s", CLONE_TIMEOUT.as_secs()))?.map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.trim().lines().last().unwrap_or("git failed").to_string())
    }
}

/// The directory a repository is cloned into when `directory` is not given: its last path
/// component without `.git` (what Kubernetes' gitRepo does).
pub fn default_directory(repository: &str) -> String {
    let last = repository.trim_end_matches('/').rsplit(['/', ':']).next().unwrap_or("");
    let name = last.strip_suffix(".git").unwrap_or(last);
    if name.is_empty() || name == "." || name == ".." {
        "repo".to_string()
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_directories() {
        assert_eq!(default_directory("https://github.com/a/b.git"), "b");
        assert_eq!(default_directory("git://127.0.0.1/x/"), "x");
        assert_eq!(default_directory("/srv/r.git"), "r");
        assert_eq!(default_directory("host:repo"), "repo");
        assert_eq!(default_directory("/.."), "repo");
    }
}
