//! Property tests of the validator with random container group documents, valid and invalid.
//!
//! The generator draws every field from a small pool that mixes good values with the bad ones a
//! client could send (wrong casing, duplicates, out-of-range numbers, undeclared volumes, wrong
//! JSON types), so that a good share of the documents is accepted and every rule is exercised.
//! The documents go through the same path as a request body: bytes → `parse_group` →
//! `validate_group`.

use std::collections::{BTreeSet, HashSet};

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};
use skiff_model::arm::ContainerGroup;
use skiff_model::validate::{parse_group, validate_group, Capacity, MIN_CPU, MIN_MEMORY_GB};
use skiff_model::ArmError;

fn opt<T: Clone + std::fmt::Debug + 'static>(s: impl Strategy<Value = T> + 'static) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 3 => s.prop_map(Some)].boxed()
}

/// Mostly a good value, sometimes a bad one: every rule fires, yet many documents pass.
fn mostly<T: Clone + std::fmt::Debug + 'static>(good: Vec<T>, bad: Vec<T>) -> BoxedStrategy<T> {
    prop_oneof![10 => select(good), 1 => select(bad)].boxed()
}

fn port() -> impl Strategy<Value = Value> {
    (
        prop_oneof![6 => select(vec![80i64, 443, 8080, 53, 9000]), 1 => select(vec![0i64, -1, 65536, 70000]), 1 => 1i64..65536],
        opt(mostly(vec!["TCP", "tcp", "UDP", "Udp"], vec!["SCTP", ""])),
    )
        .prop_map(|(p, proto)| match proto {
            Some(pr) => json!({"port": p, "protocol": pr}),
            None => json!({"port": p}),
        })
}

fn env_var() -> impl Strategy<Value = Value> {
    (mostly(vec!["A", "B", "PATH"], vec!["", "X=Y"]), 0u8..10, select(vec!["1", "", "hello world"])).prop_map(|(n, kind, v)| match kind {
        0..=4 => json!({"name": n, "value": v}),
        5..=7 => json!({"name": n, "secureValue": v}),
        8 => json!({"name": n}),
        _ => json!({"name": n, "value": v, "secureValue": v}),
    })
}

fn volume() -> impl Strategy<Value = Value> {
    (mostly(vec!["v1", "v2", "cache"], vec!["Bad Vol", ""]), 0u8..17).prop_map(|(n, kind)| match kind {
        0..=9 => json!({"name": n, "emptyDir": {}}),
        10 | 11 => json!({"name": n, "gitRepo": {"repository": "https://example.com/r.git", "directory": "src"}}),
        12 => json!({"name": n, "gitRepo": {"repository": "https://example.com/r.git", "directory": "../up"}}),
        15 => json!({"name": n, "gitRepo": {"repository": "/srv/host-secrets.git"}}),
        13 => json!({"name": n, "secret": {"key.txt": "c2VjcmV0", "../evil": "eA=="}}),
        14 => json!({"name": n, "secret": {"a": "Yg=="}}),
        _ => json!({"name": n}),
    })
}

fn mount() -> impl Strategy<Value = Value> {
    (mostly(vec!["v1", "v2", "cache"], vec!["nope"]), mostly(vec!["/data", "/data/", "/cache", "/srv/x"], vec!["relative", "/proc/x", "/a/../b", "/x:y", "/"]), opt(any::<bool>())).prop_map(
        |(n, p, ro)| match ro {
            Some(r) => json!({"name": n, "mountPath": p, "readOnly": r}),
            None => json!({"name": n, "mountPath": p}),
        },
    )
}

fn resources() -> impl Strategy<Value = Value> {
    let cpu = mostly(vec![0.01, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0], vec![0.0, 0.005, 5.0, -1.0]);
    let mem = mostly(vec![0.1, 0.5, 1.0, 1.5, 4.0, 16.0], vec![0.0, 0.05, 20.0, -1.0]);
    let limits = prop_oneof![4 => Just(None), 1 => (opt(cpu.clone()), opt(mem.clone())).prop_map(Some)];
    (cpu, mem, limits, 0u8..40).prop_map(|(c, m, limits, gpu)| {
        let mut r = json!({"requests": {"cpu": c, "memoryInGB": m}});
        if let Some((lc, lm)) = limits {
            let mut l = serde_json::Map::new();
            if let Some(lc) = lc {
                l.insert("cpu".into(), lc.into());
            }
            if let Some(lm) = lm {
                l.insert("memoryInGB".into(), lm.into());
            }
            r["limits"] = l.into();
        }
        if gpu == 0 {
            r["requests"]["gpu"] = json!({"count": 1, "sku": "V100"});
        }
        r
    })
}

