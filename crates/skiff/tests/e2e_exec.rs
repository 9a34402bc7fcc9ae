//! End-to-end: exec (interactive through a PTY, piped, with arguments, exit codes), the exec
//! websocket's one-time password, attach, and `logs --follow`.

mod common;

use std::time::Duration;

use common::pod::*;
use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

#[test]
fn interactive_exec_runs_a_shell_on_a_terminal_with_resize_and_exit_code() {
    let s = TestServer::start();
    run_script(&s, "ex", "shell", "sleep 3600", "Always");
    let mut sh = PtyChild::spawn(&s, &["container", "exec", "-g", "ex", "-n", "shell", "--exec-command", "/bin/sh"], 30, 100);
    sh.send("echo $((6*7))\r");
    let at = sh.out.expect("42", T);
    // The remote shell has a terminal of the client's size...
    sh.send("[ -t 0 ] && stty size\r");
    let at = sh.out.expect_from(at, "30 100", T);
    // ...and follows it when the client's window changes (SIGWINCH → resize message).
    sh.resize(40, 120);
    let mut at = at;
    let deadline = std::time::Instant::now() + T;
    loop {
        sh.send("stty size\r");
        std::thread::sleep(Duration::from_millis(200));
        if sh.out.drain(Duration::from_millis(100))[at..].contains("40 120") {
            break;
        }
        at = sh.out.seen.len();
        assert!(std::time::Instant::now() < deadline, "resize never arrived:\n{}", sh.out.seen);
    }
    // The process runs inside the container: its root is the image's, its cgroup the group's.
    sh.send("cat /proc/1/cmdline | tr '\\0' ' '; echo; echo cg:$(grep -c skiff-e2e /proc/self/cgroup)\r");
    sh.out.expect("sleep 3600", T);
    sh.out.expect("cg:", T);
    assert!(!sh.out.seen.contains("cg:0"), "exec'd process is outside the group's cgroups:\n{}", sh.out.seen);
    sh.send("exit 3\r");
    let st = wait_child(&mut sh.child, T);
    assert_eq!(st.code(), Some(3), "output:\n{}", sh.out.seen);
}

#[test]
fn exec_without_a_terminal_pipes_stdin_and_takes_arguments() {
    let s = TestServer::start();
    run_script(&s, "ex", "pipe", "echo marker > /tmp/m; sleep 3600", "Always");
    let (code, out) = exec_piped(&s, "ex", "pipe", "sh -c 'tr a-z A-Z; cat /tmp/m'", Some("hello from stdin\n"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("HELLO FROM STDIN") && out.contains("marker"), "{out}");
    // Arguments (a long-standing az complaint) and the exit code.
    let (code, out) = exec_piped(&s, "ex", "pipe", "ls -la /", None);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l.starts_with('d') && l.ends_with(" proc")), "{out}");
    let (code, _) = exec_piped(&s, "ex", "pipe", "sh -c 'exit 7'", None);
    assert_eq!(code, 7);
    // An unknown executable is an error of the command, not a hang.
    let (code, _) = exec_piped(&s, "ex", "pipe", "/no/such/binary", None);
    assert_ne!(code, 0);
}

#[test]
fn exec_sessions_need_their_one_time_password() {
    let s = TestServer::start();
    run_script(&s, "ex", "pw", "sleep 3600", "Always");
    let path = format!("{}/containers/main/exec?{API}", TestServer::group_path("ex", "pw"));
    let open = || s.request("POST", &path, Some(&json!({"command": "echo hi"})));
    let r = open();
    assert_eq!(r.status, 200, "{}", r.text);
    let uri = r.body["webSocketUri"].as_str().unwrap().to_string();
    assert!(uri.starts_with("ws://127.0.0.1:") && uri.contains("/execstream/sessionId/"), "{uri}");
    let (mut ws, _) = tungstenite::connect(uri.as_str()).expect("connect");
    ws.send(tungstenite::Message::text("wrong")).unwrap();
    let closed = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(f)) => break f,
            Ok(tungstenite::Message::Binary(b)) => panic!("output without the password: {b:?}"),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1008));
    // Single use: the same session cannot be tried again, even with the right password.
    assert!(tungstenite::connect(uri.as_str()).is_err());

    let r = open();
    let uri = r.body["webSocketUri"].as_str().unwrap().to_string();
    let (mut ws, _) = tungstenite::connect(uri.as_str()).expect("connect");
    ws.send(tungstenite::Message::text(r.body["password"].as_str().unwrap())).unwrap();
    let mut out = Vec::new();
    let reason = loop {
        match ws.read() {
            Ok(tungstenite::Message::Binary(b)) => out.extend_from_slice(&b),
            Ok(tungstenite::Message::Close(f)) => break f.map(|f| f.reason.to_string()).unwrap_or_default(),
            Ok(_) => {}
            Err(e) => panic!("session failed: {e}"),
        }
    };
    assert_eq!(String::from_utf8_lossy(&out), "hi\n");
    assert_eq!(reason, r#"{"exitCode":0}"#);
    // ARM errors for what does not exist.
    let r = s.request("POST", &format!("{}/containers/nope/exec?{API}", TestServer::group_path("ex", "pw")), Some(&json!({"command": "sh"})));
    assert_eq!(r.status, 404, "{}", r.text);
}

