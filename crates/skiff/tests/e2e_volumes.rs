//! End-to-end: emptyDir, secret, gitRepo and azureFile (Skiff-managed shares) volumes.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pod::*;
use common::*;
use serde_json::{json, Value};

fn container(name: &str, script: &str, mounts: Value) -> Value {
    json!({"name": name, "properties": {
        "image": image("busybox:latest"),
        "command": ["sh", "-c", script],
        "resources": {"requests": {"cpu": 0.25, "memoryInGB": 0.25}},
        "volumeMounts": mounts,
    }})
}

fn group(containers: Vec<Value>, volumes: Value) -> Value {
    json!({"location": "westus", "properties": {"osType": "Linux", "restartPolicy": "Always", "containers": containers, "volumes": volumes}})
}

fn exec_in(s: &TestServer, rg: &str, name: &str, c: &str, command: &str) -> (i32, String) {
    let (mut child, mut out) = spawn_piped(s, &["container", "exec", "-g", rg, "-n", name, "--container-name", c, "--exec-command", command], None);
    let st = wait_child(&mut child, Duration::from_secs(30));
    (st.code().unwrap_or(-1), out.drain(Duration::from_secs(5)).to_string())
}

fn create_running(s: &TestServer, rg: &str, name: &str, body: &Value) -> Value {
    s.ensure_rg(rg);
    let r = s.put_group(rg, name, body);
    assert_eq!(r.status, 201, "{}", r.text);
    s.wait_state(rg, name, "Running")
}

fn create_failed(s: &TestServer, rg: &str, name: &str, body: &Value) -> Value {
    s.ensure_rg(rg);
    let r = s.put_group(rg, name, body);
    assert_eq!(r.status, 201, "{}", r.text);
    s.wait_group(rg, name, "provisioning to fail", Duration::from_secs(60), |g| g["properties"]["provisioningState"] == "Failed")
}

fn mount_fstype(path: &Path) -> Option<String> {
    let p = path.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo").ok()?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(4) == Some(&p.as_str())).then(|| f[sep + 1].to_string())
    })
}

#[test]
fn empty_dir_is_shared_by_the_group_and_removed_with_it() {
    let s = TestServer::start();
    let body = group(
        vec![
            container("writer", "echo from-writer > /shared/note; sleep 3600", json!([{"name": "scratch", "mountPath": "/shared"}])),
            container("reader", "sleep 3600", json!([{"name": "scratch", "mountPath": "/mnt/s"}])),
        ],
        json!([{"name": "scratch", "emptyDir": {}}]),
    );
    create_running(&s, "vol", "empty", &body);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out) = exec_in(&s, "vol", "empty", "reader", "cat /mnt/s/note");
        if code == 0 {
            assert_eq!(out, "from-writer\n");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "reader never saw the writer's file: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = s.data_dir.join("groups").join(s.group_uid("vol", "empty")).join("volumes/scratch");
    assert_eq!(std::fs::read_to_string(dir.join("note")).unwrap(), "from-writer\n");
    s.delete_group("vol", "empty");
    assert!(!dir.exists(), "emptyDir survived its group");
}

