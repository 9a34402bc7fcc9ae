//! End to end: a Kubernetes Pod manifest through `skiff container create --file`.

mod common;

use common::*;
use serde_json::json;

#[test]
fn a_pod_manifest_becomes_a_running_group_with_its_logs() {
    let s = TestServer::start();
    let img = image("busybox:latest");
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: podgroup
  namespace: default
  labels: {{app: web, tier: "2"}}
spec:
  restartPolicy: Always
  containers:
  - name: app
    image: {img}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c"]
    args: ["echo pod-says MODE=$MODE; sleep 3600"]
    env:
    - {{name: MODE, value: prod}}
    ports:
    - {{containerPort: 8080, name: http}}
    resources:
      requests: {{cpu: 250m, memory: 256Mi}}
      limits: {{cpu: "1", memory: 512Mi}}
  - name: side
    image: {img}
    command: ["sh", "-c", "echo from-side; sleep 3600"]
    resources:
      limits: {{cpu: 500m, memory: 0.5Gi}}
"#
    );
    let file = s.data_dir.join("pod.yaml");
    std::fs::write(&file, pod).unwrap();
    s.cli_ok(&["container", "create", "-g", "demo", "--file", file.to_str().unwrap()]);
    let g = s.wait_state("demo", "podgroup", "Running");
    assert_eq!(g["tags"], json!({"app": "web", "tier": "2"}));
    let app = &g["properties"]["containers"][0]["properties"];
    assert_eq!(app["command"], json!(["sh", "-c", "echo pod-says MODE=$MODE; sleep 3600"]));
    assert_eq!(app["resources"]["requests"], json!({"cpu": 0.25, "memoryInGB": 0.25}));
    // Requests default to limits, as in Kubernetes.
    assert_eq!(g["properties"]["containers"][1]["properties"]["resources"]["requests"], json!({"cpu": 0.5, "memoryInGB": 0.5}));
    s.wait_logs("demo", "podgroup", "app", "pod-says MODE=prod");
    let logs = s.cli_ok(&["container", "logs", "-g", "demo", "-n", "podgroup", "--container-name", "side"]);
    assert!(logs.contains("from-side"), "{logs}");
}

#[test]
fn an_unsupported_pod_is_refused_before_anything_is_created() {
    let s = TestServer::start();
    let pod = r#"apiVersion: v1
kind: Pod
metadata: {name: badpod}
spec:
  nodeSelector: {disk: ssd}
  containers:
  - name: c
    image: busybox
    env: [{name: A, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    livenessProbe: {tcpSocket: {port: 80}}
"#;
    let file = s.data_dir.join("bad.yaml");
    std::fs::write(&file, pod).unwrap();
    let out = s.cli(&["container", "create", "-g", "podrg", "--file", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for field in ["spec.nodeSelector", "spec.containers[0].env[0].valueFrom", "spec.containers[0].livenessProbe.tcpSocket"] {
        assert!(err.contains(field), "{field} not in {err}");
    }
    // Refused client-side: not even the resource group was created.
    let rg = s.request("GET", &format!("/subscriptions/{SUB}/resourcegroups/podrg?api-version=2021-04-01"), None);
    assert_eq!(rg.status, 404, "{}", rg.text);
}