#[test]
fn attach_streams_new_output_until_the_container_ends() {
    let s = TestServer::start();
    let script = "echo early-line; while [ ! -f /tmp/stop ]; do if [ -f /tmp/go ]; then echo new-output; rm /tmp/go; fi; sleep 0.05; done; echo bye; exit 4";
    run_script(&s, "at", "att", script, "Never");
    s.wait_logs("at", "att", "main", "early-line");
    let (mut child, mut out) = spawn_piped(&s, &["container", "attach", "-g", "at", "-n", "att"], None);
    // Nothing tells us when the websocket is up, so poke until the new line shows.
    let deadline = std::time::Instant::now() + T;
    while !out.drain(Duration::from_millis(300)).contains("new-output") {
        assert!(std::time::Instant::now() < deadline, "attach never showed new output: {}", out.seen);
        exec_piped(&s, "at", "att", "touch /tmp/go", None);
    }
    exec_piped(&s, "at", "att", "touch /tmp/stop", None);
    out.expect("bye", T);
    let st = wait_child(&mut child, T);
    assert!(st.success(), "attach: {st}");
    assert!(!out.seen.contains("early-line"), "attach replayed old output: {}", out.seen);
}

/// A container created with `stdin: true` (Skiff extension) reads what `attach` sends; the
/// attach ends when the container does.
#[test]
fn attach_sends_stdin_to_a_container_that_reads_it() {
    let s = TestServer::start();
    s.ensure_rg("at");
    let mut body = simple_group(&image("busybox:latest"), &["sh", "-c", "echo ready; while read l; do echo got:$l; [ \"$l\" = quit ] && exit 0; done; echo stdin-closed; sleep 3600"]);
    body["properties"]["containers"][0]["properties"]["stdin"] = json!(true);
    body["properties"]["restartPolicy"] = json!("Never");
    assert_eq!(s.put_group("at", "reader", &body).status, 201);
    s.wait_logs("at", "reader", "main", "ready");
    let (mut child, mut out) = spawn_piped(&s, &["container", "attach", "-g", "at", "-n", "reader"], Some("hello\nquit\n"));
    out.expect("got:hello", T);
    out.expect("got:quit", T);
    let st = wait_child(&mut child, T);
    assert!(st.success(), "attach: {st}");
    let g = s.wait_state("at", "reader", "Succeeded");
    assert!(!out.seen.contains("stdin-closed"), "{}", out.seen);
    assert!(s.logs("at", "reader", "main").contains("got:quit"), "{g}");
}

#[test]
fn logs_follow_streams_lines_as_written_and_ends_with_the_container() {
    let s = TestServer::start();
    let script = "echo first; n=0; while [ ! -f /tmp/stop ]; do if [ -f /tmp/go ]; then echo line-$(cat /tmp/go); rm /tmp/go; fi; sleep 0.05; done; echo last";
    run_script(&s, "fl", "fol", script, "Never");
    let (mut child, mut out) = spawn_piped(&s, &["container", "logs", "-g", "fl", "-n", "fol", "--follow"], None);
    out.expect("first\n", T);
    exec_piped(&s, "fl", "fol", "sh -c 'echo 1 > /tmp/go'", None);
    out.expect("line-1\n", T);
    // Still following while the container runs.
    assert!(child.try_wait().unwrap().is_none());
    exec_piped(&s, "fl", "fol", "sh -c 'echo 2 > /tmp/go'", None);
    out.expect("line-2\n", T);
    exec_piped(&s, "fl", "fol", "touch /tmp/stop", None);
    out.expect("last\n", T);
    let st = wait_child(&mut child, T);
    assert!(st.success(), "follow: {st}");
    assert_eq!(out.seen, "first\nline-1\nline-2\nlast\n");
    // The ARM logs endpoint is unchanged.
    assert_eq!(s.logs("fl", "fol", "main"), "first\nline-1\nline-2\nlast\n");
}

#[test]
fn exec_works_over_tls_with_the_servers_ca() {
    let s = TestServer::start_tls();
    run_script(&s, "tls", "ex", "sleep 3600", "Always");
    let r = s.request("POST", &format!("{}/containers/main/exec?{API}", TestServer::group_path("tls", "ex")), Some(&json!({"command": "true"})));
    assert!(r.body["webSocketUri"].as_str().unwrap_or_default().starts_with("wss://"), "{}", r.text);
    let (code, out) = exec_piped(&s, "tls", "ex", "sh -c 'echo over-tls; exit 5'", None);
    assert_eq!((code, out.as_str()), (5, "over-tls\n"));
}
