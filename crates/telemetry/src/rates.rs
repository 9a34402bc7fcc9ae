//! Pure arithmetic of resource sampling: counters read from cgroupfs and procfs turned into
//! the figures Skiff reports. No I/O; the sampler in `skiff-agent` feeds these.

/// CPU usage in millicores between two readings of `cpuacct.usage` (nanoseconds of CPU time)
/// taken `wall_ns` apart. `None` when the counter went backwards (the container was
/// re-created, so its cgroup and counter are new) or no time passed.
pub fn cpu_millicores(prev_ns: u64, cur_ns: u64, wall_ns: u64) -> Option<f64> {
    if cur_ns < prev_ns || wall_ns == 0 {
        return None;
    }
    Some((cur_ns - prev_ns) as f64 * 1000.0 / wall_ns as f64)
}

/// Bytes per second between two readings of a byte counter taken `wall_ns` apart; `None`
/// when the counter went backwards (a new network namespace) or no time passed.
pub fn bytes_per_second(prev: u64, cur: u64, wall_ns: u64) -> Option<f64> {
    if cur < prev || wall_ns == 0 {
        return None;
    }
    Some((cur - prev) as f64 * 1e9 / wall_ns as f64)
}

/// The memory working set as kubelet and Azure Monitor define it: usage minus the inactive
/// file cache (which the kernel reclaims first), never below zero. `stat` is the cgroup's
/// v1 `memory.stat`; the hierarchical `total_inactive_file` is preferred, since the
/// container's processes may sit in child cgroups.
pub fn working_set(usage_bytes: u64, stat: &str) -> u64 {
    let field = |name: &str| stat.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' '))).and_then(|v| v.trim().parse::<u64>().ok());
    let inactive = field("total_inactive_file").or_else(|| field("inactive_file")).unwrap_or(0);
    usage_bytes.saturating_sub(inactive)
}

/// Received and transmitted bytes of `/proc/<pid>/net/dev`, summed over every interface
/// except loopback (traffic between the group's own containers is not network use).
pub fn net_dev_totals(text: &str) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in text.lines() {
        let Some((iface, counters)) = line.split_once(':') else { continue };
        let iface = iface.trim();
        if iface.is_empty() || iface == "lo" || iface.contains(' ') {
            continue;
        }
        let fields: Vec<u64> = counters.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
        if fields.len() >= 16 {
            rx = rx.saturating_add(fields[0]);
            tx = tx.saturating_add(fields[8]);
        }
    }
    (rx, tx)
}

/// The first pid of a `cgroup.procs` file.
pub fn first_pid(procs: &str) -> Option<u32> {
    procs.lines().find_map(|l| l.trim().parse().ok())
}

/// Seconds of an ISO 8601 duration of the forms Azure Monitor uses for `interval`
/// (`PT1M`, `PT5M`, `PT30S`, `PT1H`, `P1D`, `PT1H30M`). `None` for anything else or zero.
pub fn iso8601_seconds(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_uppercase();
    let rest = s.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut total = 0u64;
    let mut parse = |part: &str, units: &[(char, u64)]| -> Option<()> {
        let mut num = String::new();
        let mut allowed = units.iter();
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            // Units must come in order, each once.
            let (_, mult) = allowed.by_ref().find(|(u, _)| *u == c)?;
            let n: u64 = num.parse().ok()?;
            total = total.checked_add(n.checked_mul(*mult)?)?;
            num.clear();
        }
        num.is_empty().then_some(())
    };
    parse(date, &[('W', 604_800), ('D', 86_400)])?;
    if let Some(t) = time {
        if t.is_empty() {
            return None;
        }
        parse(t, &[('H', 3600), ('M', 60), ('S', 1)])?;
    }
    (total > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_rate() {
        // Half a core: 0.5 s of CPU in 1 s.
        assert_eq!(cpu_millicores(1_000_000_000, 1_500_000_000, 1_000_000_000), Some(500.0));
        assert_eq!(cpu_millicores(0, 4_000_000_000, 2_000_000_000), Some(2000.0));
        assert_eq!(cpu_millicores(5, 4, 1_000), None);
        assert_eq!(cpu_millicores(1, 4, 0), None);
    }

    #[test]
    fn byte_rate() {
        assert_eq!(bytes_per_second(1000, 3000, 2_000_000_000), Some(1000.0));
        assert_eq!(bytes_per_second(3000, 1000, 2_000_000_000), None);
    }

    #[test]
    fn working_set_subtracts_inactive_file() {
        let stat = "cache 100\ninactive_file 40\nactive_file 60\ntotal_cache 300\ntotal_inactive_file 200\n";
        assert_eq!(working_set(1000, stat), 800);
        assert_eq!(working_set(1000, "cache 100\ninactive_file 40\n"), 960);
        assert_eq!(working_set(100, "total_inactive_file 200\n"), 0);
        assert_eq!(working_set(100, ""), 100);
    }

    #[test]
    fn net_dev_sums_non_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:    5000      10    0    0    0     0          0         0     5000      10    0    0    0     0       0          0\n  \
eth0:    1200       8    0    0    0     0          0         0      300       3    0    0    0     0       0          0\n\
skf-ab12:  34 1 0 0 0 0 0 0 16 1 0 0 0 0 0 0\n";
        assert_eq!(net_dev_totals(text), (1234, 316));
        // A namespace with only loopback (no veth yet) has no network use.
        assert_eq!(net_dev_totals("    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n"), (0, 0));
    }

    #[test]
    fn pids() {
        assert_eq!(first_pid("\n123\n456\n"), Some(123));
        assert_eq!(first_pid(""), None);
    }

    #[test]
    fn durations() {
        assert_eq!(iso8601_seconds("PT1M"), Some(60));
        assert_eq!(iso8601_seconds("pt30s"), Some(30));
        assert_eq!(iso8601_seconds("PT1H30M"), Some(5400));
        assert_eq!(iso8601_seconds("P1D"), Some(86_400));
        assert_eq!(iso8601_seconds("P1DT1H"), Some(90_000));
        for bad in ["", "P", "PT", "1M", "PTM", "PT1X", "PT0S", "PT1M1H", "PT1M1M"] {
            assert_eq!(iso8601_seconds(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,200}") {
            let _ = net_dev_totals(&s);
            let _ = working_set(1 << 30, &s);
            let _ = iso8601_seconds(&s);
            let _ = first_pid(&s);
        }

        #[test]
        fn cpu_rate_is_bounded_by_cores(prev in 0u64..1 << 50, used in 0u64..1 << 40, wall in 1u64..1 << 40, cores in 1u64..64) {
            let used = used.min(wall.saturating_mul(cores));
            let mc = cpu_millicores(prev, prev + used, wall).unwrap();
            prop_assert!(mc >= 0.0 && mc <= cores as f64 * 1000.0 + 1e-6);
        }

        #[test]
        fn durations_roundtrip(h in 0u64..48, m in 0u64..60, s in 0u64..60) {
            prop_assume!(h + m + s > 0);
            prop_assert_eq!(iso8601_seconds(&format!("PT{h}H{m}M{s}S")), Some(h * 3600 + m * 60 + s));
        }
    }
}