fn image() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => select(vec!["busybox", "127.0.0.1:5100/busybox:latest", "library/nginx:1.25", "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]).prop_map(str::to_string),
        1 => select(vec!["", "Upper:x", "bad image", "a//b", ":tag"]).prop_map(str::to_string),
    ]
}

fn container_name() -> impl Strategy<Value = String> {
    prop_oneof![
        40 => select(vec!["web", "side", "db", "a-b", "init"]).prop_map(str::to_string),
        1 => select(vec!["", "Bad_Name", "-x", "x-"]).prop_map(str::to_string),
        1 => "[a-z0-9-]{60,70}",
    ]
}

fn container() -> impl Strategy<Value = Value> {
    (
        container_name(),
        image(),
        opt(proptest::collection::vec(port(), 0..3)),
        opt(proptest::collection::vec(env_var(), 0..3)),
        prop_oneof![3 => Just(None), 1 => proptest::collection::vec(mount(), 0..3).prop_map(Some)],
        resources(),
        opt(mostly(vec![json!({"runAsUser": 1000, "runAsGroup": 1000}), json!({"allowPrivilegeEscalation": false})], vec![json!({"privileged": true}), json!({"runAsUser": -5})])),
        any::<bool>(),
    )
        .prop_map(|(name, image, ports, env, mounts, resources, sc, with_view)| {
            let mut p = json!({"image": image, "resources": resources});
            if let Some(ports) = ports {
                p["ports"] = ports.into();
            }
            if let Some(env) = env {
                p["environmentVariables"] = env.into();
            }
            if let Some(m) = mounts {
                p["volumeMounts"] = m.into();
            }
            if let Some(sc) = sc {
                p["securityContext"] = sc;
            }
            if with_view {
                // A read-only field echoed back from a GET.
                p["instanceView"] = json!({"restartCount": 3, "events": []});
            }
            json!({"name": name, "properties": p})
        })
}

fn init_container() -> impl Strategy<Value = Value> {
    (container_name(), image(), opt(proptest::collection::vec(mount(), 0..2)), opt(proptest::collection::vec(env_var(), 0..2))).prop_map(|(name, image, mounts, env)| {
        let mut p = json!({"image": image, "command": ["sh", "-c", "true"]});
        if let Some(m) = mounts {
            p["volumeMounts"] = m.into();
        }
        if let Some(e) = env {
            p["environmentVariables"] = e.into();
        }
        json!({"name": name, "properties": p})
    })
}

fn ip_address() -> impl Strategy<Value = Value> {
    (mostly(vec!["Public", "public", "Private"], vec!["", "Bogus"]), proptest::collection::vec(port(), 0..3), opt(select(vec!["my-app", "x"]))).prop_map(|(t, ports, label)| {
        let mut ip = json!({"type": t, "ports": ports});
        if let Some(l) = label {
            ip["dnsNameLabel"] = l.into();
        }
        ip
    })
}

/// Breaks the document's shape (wrong JSON types), so the parse path is exercised too.
fn mutation() -> impl Strategy<Value = Option<(&'static str, Value)>> {
    prop_oneof![
        20 => Just(None),
        1 => select(vec![
            ("/properties/containers", json!("not a list")),
            ("/properties/containers/0/properties/image", json!(5)),
            ("/properties/containers/0/properties/resources/requests/cpu", json!("one")),
            ("/properties/containers/0/properties/ports/0/port", json!(80.5)),
            ("/properties", json!(null)),
            ("/tags", json!({"k": 1})),
            ("/properties/osType", json!(["Linux"])),
        ]).prop_map(Some),
    ]
}

