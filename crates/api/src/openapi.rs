//! The OpenAPI (Swagger 2.0) document of the API Skiff serves, at [`OPENAPI_PATH`].
//!
//! It is Azure's recorded `Microsoft.ContainerInstance` 2023-05-01 document (`spec/`), adjusted
//! to what a client of Skiff needs: no fixed `host` (use the server's URL), bearer tokens instead
//! of Azure AD, and without the one path Skiff does not serve (subnet service association links,
//! which belong to `Microsoft.Network`).

use serde_json::{json, Value};

/// Where the document is served (no token needed: it is the public contract).
pub const OPENAPI_PATH: &str = "/openapi.json";

const RECORDED: &str = include_str!("../../../spec/containerInstance-2023-05-01.json");

/// The document as served.
pub fn document() -> Value {
    let mut doc: Value = serde_json::from_str(RECORDED).unwrap_or_else(|_| json!({"swagger": "2.0", "paths": {}}));
    if let Some(o) = doc.as_object_mut() {
        o.remove("host");
        o.insert("schemes".into(), json!(["https", "http"]));
        o.insert(
            "securityDefinitions".into(),
            json!({"bearer": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "`Bearer <token>`: the admin token in the data directory, or one made with `skiff token create`."}}),
        );
        o.insert("security".into(), json!([{"bearer": []}]));
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        paths.retain(|p, _| !p.contains("/serviceAssociationLinks/"));
        // Per-operation security would override the document's: drop the Azure AD ones.
        for item in paths.values_mut() {
            if let Some(ops) = item.as_object_mut() {
                for op in ops.values_mut() {
                    if let Some(op) = op.as_object_mut() {
                        op.remove("security");
                    }
                }
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_document_is_the_recorded_one_adjusted() {
        let d = document();
        assert_eq!(d["swagger"], "2.0");
        assert!(d.get("host").is_none());
        let paths = d["paths"].as_object().unwrap();
        assert!(paths.keys().any(|p| p.ends_with("/containerGroups/{containerGroupName}")));
        assert!(!paths.keys().any(|p| p.contains("serviceAssociationLinks")));
        assert_eq!(d["securityDefinitions"]["bearer"]["in"], "header");
    }
}
