//! What Skiff keeps in its store: the desired state of each group (the user's document plus the
//! lifecycle the user asked for), its last observed instance view, resource groups and
//! long-running operations. Keys are lower-cased because ARM names are case-insensitive; the
//! records keep the user's casing for `id` and `name`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::arm::*;
use crate::error::ArmError;

pub fn group_prefix_sub(subscription: &str) -> String {
    format!("groups/{}/", subscription.to_ascii_lowercase())
}

pub fn group_prefix_rg(subscription: &str, resource_group: &str) -> String {
    format!("groups/{}/{}/", subscription.to_ascii_lowercase(), resource_group.to_ascii_lowercase())
}

pub fn group_key(subscription: &str, resource_group: &str, name: &str) -> String {
    format!("{}{}", group_prefix_rg(subscription, resource_group), name.to_ascii_lowercase())
}

pub fn resource_group_key(subscription: &str, resource_group: &str) -> String {
    format!("rgs/{}/{}", subscription.to_ascii_lowercase(), resource_group.to_ascii_lowercase())
}

pub fn operation_key(id: &str) -> String {
    format!("ops/{}", id.to_ascii_lowercase())
}

pub const GROUPS_PREFIX: &str = "groups/";
pub const OPERATIONS_PREFIX: &str = "ops/";

pub fn group_resource_id(subscription: &str, resource_group: &str, name: &str) -> String {
    format!("/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{PROVIDER}/containerGroups/{name}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Desired {
    Running,
    Stopped,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Internal id: names every host object of the group (netns, cgroup, directories).
    pub uid: String,
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    /// The validated document, secrets included (never served as is: see [`GroupRecord::to_arm`]).
    pub spec: ContainerGroup,
    pub desired: Desired,
    /// Bumped whenever the containers must be (re)created: create, update, start, restart.
    pub generation: u64,
    /// The generation the agent last finished provisioning (successfully or not).
    pub observed_generation: u64,
    pub provisioning_state: String,
    /// The operation the agent completes when it reaches `generation`.
    pub pending_operation: Option<String>,
    pub group_view: GroupInstanceView,
    pub container_views: BTreeMap<String, ContainerInstanceView>,
    pub created_at: String,
}

impl GroupRecord {
    pub fn resource_id(&self) -> String {
        group_resource_id(&self.subscription, &self.resource_group, &self.name)
    }

    pub fn key(&self) -> String {
        group_key(&self.subscription, &self.resource_group, &self.name)
    }

    /// The resource as the API serves it: secrets removed, read-only fields filled in.
    /// List responses leave the instance views out, as ACI does.
    pub fn to_arm(&self, with_instance_view: bool) -> ContainerGroup {
        let mut g = self.spec.redacted();
        g.id = Some(self.resource_id());
        g.name = Some(self.name.clone());
        g.resource_type = Some(RESOURCE_TYPE.to_string());
        let p = &mut g.properties;
        p.provisioning_state = Some(self.provisioning_state.clone());
        if p.init_containers.is_none() {
            p.init_containers = Some(Vec::new());
        }
        for c in &mut p.containers {
            if c.properties.environment_variables.is_none() {
                c.properties.environment_variables = Some(Vec::new());
            }
        }
        if with_instance_view {
            p.instance_view = Some(self.group_view.clone());
            for c in &mut p.containers {
                c.properties.instance_view = Some(self.container_views.get(&c.name).cloned().unwrap_or_default());
            }
            for c in p.init_containers.iter_mut().flatten() {
                c.properties.instance_view = self.container_views.get(&c.name).cloned();
            }
        }
        g
    }

    pub fn restart_policy(&self) -> &str {
        self.spec.properties.restart_policy.as_deref().unwrap_or("Always")
    }

    pub fn container_names(&self) -> impl Iterator<Item = &str> {
        self.spec.properties.containers.iter().map(|c| c.name.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceGroupRecord {
    pub subscription: String,
    pub name: String,
    pub location: String,
    pub tags: BTreeMap<String, String>,
}

impl ResourceGroupRecord {
    pub fn to_arm(&self) -> ResourceGroup {
        ResourceGroup {
            id: Some(format!("/subscriptions/{}/resourceGroups/{}", self.subscription, self.name)),
            name: Some(self.name.clone()),
            resource_type: Some("Microsoft.Resources/resourceGroups".to_string()),
            location: self.location.clone(),
            tags: Some(self.tags.clone()),
            properties: Some(ResourceGroupProperties { provisioning_state: Some("Succeeded".to_string()) }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationKind {
    Create,
    Update,
    Start,
    Restart,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationStatus {
    InProgress,
    Succeeded,
    Failed,
    Canceled,
}

impl OperationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::InProgress => "InProgress",
            OperationStatus::Succeeded => "Succeeded",
            OperationStatus::Failed => "Failed",
            OperationStatus::Canceled => "Canceled",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != OperationStatus::InProgress
    }
}

/// Image pull progress of an operation, so a client can draw a progress bar.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullProgress {
    pub image: String,
    pub total_bytes: u64,
    pub done_bytes: u64,
    pub layers_total: usize,
    pub layers_done: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRecord {
    pub id: String,
    pub subscription: String,
    pub location: String,
    pub kind: OperationKind,
    pub group_key: String,
    pub resource_id: String,
    pub generation: u64,
    pub status: OperationStatus,
    pub start_time: String,
    pub end_time: Option<String>,
    pub error: Option<ArmError>,
    #[serde(default)]
    pub pulls: Vec<PullProgress>,
}

impl OperationRecord {
    /// The body of the `Azure-AsyncOperation` URL, as ARM serves it.
    pub fn to_arm(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.resource_id,
            "name": self.id,
            "status": self.status.as_str(),
            "startTime": self.start_time,
        });
        if let Some(end) = &self.end_time {
            v["endTime"] = end.clone().into();
        }
        if let Some(err) = &self.error {
            v["error"] = serde_json::json!({"code": err.code, "message": err.message});
        }
        if !self.pulls.is_empty() {
            v["properties"] = serde_json::json!({ "pullProgress": self.pulls });
        }
        v
    }

    pub fn url_path(&self) -> String {
        format!("/subscriptions/{}/providers/{PROVIDER}/locations/{}/operations/{}", self.subscription, self.location, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ignore_case_but_ids_keep_it() {
        assert_eq!(group_key("Sub", "Demo", "Hello"), "groups/sub/demo/hello");
        assert_eq!(group_resource_id("Sub", "Demo", "web"), "/subscriptions/Sub/resourceGroups/Demo/providers/Microsoft.ContainerInstance/containerGroups/web");
        assert!(group_key("s", "rg", "a").starts_with(&group_prefix_rg("S", "RG")));
    }
}
