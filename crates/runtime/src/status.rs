//! Group status as kept by the supervisor and written to `DIR/status.json`
//! (ACI-style container instance view with coalesced events).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// State of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Waiting,
    Running,
    Terminated,
}

/// One state of a container (current or previous).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// e.g. `Completed`, `Error`, `CrashLoopBackOff: Back-off restarting failed container`.
    #[serde(default)]
    pub detail_status: String,
}

impl ContainerState {
    pub fn waiting(detail: &str) -> ContainerState {
        ContainerState {
            state: State::Waiting,
            start_time: None,
            finish_time: None,
            exit_code: None,
            detail_status: detail.into(),
        }
    }
}

/// Event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

/// An ACI-style event; repeated events are coalesced into one with a count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `Created`, `Started`, `Killing`, `BackOff`, `Exited`, `Failed`.
    pub name: String,
    pub message: String,
    pub count: u32,
    pub first_timestamp: Timestamp,
    pub last_timestamp: Timestamp,
    #[serde(rename = "type")]
    pub event_type: EventType,
}

/// Status of one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    pub restart_count: u32,
    pub current_state: ContainerState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<ContainerState>,
    /// Host pid of the container init while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default)]
    pub events: Vec<Event>,
    /// The readiness probe's verdict for the current run (`None`: no probe or no verdict yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
}

/// Keep at most this many distinct events per container (oldest dropped).
pub const MAX_EVENTS: usize = 50;

impl ContainerStatus {
    pub fn new(name: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            restart_count: 0,
            current_state: ContainerState::waiting("Waiting"),
            previous_state: None,
            pid: None,
            events: Vec::new(),
            ready: None,
        }
    }

    /// Record an event; an event equal in name, message and type to the latest
    /// one only increments its count and last timestamp.
    pub fn add_event(&mut self, name: &str, message: &str, event_type: EventType, now: Timestamp) {
        if let Some(last) = self.events.last_mut() {
            if last.name == name && last.message == message && last.event_type == event_type {
                last.count += 1;
                last.last_timestamp = now;
                return;
            }
        }
        // Also coalesce with an older identical event (e.g. Started/Exited alternating).
        if let Some(pos) = self
            .events
            .iter()
            .position(|e| e.name == name && e.message == message && e.event_type == event_type)
        {
            let mut e = self.events.remove(pos);
            e.count += 1;
            e.last_timestamp = now;
            self.events.push(e);
            return;
        }
        self.events.push(Event {
            name: name.into(),
            message: message.into(),
            count: 1,
            first_timestamp: now,
            last_timestamp: now,
            event_type,
        });
        if self.events.len() > MAX_EVENTS {
            self.events.remove(0);
        }
    }

    /// Move the current state to `previous_state` and set a new one.
    pub fn transition(&mut self, next: ContainerState) {
        let prev = std::mem::replace(&mut self.current_state, next);
        if prev.state == State::Terminated {
            self.previous_state = Some(prev);
        }
    }
}

/// Supervisor-level state of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupState {
    /// Containers are being started, run or restarted.
    Running,
    /// Every container terminated and none will be restarted.
    Succeeded,
    Failed,
    /// A stop request is in progress.
    Stopping,
    /// Stopped by request; the supervisor has exited.
    Stopped,
}

impl GroupState {
    /// Nothing will run again without a new start: every container ended under a policy that
    /// does not restart it, or the group was stopped.
    pub fn is_finished(self) -> bool {
        matches!(self, GroupState::Succeeded | GroupState::Failed | GroupState::Stopped)
    }
}

/// Everything the supervisor knows about its group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    pub group_id: String,
    pub generation: u64,
    pub supervisor_pid: u32,
    pub state: GroupState,
    /// Incremented on every change.
    pub version: u64,
    pub updated_at: Timestamp,
    pub containers: Vec<ContainerStatus>,
    /// Init containers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<ContainerStatus>,
    /// An init container failed and the restart policy gives up: the app containers never start.
    #[serde(default)]
    pub init_failed: bool,
    /// The plan asked to hold the start and no release has come yet: nothing has started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

impl GroupStatus {
    pub fn container(&self, name: &str) -> Option<&ContainerStatus> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// Whether every container is Running.
    pub fn all_running(&self) -> bool {
        self.containers
            .iter()
            .all(|c| c.current_state.state == State::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_repeated_events() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let t1 = Timestamp::from_second(1_700_000_010).unwrap();
        let t2 = Timestamp::from_second(1_700_000_020).unwrap();
        let mut c = ContainerStatus::new("a");
        c.add_event("Started", "Started container", EventType::Normal, t0);
        c.add_event(
            "BackOff",
            "Back-off restarting failed container",
            EventType::Warning,
            t0,
        );
        c.add_event("Started", "Started container", EventType::Normal, t1);
        c.add_event(
            "BackOff",
            "Back-off restarting failed container",
            EventType::Warning,
            t2,
        );
        assert_eq!(c.events.len(), 2);
        assert_eq!(c.events[1].name, "BackOff");
        assert_eq!(c.events[1].count, 2);
        assert_eq!(c.events[1].first_timestamp, t0);
        assert_eq!(c.events[1].last_timestamp, t2);
        assert_eq!(c.events[0].count, 2);
        c.add_event("Started", "other message", EventType::Normal, t2);
        assert_eq!(c.events.len(), 3);
        let json = serde_json::to_value(&c.events[0]).unwrap();
        assert_eq!(json["type"], "Normal");
        assert!(json.get("firstTimestamp").is_some());
    }

    #[test]
    fn transitions_keep_previous_terminated_state() {
        let mut c = ContainerStatus::new("a");
        c.transition(ContainerState {
            state: State::Running,
            start_time: None,
            finish_time: None,
            exit_code: None,
            detail_status: String::new(),
        });
        assert!(c.previous_state.is_none());
        let term = ContainerState {
            state: State::Terminated,
            start_time: None,
            finish_time: None,
            exit_code: Some(1),
            detail_status: "Error".into(),
        };
        c.transition(term.clone());
        c.transition(ContainerState::waiting(
            "CrashLoopBackOff: Back-off restarting failed container",
        ));
        assert_eq!(c.previous_state, Some(term));
    }
}
