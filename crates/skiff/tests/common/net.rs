//! Networking tests run the daemon inside a network namespace the test creates, so the
//! machine's own interfaces and firewall are never touched. The test thread enters that
//! namespace too (threads and processes it starts inherit it), so every request, `wget` and
//! DNS query goes to addresses inside it. The test registry lives on the host's loopback;
//! a small relay owned by the test carries registry connections from the namespace's
//! 127.0.0.1 to the host's.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::{setns, CloneFlags};

static N: AtomicUsize = AtomicUsize::new(0);

pub struct TestNetns {
    pub name: String,
    host: File,
}

impl TestNetns {
    /// Create `/run/netns/skfn-<pid>-<n>` with `lo` up, move the calling thread into it and
    /// relay the test registry into it.
    pub fn enter() -> TestNetns {
        let name = format!("skfn-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let st = Command::new("ip").args(["netns", "add", &name]).status().expect("ip netns add");
        assert!(st.success(), "ip netns add {name} failed");
        let host = File::open("/proc/thread-self/ns/net").expect("host netns");
        let ns = File::open(format!("/run/netns/{name}")).expect("open test netns");
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("entering the test netns");
        let st = Command::new("ip").args(["link", "set", "lo", "up"]).status().expect("ip link");
        assert!(st.success());
        let t = TestNetns { name, host };
        for reg in [std::env::var("SKIFF_TEST_REGISTRY").ok(), std::env::var("SKIFF_TEST_REGISTRY_AUTH").ok()].into_iter().flatten() {
            t.relay(&reg);
        }
        t
    }

    /// Accept on `addr` inside the namespace; connect to `addr` in the host namespace.
    fn relay(&self, addr: &str) {
        let listener = TcpListener::bind(addr).expect("relay listen");
        let host = self.host.try_clone().expect("dup netns fd");
        let addr = addr.to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let host = host.try_clone().expect("dup");
                let addr = addr.clone();
                std::thread::spawn(move || {
                    // This thread leaves the test namespace only to open the upstream socket.
                    if setns(&host, CloneFlags::CLONE_NEWNET).is_err() {
                        return;
                    }
                    let Ok(up) = TcpStream::connect(&addr) else { return };
                    let (mut a, mut b) = (conn.try_clone().expect("dup"), up.try_clone().expect("dup"));
                    let (mut c, mut d) = (conn, up);
                    let t = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut a, &mut b);
                        let _ = b.shutdown(std::net::Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut d, &mut c);
                    let _ = c.shutdown(std::net::Shutdown::Write);
                    let _ = t.join();
                });
            }
        });
    }

    /// Server arguments for a daemon with networking in this namespace.
    pub fn server_args(&self) -> Vec<String> {
        ["--dns-listen", "127.0.0.1:53", "--dns-zone", "skiff.test"].iter().map(|s| s.to_string()).collect()
    }

    /// Run a command (in the test namespace) and return (success, stdout).
    pub fn run(&self, cmd: &[&str]) -> (bool, String) {
        let out = Command::new(cmd[0]).args(&cmd[1..]).output().expect("run command");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// What a deleted group could leak, independent of link state and MACs: interface names,
    /// IPv4 addresses, and both Skiff nft tables (routing + anti-spoofing).
    pub fn leak_view(&self) -> String {
        let mut s: String = self.run(&["ip", "-o", "link"]).1.lines().filter_map(|l| l.split_whitespace().nth(1)).map(|n| format!("link {n}\n")).collect();
        for cmd in [&["ip", "-o", "-4", "addr"][..], &["nft", "list", "table", "ip", "skiff"], &["nft", "list", "table", "bridge", "skiff"]] {
            s.push_str(&self.run(cmd).1);
        }
        s
    }

    /// Run `cmd` inside a group's network namespace (the same network the group's containers
    /// see); returns (success, stdout).
    pub fn in_group(&self, group_netns: &std::path::Path, cmd: &[&str]) -> (bool, String) {
        let out = Command::new("nsenter").arg(format!("--net={}", group_netns.display())).args(cmd).output().expect("nsenter");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// A UDP listener on `port` inside `group_netns`, appending each datagram to `file`.
    pub fn udp_listen(&self, group_netns: &std::path::Path, port: u16, file: &std::path::Path) -> std::process::Child {
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\nopen('{f}','a').close()\nwhile True:\n  d,a=s.recvfrom(2048)\n  f=open('{f}','a'); f.write(d.decode(errors='replace').strip()+' from '+a[0]+'\\n'); f.close()\n",
            f = file.display()
        );
        let child = Command::new("nsenter").arg(format!("--net={}", group_netns.display())).args(["python3", "-c", &script]).spawn().expect("udp listener");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !file.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child
    }

    /// Send one UDP datagram from `src` (or any address) to `dst:port`, from `netns` if given.
    pub fn udp_send(&self, netns: Option<&std::path::Path>, src: Option<&str>, dst: &str, port: u16, payload: &str) {
        let script = format!("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{}',0))\ns.sendto(b'{payload}',('{dst}',{port}))\n", src.unwrap_or("0.0.0.0"));
        let mut c = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("python3");
                c
            }
            None => Command::new("python3"),
        };
        let st = c.args(["-c", &script]).status().expect("udp send");
        assert!(st.success(), "sending a datagram to {dst}:{port} failed");
    }

    /// Lines of `ip -o link` / `ip -o addr` and the nft table, for leak checks.
    pub fn snapshot(&self) -> String {
        let mut s = String::new();
        for cmd in [&["ip", "-o", "link"][..], &["ip", "-o", "-4", "addr"], &["nft", "list", "table", "ip", "skiff"]] {
            s.push_str(&self.run(cmd).1);
        }
        s
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = setns(&self.host, CloneFlags::CLONE_NEWNET);
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