#[test]
fn secret_volumes_are_tmpfs_files_never_returned() {
    let s = TestServer::start();
    let b64 = "c3VwZXItc2VjcmV0LXRva2Vu"; // "super-secret-token"
    let body = group(
        vec![container("app", "sleep 3600", json!([{"name": "creds", "mountPath": "/etc/creds"}]))],
        json!([{"name": "creds", "secret": {"token": b64}}]),
    );
    let g = create_running(&s, "vol", "sec", &body);
    assert!(!g.to_string().contains(b64), "secret returned by GET: {g}");
    let (code, out) = exec_in(&s, "vol", "sec", "app", "cat /etc/creds/token");
    assert_eq!((code, out.as_str()), (0, "super-secret-token"));
    let (_, mode) = exec_in(&s, "vol", "sec", "app", "stat -c %a /etc/creds/token");
    assert_eq!(mode.trim(), "400");
    // Read-only in the container, and a tmpfs on the host.
    let (code, _) = exec_in(&s, "vol", "sec", "app", "sh -c 'echo x > /etc/creds/other'");
    assert_ne!(code, 0);
    let vol = s.data_dir.join("groups").join(s.group_uid("vol", "sec")).join("volumes/creds");
    assert_eq!(mount_fstype(&vol).as_deref(), Some("tmpfs"));
    let list = s.request("GET", &format!("/subscriptions/{SUB}/resourceGroups/vol/providers/Microsoft.ContainerInstance/containerGroups?{API}"), None);
    assert!(!list.text.contains(b64));
    let export = s.cli_ok(&["container", "export", "-g", "vol", "-n", "sec", "-f", &s.data_dir.join("export.yaml").to_string_lossy()]);
    let exported = std::fs::read_to_string(s.data_dir.join("export.yaml")).unwrap_or_default();
    assert!(!exported.contains(b64) && !export.contains(b64));
    s.delete_group("vol", "sec");
    assert_eq!(mount_fstype(&vol), None, "secret tmpfs left mounted");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).env("GIT_AUTHOR_NAME", "t").env("GIT_AUTHOR_EMAIL", "t@t").env("GIT_COMMITTER_NAME", "t").env("GIT_COMMITTER_EMAIL", "t@t").output().expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn git_repo_volumes_clone_a_revision_and_a_bad_repository_fails_clearly() {
    let s = TestServer::start();
    let work = s.data_dir.join("gitwork");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("hello.txt"), "version one\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    let first = git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(work.join("hello.txt"), "version two\n").unwrap();
    git(&work, &["commit", "-q", "-am", "two"]);
    let served = s.data_dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let out = Command::new("git").args(["clone", "-q", "--bare"]).arg(&work).arg(served.join("repo.git")).output().unwrap();
    assert!(out.status.success());
    let daemon = GitDaemon::start(&served);
    let repo = format!("{}/repo.git", daemon.url);

    let body = group(
        vec![container("app", "sleep 3600", json!([{"name": "src", "mountPath": "/src"}, {"name": "tip", "mountPath": "/tip"}]))],
        json!([{"name": "src", "gitRepo": {"repository": repo, "directory": "app", "revision": first}},
               {"name": "tip", "gitRepo": {"repository": repo, "directory": "."}}]),
    );
    create_running(&s, "vol", "git", &body);
    assert_eq!(exec_in(&s, "vol", "git", "app", "cat /src/app/hello.txt").1, "version one\n");
    assert_eq!(exec_in(&s, "vol", "git", "app", "cat /tip/hello.txt").1, "version two\n");

    let bad = group(
        vec![container("app", "sleep 3600", json!([{"name": "src", "mountPath": "/src"}]))],
        json!([{"name": "src", "gitRepo": {"repository": format!("{}/missing.git", daemon.url)}}]),
    );
    let g = create_failed(&s, "vol", "badgit", &bad);
    let events = g["properties"]["instanceView"]["events"].to_string();
    assert!(events.contains("GitRepoCloneFailed") && events.contains("missing.git"), "{g}");

    // A host path (or file://) would hand the tenant the host's own repositories: refused
    // before anything is stored.
    for local in [served.join("repo.git").to_string_lossy().to_string(), format!("file://{}", served.join("repo.git").display())] {
        let body = group(vec![container("app", "sleep 3600", json!([{"name": "src", "mountPath": "/src"}]))], json!([{"name": "src", "gitRepo": {"repository": local}}]));
        let r = s.put_group("vol", "hostgit", &body);
        assert_eq!((r.status, r.code().as_str()), (400, "InvalidGitRepoVolume"), "{local}: {}", r.text);
        assert_eq!(s.get_group("vol", "hostgit").status, 404);
    }
}

