//! How a group's `instanceView.state` follows from its containers, the restart policy and
//! whether the user stopped it. ACI reports Pending, Running, Stopped, Succeeded and Failed.

use crate::arm::ContainerState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Pending,
    Running,
    Stopped,
    Succeeded,
    Failed,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Pending => "Pending",
            GroupState::Running => "Running",
            GroupState::Stopped => "Stopped",
            GroupState::Succeeded => "Succeeded",
            GroupState::Failed => "Failed",
        }
    }

    /// Terminal: nothing will run again unless the user starts or restarts the group.
    pub fn is_terminal(self) -> bool {
        matches!(self, GroupState::Stopped | GroupState::Succeeded | GroupState::Failed)
    }
}

/// Derive the group state. `containers` are the app containers' current states (`None` when a
/// container has not been created yet).
pub fn derive_group_state(restart_policy: &str, stopped: bool, containers: &[Option<&ContainerState>]) -> GroupState {
    if stopped {
        return GroupState::Stopped;
    }
    fn state_of<'a>(c: &Option<&'a ContainerState>) -> &'a str {
        c.and_then(|s| s.state.as_deref()).unwrap_or("Waiting")
    }
    if containers.is_empty() || containers.iter().any(|c| state_of(c) == "Waiting") && !containers.iter().any(|c| state_of(c) == "Running") {
        return GroupState::Pending;
    }
    if containers.iter().any(|c| state_of(c) == "Running" || state_of(c) == "Waiting") {
        return GroupState::Running;
    }
    // Every container has terminated.
    let all_ok = containers.iter().all(|c| c.and_then(|s| s.exit_code) == Some(0));
    match restart_policy {
        // Always restarts anything that exits: a terminated container is between restarts.
        "Always" => GroupState::Running,
        "OnFailure" if all_ok => GroupState::Succeeded,
        "OnFailure" => GroupState::Running,
        _ if all_ok => GroupState::Succeeded,
        _ => GroupState::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: &str, exit: Option<i64>) -> ContainerState {
        ContainerState { state: Some(state.into()), exit_code: exit, ..Default::default() }
    }

    #[test]
    fn derivation() {
        let running = st("Running", None);
        let ok = st("Terminated", Some(0));
        let failed = st("Terminated", Some(2));
        let waiting = st("Waiting", None);
        assert_eq!(derive_group_state("Always", false, &[None]), GroupState::Pending);
        assert_eq!(derive_group_state("Always", false, &[Some(&waiting)]), GroupState::Pending);
        assert_eq!(derive_group_state("Always", false, &[Some(&running), Some(&waiting)]), GroupState::Running);
        assert_eq!(derive_group_state("Always", false, &[Some(&running), Some(&ok)]), GroupState::Running);
        assert_eq!(derive_group_state("Never", false, &[Some(&ok), Some(&ok)]), GroupState::Succeeded);
        assert_eq!(derive_group_state("Never", false, &[Some(&ok), Some(&failed)]), GroupState::Failed);
        assert_eq!(derive_group_state("OnFailure", false, &[Some(&ok)]), GroupState::Succeeded);
        assert_eq!(derive_group_state("OnFailure", false, &[Some(&failed)]), GroupState::Running);
        assert_eq!(derive_group_state("Always", true, &[Some(&running)]), GroupState::Stopped);
        assert!(GroupState::Failed.is_terminal() && !GroupState::Running.is_terminal());
    }
}
