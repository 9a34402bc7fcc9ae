//! Removing a group's host objects when its supervisor is gone (crashed, killed with the
//! daemon during setup, or the host rebooted): what the supervisor's own `stop` would have done.

use crate::cgroup;
use crate::oci_runtime::OciRuntime;
use crate::plan::GroupPlan;

/// Kill and delete the group's runtime containers, then remove its cgroups and network
/// namespace. Best effort and idempotent; failures are logged, not returned, because the
/// caller is already on a cleanup path.
pub fn cleanup_group(plan: &GroupPlan) {
    let rt = OciRuntime::new(&plan.runtime);
    for c in plan.containers.iter().chain(&plan.init_containers) {
        let id = plan.container_id(&c.name);
        let _ = rt.kill(&id, "SIGKILL");
        if let Err(e) = rt.delete_force(&id) {
            tracing_free_log(&format!("deleting runtime container {id}: {e}"));
        }
    }
    match cgroup::hierarchies() {
        Ok(hs) => {
            if let Err(e) = cgroup::remove_group(&hs, plan) {
                tracing_free_log(&format!("removing cgroups of group {}: {e}", plan.group_id));
            }
        }
        Err(e) => tracing_free_log(&format!("reading cgroup hierarchies: {e}")),
    }
    if let Err(e) = crate::netns::remove_netns(&plan.netns_path) {
        tracing_free_log(&format!("removing netns {}: {e}", plan.netns_path.display()));
    }
}

fn tracing_free_log(msg: &str) {
    eprintln!("skiff-runtime cleanup: {msg}");
}
