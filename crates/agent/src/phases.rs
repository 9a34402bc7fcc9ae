//! Per-phase timestamps of a group start (scheduled → image ready → sandbox ready → started
//! → ready), kept by the owner task while it provisions and written into the instance view
//! (`instanceView.skiffStartPhases`) once the group is ready; each phase's delay since
//! scheduling also goes to the `skiff_start_phase_seconds` histogram.

use jiff::Timestamp;
use skiff_model::arm::StartPhases;
use skiff_runtime::{GroupStatus, State};
use skiff_telemetry::Telemetry;

use crate::view::timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    ImageReady,
    SandboxReady,
}

/// The phases of the start in progress (none when no start is in progress).
#[derive(Debug, Default)]
pub(crate) struct PhaseClock {
    scheduled: Option<Timestamp>,
    image_ready: Option<Timestamp>,
    sandbox_ready: Option<Timestamp>,
}

impl PhaseClock {
    /// A start was scheduled now.
    pub fn begin(&mut self) {
        *self = PhaseClock { scheduled: Some(Timestamp::now()), ..Default::default() };
    }

    pub fn mark(&mut self, phase: Phase) {
        if self.scheduled.is_none() {
            return;
        }
        let now = Some(Timestamp::now());
        match phase {
            Phase::ImageReady => self.image_ready = now,
            Phase::SandboxReady => self.sandbox_ready = now,
        }
    }

    /// Whether a start is in progress (its phases are not written yet).
    pub fn pending(&self) -> bool {
        self.scheduled.is_some()
    }

    /// The complete phases of the start in progress, given the time the last container
    /// started and the time the group was seen ready.
    pub fn complete(&self, started: Option<Timestamp>, ready: Timestamp) -> Option<StartPhases> {
        let scheduled = self.scheduled?;
        Some(StartPhases {
            scheduled: Some(timestamp(&scheduled)),
            image_ready: self.image_ready.as_ref().map(timestamp),
            sandbox_ready: self.sandbox_ready.as_ref().map(timestamp),
            started: started.as_ref().map(timestamp),
            ready: Some(timestamp(&ready)),
        })
    }

    /// The phases were written: report them to the histograms and end the start.
    pub fn finish(&mut self, tel: &Telemetry, started: Option<Timestamp>, ready: Timestamp) {
        let Some(t0) = self.scheduled else { return };
        for (name, at) in [("image_ready", self.image_ready), ("sandbox_ready", self.sandbox_ready), ("started", started), ("ready", Some(ready))] {
            if let Some(at) = at {
                let d = at.duration_since(t0);
                tel.start_phase(name, std::time::Duration::from_secs_f64(d.as_secs_f64().max(0.0)));
            }
        }
        *self = PhaseClock::default();
    }
}

/// When the last of the group's app containers (`names`) started (the supervisor's clock),
/// if all of them are running.
pub(crate) fn last_start(status: &GroupStatus, names: &[String]) -> Option<Timestamp> {
    let mut last: Option<Timestamp> = None;
    for c in status.containers.iter().filter(|c| names.contains(&c.name)) {
        if c.current_state.state != State::Running {
            return None;
        }
        let t = c.current_state.start_time?;
        last = Some(last.map_or(t, |l| l.max(t)));
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_in_order() {
        let mut c = PhaseClock::default();
        c.mark(Phase::ImageReady);
        assert!(!c.pending() && c.complete(None, Timestamp::now()).is_none());
        c.begin();
        c.mark(Phase::ImageReady);
        c.mark(Phase::SandboxReady);
        let started = Timestamp::now();
        let p = c.complete(Some(started), Timestamp::now()).unwrap();
        let times: Vec<Timestamp> = [&p.scheduled, &p.image_ready, &p.sandbox_ready, &p.started, &p.ready].iter().map(|t| t.as_deref().unwrap().parse().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{p:?}");
        let tel = Telemetry::default();
        c.finish(&tel, Some(started), Timestamp::now());
        assert!(!c.pending());
        assert!(tel.encode().contains(r#"skiff_start_phase_seconds_count{phase="sandbox_ready"} 1"#));
    }
}
