//! How a group's `instanceView.state` follows from its containers, the restart policy and
//! whether the user stopped it. ACI reports Pending, Running, Stopped, Succeeded and Failed.

use crate::arm::{ContainerInstanceView, ContainerState};

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

/// Derive the group state. `containers` are the app containers' instance views (`None` when a
/// container has not been created yet). A container waiting in restart back-off has run
/// before, so it keeps the group Running rather than Pending.
pub fn derive_group_state(restart_policy: &str, stopped: bool, containers: &[Option<&ContainerInstanceView>]) -> GroupState {
    if stopped {
        return GroupState::Stopped;
    }
    fn current<'a>(c: &Option<&'a ContainerInstanceView>) -> Option<&'a ContainerState> {
        c.and_then(|v| v.current_state.as_ref())
    }
    fn state_of<'a>(c: &Option<&'a ContainerInstanceView>) -> &'a str {
        c.and_then(|v| v.current_state.as_ref()).and_then(|s| s.state.as_deref()).unwrap_or("Waiting")
    }
    fn has_run(c: &Option<&ContainerInstanceView>) -> bool {
        c.is_some_and(|v| v.previous_state.is_some() || v.restart_count.unwrap_or(0) > 0)
    }
    let never_started = |c: &Option<&ContainerInstanceView>| state_of(c) == "Waiting" && !has_run(c);
    if containers.is_empty() || containers.iter().any(never_started) && !containers.iter().any(|c| state_of(c) == "Running") {
        return GroupState::Pending;
    }
    if containers.iter().any(|c| state_of(c) == "Running" || state_of(c) == "Waiting") {
        return GroupState::Running;
    }
    // Every container has terminated.
    let all_ok = containers.iter().all(|c| current(c).and_then(|s| s.exit_code) == Some(0));
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

    fn st(state: &str, exit: Option<i64>) -> ContainerInstanceView {
        ContainerInstanceView { current_state: Some(ContainerState { state: Some(state.into()), exit_code: exit, ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn derivation() {
        let running = st("Running", None);
        let ok = st("Terminated", Some(0));
        let failed = st("Terminated", Some(2));
        let waiting = st("Waiting", None);
        let mut backoff = st("Waiting", None);
        backoff.restart_count = Some(1);
        assert_eq!(derive_group_state("Always", false, &[None]), GroupState::Pending);
        assert_eq!(derive_group_state("Always", false, &[Some(&waiting)]), GroupState::Pending);
        assert_eq!(derive_group_state("Always", false, &[Some(&backoff)]), GroupState::Running);
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