fn group_doc() -> impl Strategy<Value = Value> {
    (
        prop_oneof![1 => Just(Vec::new()), 15 => proptest::collection::vec(container(), 1..4)],
        opt(proptest::collection::vec(init_container(), 0..2)),
        // Mostly the volumes the mounts name, so that mounts usually resolve.
        prop_oneof![
            3 => Just(Some(vec![json!({"name": "v1", "emptyDir": {}}), json!({"name": "v2", "emptyDir": {}}), json!({"name": "cache", "gitRepo": {"repository": "https://example.com/r.git"}})])),
            1 => opt(proptest::collection::vec(volume(), 0..3)),
        ],
        opt(ip_address()),
        opt(mostly(vec!["Always", "always", "OnFailure", "Never", "never"], vec!["Sometimes"])),
        mostly(vec!["Linux", "linux", "LINUX"], vec!["Windows", "", "Mac"]),
        opt(mostly(vec![json!({"team": "a"}), json!({"env": "prod", "owner": "x"})], vec![json!({"": "x"}), json!({"a/b": "x"})])),
        any::<bool>(),
        mutation(),
    )
        .prop_map(|(containers, init, volumes, ip, restart, os, tags, read_only, mutation)| {
            let mut p = json!({"containers": containers, "osType": os});
            if let Some(i) = init {
                p["initContainers"] = i.into();
            }
            if let Some(v) = volumes {
                p["volumes"] = v.into();
            }
            if let Some(ip) = ip {
                p["ipAddress"] = ip;
            }
            if let Some(r) = restart {
                p["restartPolicy"] = r.into();
            }
            if read_only {
                p["provisioningState"] = "Succeeded".into();
                p["instanceView"] = json!({"state": "Running", "events": []});
            }
            let mut doc = json!({"location": "westus", "properties": p});
            if let Some(t) = tags {
                doc["tags"] = t;
            }
            if read_only {
                doc["id"] = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g".into();
            }
            if let Some((ptr, v)) = mutation {
                if let Some(slot) = doc.pointer_mut(ptr) {
                    *slot = v;
                }
            }
            doc
        })
}

fn capacity() -> impl Strategy<Value = Capacity> {
    (select(vec![1.0, 2.0, 4.0]), select(vec![1.0, 4.0, 16.0]), select(vec![1usize, 2, 60])).prop_map(|(c, m, n)| Capacity { max_cpu_per_group: c, max_memory_gb_per_group: m, max_containers_per_group: n })
}

fn check_rejection(e: &ArmError) -> Result<(), TestCaseError> {
    prop_assert!((400..500).contains(&e.status), "status {} for {e:?}", e.status);
    prop_assert!(!e.code.is_empty() && !e.message.is_empty(), "{e:?}");
    Ok(())
}

