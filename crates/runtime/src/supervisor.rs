//! The per-group supervisor process: owns the containers of one group, their
//! logs and restart policy, and outlives the daemon.
//!
//! Single-threaded (tokio `current_thread`). It is a child subreaper, so the
//! container inits that `crun run -d` leaves behind become its children and are
//! reaped here with `waitpid(-1)`; the only other children are short blocking
//! `crun` invocations, which std waits for by pid while the loop is not running.
//!
//! When every container has terminated and none will restart, the supervisor
//! stays alive (a few hundred KB) so `status` — and later `exec` — keep working;
//! the daemon ends it with `stop`. `status.json` is the durable record.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::bundle::{self, BundleContext};
use crate::cgroup::{self, Hierarchy};
use crate::logs::{LineSplitter, LogWriter, Stream};
use crate::exec::AttachEvent;
use crate::oci_runtime::OciRuntime;
use crate::plan::{ContainerPlan, GroupPlan, CTL_SOCKET, STATUS_FILE, SUPERVISOR_LOG};
use crate::protocol::{Reply, Request};
use crate::restart::{self, Backoff};
use crate::status::{ContainerState, ContainerStatus, EventType, GroupState, GroupStatus, State};

/// Environment variable carrying the readiness pipe's fd number.
pub const READY_FD_ENV: &str = "SKIFF_SUPERVISOR_READY_FD";
/// When set to `1`, the supervisor forks once more and the first process exits
/// (double fork: the supervisor is reparented away from the daemon).
pub const DETACH_ENV: &str = "SKIFF_SUPERVISOR_DETACH";

/// Exit code used for a container the runtime failed to start.
pub const START_FAILURE_EXIT_CODE: i32 = 128;

