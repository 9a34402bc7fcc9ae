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
