//! Restart policy and back-off: pure functions.

use std::time::Duration;

use crate::plan::RestartPolicy;

/// A container that ran at least this long gets its back-off reset.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// Whether a container that exited with `exit_code` is restarted under `policy`.
pub fn should_restart(policy: RestartPolicy, exit_code: i32) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit_code != 0,
        RestartPolicy::Never => false,
    }
}

/// Back-off state of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backoff {
    /// Consecutive quick failures (restarts since the last reset).
    pub consecutive: u32,
}

impl Backoff {
    /// Delay before the next restart, after the container ran for `ran_for`.
    /// The first restart waits `initial`, every further one doubles, capped at `max`;
    /// a run of at least [`BACKOFF_RESET_AFTER`] resets the sequence.
    pub fn next_delay(&mut self, ran_for: Duration, initial: Duration, max: Duration) -> Duration {
        if ran_for >= BACKOFF_RESET_AFTER {
            self.consecutive = 0;
        }
        let d = delay_for(self.consecutive, initial, max);
        self.consecutive = self.consecutive.saturating_add(1);
        d
    }
}

/// `initial × 2^n`, capped at `max`.
pub fn delay_for(n: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
    initial.checked_mul(factor).unwrap_or(max).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn policy() {
        assert!(should_restart(RestartPolicy::Always, 0));
        assert!(should_restart(RestartPolicy::Always, 1));
        assert!(!should_restart(RestartPolicy::OnFailure, 0));
        assert!(should_restart(RestartPolicy::OnFailure, 137));
        assert!(!should_restart(RestartPolicy::Never, 1));
    }

    #[test]
    fn doubles_and_caps() {
        let mut b = Backoff::default();
        let got: Vec<u64> = (0..7)
            .map(|_| b.next_delay(MS(5), MS(10_000), MS(300_000)).as_millis() as u64)
            .collect();
        assert_eq!(
            got,
            [10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000]
        );
        for _ in 0..100 {
            assert_eq!(b.next_delay(MS(5), MS(10_000), MS(300_000)), MS(300_000));
        }
    }

    #[test]
    fn resets_after_long_run() {
        let mut b = Backoff::default();
        b.next_delay(MS(5), MS(100), MS(1000));
        b.next_delay(MS(5), MS(100), MS(1000));
        assert_eq!(b.next_delay(MS(5), MS(100), MS(1000)), MS(400));
        assert_eq!(
            b.next_delay(BACKOFF_RESET_AFTER, MS(100), MS(1000)),
            MS(100)
        );
        assert_eq!(b.next_delay(MS(5), MS(100), MS(1000)), MS(200));
    }
}