/// Errors that prevent the supervisor from starting.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// cannot read the group plan
    #[error("cannot read the group plan in {0}")]
    Plan(PathBuf, #[source] std::io::Error),
    /// cannot create the group network namespace
    #[error("cannot create the network namespace {0}")]
    Netns(PathBuf, #[source] std::io::Error),
    /// cannot set up the group cgroups
    #[error("cannot set up the group cgroups")]
    Cgroup(#[source] std::io::Error),
    /// cannot listen on the control socket
    #[error("cannot listen on {0}")]
    Listen(PathBuf, #[source] std::io::Error),
    /// process setup failed
    #[error("supervisor setup failed")]
    Setup(#[source] std::io::Error),
}

/// Entry point of `skiff supervisor --group-dir DIR`. Returns the process exit code.
pub fn supervisor_main(dir: &Path) -> i32 {
    let ready = take_ready_fd();
    if std::env::var_os(DETACH_ENV).is_some() {
        std::env::remove_var(DETACH_ENV);
        match crate::sys::fork() {
            Ok(crate::sys::Forked::Parent(_)) => crate::sys::exit_now(0),
            Ok(crate::sys::Forked::Child) => {}
            Err(e) => {
                report_ready(ready, Err(&format!("fork: {e}")));
                return 1;
            }
        }
    }
    match prepare(dir) {
        Ok(sup) => run(sup, ready),
        Err(e) => {
            let msg = error_chain(&e);
            eprintln!("supervisor: {msg}");
            report_ready(ready, Err(&msg));
            1
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn take_ready_fd() -> Option<OwnedFd> {
    let fd: i32 = std::env::var(READY_FD_ENV).ok()?.parse().ok()?;
    std::env::remove_var(READY_FD_ENV);
    // A copy above the standard descriptors, close-on-exec so nothing we start inherits it:
    // the inherited number is stdout, which `redirect_stdio` points at the log next.
    // SAFETY: the fd number was passed to us by spawn_supervisor and is open.
    let inherited = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let copy = nix::fcntl::fcntl(inherited, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).ok()?;
    if fd > 2 {
        // SAFETY: the inherited descriptor is ours and no longer needed.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    // SAFETY: `copy` is a fresh descriptor we own.
    Some(unsafe { OwnedFd::from_raw_fd(copy) })
}

fn report_ready(fd: Option<OwnedFd>, result: Result<u32, &str>) {
    if let Some(fd) = fd {
        let mut f = std::fs::File::from(fd);
        let line = match result {
            Ok(pid) => format!("ready {pid}\n"),
            Err(msg) => format!("error {}\n", msg.replace('\n', " ")),
        };
        let _ = f.write_all(line.as_bytes());
    }
}

/// State prepared before the async runtime starts.
struct Prepared {
    dir: PathBuf,
    plan: GroupPlan,
    hs: Vec<Hierarchy>,
    listener: std::os::unix::net::UnixListener,
}

fn prepare(dir: &Path) -> Result<Prepared, SupervisorError> {
    let _ = nix::unistd::setsid();
    crate::sys::set_child_subreaper().map_err(SupervisorError::Setup)?;
    redirect_stdio(&dir.join(SUPERVISOR_LOG)).map_err(SupervisorError::Setup)?;
    let plan = GroupPlan::load(dir).map_err(|e| SupervisorError::Plan(dir.to_owned(), e))?;
    if let Err(e) = crate::sealed::install_from_handoff(&plan.runtime.binary) {
        eprintln!("supervisor: not using the daemon's sealed copy of the OCI runtime: {e}");
    }
    crate::netns::ensure_netns(&plan.netns_path)
        .map_err(|e| SupervisorError::Netns(plan.netns_path.clone(), e))?;
    let hs = cgroup::hierarchies().map_err(SupervisorError::Cgroup)?;
    cgroup::setup_group(&hs, &plan).map_err(SupervisorError::Cgroup)?;
    std::fs::create_dir_all(&plan.runtime.root).map_err(SupervisorError::Setup)?;
    let sock = dir.join(CTL_SOCKET);
    let _ = std::fs::remove_file(&sock);
    let listener = std::os::unix::net::UnixListener::bind(&sock)
        .map_err(|e| SupervisorError::Listen(sock.clone(), e))?;
    listener
        .set_nonblocking(true)
        .map_err(SupervisorError::Setup)?;
    Ok(Prepared {
        dir: dir.to_owned(),
        plan,
        hs,
        listener,
    })
}

fn redirect_stdio(log: &Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&f)?;
    nix::unistd::dup2_stderr(&f)?;
    Ok(())
}

fn run(p: Prepared, ready: Option<OwnedFd>) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report_ready(ready, Err(&format!("tokio runtime: {e}")));
            return 1;
        }
    };
    rt.block_on(async move {
        let mut sup = match Supervisor::new(p) {
            Ok(s) => s,
            Err(e) => {
                report_ready(ready, Err(&e.to_string()));
                return 1;
            }
        };
        report_ready(ready, Ok(std::process::id()));
        sup.main_loop().await
    })
}

enum Msg {
    Stop {
        grace: Duration,
        reply: Option<oneshot::Sender<(Reply, oneshot::Sender<()>)>>,
    },
    RestartDue {
        index: usize,
        generation: u64,
    },
    /// One probe result of app container `index` in its run `generation`.
    ProbeResult {
        index: usize,
        generation: u64,
        kind: crate::probe::ProbeKind,
        result: Result<(), String>,
    },
    /// Back-off of the failed init container `index` is over.
    InitRestartDue {
        index: usize,
        generation: u64,
    },
    /// The agent released a held start.
    Release,
    /// Start an exec; the reply carries its I/O and a receiver of its exit code.
    Exec {
        container: String,
        command: Vec<String>,
        tty: Option<(u16, u16)>,
        /// Where crun writes the pid of the exec'd process (probes: to kill it on timeout).
        pid_file: Option<PathBuf>,
        reply: oneshot::Sender<Result<(crate::exec::Started, oneshot::Receiver<i32>), String>>,
    },
}

/// What `attach` reaches of each container, by name: its output, and its stdin if it has one.
type Attachers = Arc<std::collections::HashMap<String, (broadcast::Sender<AttachEvent>, Option<crate::exec::StdinHub>)>>;

struct Ctr {
    plan: ContainerPlan,
    id: String,
    bundle: PathBuf,
    pid: Option<u32>,
    started: Option<Instant>,
    backoff: Backoff,
    /// Bumped on every exit; a restart timer with an old value is stale.
    generation: u64,
    restart_pending: bool,
    log: Arc<Mutex<LogWriter>>,
    events: broadcast::Sender<AttachEvent>,
    /// The write end of the current run's stdin pipe (`plan.stdin` only).
    stdin: Option<crate::exec::StdinHub>,
    /// Probe tasks of the current run (aborted when it ends) and their bookkeeping.
    probes: Vec<tokio::task::AbortHandle>,
    liveness: crate::probe::ProbeState,
    readiness: crate::probe::ProbeState,
}

struct Supervisor {
    dir: PathBuf,
    plan: GroupPlan,
    hs: Vec<Hierarchy>,
    rt: OciRuntime,
    ctrs: Vec<Ctr>,
    status: GroupStatus,
    status_tx: watch::Sender<Arc<str>>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    sigchld: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
    stopping: bool,
    /// Exit-code receivers of running `crun exec`s, by pid (the reaper owns `waitpid`).
    exec_waiters: std::collections::HashMap<u32, oneshot::Sender<i32>>,
    /// Init containers, and the index of the one to run next (`inits.len()`: all done).
    inits: Vec<Ctr>,
    init_next: usize,
}

impl Supervisor {
    fn new(p: Prepared) -> std::io::Result<Supervisor> {
        // Register SIGCHLD before any container starts.
        let sigchld = signal(SignalKind::child())?;
        let sigterm = signal(SignalKind::terminate())?;
        let ctx = BundleContext::detect(&p.plan);
        // Init containers only need a short event channel: nothing attaches to them for long.
        let new_ctr = |c: &ContainerPlan, events: usize| -> std::io::Result<Ctr> {
            let bundle = bundle::write_bundle(&p.dir, &p.plan, c, &ctx)?;
            let log = LogWriter::open(crate::logs::log_path(&p.dir, &c.name), p.plan.log_max_bytes)?;
            Ok(Ctr {
                plan: c.clone(),
                id: p.plan.container_id(&c.name),
                bundle,
                pid: None,
                started: None,
                backoff: Backoff::default(),
                generation: 0,
                restart_pending: false,
                log: Arc::new(Mutex::new(log)),
                events: broadcast::channel(events).0,
                stdin: c.stdin.then(crate::exec::StdinHub::default),
                probes: Vec::new(),
                liveness: Default::default(),
                readiness: Default::default(),
            })
        };
        let inits = p.plan.init_containers.iter().map(|c| new_ctr(c, 16)).collect::<std::io::Result<Vec<_>>>()?;
        let mut ctrs = Vec::new();
        for c in &p.plan.containers {
            ctrs.push(new_ctr(c, 256)?);
        }
        let status = GroupStatus {
            group_id: p.plan.group_id.clone(),
            generation: p.plan.generation,
            supervisor_pid: std::process::id(),
            state: GroupState::Running,
            version: 0,
            updated_at: Timestamp::now(),
            containers: p
                .plan
                .containers
                .iter()
                .map(|c| ContainerStatus::new(&c.name))
                .collect(),
            init_containers: p
                .plan
                .init_containers
                .iter()
                .map(|c| ContainerStatus::new(&c.name))
                .collect(),
            init_failed: false,
            held: p.plan.hold,
        };
        let (status_tx, _) = watch::channel(Arc::<str>::from(""));
        let (tx, rx) = mpsc::unbounded_channel();
        let listener = UnixListener::from_std(p.listener)?;
        let attachers: Attachers = Arc::new(
            ctrs.iter()
                .map(|c| (c.plan.name.clone(), (c.events.clone(), c.stdin.clone())))
                .collect(),
        );
        tokio::spawn(accept_loop(listener, status_tx.subscribe(), tx.clone(), attachers));
        let mut sup = Supervisor {
            dir: p.dir,
            rt: OciRuntime::new(&p.plan.runtime),
            plan: p.plan,
            hs: p.hs,
            ctrs,
            status,
            status_tx,
            tx,
            rx,
            sigchld,
            sigterm,
            stopping: false,
            exec_waiters: Default::default(),
            inits,
            init_next: 0,
        };
        sup.publish();
        Ok(sup)
    }

    /// Recompute the group state, bump the version, write `status.json` and
    /// wake every watcher.
    fn publish(&mut self) {
        if !matches!(
            self.status.state,
            GroupState::Stopping | GroupState::Stopped
        ) {
            let done = self
                .ctrs
                .iter()
                .all(|c| c.pid.is_none() && !c.restart_pending)
                && self
                    .status
                    .containers
                    .iter()
                    .all(|c| c.current_state.state == State::Terminated);
            self.status.state = if self.status.init_failed {
                GroupState::Failed
            } else if !done {
                GroupState::Running
            } else if self
                .status
                .containers
                .iter()
                .all(|c| c.current_state.exit_code == Some(0))
            {
                GroupState::Succeeded
            } else {
                GroupState::Failed
            };
        }
        self.status.version += 1;
        self.status.updated_at = Timestamp::now();
        match serde_json::to_string(&self.status) {
            Ok(line) => {
                if let Err(e) =
                    crate::util::write_atomic(&self.dir.join(STATUS_FILE), line.as_bytes())
                {
                    eprintln!("supervisor: writing status: {e}");
                }
                self.status_tx.send_replace(Arc::from(line));
            }
            Err(e) => eprintln!("supervisor: serializing status: {e}"),
        }
    }

    async fn main_loop(&mut self) -> i32 {
        if !self.status.held {
            self.advance_inits();
        }
        self.publish();
        loop {
            tokio::select! {
                _ = self.sigchld.recv() => self.reap(),
                _ = self.sigterm.recv() => {
                    self.stop(Duration::from_secs(10)).await;
                    return 0;
                }
                Some(msg) = self.rx.recv() => match msg {
                    Msg::RestartDue { index, generation } => {
                        let c = &self.ctrs[index];
                        if !self.stopping && c.restart_pending && c.generation == generation {
                            self.ctrs[index].restart_pending = false;
                            self.status.containers[index].restart_count += 1;
                            self.start(index);
                            self.publish();
                        }
                    }
                    Msg::Stop { grace, reply } => {
                        self.stop(grace).await;
                        if let Some(reply) = reply {
                            let (ack_tx, ack_rx) = oneshot::channel();
                            if reply.send((Reply::ok(), ack_tx)).is_ok() {
                                let _ = tokio::time::timeout(Duration::from_secs(1), ack_rx).await;
                            }
                        }
                        return 0;
                    }
                    Msg::ProbeResult { index, generation, kind, result } => {
                        if self.probe_result(index, generation, kind, result) {
                            self.publish();
                        }
                    }
                    Msg::InitRestartDue { index, generation } => {
                        let c = &self.inits[index];
                        if !self.stopping && c.restart_pending && c.generation == generation {
                            self.inits[index].restart_pending = false;
                            self.status.init_containers[index].restart_count += 1;
                            self.advance_inits();
                            self.publish();
                        }
                    }
                    Msg::Exec { container, command, tty, pid_file, reply } => {
                        let _ = reply.send(self.exec(&container, &command, tty, pid_file.as_deref()));
                    }
                    Msg::Release => {
                        if self.status.held && !self.stopping {
                            self.status.held = false;
                            self.advance_inits();
                            self.publish();
                        }
                    }
                },
            }
        }
    }

    /// Start `crun exec` in a running container and register for its exit code.
    fn exec(
        &mut self,
        container: &str,
        command: &[String],
        tty: Option<(u16, u16)>,
        pid_file: Option<&Path>,
    ) -> Result<(crate::exec::Started, oneshot::Receiver<i32>), String> {
        let c = self
            .ctrs
            .iter()
            .find(|c| c.plan.name == container)
            .ok_or_else(|| format!("no container named '{container}'"))?;
        if c.pid.is_none() || self.stopping {
            return Err(format!("container '{container}' is not running"));
        }
        if command.is_empty() {
            return Err("the command is empty".into());
        }
        let started = crate::exec::spawn(&self.rt, &c.id, &self.dir, command, tty, pid_file)
            .map_err(|e| error_chain(&e))?;
        let (tx, rx) = oneshot::channel();
        self.exec_waiters.insert(started.pid, tx);
        Ok((started, rx))
    }

    /// Start the next init container, or the app containers once every init container has
    /// succeeded; does not publish.
    fn advance_inits(&mut self) {
        if self.stopping {
            return;
        }
        if self.init_next < self.inits.len() {
            let i = self.init_next;
            let now = Timestamp::now();
            let c = &mut self.inits[i];
            let st = &mut self.status.init_containers[i];
            if let Err(msg) = launch(&self.rt, c, st, now) {
                st.add_event("Failed", &msg, EventType::Warning, now);
                c.started = Some(Instant::now());
                self.init_exited(i, START_FAILURE_EXIT_CODE, now);
            }
            return;
        }
        for i in 0..self.ctrs.len() {
            self.start(i);
        }
    }

    /// Record the exit of init container `i`: next one, a restart after back-off (the group's
    /// policy, as for app containers), or the group fails without starting its app containers.
    fn init_exited(&mut self, i: usize, code: i32, now: Timestamp) {
        let c = &mut self.inits[i];
        let st = &mut self.status.init_containers[i];
        c.generation += 1;
        record_exit(&c.plan.name, st, code, now);
        if self.stopping {
            return;
        }
        if code == 0 {
            self.init_next = i + 1;
            self.advance_inits();
            return;
        }
        if !restart::should_restart(self.plan.restart_policy, code) {
            self.status.init_failed = true;
            for app in &mut self.status.containers {
                app.current_state = ContainerState::waiting("Init container failed");
            }
            return;
        }
        let ran_for = c.started.map(|s| s.elapsed()).unwrap_or_default();
        let delay = c.backoff.next_delay(
            ran_for,
            Duration::from_millis(self.plan.backoff_initial_ms),
            Duration::from_millis(self.plan.backoff_max_ms),
        );
        c.restart_pending = true;
        st.add_event("BackOff", "Back-off restarting failed init container", EventType::Warning, now);
        st.transition(ContainerState::waiting("CrashLoopBackOff: Back-off restarting failed init container"));
        let tx = self.tx.clone();
        let (index, generation) = (i, c.generation);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::InitRestartDue { index, generation });
        });
    }

    /// Start container `i` (`crun run -d`); does not publish.
    fn start(&mut self, i: usize) {
        let now = Timestamp::now();
        let c = &mut self.ctrs[i];
        let st = &mut self.status.containers[i];
        if let Err(msg) = launch(&self.rt, c, st, now) {
            st.add_event("Failed", &msg, EventType::Warning, now);
            c.started = Some(Instant::now());
            self.exited(i, START_FAILURE_EXIT_CODE, now);
            return;
        }
        self.start_probes(i);
    }

    /// Spawn the probe loops of app container `i` for its current run.
    fn start_probes(&mut self, i: usize) {
        let c = &mut self.ctrs[i];
        let kinds = [
            (crate::probe::ProbeKind::Liveness, c.plan.liveness_probe.clone()),
            (crate::probe::ProbeKind::Readiness, c.plan.readiness_probe.clone()),
        ];
        for (kind, plan) in kinds {
            let Some(plan) = plan else { continue };
            let ctx = ProbeCtx {
                tx: self.tx.clone(),
                index: i,
                generation: c.generation,
                kind,
                container: c.plan.name.clone(),
                netns: self.plan.netns_path.clone(),
                pid_file: self.dir.join(format!("probe-{}-{}.pid", c.plan.name, kind.as_str())),
                cgroup: format!("/{}", self.plan.container_cgroup(&c.plan.name).trim_start_matches('/')),
            };
            c.probes.push(tokio::spawn(probe_loop(ctx, plan)).abort_handle());
        }
    }

    /// Apply one probe result; returns whether the status changed.
    fn probe_result(
        &mut self,
        i: usize,
        generation: u64,
        kind: crate::probe::ProbeKind,
        result: Result<(), String>,
    ) -> bool {
        let now = Timestamp::now();
        let c = &mut self.ctrs[i];
        if self.stopping || c.generation != generation || c.pid.is_none() {
            return false; // a result of an earlier run
        }
        let st = &mut self.status.containers[i];
        let (plan, state) = match kind {
            crate::probe::ProbeKind::Liveness => (c.plan.liveness_probe.as_ref(), &mut c.liveness),
            crate::probe::ProbeKind::Readiness => (c.plan.readiness_probe.as_ref(), &mut c.readiness),
        };
        let Some(plan) = plan else { return false };
        let verdict = state.record(result.is_ok(), plan);
        let mut changed = false;
        if let Err(msg) = &result {
            st.add_event(
                "Unhealthy",
                &format!("{} probe failed: {msg}", kind.as_str()),
                EventType::Warning,
                now,
            );
            changed = true;
        }
        match (kind, verdict) {
            (crate::probe::ProbeKind::Readiness, Some(ready)) => {
                st.ready = Some(ready);
                if st.current_state.state == State::Running {
                    st.current_state.detail_status = if ready { "Ready".into() } else { "NotReady".into() };
                }
                changed = true;
            }
            (crate::probe::ProbeKind::Liveness, Some(false)) => {
                st.add_event(
                    "Killing",
                    &format!("Container {} failed liveness probe, will be restarted", c.plan.name),
                    EventType::Normal,
                    now,
                );
                // The exit is reaped as usual: the restart policy decides and counts the restart.
                let _ = self.rt.kill(&c.id, "SIGKILL");
                changed = true;
            }
            _ => {}
        }
        changed
    }

    /// Reap every exited child; container inits update the status.
    fn reap(&mut self) {
        let mut changed = false;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    changed |= self.on_pid_exit(pid.as_raw() as u32, code)
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    changed |= self.on_pid_exit(pid.as_raw() as u32, 128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if changed {
            self.publish();
        }
    }

    fn on_pid_exit(&mut self, pid: u32, code: i32) -> bool {
        if let Some(tx) = self.exec_waiters.remove(&pid) {
            let _ = tx.send(code);
            return false;
        }
        if let Some(i) = self.inits.iter().position(|c| c.pid == Some(pid)) {
            self.inits[i].pid = None;
            self.status.init_containers[i].pid = None;
            let _ = self.rt.delete_force(&self.inits[i].id);
            self.init_exited(i, code, Timestamp::now());
            return true;
        }
        let Some(i) = self.ctrs.iter().position(|c| c.pid == Some(pid)) else {
            return false;
        };
        self.ctrs[i].pid = None;
        self.status.containers[i].pid = None;
        // Read the OOM counter before `delete` removes the container's cgroup.
        let rel = self.plan.container_cgroup(&self.ctrs[i].plan.name);
        let oom = code == 137 && cgroup::oom_killed(&self.hs, &rel);
        let _ = self.rt.delete_force(&self.ctrs[i].id);
        let now = Timestamp::now();
        self.exited(i, code, now);
        if oom {
            let st = &mut self.status.containers[i];
            for s in [Some(&mut st.current_state), st.previous_state.as_mut()].into_iter().flatten() {
                if s.state == State::Terminated && s.finish_time == Some(now) {
                    s.detail_status = "OOMKilled".into();
                }
            }
            st.add_event("OOMKilled", &format!("Container {} was killed: out of memory", self.ctrs[i].plan.name), EventType::Warning, now);
        }
        true
    }

    /// Record the exit of container `i` and schedule a restart if the policy says so.
    fn exited(&mut self, i: usize, code: i32, now: Timestamp) {
        let c = &mut self.ctrs[i];
        let st = &mut self.status.containers[i];
        c.generation += 1;
        let _ = c.events.send(AttachEvent::Exited(code));
        for p in c.probes.drain(..) {
            p.abort();
        }
        c.liveness = Default::default();
        c.readiness = Default::default();
        st.ready = None;
        record_exit(&c.plan.name, st, code, now);
        if self.stopping || !restart::should_restart(self.plan.restart_policy, code) {
            return;
        }
        let ran_for = c.started.map(|s| s.elapsed()).unwrap_or_default();
        let delay = c.backoff.next_delay(
            ran_for,
            Duration::from_millis(self.plan.backoff_initial_ms),
            Duration::from_millis(self.plan.backoff_max_ms),
        );
        c.restart_pending = true;
        st.add_event(
            "BackOff",
            "Back-off restarting failed container",
            EventType::Warning,
            now,
        );
        st.transition(ContainerState::waiting(
            "CrashLoopBackOff: Back-off restarting failed container",
        ));
        let tx = self.tx.clone();
        let (index, generation) = (i, c.generation);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::RestartDue { index, generation });
        });
    }

    fn running(&self) -> bool {
        self.ctrs.iter().chain(&self.inits).any(|c| c.pid.is_some())
    }

    /// Wait (reaping) until no container runs or `deadline` passes.
    async fn wait_all_exited(&mut self, deadline: tokio::time::Instant) {
        self.reap();
        while self.running() {
            tokio::select! {
                _ = self.sigchld.recv() => self.reap(),
                _ = tokio::time::sleep_until(deadline) => { self.reap(); break }
            }
        }
    }

    /// SIGTERM, grace, SIGKILL, delete, tear down cgroups and netns.
    async fn stop(&mut self, grace: Duration) {
        self.stopping = true;
        self.status.state = GroupState::Stopping;
        let now = Timestamp::now();
        for i in 0..self.ctrs.len() {
            let c = &mut self.ctrs[i];
            let st = &mut self.status.containers[i];
            if c.pid.is_some() {
                st.add_event(
                    "Killing",
                    &format!("Stopping container {}", c.plan.name),
                    EventType::Normal,
                    now,
                );
                let _ = self.rt.kill(&c.id, "SIGTERM");
            } else if c.restart_pending {
                c.restart_pending = false;
                let prev = st.previous_state.clone();
                st.current_state = ContainerState {
                    state: State::Terminated,
                    start_time: prev.as_ref().and_then(|p| p.start_time),
                    finish_time: prev.as_ref().and_then(|p| p.finish_time),
                    exit_code: prev.as_ref().and_then(|p| p.exit_code),
                    detail_status: "Stopped".into(),
                };
            }
        }
        for c in &self.inits {
            if c.pid.is_some() {
                let _ = self.rt.kill(&c.id, "SIGTERM");
            }
        }
        self.publish();
        self.wait_all_exited(tokio::time::Instant::now() + grace)
            .await;
        if self.running() {
            for c in self.ctrs.iter().chain(&self.inits) {
                if let Some(pid) = c.pid {
                    if self.rt.kill(&c.id, "SIGKILL").is_err() {
                        let _ = nix::sys::signal::kill(
                            Pid::from_raw(pid as i32),
                            nix::sys::signal::SIGKILL,
                        );
                    }
                }
            }
            self.wait_all_exited(tokio::time::Instant::now() + Duration::from_secs(5))
                .await;
        }
        for c in self.ctrs.iter().chain(&self.inits) {
            if let Err(e) = self.rt.delete_force(&c.id) {
                eprintln!("supervisor: {}", error_chain(&e));
            }
        }
        if let Err(e) = cgroup::remove_group(&self.hs, &self.plan) {
            eprintln!("supervisor: removing cgroups: {e}");
        }
        if let Err(e) = crate::netns::remove_netns(&self.plan.netns_path) {
            eprintln!("supervisor: removing netns: {e}");
        }
        let _ = std::fs::remove_file(self.dir.join(CTL_SOCKET));
        self.status.state = GroupState::Stopped;
        self.publish();
    }
}

