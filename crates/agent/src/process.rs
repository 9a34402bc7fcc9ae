//! How a container's process is assembled from its image config and the ACI container
//! properties. Pure functions, unit-tested.
//!
//! ACI's `command` is exec form and replaces the image's ENTRYPOINT *and* CMD (as Kubernetes'
//! `command` does when no `args` are given; virtual-kubelet maps ACI's `command` that way).
//! Without `command`, the image's ENTRYPOINT followed by its CMD runs.

use skiff_model::arm::EnvironmentVariable;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn process_args(command: Option<&[String]>, entrypoint: &[String], cmd: &[String]) -> Result<Vec<String>, String> {
    let args: Vec<String> = match command {
        Some(c) if !c.is_empty() => c.to_vec(),
        _ => entrypoint.iter().chain(cmd.iter()).cloned().collect(),
    };
    if args.is_empty() {
        return Err("the image defines no ENTRYPOINT or CMD and the container has no 'command'".to_string());
    }
    Ok(args)
}

/// Image environment first, then the container's variables (secure values included) override
/// by name. PATH gets the conventional default when neither defines it.
pub fn merge_env(image_env: &[String], vars: &[EnvironmentVariable]) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match out.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value.to_string(),
        None => out.push((name.to_string(), value.to_string())),
    };
    for kv in image_env {
        let (n, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(n, v);
    }
    for v in vars {
        set(&v.name, v.value.as_deref().or(v.secure_value.as_deref()).unwrap_or(""));
    }
    if !out.iter().any(|(n, _)| n == "PATH") {
        let (n, v) = DEFAULT_PATH.split_once('=').unwrap_or_default();
        out.insert(0, (n.to_string(), v.to_string()));
    }
    out.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resolve an image `User` (`name`, `uid`, `name:group`, `uid:gid`) against the rootfs'
/// `/etc/passwd` and `/etc/group` contents (`None` when the file is absent).
pub fn resolve_user(user: &str, passwd: Option<&str>, group: Option<&str>) -> Result<ResolvedUser, String> {
    let user = user.trim();
    if user.is_empty() {
        return Ok(ResolvedUser { uid: 0, gid: 0, additional_gids: Vec::new() });
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd_entry = |pred: &dyn Fn(&[&str]) -> bool| {
        passwd.and_then(|p| p.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() >= 4 && pred(f)).map(|f| (f[0].to_string(), f[2].parse::<u32>().ok(), f[3].parse::<u32>().ok())))
    };
    let (uid, user_name, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => {
            let entry = passwd_entry(&|f| f[2] == u);
            (uid, entry.as_ref().map(|e| e.0.clone()), entry.and_then(|e| e.2))
        }
        Err(_) => {
            let entry = passwd_entry(&|f| f[0] == u).ok_or_else(|| format!("unable to find user {u}: no matching entries in passwd file"))?;
            let uid = entry.1.ok_or_else(|| format!("invalid uid for user {u} in passwd file"))?;
            (uid, Some(entry.0), entry.2)
        }
    };
    let groups: Vec<Vec<&str>> = group.map(|g| g.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 3).collect()).unwrap_or_default();
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups.iter().find(|f| f[0] == g).and_then(|f| f[2].parse().ok()).ok_or_else(|| format!("unable to find group {g}: no matching entries in group file"))?,
        },
        None => primary_gid.unwrap_or(0),
    };
    let mut additional_gids: Vec<u32> = match (&user_name, g) {
        (Some(name), None) => groups
            .iter()
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .filter(|id| *id != gid)
            .collect(),
        _ => Vec::new(),
    };
    additional_gids.dedup();
    Ok(ResolvedUser { uid, gid, additional_gids })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_replaces_entrypoint_and_cmd() {
        assert_eq!(process_args(Some(&s(&["sh", "-c", "x"])), &s(&["/bin/echo"]), &s(&["a"])).unwrap(), s(&["sh", "-c", "x"]));
        assert_eq!(process_args(None, &s(&["/bin/echo", "e"]), &s(&["a"])).unwrap(), s(&["/bin/echo", "e", "a"]));
        assert_eq!(process_args(Some(&[]), &[], &s(&["sh"])).unwrap(), s(&["sh"]));
        assert!(process_args(None, &[], &[]).is_err());
    }

    #[test]
    fn env_merging() {
        let vars = vec![
            EnvironmentVariable { name: "A".into(), value: Some("1".into()), secure_value: None },
            EnvironmentVariable { name: "IMG".into(), value: None, secure_value: Some("s".into()) },
            EnvironmentVariable { name: "E".into(), value: None, secure_value: None },
        ];
        let env = merge_env(&s(&["IMG=x", "PATH=/bin", "K=v=w"]), &vars);
        assert_eq!(env, s(&["IMG=s", "PATH=/bin", "K=v=w", "A=1", "E="]));
        assert!(merge_env(&[], &[])[0].starts_with("PATH=/usr/local/sbin"));
    }

    #[test]
    fn users() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1000:1001::/home/app:/bin/sh\n";
        let group = "root:x:0:\nnogroup:x:65534:\napp:x:1001:\nextra:x:2000:app,other\n";
        let r = |u: &str| resolve_user(u, Some(passwd), Some(group));
        assert_eq!(r("").unwrap(), ResolvedUser { uid: 0, gid: 0, additional_gids: vec![] });
        assert_eq!(r("app").unwrap(), ResolvedUser { uid: 1000, gid: 1001, additional_gids: vec![2000] });
        assert_eq!(r("1000").unwrap().gid, 1001);
        assert_eq!(r("1234").unwrap(), ResolvedUser { uid: 1234, gid: 0, additional_gids: vec![] });
        assert_eq!(r("nobody:nogroup").unwrap(), ResolvedUser { uid: 65534, gid: 65534, additional_gids: vec![] });
        assert_eq!(r("5:7").unwrap(), ResolvedUser { uid: 5, gid: 7, additional_gids: vec![] });
        assert!(r("ghost").is_err());
        assert!(r("app:ghost").is_err());
        assert_eq!(resolve_user("0", None, None).unwrap().uid, 0);
    }
}
