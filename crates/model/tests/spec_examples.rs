//! The OpenAPI document's examples are fixtures: every container group body in them must parse
//! into the model and serialize back to the same JSON.

use std::path::PathBuf;

use skiff_model::ContainerGroup;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/examples")
}

/// Integers and floats compare by value (`1` in the examples, `1.0` once typed).
fn normalize(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(normalize).collect()),
        serde_json::Value::Object(o) => serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), normalize(v))).collect()),
        other => other.clone(),
    }
}

fn group_bodies(example: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    if let Some(body) = example.pointer("/parameters/containerGroup") {
        out.push(body.clone());
    }
    for (_, resp) in example["responses"].as_object().into_iter().flatten() {
        let Some(body) = resp.get("body") else { continue };
        if body.get("properties").and_then(|p| p.get("containers")).is_some() {
            out.push(body.clone());
        }
        for item in body.get("value").and_then(|v| v.as_array()).into_iter().flatten() {
            if item.pointer("/properties/containers").is_some() {
                out.push(item.clone());
            }
        }
    }
    out
}

#[test]
fn every_container_group_example_round_trips() {
    let mut checked = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("spec/examples exists") {
        let path = entry.unwrap().path();
        let example: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for body in group_bodies(&example) {
            let parsed: ContainerGroup = serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let back = serde_json::to_value(&parsed).unwrap();
            assert_eq!(normalize(&back), normalize(&body), "{} does not round-trip", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} bodies found");
}

#[test]
fn create_example_validates_after_redaction_rules() {
    let example: serde_json::Value = serde_json::from_slice(&std::fs::read(examples_dir().join("ContainerGroupsCreateOrUpdate.json")).unwrap()).unwrap();
    let body = example.pointer("/parameters/containerGroup").unwrap();
    let group: ContainerGroup = serde_json::from_value(body.clone()).unwrap();
    // The example asks for a GPU, which this host does not have: a clear error, not a crash.
    let err = skiff_model::validate::validate_group(group.clone(), "demo1", &Default::default()).unwrap_err();
    assert_eq!(err.code, "GpuNotAvailable");
    let redacted = serde_json::to_value(group.redacted()).unwrap();
    let text = redacted.to_string();
    assert!(!text.contains("accountKey") && !text.contains("SecretValue1InBase64") && !text.contains("\"workspaceKey\""), "{text}");
}