/// What a probe loop needs to report.
struct ProbeCtx {
    tx: mpsc::UnboundedSender<Msg>,
    index: usize,
    generation: u64,
    kind: crate::probe::ProbeKind,
    container: String,
    netns: PathBuf,
    /// The pid file of this loop's exec probe in flight (one at a time).
    pid_file: PathBuf,
    /// The container's cgroup path: a timed-out probe is killed only while it is in it.
    cgroup: String,
}

/// Run one probe every period (after the initial delay) until aborted.
async fn probe_loop(ctx: ProbeCtx, plan: crate::probe::ProbePlan) {
    tokio::time::sleep(Duration::from_millis(plan.initial_delay_ms)).await;
    let timeout = Duration::from_millis(plan.timeout_ms.max(1));
    loop {
        let result = match &plan.action {
            crate::probe::ProbeAction::Exec { command } => {
                exec_probe(&ctx, command.clone(), timeout).await
            }
            crate::probe::ProbeAction::HttpGet { path, port, scheme, headers } => {
                crate::probe::http_check_async(
                    ctx.netns.clone(),
                    path.clone(),
                    *port,
                    scheme.clone(),
                    headers.clone(),
                    timeout,
                )
                .await
            }
        };
        let msg = Msg::ProbeResult {
            index: ctx.index,
            generation: ctx.generation,
            kind: ctx.kind,
            result,
        };
        if ctx.tx.send(msg).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(plan.period_ms.max(100))).await;
    }
}