/// What every accepted group satisfies.
fn check_invariants(g: &ContainerGroup, cap: &Capacity) -> Result<(), TestCaseError> {
    let p = &g.properties;
    // Canonical: casing and defaults filled, read-only fields gone.
    prop_assert_eq!(p.os_type.as_str(), "Linux");
    prop_assert!(matches!(p.restart_policy.as_deref(), Some("Always" | "OnFailure" | "Never")), "{:?}", p.restart_policy);
    prop_assert_eq!(p.sku.as_deref(), Some("Standard"));
    prop_assert!(g.id.is_none() && p.provisioning_state.is_none() && p.instance_view.is_none());
    prop_assert!(!p.containers.is_empty());
    prop_assert!(p.containers.len() + p.init_containers.as_ref().map_or(0, Vec::len) <= cap.max_containers_per_group);

    let mut names = HashSet::new();
    for n in p.containers.iter().map(|c| &c.name).chain(p.init_containers.iter().flatten().map(|c| &c.name)) {
        prop_assert!(names.insert(n.clone()), "container name {n} twice");
    }
    let volumes: HashSet<&str> = p.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    prop_assert_eq!(volumes.len(), p.volumes.as_ref().map_or(0, Vec::len), "volume names unique");
    let mounts = p.containers.iter().flat_map(|c| c.properties.volume_mounts.iter().flatten()).chain(p.init_containers.iter().flatten().flat_map(|c| c.properties.volume_mounts.iter().flatten()));
    for m in mounts {
        prop_assert!(volumes.contains(m.name.as_str()), "mount of undeclared volume {}", m.name);
        prop_assert!(m.mount_path.starts_with('/') && !m.mount_path.split('/').any(|c| c == ".."));
    }

    let mut ports = BTreeSet::new();
    let (mut cpu, mut mem) = (0.0, 0.0);
    for c in &p.containers {
        prop_assert!(c.properties.instance_view.is_none());
        for port in c.properties.ports.iter().flatten() {
            prop_assert!((1..=65535).contains(&port.port));
            prop_assert!(matches!(port.protocol.as_deref(), None | Some("TCP" | "UDP")), "{:?}", port.protocol);
            prop_assert!(ports.insert((port.port, port.protocol_or_default())), "port {} twice", port.port);
        }
        let r = &c.properties.resources;
        prop_assert!(r.requests.cpu >= MIN_CPU - 1e-9 && r.requests.memory_in_gb >= MIN_MEMORY_GB - 1e-9);
        if let Some(l) = &r.limits {
            prop_assert!(l.cpu.is_none_or(|x| x >= r.requests.cpu - 1e-9));
            prop_assert!(l.memory_in_gb.is_none_or(|x| x >= r.requests.memory_in_gb - 1e-9));
        }
        prop_assert!(r.requests.gpu.is_none());
        cpu += r.requests.cpu;
        mem += r.requests.memory_in_gb;
    }
    prop_assert!(cpu <= cap.max_cpu_per_group + 1e-9, "cpu {cpu} over {}", cap.max_cpu_per_group);
    prop_assert!(mem <= cap.max_memory_gb_per_group + 1e-9, "memory {mem} over {}", cap.max_memory_gb_per_group);
    let alloc = skiff_model::resources::allocate(p);
    prop_assert!(f64::from(alloc.cpu_cores) <= cap.max_cpu_per_group.ceil());

    if let Some(ip) = &p.ip_address {
        prop_assert!(matches!(ip.address_type.as_str(), "Public" | "Private"));
        prop_assert!(!ip.ports.is_empty());
        for port in &ip.ports {
            prop_assert!(ports.contains(&(port.port, port.protocol_or_default())), "ip port {} not a container port", port.port);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_group_documents(doc in group_doc(), cap in capacity(), name in prop_oneof![8 => Just("grp"), 1 => Just("Bad_Name")]) {
        let body = serde_json::to_vec(&doc).unwrap();
        let parsed = match parse_group(&body) {
            Ok(g) => g,
            Err(e) => return check_rejection(&e),
        };
        match validate_group(parsed, name, &cap) {
            Err(e) => check_rejection(&e)?,
            Ok(ok) => {
                check_invariants(&ok, &cap)?;
                // Idempotent: validating the result again changes nothing ...
                let revalidated = validate_group(ok.clone(), name, &cap);
                prop_assert_eq!(revalidated.as_ref(), Ok(&ok));
                // ... and neither does a trip over the wire (what the store keeps and a GET echoes back).
                let again = parse_group(&serde_json::to_vec(&ok).unwrap()).unwrap();
                prop_assert_eq!(validate_group(again, name, &cap), Ok(ok));
            }
        }
    }
}

/// The generator is not vacuous: a fixed seed yields both accepted and rejected documents, and
/// rejections for many different reasons.
#[test]
fn the_generator_covers_accepts_and_many_rejections() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha));
    let (mut accepted, mut codes) = (0, BTreeSet::new());
    for _ in 0..3000 {
        let doc = group_doc().new_tree(&mut runner).unwrap().current();
        let cap = Capacity::default();
        match parse_group(&serde_json::to_vec(&doc).unwrap()).and_then(|g| validate_group(g, "grp", &cap)) {
            Ok(_) => accepted += 1,
            Err(e) => {
                codes.insert(e.code);
            }
        }
    }
    assert!(accepted >= 30, "only {accepted} of 3000 documents accepted");
    assert!(codes.len() >= 12, "only these rejections: {codes:?}");
}