/// `git daemon` serving the bare repositories beneath a directory on a loopback port; ended
/// (by PID) when dropped.
struct GitDaemon {
    child: std::process::Child,
    url: String,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = free_port();
        let child = Command::new("git")
            .args(["daemon", "--export-all", "--reuseaddr", "--listen=127.0.0.1", &format!("--port={port}")])
            .arg(format!("--base-path={}", base.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("git daemon");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "git daemon did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        GitDaemon { child, url: format!("git://127.0.0.1:{port}") }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn azure_file_shares_persist_are_shared_and_enforce_keys_and_read_only() {
    let s = TestServer::start();
    let created: Value = serde_json::from_str(&s.cli_ok(&["share", "create", "--account-name", "acct1", "-n", "data"])).unwrap();
    let key = created["storageAccountKey"].as_str().expect("key on create").to_string();
    // Shares are host-wide: a subscription-scoped token may not manage them.
    let scoped = s.request("POST", "/skiff/tokens", Some(&json!({"subscription": SUB})));
    assert_eq!(scoped.status, 201, "{}", scoped.text);
    let client = s.client_with(scoped.body["token"].as_str());
    let r = client.put(format!("{}/skiff/v1/shares/acct1/other", s.url())).body("{}").send().unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let listed = s.cli_ok(&["share", "list"]);
    assert!(listed.contains("\"data\"") && !listed.contains(&key), "{listed}");
    let share = |read_only: bool, key: &str| json!([{"name": "files", "azureFile": {"storageAccountName": "acct1", "shareName": "data", "storageAccountKey": key, "readOnly": read_only}}]);
    let mount = json!([{"name": "files", "mountPath": "/data"}]);

    let a = group(vec![container("app", "echo persisted > /data/f; sleep 3600", mount.clone())], share(false, &key));
    create_running(&s, "vol", "share-a", &a);
    let b = group(vec![container("app", "sleep 3600", mount.clone())], share(true, &key));
    let g = create_running(&s, "vol", "share-b", &b);
    assert!(!g.to_string().contains(&key), "share key returned by GET");
    // Both groups see the same data at once; the read-only one cannot write (EROFS).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while exec_in(&s, "vol", "share-b", "app", "cat /data/f").1 != "persisted\n" {
        assert!(std::time::Instant::now() < deadline, "group b never saw group a's file");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, out) = spawn_and_wait_err(&s, "share-b", "touch /data/nope");
    assert_ne!(code, 0);
    assert!(out.contains("Read-only file system"), "{out}");
    assert_eq!(exec_in(&s, "vol", "share-a", "app", "sh -c 'echo more >> /data/f && echo ok'").1, "ok\n");

    // Data outlives the groups.
    s.delete_group("vol", "share-a");
    s.delete_group("vol", "share-b");
    // A third group through az's flags.
    let img = image("busybox:latest");
    s.cli_ok(&["container", "create", "-g", "vol", "-n", "share-c", "--image", &img, "--cpu", "0.25", "--memory", "0.25", "--command-line", "sleep 3600",
        "--azure-file-volume-share-name", "data", "--azure-file-volume-account-name", "acct1", "--azure-file-volume-account-key", &key, "--azure-file-volume-mount-path", "/data"]);
    s.wait_state("vol", "share-c", "Running");
    assert_eq!(exec_in(&s, "vol", "share-c", "share-c", "cat /data/f").1, "persisted\nmore\n");

    // A wrong key, or a share that does not exist, is a clear provisioning error.
    let g = create_failed(&s, "vol", "share-bad", &group(vec![container("app", "sleep 3600", mount.clone())], share(false, "wrong-key-wrong-key")));
    assert!(g["properties"]["instanceView"]["events"].to_string().contains("InvalidStorageAccountKey"), "{g}");
    // A share that groups still name is not deleted from under them.
    let r = s.request("DELETE", "/skiff/v1/shares/acct1/data", None);
    assert_eq!((r.status, r.code().as_str()), (409, "ShareInUse"), "{}", r.text);
    assert!(r.text.contains("share-c"), "{}", r.text);
    assert_eq!(exec_in(&s, "vol", "share-c", "share-c", "cat /data/f").1, "persisted\nmore\n");
    s.delete_group("vol", "share-c");
    s.delete_group("vol", "share-bad");
    s.cli_ok(&["share", "delete", "--account-name", "acct1", "-n", "data"]);
    assert!(!s.cli(&["share", "show", "--account-name", "acct1", "-n", "data"]).status.success());
}

/// exec of `command` in container `app`; the output includes the remote stderr (the
/// CLI relays it on its stdout).
fn spawn_and_wait_err(s: &TestServer, name: &str, command: &str) -> (i32, String) {
    exec_in(s, "vol", name, "app", command)
}