/// An exec probe: the command through `crun exec` (as a user exec), output discarded.
async fn exec_probe(ctx: &ProbeCtx, command: Vec<String>, timeout: Duration) -> Result<(), String> {
    let (reply, rx) = oneshot::channel();
    let msg = Msg::Exec { container: ctx.container.clone(), command, tty: None, pid_file: Some(ctx.pid_file.clone()), reply };
    ctx.tx.send(msg).map_err(|_| "the supervisor is stopping".to_string())?;
    let (started, exit) = rx.await.map_err(|_| "the supervisor is stopping".to_string())??;
    if let crate::exec::ExecIo::Pipes { stdin, stdout, stderr } = started.io {
        drop(stdin);
        // Drain the output so a chatty command does not die of SIGPIPE.
        for fd in [stdout, stderr] {
            if let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(fd) {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while matches!(rx.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        }
    }
    let verdict = match tokio::time::timeout(timeout, exit).await {
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(code)) => Err(format!("command exited with code {code}")),
        Ok(Err(_)) => Err("the probe process was lost".to_string()),
        Err(_) => {
            // A probe that hangs is killed, or every period would leave one more behind in
            // the container (crun then exits with it and is reaped as usual).
            let pid = std::fs::read_to_string(&ctx.pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok());
            if let Some(pid) = pid.filter(|p| *p > 1) {
                let _ = crate::sys::kill_in_cgroup(pid, &ctx.cgroup);
            }
            Err(format!("command timed out after {} s", timeout.as_secs_f64()))
        }
    };
    let _ = std::fs::remove_file(&ctx.pid_file);
    verdict
}

/// Start one container (`crun run -d`) with its output copied into its log; records the
/// Created/Started events and the Running state. `Err`: the message of a failed start.
fn launch(rt: &OciRuntime, c: &mut Ctr, st: &mut ContainerStatus, now: Timestamp) -> Result<(), String> {
    let pipes = (|| -> std::io::Result<_> {
        let out = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let err = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok((out, err))
    })();
    let ((out_r, out_w), (err_r, err_w)) =
        pipes.map_err(|e| format!("Error: cannot create pipes: {e}"))?;
    spawn_copier(out_r, Stream::Stdout, c.log.clone(), c.events.clone());
    spawn_copier(err_r, Stream::Stderr, c.log.clone(), c.events.clone());
    // A fresh stdin pipe per run: attach sessions write to the hub, which holds its write end.
    let stdin = match &c.stdin {
        Some(hub) => {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("Error: cannot create the stdin pipe: {e}"))?;
            hub.replace(w);
            Some(r)
        }
        None => None,
    };
    let _ = rt.delete_force(&c.id); // a leftover from an earlier supervisor
    let pid = rt.run_detached(&c.id, &c.bundle, stdin, out_w, err_w).map_err(|e| {
        format!(
            "Error: failed to start container {}: {}",
            c.plan.name,
            error_chain(&e)
        )
    })?;
    c.pid = Some(pid);
    c.started = Some(Instant::now());
    st.pid = Some(pid);
    st.add_event(
        "Created",
        &format!("Created container {}", c.plan.name),
        EventType::Normal,
        now,
    );
    st.add_event(
        "Started",
        &format!("Started container {}", c.plan.name),
        EventType::Normal,
        now,
    );
    st.transition(ContainerState {
        state: State::Running,
        start_time: Some(now),
        finish_time: None,
        exit_code: None,
        detail_status: String::new(),
    });
    Ok(())
}

