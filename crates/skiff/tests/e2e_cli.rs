//! End-to-end through the `skiff` CLI, exactly as the README tells a user to drive it.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn the_readme_walkthrough_works_through_the_cli() {
    let s = TestServer::start();
    let img = image("busybox:latest");
    let out = s.cli_ok(&[
        "container", "create", "-g", "demo", "-n", "hello", "--image", &img, "--cpu", "0.5", "--memory", "0.5",
        "--command-line", "sh -c 'echo hi; echo A=$A B=$B; sleep 3600'", "--environment-variables", "A=1", "B=2",
    ]);
    assert!(out.contains("hello"), "{out}");

    let show: Value = serde_json::from_str(&s.cli_ok(&["container", "show", "-g", "demo", "-n", "hello", "-o", "json"])).expect("json output");
    assert_eq!(show["properties"]["provisioningState"], "Succeeded");
    assert_eq!(show["properties"]["instanceView"]["state"], "Running");
    assert_eq!(show["properties"]["containers"][0]["properties"]["command"], serde_json::json!(["sh", "-c", "echo hi; echo A=$A B=$B; sleep 3600"]));
    let table = s.cli_ok(&["container", "show", "-g", "demo", "-n", "hello"]);
    assert!(table.contains("Running"), "{table}");

    s.wait_logs("demo", "hello", "hello", "A=1 B=2");
    let logs = s.cli_ok(&["container", "logs", "-g", "demo", "-n", "hello"]);
    assert!(logs.contains("hi\n") && logs.contains("A=1 B=2"), "{logs}");

    let list = s.cli_ok(&["container", "list", "-g", "demo"]);
    assert!(list.contains("hello"), "{list}");

    s.cli_ok(&["container", "stop", "-g", "demo", "-n", "hello"]);
    s.wait_state("demo", "hello", "Stopped");
    s.cli_ok(&["container", "start", "-g", "demo", "-n", "hello"]);
    s.wait_state("demo", "hello", "Running");
    s.cli_ok(&["container", "restart", "-g", "demo", "-n", "hello"]);
    s.wait_state("demo", "hello", "Running");

    s.cli_ok(&["container", "delete", "-g", "demo", "-n", "hello", "--yes"]);
    assert_eq!(s.get_group("demo", "hello").status, 404);
}

#[test]
fn create_from_an_aci_yaml_file_with_two_containers() {
    let s = TestServer::start();
    let img = image("busybox:latest");
    let yaml = format!(
        r#"apiVersion: '2023-05-01'
location: westus
name: yamlgroup
type: Microsoft.ContainerInstance/containerGroups
tags: {{team: skiff}}
properties:
  osType: Linux
  restartPolicy: Always
  containers:
  - name: first
    properties:
      image: {img}
      command: ["sh", "-c", "echo from-first; sleep 3600"]
      resources: {{requests: {{cpu: 0.5, memoryInGB: 0.5}}}}
  - name: second
    properties:
      image: {img}
      command: ["sh", "-c", "echo from-second; sleep 3600"]
      environmentVariables: [{{name: S, secureValue: topsecret}}]
      resources: {{requests: {{cpu: 0.5, memoryInGB: 0.5}}}}
"#
    );
    let file = s.data_dir.join("group.yaml");
    std::fs::write(&file, yaml).unwrap();
    s.cli_ok(&["container", "create", "-g", "demo", "--file", file.to_str().unwrap()]);
    let g = s.wait_state("demo", "yamlgroup", "Running");
    assert_eq!(g["tags"]["team"], "skiff");
    s.wait_logs("demo", "yamlgroup", "first", "from-first");
    s.wait_logs("demo", "yamlgroup", "second", "from-second");
    let logs = s.cli_ok(&["container", "logs", "-g", "demo", "-n", "yamlgroup", "--container-name", "second"]);
    assert!(logs.contains("from-second"), "{logs}");
    let shown = s.cli_ok(&["container", "show", "-g", "demo", "-n", "yamlgroup", "-o", "yaml"]);
    assert!(shown.contains("yamlgroup") && !shown.contains("topsecret"), "{shown}");
}

#[test]
fn cli_errors_are_readable() {
    let s = TestServer::start();
    let out = s.cli(&["container", "show", "-g", "demo", "-n", "missing"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ResourceNotFound") || err.contains("ResourceGroupNotFound"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = s.cli(&["container", "create", "-g", "demo", "-n", "BadName", "--image", &image("busybox:latest")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("InvalidContainerGroupName"), "{err}");

    let out = std::process::Command::new(skiff_bin()).args(["container", "list", "-g", "demo"]).env("SKIFF_SERVER", "http://127.0.0.1:1").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"), "{}", String::from_utf8_lossy(&out.stderr));
}
