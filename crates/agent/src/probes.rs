//! ARM probes → the supervisor's probe plans, with Kubernetes' defaults (period 10 s,
//! timeout 1 s, failure threshold 3, success threshold 1, no initial delay). Pure.

use skiff_model::arm::Probe;
use skiff_runtime::probe::{ProbeAction, ProbePlan};

fn ms(seconds: Option<i64>, default: i64) -> u64 {
    (seconds.unwrap_or(default).max(0) as u64) * 1000
}

/// The plan of a validated probe (`None` if it has no action).
pub fn probe_plan(p: &Probe) -> Option<ProbePlan> {
    let action = if let Some(e) = &p.exec {
        ProbeAction::Exec { command: e.command.clone().unwrap_or_default() }
    } else {
        let h = p.http_get.as_ref()?;
        ProbeAction::HttpGet {
            path: h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".to_string()),
            port: u16::try_from(h.port).ok()?,
            scheme: h.scheme.clone().unwrap_or_else(|| "http".to_string()).to_ascii_lowercase(),
            headers: h.http_headers.iter().flatten().map(|hd| (hd.name.clone().unwrap_or_default(), hd.value.clone().unwrap_or_default())).collect(),
        }
    };
    Some(ProbePlan {
        action,
        initial_delay_ms: ms(p.initial_delay_seconds, 0),
        period_ms: ms(p.period_seconds, 10),
        timeout_ms: ms(p.timeout_seconds, 1),
        failure_threshold: p.failure_threshold.unwrap_or(3).clamp(1, 1_000_000) as u32,
        success_threshold: p.success_threshold.unwrap_or(1).clamp(1, 1_000_000) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_model::arm::{HttpHeader, ProbeExec, ProbeHttpGet};

    #[test]
    fn defaults_and_fields() {
        let p = Probe { exec: Some(ProbeExec { command: Some(vec!["cat".into(), "/ok".into()]) }), ..Default::default() };
        let plan = probe_plan(&p).unwrap();
        assert_eq!(plan.action, ProbeAction::Exec { command: vec!["cat".into(), "/ok".into()] });
        assert_eq!((plan.initial_delay_ms, plan.period_ms, plan.timeout_ms, plan.failure_threshold, plan.success_threshold), (0, 10_000, 1_000, 3, 1));
        let p = Probe {
            http_get: Some(ProbeHttpGet { path: None, port: 8080, scheme: Some("HTTP".into()), http_headers: Some(vec![HttpHeader { name: Some("X".into()), value: Some("1".into()) }]) }),
            period_seconds: Some(2),
            failure_threshold: Some(1),
            ..Default::default()
        };
        let plan = probe_plan(&p).unwrap();
        assert_eq!(plan.action, ProbeAction::HttpGet { path: "/".into(), port: 8080, scheme: "http".into(), headers: vec![("X".into(), "1".into())] });
        assert_eq!((plan.period_ms, plan.failure_threshold), (2_000, 1));
        assert!(probe_plan(&Probe::default()).is_none());
    }
}