/// Move a container's status to Terminated with `code` and record the Exited event.
fn record_exit(name: &str, st: &mut ContainerStatus, code: i32, now: Timestamp) {
    let start_time = match st.current_state.state {
        State::Running => st.current_state.start_time,
        _ => Some(now),
    };
    st.transition(ContainerState {
        state: State::Terminated,
        start_time,
        finish_time: Some(now),
        exit_code: Some(code),
        detail_status: if code == 0 {
            "Completed".into()
        } else {
            "Error".into()
        },
    });
    let etype = if code == 0 {
        EventType::Normal
    } else {
        EventType::Warning
    };
    st.add_event(
        "Exited",
        &format!("Container {name} exited with code {code}"),
        etype,
        now,
    );
}

/// Copy one output pipe of a container into its CRI log until EOF.
fn spawn_copier(
    fd: OwnedFd,
    stream: Stream,
    log: Arc<Mutex<LogWriter>>,
    events: broadcast::Sender<AttachEvent>,
) {
    tokio::spawn(async move {
        let raw = fd.as_raw_fd();
        let mut rx = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => rx,
            Err(e) => {
                eprintln!("supervisor: pipe {raw}: {e}");
                return;
            }
        };
        let mut split = LineSplitter::default();
        let mut buf = vec![0u8; 8192];
        let mut emit = |partial: bool, line: &[u8]| {
            if let Ok(mut w) = log.lock() {
                if let Err(e) = w.write_line(stream, partial, line) {
                    eprintln!("supervisor: writing log: {e}");
                }
            }
        };
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    split.feed(&buf[..n], &mut emit);
                    // No subscriber is the normal case, not an error.
                    let _ = events.send(AttachEvent::Data(buf[..n].to_vec()));
                }
            }
        }
        split.finish(&mut emit);
        let _ = events.send(AttachEvent::Closed);
    });
}

