//! Group networking end to end, with the daemon inside a test network namespace.

mod common;

use std::time::Duration;

use common::net::TestNetns;
use common::*;
use serde_json::{json, Value};

fn web(label: Option<&str>, extra_ports: &[Value]) -> Value {
    let mut ports = vec![json!({"port": 80})];
    ports.extend(extra_ports.iter().cloned());
    let mut ip = json!({"type": "Public", "ports": [{"port": 80}]});
    if let Some(l) = label {
        ip["dnsNameLabel"] = json!(l);
    }
    json!({"location": "westus", "properties": {"osType": "Linux", "ipAddress": ip, "containers": [
        {"name": "web", "properties": {"image": image("busybox-httpd:latest"), "ports": ports,
            "command": ["sh", "-c", "httpd -f -p 80 -h /www & httpd -f -p 8081 -h /www & wait"],
            "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.1}}}},
        {"name": "side", "properties": {"image": image("busybox:latest"),
            "command": ["sh", "-c", "sleep 1; while true; do wget -q -O - http://localhost/ > /tmp/got && cat /tmp/got && sleep 3600; sleep 0.2; done"],
            "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.1}}}}
    ]}})
}

fn public_ip(g: &Value) -> String {
    g["properties"]["ipAddress"]["ip"].as_str().unwrap_or_default().to_string()
}

fn fetch(ns: &TestNetns, url: &str) -> Option<String> {
    let (ok, out) = ns.run(&["curl", "-s", "-m", "3", url]);
    ok.then_some(out)
}

fn wait_ip(srv: &TestServer, rg: &str, name: &str) -> Value {
    srv.wait_group(rg, name, "a public ip", Duration::from_secs(60), |g| !public_ip(g).is_empty() && g["properties"]["instanceView"]["state"] == "Running")
}

#[test]
fn public_ips_ports_dns_and_teardown() {
    let ns = TestNetns::enter();
    let before = ns.snapshot();
    let srv = TestServer::start_in_netns(Some((ns.name.clone(), ns.server_args())));
    srv.ensure_rg("net");
    assert_eq!(srv.put_group("net", "a", &web(Some("shop"), &[json!({"port": 8081})])).status, 201);
    assert_eq!(srv.put_group("net", "b", &web(None, &[])).status, 201);
    let a = wait_ip(&srv, "net", "a");
    let b = wait_ip(&srv, "net", "b");
    let (ipa, ipb) = (public_ip(&a), public_ip(&b));
    assert_ne!(ipa, ipb, "two groups on port 80 get two addresses");
    assert!(ipa.starts_with("127.77.") && ipb.starts_with("127.77."));
    assert_eq!(a["properties"]["ipAddress"]["fqdn"], "shop.westus.skiff.test");

    // Both answer on port 80 of their own address.
    for ip in [&ipa, &ipb] {
        let mut got = None;
        for _ in 0..50 {
            got = fetch(&ns, &format!("http://{ip}/"));
            if got.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(got.as_deref(), Some("hello from skiff\n"), "GET http://{ip}/");
    }
    // 8081 is a container port but not in ipAddress.ports: not forwarded.
    assert_eq!(fetch(&ns, &format!("http://{ipa}:8081/")), None, "an unlisted port must not be reachable");
    // The sidecar reached the web container on localhost.
    srv.wait_logs("net", "a", "side", "hello from skiff");

    // DNS: an A answer for the live group, NXDOMAIN after delete.
    let (ok, out) = ns.run(&["dig", "+short", "@127.0.0.1", "shop.westus.skiff.test", "A"]);
    assert!(ok, "dig failed");
    assert_eq!(out.trim(), ipa);

    // Stop/start keeps the address.
    srv.request("POST", &format!("{}/stop?{API}", TestServer::group_path("net", "b")), None);
    srv.wait_state("net", "b", "Stopped");
    srv.request("POST", &format!("{}/start?{API}", TestServer::group_path("net", "b")), None);
    let b2 = wait_ip(&srv, "net", "b");
    assert_eq!(public_ip(&b2), ipb, "the public address survives stop/start");

    let uid = srv.group_uid("net", "a");
    srv.delete_group("net", "a");
    srv.delete_group("net", "b");
    let (_, out) = ns.run(&["dig", "@127.0.0.1", "shop.westus.skiff.test", "A"]);
    assert!(out.contains("NXDOMAIN"), "deleted name must be NXDOMAIN:\n{out}");
    let after = ns.snapshot();
    assert!(!after.contains(&uid), "group {uid} left objects:\n{after}");
    assert!(!after.contains("skv") && !after.contains(&ipa) && !after.contains("g-"), "leftovers after delete:\n{after}\nbefore:\n{before}");
    assert!(!after.contains("jump"), "pubips map still has entries:\n{after}");
}

fn group_netns(srv: &TestServer, rg: &str, name: &str) -> std::path::PathBuf {
    srv.run_dir.join("netns").join(srv.group_uid(rg, name))
}

fn any_ip(g: &Value) -> String {
    g["properties"]["ipAddress"]["ip"].as_str().unwrap_or_default().to_string()
}

/// A private group (own address only) in `subnet` (a subnet resource id) or on the default bridge.
fn private(image_name: &str, command: &[&str], subnet: Option<&str>) -> Value {
    let mut g = json!({"location": "westus", "properties": {"osType": "Linux",
        "ipAddress": {"type": "Private", "ports": [{"port": 80}]},
        "containers": [{"name": "main", "properties": {"image": image(image_name), "command": command, "ports": [{"port": 80}],
            "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.1}}}}]}});
    if let Some(id) = subnet {
        g["properties"]["subnetIds"] = json!([{"id": id}]);
    }
    g
}

fn wait_running_ip(srv: &TestServer, rg: &str, name: &str) -> String {
    let g = srv.wait_group(rg, name, "Running with an address", Duration::from_secs(90), |g| !any_ip(g).is_empty() && g["properties"]["instanceView"]["state"] == "Running");
    any_ip(&g)
}

/// `curl` from inside a group's network; `Some(body)` when it answered.
fn curl_from(ns: &TestNetns, from: &std::path::Path, url: &str) -> Option<String> {
    let (ok, out) = ns.in_group(from, &["curl", "-s", "-m", "2", url]);
    ok.then_some(out)
}

fn wait_file_contains(path: &std::path::Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if s.contains(needle) || std::time::Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const HTTPD: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/www"];
const SLEEP: &[&str] = &["sleep", "3600"];

#[test]
fn vnets_subnets_isolation_spoofing_and_host_services() {
    let ns = TestNetns::enter();
    let srv = TestServer::start_in_netns(Some((ns.name.clone(), ns.server_args())));
    srv.ensure_rg("vn");
    let vnet_path = format!("/subscriptions/{SUB}/resourceGroups/vn/providers/Microsoft.Network/virtualNetworks/v1");
    let q = "api-version=2023-09-01";

    // The CLI creates a virtual network with one subnet; the API adds a second.
    let out = srv.cli_ok(&["network", "vnet", "create", "-g", "vn", "-n", "v1", "--address-prefixes", "10.91.0.0/16", "--subnet-name", "s1", "--subnet-prefix", "10.91.1.0/24", "-o", "json"]);
    let v: Value = serde_json::from_str(&out).expect("vnet json");
    let s1 = v["properties"]["subnets"][0]["id"].as_str().expect("subnet id").to_string();
    assert!(s1.ends_with("/virtualNetworks/v1/subnets/s1"), "{s1}");
    let r = srv.request("PUT", &format!("{vnet_path}/subnets/s2?{q}"), Some(&json!({"properties": {"addressPrefix": "10.91.2.0/24"}})));
    assert_eq!(r.status, 201, "{}", r.text);
    let s2 = r.body["id"].as_str().expect("id").to_string();
    // Validation: outside the space, overlapping a sibling, overlapping another vnet or the host's CIDR.
    for (path, body, code) in [
        (format!("{vnet_path}/subnets/bad"), json!({"properties": {"addressPrefix": "10.92.0.0/24"}}), "NetcfgSubnetRangeOutsideVnet"),
        (format!("{vnet_path}/subnets/bad"), json!({"properties": {"addressPrefix": "10.91.1.128/25"}}), "NetcfgSubnetRangesOverlap"),
        (format!("{vnet_path}/subnets/bad"), json!({"properties": {"addressPrefix": "10.91.3.0"}}), "InvalidAddressPrefixFormat"),
        (vnet_path.replace("/v1", "/v2"), json!({"properties": {"addressSpace": {"addressPrefixes": ["10.91.128.0/17"]}}}), "NetcfgVnetAddressSpaceOverlaps"),
        (vnet_path.replace("/v1", "/v3"), json!({"properties": {"addressSpace": {"addressPrefixes": ["10.77.9.0/24"]}}}), "NetcfgVnetAddressSpaceOverlaps"),
    ] {
        let r = srv.request("PUT", &format!("{path}?{q}"), Some(&body));
        assert_eq!((r.status, r.code()), (400, code.to_string()), "{path}: {}", r.text);
    }
    let shown = srv.cli_ok(&["network", "vnet", "show", "-g", "vn", "-n", "v1", "-o", "tsv"]);
    assert!(shown.contains("s1\t10.91.1.0/24") && shown.contains("s2\t10.91.2.0/24"), "{shown}");

    // A host service listening on every address of the daemon's namespace.
    let host_svc = std::net::TcpListener::bind("0.0.0.0:0").expect("host service");
    let svc_port = host_svc.local_addr().expect("addr").port();
    host_svc.set_nonblocking(true).expect("nonblocking");

    // From inside a container: the bridge gateways (host service and API port) must not answer.
    let probe = format!(
        "for t in 10.77.0.1:{svc_port} 10.77.0.1:{api} 10.91.1.1:{svc_port}; do if nc -w 2 ${{t%:*}} ${{t#*:}} </dev/null; then echo REACHED $t; else echo BLOCKED $t; fi; done; echo PROBED; sleep 3600",
        api = srv.port
    );
    assert_eq!(srv.put_group("vn", "a1", &private("busybox-httpd:latest", HTTPD, Some(&s1))).status, 201);
    assert_eq!(srv.put_group("vn", "a2", &private("busybox:latest", SLEEP, Some(&s1))).status, 201);
    assert_eq!(srv.put_group("vn", "b1", &private("busybox:latest", SLEEP, Some(&s2))).status, 201);
    assert_eq!(srv.put_group("vn", "d1", &private("busybox-httpd:latest", HTTPD, None)).status, 201);
    assert_eq!(srv.put_group("vn", "d2", &private("busybox:latest", &["sh", "-c", &probe], None)).status, 201);
    let a1 = wait_running_ip(&srv, "vn", "a1");
    let a2 = wait_running_ip(&srv, "vn", "a2");
    wait_running_ip(&srv, "vn", "b1");
    let d1 = wait_running_ip(&srv, "vn", "d1");
    assert!(a1.starts_with("10.91.1.") && a2.starts_with("10.91.1.") && d1.starts_with("10.77."), "{a1} {a2} {d1}");
    let (na2, nb1, nd2) = (group_netns(&srv, "vn", "a2"), group_netns(&srv, "vn", "b1"), group_netns(&srv, "vn", "d2"));

    // Same subnet reaches; other subnets, default-bridge groups and other groups do not.
    let mut same = None;
    for _ in 0..50 {
        same = curl_from(&ns, &na2, &format!("http://{a1}/"));
        if same.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(same.as_deref(), Some("hello from skiff\n"), "same-subnet reachability");
    assert_eq!(curl_from(&ns, &nb1, &format!("http://{a1}/")), None, "cross-subnet must be isolated");
    assert_eq!(curl_from(&ns, &nd2, &format!("http://{a1}/")), None, "a default-bridge group must not reach a subnet");
    assert_eq!(curl_from(&ns, &nd2, &format!("http://{d1}/")), None, "cross-group on the default bridge must be isolated");
    assert_eq!(curl_from(&ns, &na2, &format!("http://{d1}/")), None, "a subnet group must not reach a default-bridge group");
    // The host itself still reaches d1's private address (sanity: d1 serves).
    assert_eq!(fetch(&ns, &format!("http://{d1}/")).as_deref(), Some("hello from skiff\n"));

    // Host services: blocked from the container, nothing accepted on the host side.
    let logs = srv.wait_logs("vn", "d2", "main", "PROBED");
    assert!(!logs.contains("REACHED") && logs.matches("BLOCKED").count() == 3, "a group reached the host:\n{logs}");
    assert!(host_svc.accept().is_err(), "the host service accepted a connection from a group");

    // Anti-spoofing: a2 (given CAP_NET_ADMIN powers through nsenter) adds a second address and
    // sends from it; a1 must receive only the datagram with a2's own source.
    let got = std::env::temp_dir().join(format!("skf-udp-{}", std::process::id()));
    let _ = std::fs::remove_file(&got);
    let mut listener = ns.udp_listen(&group_netns(&srv, "vn", "a1"), 9000, &got);
    assert!(ns.in_group(&na2, &["ip", "addr", "add", "10.91.1.200/24", "dev", "eth0"]).0, "adding the spoofed address");
    ns.udp_send(Some(&na2), Some("10.91.1.200"), &a1, 9000, "SPOOFED");
    ns.udp_send(Some(&na2), Some(&a2), &a1, 9000, "REAL");
    let seen = wait_file_contains(&got, "REAL");
    let _ = listener.kill();
    let _ = listener.wait();
    let _ = std::fs::remove_file(&got);
    assert!(seen.contains(&format!("REAL from {a2}")), "the real datagram must arrive: {seen:?}");
    assert!(!seen.contains("SPOOFED"), "a spoofed source address must be dropped: {seen:?}");

    // A subnet in use cannot go; once its groups are gone it can.
    let r = srv.request("DELETE", &format!("{vnet_path}/subnets/s1?{q}"), None);
    assert_eq!((r.status, r.code()), (409, "InUseSubnetCannotBeDeleted".to_string()), "{}", r.text);
    for g in ["a1", "a2", "b1", "d1", "d2"] {
        srv.delete_group("vn", g);
    }
    assert_eq!(srv.request("DELETE", &format!("{vnet_path}/subnets/s1?{q}"), None).status, 200);
    assert_eq!(srv.request("GET", &format!("{vnet_path}/subnets/s1?{q}"), None).status, 404);
    srv.cli_ok(&["network", "vnet", "delete", "-g", "vn", "-n", "v1"]);
    assert_eq!(srv.request("GET", &format!("{vnet_path}?{q}"), None).status, 404);
    let after = ns.leak_view();
    assert!(!after.contains("skv") || after.matches("skv").count() == after.matches("\"skv*\"").count(), "veths left:\n{after}");
    assert!(!after.contains(" . 10."), "anti-spoofing elements left:\n{after}");
}

fn ipam_keys(srv: &TestServer) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(srv.data_dir.join("skiff.db"))
        .arg("SELECT CAST(key AS TEXT) FROM kv WHERE CAST(key AS TEXT) LIKE 'ipam/%' OR CAST(key AS TEXT) LIKE 'dns/%'")
        .output()
        .expect("sqlite3");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn veths_of(ns: &TestNetns, uid: &str) -> usize {
    ns.run(&["ip", "-o", "link"]).1.lines().filter(|l| l.contains(&uid[..12])).count()
}

#[test]
fn udp_restart_and_crash_mid_setup_converge() {
    let ns = TestNetns::enter();
    let mut srv = TestServer::start_in_netns(Some((ns.name.clone(), ns.server_args())));
    srv.ensure_rg("ud");
    let baseline = ns.leak_view();

    // UDP: exactly the listed UDP port is forwarded to the group.
    let mut u = simple_group(&image("busybox:latest"), SLEEP);
    u["properties"]["containers"][0]["properties"]["ports"] = json!([{"port": 5353, "protocol": "UDP"}, {"port": 5354, "protocol": "UDP"}]);
    u["properties"]["ipAddress"] = json!({"type": "Public", "ports": [{"port": 5353, "protocol": "UDP"}]});
    assert_eq!(srv.put_group("ud", "u", &u).status, 201);
    let uip = wait_running_ip(&srv, "ud", "u");
    let nu = group_netns(&srv, "ud", "u");
    let got = std::env::temp_dir().join(format!("skf-udp5353-{}", std::process::id()));
    let got2 = std::env::temp_dir().join(format!("skf-udp5354-{}", std::process::id()));
    let _ = (std::fs::remove_file(&got), std::fs::remove_file(&got2));
    let l1 = ns.udp_listen(&nu, 5353, &got);
    let l2 = ns.udp_listen(&nu, 5354, &got2);
    ns.udp_send(None, None, &uip, 5354, "UNLISTED");
    ns.udp_send(None, None, &uip, 5353, "HELLO");
    let seen = wait_file_contains(&got, "HELLO");
    let unlisted = std::fs::read_to_string(&got2).unwrap_or_default();
    for mut l in [l1, l2] {
        let _ = l.kill();
        let _ = l.wait();
    }
    let _ = (std::fs::remove_file(&got), std::fs::remove_file(&got2));
    assert!(seen.contains("HELLO"), "the listed UDP port must be forwarded: {seen:?}");
    assert!(!unlisted.contains("UNLISTED"), "an unlisted UDP port must not be forwarded");

    // kill -9 and respawn: the web group keeps its public address and is still served.
    assert_eq!(srv.put_group("ud", "w", &web(None, &[])).status, 201);
    let w = wait_ip(&srv, "ud", "w");
    let wip = public_ip(&w);
    let wuid = srv.group_uid("ud", "w");
    srv.kill9();
    srv.spawn();
    let w2 = wait_ip(&srv, "ud", "w");
    assert_eq!(public_ip(&w2), wip, "the public address survives a daemon restart");
    assert_eq!(fetch(&ns, &format!("http://{wip}/")).as_deref(), Some("hello from skiff\n"), "still served after the restart");
    assert_eq!(veths_of(&ns, &wuid), 1, "one veth for the adopted group");

    // kill -9 in the middle of a group's network setup (fault injection: the daemon aborts
    // with the veth made and the group side unconfigured), then restart: the group converges.
    srv.kill9();
    std::env::set_var("SKIFF_FAULT_ABORT_IN_NET_SETUP", "1");
    srv.spawn();
    std::env::remove_var("SKIFF_FAULT_ABORT_IN_NET_SETUP");
    let pid = srv.server_pid();
    assert_eq!(srv.put_group("ud", "c", &web(None, &[])).status, 201);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while pid_alive(pid) && std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z")).unwrap_or(false) {
        assert!(std::time::Instant::now() < deadline, "the daemon did not reach the fault point");
        std::thread::sleep(Duration::from_millis(20));
    }
    srv.kill9();
    srv.spawn();
    let c = wait_ip(&srv, "ud", "c");
    let cip = public_ip(&c);
    let cuid = srv.group_uid("ud", "c");
    let mut served = None;
    for _ in 0..50 {
        served = fetch(&ns, &format!("http://{cip}/"));
        if served.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(served.as_deref(), Some("hello from skiff\n"), "the interrupted group is served after the restart");
    assert_eq!(veths_of(&ns, &cuid), 1, "no duplicate veth after convergence");
    assert_eq!(fetch(&ns, &format!("http://{wip}/")).as_deref(), Some("hello from skiff\n"), "the other group is unaffected");

    for g in ["u", "w", "c"] {
        srv.delete_group("ud", g);
    }
    assert_eq!(ns.leak_view(), baseline, "network objects left after delete");
    assert_eq!(ipam_keys(&srv), "", "address or name reservations left after delete");
}

#[test]
fn fifty_groups_created_and_deleted_leak_nothing() {
    const N: usize = 50;
    let ns = TestNetns::enter();
    let srv = TestServer::start_in_netns(Some((ns.name.clone(), ns.server_args())));
    srv.ensure_rg("many");
    let baseline = ns.leak_view();
    for i in 0..N {
        let mut g = simple_group(&image("busybox:latest"), SLEEP);
        g["properties"]["containers"][0]["properties"]["resources"] = json!({"requests": {"cpu": 0.01, "memoryInGB": 0.1}});
        g["properties"]["containers"][0]["properties"]["ports"] = json!([{"port": 80}]);
        // Every other group has a public address too.
        let kind = if i % 2 == 0 { "Public" } else { "Private" };
        g["properties"]["ipAddress"] = json!({"type": kind, "ports": [{"port": 80}], "dnsNameLabel": format!("m{i}")});
        let r = srv.put_group("many", &format!("m{i}"), &g);
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let mut ips = std::collections::HashSet::new();
    for i in 0..N {
        assert!(ips.insert(wait_running_ip(&srv, "many", &format!("m{i}"))), "an address was given twice");
    }
    assert!(!ipam_keys(&srv).is_empty());
    for i in 0..N {
        let r = srv.request("DELETE", &format!("{}?{API}", TestServer::group_path("many", &format!("m{i}"))), None);
        assert!(matches!(r.status, 200 | 202 | 204), "{}", r.text);
    }
    for i in 0..N {
        srv.delete_group("many", &format!("m{i}"));
    }
    assert_eq!(ns.leak_view(), baseline, "network objects left after deleting {N} groups");
    assert_eq!(ipam_keys(&srv), "", "address or name reservations left after deleting {N} groups");
}
