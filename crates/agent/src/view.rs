//! Translation of the supervisor's status into ARM instance views, and the agent's own events
//! (image pulls) merged in front of the supervisor's. Pure.

use std::collections::BTreeMap;

use skiff_model::arm::{ContainerInstanceView, ContainerState, Event};
use skiff_model::state::{derive_group_state, GroupState};
use skiff_runtime::status as rt;

/// Event names the agent produces itself (the supervisor produces the others).
pub const AGENT_EVENTS: &[&str] = &["Pulling", "Pulled", "Failed", "FailedMount"];

pub fn timestamp(t: &jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn state(s: &rt::ContainerState) -> ContainerState {
    ContainerState {
        state: Some(
            match s.state {
                rt::State::Waiting => "Waiting",
                rt::State::Running => "Running",
                rt::State::Terminated => "Terminated",
            }
            .to_string(),
        ),
        start_time: s.start_time.as_ref().map(timestamp),
        exit_code: s.exit_code.map(i64::from),
        finish_time: s.finish_time.as_ref().map(timestamp),
        detail_status: Some(s.detail_status.clone()),
    }
}

fn event(e: &rt::Event) -> Event {
    Event {
        count: Some(i64::from(e.count)),
        first_timestamp: Some(timestamp(&e.first_timestamp)),
        last_timestamp: Some(timestamp(&e.last_timestamp)),
        name: Some(e.name.clone()),
        message: Some(e.message.clone()),
        event_type: Some(match e.event_type {
            rt::EventType::Normal => "Normal".to_string(),
            rt::EventType::Warning => "Warning".to_string(),
        }),
    }
}

/// The agent-made events already recorded for a container (kept across status updates).
pub fn agent_events(view: Option<&ContainerInstanceView>) -> Vec<Event> {
    view.map(|v| v.events.iter().filter(|e| e.name.as_deref().is_some_and(|n| AGENT_EVENTS.contains(&n))).cloned().collect()).unwrap_or_default()
}

/// New container views from a supervisor status, keeping the agent's events.
pub fn container_views(status: &rt::GroupStatus, previous: &BTreeMap<String, ContainerInstanceView>) -> BTreeMap<String, ContainerInstanceView> {
    status
        .containers
        .iter()
        .chain(&status.init_containers)
        .map(|c| {
            let mut events = agent_events(previous.get(&c.name));
            events.extend(c.events.iter().map(event));
            let view = ContainerInstanceView {
                restart_count: Some(i64::from(c.restart_count)),
                current_state: Some(state(&c.current_state)),
                previous_state: c.previous_state.as_ref().map(state),
                events,
            };
            (c.name.clone(), view)
        })
        .collect()
}

/// Group state of the app containers in `names`.
pub fn group_state(restart_policy: &str, stopped: bool, names: &[&str], views: &BTreeMap<String, ContainerInstanceView>) -> GroupState {
    let states: Vec<Option<&ContainerInstanceView>> = names.iter().map(|n| views.get(*n)).collect();
    derive_group_state(restart_policy, stopped, &states)
}

/// True once every app container has been started at least once (running or already exited):
/// the point where ACI reports provisioning as Succeeded.
pub fn all_started(names: &[&str], views: &BTreeMap<String, ContainerInstanceView>) -> bool {
    names.iter().all(|n| {
        views.get(*n).and_then(|v| v.current_state.as_ref()).and_then(|s| s.state.as_deref()).is_some_and(|s| s != "Waiting")
            || views.get(*n).and_then(|v| v.restart_count).is_some_and(|c| c > 0)
    })
}

/// Append an event to a view, coalescing with an identical latest one as ACI does.
pub fn push_event(view: &mut ContainerInstanceView, name: &str, message: &str, warning: bool, now: &str) {
    push_event_to(&mut view.events, name, message, warning, now);
}

/// [`push_event`] on any event list (e.g. the group's own events).
pub fn push_event_to(events: &mut Vec<Event>, name: &str, message: &str, warning: bool, now: &str) {
    let kind = if warning { "Warning" } else { "Normal" };
    if let Some(last) = events.last_mut() {
        if last.name.as_deref() == Some(name) && last.message.as_deref() == Some(message) {
            last.count = Some(last.count.unwrap_or(1) + 1);
            last.last_timestamp = Some(now.to_string());
            return;
        }
    }
    events.push(Event {
        count: Some(1),
        first_timestamp: Some(now.to_string()),
        last_timestamp: Some(now.to_string()),
        name: Some(name.to_string()),
        message: Some(message.to_string()),
        event_type: Some(kind.to_string()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_event_coalesces() {
        let mut v = ContainerInstanceView::default();
        push_event(&mut v, "Pulling", "pulling image \"x\"", false, "t1");
        push_event(&mut v, "Pulling", "pulling image \"x\"", false, "t2");
        push_event(&mut v, "Pulled", "ok", false, "t3");
        assert_eq!(v.events.len(), 2);
        assert_eq!(v.events[0].count, Some(2));
        assert_eq!(v.events[0].last_timestamp.as_deref(), Some("t2"));
        assert_eq!(agent_events(Some(&v)).len(), 2);
    }

    #[test]
    fn started_means_not_waiting() {
        let mut views = BTreeMap::new();
        assert!(!all_started(&["a"], &views));
        views.insert("a".to_string(), ContainerInstanceView { current_state: Some(ContainerState { state: Some("Waiting".into()), ..Default::default() }), ..Default::default() });
        assert!(!all_started(&["a"], &views));
        views.get_mut("a").unwrap().current_state.as_mut().unwrap().state = Some("Terminated".into());
        assert!(all_started(&["a"], &views));
    }
}