async fn accept_loop(
    listener: UnixListener,
    status: watch::Receiver<Arc<str>>,
    tx: mpsc::UnboundedSender<Msg>,
    attachers: Attachers,
) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                tokio::spawn(serve(conn, status.clone(), tx.clone(), attachers.clone()));
            }
            Err(e) => {
                eprintln!("supervisor: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn send_line(w: &mut (impl AsyncWriteExt + Unpin), line: &str) -> std::io::Result<()> {
    w.write_all(line.as_bytes()).await?;
    w.write_all(b"\n").await?;
    w.flush().await
}

async fn serve(
    conn: UnixStream,
    mut status: watch::Receiver<Arc<str>>,
    tx: mpsc::UnboundedSender<Msg>,
    attachers: Attachers,
) {
    let (r, mut w) = conn.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let req = match serde_json::from_str::<Request>(&line) {
            Ok(r) => r,
            Err(e) => {
                let reply = serde_json::to_string(&Reply::error(format!("bad request: {e}")))
                    .unwrap_or_default();
                if send_line(&mut w, &reply).await.is_err() {
                    return;
                }
                continue;
            }
        };
        match req {
            Request::Status => {
                let cur = status.borrow_and_update().clone();
                if send_line(&mut w, &cur).await.is_err() {
                    return;
                }
            }
            Request::Release => {
                if tx.send(Msg::Release).is_err() {
                    return;
                }
                let line = serde_json::to_string(&Reply::ok()).unwrap_or_default();
                if send_line(&mut w, &line).await.is_err() {
                    return;
                }
            }
            Request::Watch => {
                let mut rest = lines.into_inner();
                let mut scratch = [0u8; 256];
                loop {
                    let cur = status.borrow_and_update().clone();
                    if send_line(&mut w, &cur).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        r = status.changed() => if r.is_err() { return },
                        n = rest.read(&mut scratch) => if matches!(n, Ok(0) | Err(_)) { return },
                    }
                }
            }
            Request::Stop { grace_ms } => {
                let (reply_tx, reply_rx) = oneshot::channel();
                let grace = Duration::from_millis(grace_ms);
                if tx
                    .send(Msg::Stop {
                        grace,
                        reply: Some(reply_tx),
                    })
                    .is_err()
                {
                    return;
                }
                if let Ok((reply, ack)) = reply_rx.await {
                    let line = serde_json::to_string(&reply).unwrap_or_default();
                    let _ = send_line(&mut w, &line).await;
                    let _ = ack.send(());
                }
                return;
            }
            Request::Exec { container, command, tty, rows, cols } => {
                let (reply_tx, reply_rx) = oneshot::channel();
                let tty = tty.then_some((rows.max(1), cols.max(1)));
                let msg = Msg::Exec { container, command, tty, pid_file: None, reply: reply_tx };
                if tx.send(msg).is_err() {
                    return;
                }
                let Ok(res) = reply_rx.await else { return };
                match res {
                    Ok((started, exit)) => {
                        let line = serde_json::to_string(&Reply::ok()).unwrap_or_default();
                        if send_line(&mut w, &line).await.is_err() {
                            return;
                        }
                        let leftover = lines.get_ref().buffer().to_vec();
                        let r = lines.into_inner().into_inner();
                        let Ok(conn) = r.reunite(w) else { return };
                        crate::exec::relay(conn, leftover, started, exit).await;
                    }
                    Err(e) => {
                        let line = serde_json::to_string(&Reply::error(e)).unwrap_or_default();
                        let _ = send_line(&mut w, &line).await;
                    }
                }
                return;
            }
            Request::Attach { container } => {
                let running = serde_json::from_str::<GroupStatus>(&status.borrow())
                    .ok()
                    .and_then(|st| st.container(&container).map(|c| c.current_state.state == State::Running))
                    .unwrap_or(false);
                let Some((events, stdin)) = attachers.get(&container).filter(|_| running) else {
                    let msg = format!("container '{container}' is not running");
                    let line = serde_json::to_string(&Reply::error(msg)).unwrap_or_default();
                    let _ = send_line(&mut w, &line).await;
                    return;
                };
                let rx = events.subscribe();
                let line = serde_json::to_string(&Reply::ok()).unwrap_or_default();
                if send_line(&mut w, &line).await.is_err() {
                    return;
                }
                let leftover = lines.get_ref().buffer().to_vec();
                let r = lines.into_inner().into_inner();
                let Ok(conn) = r.reunite(w) else { return };
                crate::exec::relay_attach(conn, leftover, rx, stdin.clone()).await;
                return;
            }
        }
    }
}
