//! The seeds' resource model. Containers request CPU and memory; the group's hard limit is the
//! sum of the requests, with CPU rounded up to the next whole core (the isolation boundary does
//! not do fractional cores). Spare CPU inside the group is shared in proportion to the requests
//! (cgroup cpu shares); a container with a `limits` entry is capped there.

use crate::arm::GroupProperties;

pub const BYTES_PER_GB: f64 = 1024.0 * 1024.0 * 1024.0;
pub const CPU_PERIOD_US: u64 = 100_000;
/// cpu.shares of one requested core (the kernel's default weight).
pub const SHARES_PER_CORE: f64 = 1024.0;
const PAGE: u64 = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerAllocation {
    pub name: String,
    pub cpu_request: f64,
    pub cpu_shares: u64,
    /// CFS quota for a container with a CPU limit; `None` means bounded only by the group.
    pub cpu_quota_us: Option<i64>,
    pub memory_limit_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupAllocation {
    pub cpu_cores: u32,
    pub cpu_period_us: u64,
    pub memory_bytes: u64,
    pub containers: Vec<ContainerAllocation>,
}

impl GroupAllocation {
    pub fn cpu_quota_us(&self) -> i64 {
        self.cpu_cores as i64 * self.cpu_period_us as i64
    }
}

/// Whole cores a group gets: ceil of the summed requests. The sum is rounded to 1e-6 first so
/// that 0.1 + 0.2 + 0.7 is one core, not two.
pub fn group_cores(requests: impl IntoIterator<Item = f64>) -> u32 {
    let sum: f64 = requests.into_iter().sum();
    let sum = (sum * 1e6).round() / 1e6;
    sum.ceil().max(1.0) as u32
}

pub fn gb_to_bytes(gb: f64) -> u64 {
    let bytes = (gb * BYTES_PER_GB).round() as u64;
    bytes.div_ceil(PAGE) * PAGE
}

/// The allocation of a validated group.
pub fn allocate(p: &GroupProperties) -> GroupAllocation {
    let cpu_cores = group_cores(p.containers.iter().map(|c| c.properties.resources.requests.cpu));
    let memory_bytes = gb_to_bytes(p.containers.iter().map(|c| c.properties.resources.requests.memory_in_gb).sum());
    let containers = p
        .containers
        .iter()
        .map(|c| {
            let r = &c.properties.resources;
            let limits = r.limits.as_ref();
            let memory_gb = limits.and_then(|l| l.memory_in_gb).unwrap_or(r.requests.memory_in_gb);
            ContainerAllocation {
                name: c.name.clone(),
                cpu_request: r.requests.cpu,
                cpu_shares: ((r.requests.cpu * SHARES_PER_CORE).round() as u64).max(2),
                cpu_quota_us: limits.and_then(|l| l.cpu).map(|cpu| ((cpu * CPU_PERIOD_US as f64).round() as i64).max(1000)),
                memory_limit_bytes: gb_to_bytes(memory_gb).min(memory_bytes),
            }
        })
        .collect();
    GroupAllocation { cpu_cores, cpu_period_us: CPU_PERIOD_US, memory_bytes, containers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arm::*;
    use proptest::prelude::*;

    fn container(name: &str, cpu: f64, mem: f64, limits: Option<ResourceLimits>) -> Container {
        Container {
            name: name.into(),
            properties: ContainerProperties {
                image: "busybox".into(),
                resources: ResourceRequirements { requests: ResourceRequests { cpu, memory_in_gb: mem, gpu: None }, limits },
                ..Default::default()
            },
        }
    }

    #[test]
    fn seed_example() {
        // 0.75 cores + 0.5 cores → 2 cores; 0.5 GB + 1.5 GB → 2 GB; container 1 gets 50% more CPU.
        let p = GroupProperties {
            containers: vec![container("c1", 0.75, 0.5, None), container("c2", 0.5, 1.5, None)],
            os_type: "Linux".into(),
            ..Default::default()
        };
        let a = allocate(&p);
        assert_eq!(a.cpu_cores, 2);
        assert_eq!(a.cpu_quota_us(), 200_000);
        assert_eq!(a.memory_bytes, 2 * 1024 * 1024 * 1024);
        assert_eq!(a.containers[0].cpu_shares, 768);
        assert_eq!(a.containers[1].cpu_shares, 512);
        assert_eq!(a.containers[0].cpu_shares * 2, a.containers[1].cpu_shares * 3);
        assert_eq!(a.containers[0].memory_limit_bytes, 512 * 1024 * 1024);
        assert_eq!(a.containers[0].cpu_quota_us, None);
    }

    #[test]
    fn limits_cap_a_container() {
        let limits = ResourceLimits { cpu: Some(0.5), memory_in_gb: Some(1.0), gpu: None };
        let p = GroupProperties { containers: vec![container("c", 1.0, 1.0, Some(limits)), container("d", 1.0, 1.0, None)], ..Default::default() };
        let a = allocate(&p);
        assert_eq!(a.containers[0].cpu_quota_us, Some(50_000));
        assert_eq!(a.containers[0].memory_limit_bytes, 1024 * 1024 * 1024);
    }

    #[test]
    fn float_sums_do_not_overshoot() {
        assert_eq!(group_cores([0.1, 0.2, 0.7]), 1);
        assert_eq!(group_cores([0.5]), 1);
        assert_eq!(group_cores([1.0, 1.0]), 2);
        assert_eq!(group_cores([1.01]), 2);
    }

    proptest! {
        #[test]
        fn cores_cover_requests(reqs in proptest::collection::vec(1u32..400, 1..6)) {
            let cpus: Vec<f64> = reqs.iter().map(|r| *r as f64 / 100.0).collect();
            let cores = group_cores(cpus.iter().copied());
            let sum: f64 = cpus.iter().sum();
            prop_assert!(cores as f64 + 1e-6 >= sum);
            prop_assert!((cores as f64) < sum + 1.0 + 1e-6);
        }
    }
}
