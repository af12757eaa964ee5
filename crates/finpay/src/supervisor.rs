//! The supervisor of `finpay up`: one task per replica that starts the process, probes it, and
//! restarts it when it exits or stops answering, with Kubernetes semantics scaled to seconds.
//!
//! | here                                   | Kubernetes                                          |
//! |----------------------------------------|-----------------------------------------------------|
//! | startup probe `/health/live`, 100 ms, 300 failures (30 s) | `startupProbe` periodSeconds / failureThreshold |
//! | liveness `/health/live`, 1 s, timeout 800 ms, 3 failures -> SIGKILL + restart | `livenessProbe` periodSeconds=10 timeoutSeconds=1 failureThreshold=3 |
//! | readiness `/health/ready`, 1 s (100 ms until first ready), 1 failure -> not ready, never killed | `readinessProbe` |
//! | restart backoff 100 ms doubling to 5 s, reset after 10 s up | CrashLoopBackOff 10 s doubling to 300 s, reset after 10 min |
//! | SIGTERM, 10 s grace, then SIGKILL      | `terminationGracePeriodSeconds` = 30                |
//!
//! Exits are seen at once (the task awaits the child), so a `kill -9` costs the backoff (100 ms for a
//! replica that was healthy) plus the start of a process. A frozen process (SIGSTOP, a blocked
//! liveness handler) still accepts TCP connections into its backlog but never answers; the probe's
//! timeout turns that into a failure, and three in a row get it killed and replaced.
//!
//! "Out of rotation" is a verdict the supervisor records (`ready: false` in cluster.json); the
//! routing itself is done by payment's client (outlier ejection over the fixed replica list).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, MissedTickBehavior};

use crate::backoff::{BackoffPolicy, RestartBackoff};
use crate::cluster::{self, ClusterState, ReplicaState};

/// Probe timings. See the module docs for the Kubernetes mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePolicy {
    pub startup_period: Duration,
    pub startup_failure_threshold: u32,
    pub period: Duration,
    pub timeout: Duration,
    pub liveness_failure_threshold: u32,
    pub grace: Duration,
}

impl Default for ProbePolicy {
    fn default() -> Self {
        Self {
            startup_period: Duration::from_millis(100),
            startup_failure_threshold: 300,
            period: Duration::from_secs(1),
            timeout: Duration::from_millis(800),
            liveness_failure_threshold: 3,
            grace: Duration::from_secs(10),
        }
    }
}

/// The cluster state shared by the replica tasks and the state-file writer.
pub struct Shared {
    state: Mutex<ClusterState>,
    changed: Notify,
}

impl Shared {
    pub fn new(state: ClusterState) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(state),
            changed: Notify::new(),
        })
    }

    pub fn snapshot(&self) -> ClusterState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Applies `f` and wakes the writer when anything changed.
    pub fn update(&self, f: impl FnOnce(&mut ClusterState)) {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let before = guard.clone();
        f(&mut guard);
        guard.ready = guard
            .replicas
            .iter()
            .any(|r| r.service == finpay_services::ServiceKind::Payment && r.ready);
        if *guard != before {
            guard.updated_at_ms = cluster::now_ms();
            drop(guard);
            self.changed.notify_one();
        }
    }

    pub fn update_replica(&self, name: &str, f: impl FnOnce(&mut ReplicaState)) {
        self.update(|s| {
            if let Some(r) = s.replicas.iter_mut().find(|r| r.name == name) {
                f(r);
            }
        });
    }
}

/// Keeps `<data_dir>/cluster.json` current: on every change, and once per `tick` so readers can tell
/// a live supervisor from a dead one by `updated_at_ms`. Ends (after a last write) when `stop` fires.
pub async fn write_state_file(
    shared: Arc<Shared>,
    data_dir: PathBuf,
    tick: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = shared.changed.notified() => false,
            _ = interval.tick() => {
                shared.update(|s| s.updated_at_ms = cluster::now_ms());
                false
            }
            _ = stop.wait_for(|v| *v) => true,
        };
        if let Err(e) = cluster::write_atomic(&data_dir, &shared.snapshot()) {
            tracing::warn!(error = format!("{e:#}"), "cannot write cluster state");
        }
        if stopping {
            break;
        }
    }
}

/// How to start one replica.
#[derive(Clone)]
pub struct ReplicaCommand {
    pub name: String,
    pub program: PathBuf,
    /// Arguments of every start.
    pub args: Vec<OsString>,
    /// Arguments that depend on the start's generation (restart count), e.g. the fault seed.
    pub per_generation: Arc<dyn Fn(u32) -> Vec<OsString> + Send + Sync>,
    pub port: u16,
    pub log_path: PathBuf,
}

/// Why a process ended, as recorded in `last_exit`.
enum Ended {
    Exited(String),
    /// Exit status 64: the replica refused its config. The same config would fail again, so the
    /// replica is not restarted (phase `failed`); `finpay up` reports it and stops.
    BadConfig(String),
    Unhealthy(String),
    Stopping,
}

/// Runs one replica until `stop` is set: start, probe, restart with backoff. Bounded: each pass of
/// the loop either waits for the child, a probe verdict or the stop signal.
pub async fn run_replica(
    shared: Arc<Shared>,
    cmd: ReplicaCommand,
    probes: ProbePolicy,
    backoff: BackoffPolicy,
    mut stop: watch::Receiver<bool>,
) {
    let client = match probe_client(probes.timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(replica = %cmd.name, error = format!("{e:#}"), "cannot build probe client");
            return;
        }
    };
    let mut schedule = RestartBackoff::new(backoff);
    let mut generation: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        let ended = match spawn(&cmd, generation) {
            Err(e) => Ended::Exited(format!("spawn failed: {e:#}")),
            Ok(mut child) => {
                let pid = child.id();
                tracing::info!(replica = %cmd.name, pid, generation, "started");
                shared.update_replica(&cmd.name, |r| {
                    r.pid = pid;
                    r.phase = "starting".into();
                    r.live = false;
                    r.ready = false;
                    r.liveness_failures = 0;
                    r.started_at_ms = Some(cluster::now_ms());
                });
                if let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) {
                    tokio::spawn(forward_output(
                        cmd.name.clone(),
                        cmd.port,
                        out,
                        err,
                        cmd.log_path.clone(),
                    ));
                }
                let ended = tokio::select! {
                    status = child.wait() => match status {
                        Ok(s) if s.code() == Some(i32::from(crate::EXIT_CONFIG)) => Ended::BadConfig(s.to_string()),
                        Ok(s) => Ended::Exited(s.to_string()),
                        Err(e) => Ended::Exited(format!("wait failed: {e}")),
                    },
                    reason = probe(&shared, &cmd, &client, probes) => Ended::Unhealthy(reason),
                    _ = stop.wait_for(|v| *v) => Ended::Stopping,
                };
                match ended {
                    Ended::Unhealthy(reason) => {
                        tracing::warn!(replica = %cmd.name, %reason, "killing unhealthy replica");
                        let status = force_kill(&mut child, probes.grace).await;
                        Ended::Unhealthy(format!("killed ({status}): {reason}"))
                    }
                    Ended::Stopping => {
                        shared.update_replica(&cmd.name, |r| r.phase = "stopping".into());
                        let status = terminate(&mut child, probes.grace).await;
                        shared.update_replica(&cmd.name, |r| {
                            r.pid = None;
                            r.phase = "stopped".into();
                            r.live = false;
                            r.ready = false;
                            r.last_exit = Some(status);
                        });
                        break;
                    }
                    Ended::BadConfig(status) => {
                        tracing::error!(replica = %cmd.name, %status, log = %cmd.log_path.display(), "replica refused its config; not restarting");
                        shared.update_replica(&cmd.name, |r| {
                            r.pid = None;
                            r.phase = "failed".into();
                            r.live = false;
                            r.ready = false;
                            r.last_exit = Some(format!("{status} (bad config, not restarted)"));
                        });
                        break;
                    }
                    exited => exited,
                }
            }
        };
        let last_exit = match ended {
            Ended::Exited(s) | Ended::Unhealthy(s) | Ended::BadConfig(s) => s,
            Ended::Stopping => "stopped".to_owned(),
        };
        let delay = schedule.next_delay(started.elapsed());
        tracing::warn!(replica = %cmd.name, %last_exit, delay_ms = delay.as_millis() as u64, "replica ended; restarting");
        shared.update_replica(&cmd.name, |r| {
            r.pid = None;
            r.phase = "backoff".into();
            r.live = false;
            r.ready = false;
            r.last_exit = Some(last_exit);
        });
        let stopping = tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = stop.wait_for(|v| *v) => true,
        };
        if stopping {
            shared.update_replica(&cmd.name, |r| r.phase = "stopped".into());
            break;
        }
        generation = generation.saturating_add(1);
        shared.update_replica(&cmd.name, |r| r.restarts = r.restarts.saturating_add(1));
    }
}

fn probe_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    // No connection reuse: like the kubelet, every probe is a fresh connection, so a stale pooled
    // connection to a previous process can never answer for a new one.
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()?)
}

fn spawn(cmd: &ReplicaCommand, generation: u32) -> anyhow::Result<Child> {
    let mut c = Command::new(&cmd.program);
    c.args(&cmd.args)
        .args((cmd.per_generation)(generation))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Ctrl-C in a terminal goes to the foreground process group; in their own group the
        // children hear it only from the supervisor, in order (payment first).
        .process_group(0)
        .kill_on_drop(true);
    Ok(c.spawn()?)
}

async fn get_ok(client: &reqwest::Client, url: &str) -> bool {
    matches!(client.get(url).send().await, Ok(r) if r.status().is_success())
}

/// Probes one process. Returns only when it should be killed, with the reason; otherwise records
/// `live`/`ready` in the shared state forever (the caller's select ends it).
async fn probe(
    shared: &Shared,
    cmd: &ReplicaCommand,
    client: &reqwest::Client,
    policy: ProbePolicy,
) -> String {
    let live_url = format!("http://127.0.0.1:{}/health/live", cmd.port);
    let ready_url = format!("http://127.0.0.1:{}/health/ready", cmd.port);

    // Startup probe: until the first success, liveness does not count.
    let mut interval = tokio::time::interval(policy.startup_period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        interval.tick().await;
        if get_ok(client, &live_url).await {
            break;
        }
        failures += 1;
        if failures >= policy.startup_failure_threshold {
            return format!("startup probe failed {failures} times");
        }
    }
    shared.update_replica(&cmd.name, |r| {
        r.live = true;
        r.phase = "running".into();
    });

    // Readiness every tick (every `startup_period` until first ready, then every `period`);
    // liveness once per `period`, counted in ticks so timer jitter never skips one.
    let mut ever_ready = false;
    let mut liveness_failures = 0u32;
    let fast_ticks_per_period =
        u32::try_from(policy.period.as_millis() / policy.startup_period.as_millis().max(1))
            .unwrap_or(u32::MAX)
            .max(1);
    let mut ticks = 0u32;
    let mut interval = tokio::time::interval(policy.startup_period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        ticks = ticks.wrapping_add(1);
        let due = ever_ready || ticks.is_multiple_of(fast_ticks_per_period);
        let (ready, live) = if due {
            let (ready, live) = tokio::join!(get_ok(client, &ready_url), get_ok(client, &live_url));
            (ready, Some(live))
        } else {
            (get_ok(client, &ready_url).await, None)
        };
        if let Some(live) = live {
            liveness_failures = if live { 0 } else { liveness_failures + 1 };
        }
        if ready && !ever_ready {
            ever_ready = true;
            interval = tokio::time::interval_at(Instant::now() + policy.period, policy.period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        shared.update_replica(&cmd.name, |r| {
            r.ready = ready;
            r.live = liveness_failures == 0;
            r.liveness_failures = liveness_failures;
        });
        if liveness_failures >= policy.liveness_failure_threshold {
            return format!("liveness probe failed {liveness_failures} times");
        }
    }
}

/// SIGKILL, then reap (bounded).
async fn force_kill(child: &mut Child, bound: Duration) -> String {
    let _ = child.start_kill();
    match tokio::time::timeout(bound, child.wait()).await {
        Ok(Ok(s)) => s.to_string(),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => "did not exit after SIGKILL".to_owned(),
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
pub async fn terminate(child: &mut Child, grace: Duration) -> String {
    // `id()` is None once the child was reaped, so the signal never reaches a recycled pid.
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(s)) => s.to_string(),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => format!(
            "no exit {} s after SIGTERM, {}",
            grace.as_secs(),
            force_kill(child, grace).await
        ),
    }
}

/// Largest log file before it is rotated to `<name>.log.1`.
pub const LOG_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Copies a child's stdout and stderr, line by line, into its log file (rotated at
/// [`LOG_BYTES_MAX`]), and checks the listening line against the planned port.
async fn forward_output(
    name: String,
    port: u16,
    stdout: tokio::process::ChildStdout,
    stderr: tokio::process::ChildStderr,
    log_path: PathBuf,
) {
    let mut out = BufReader::new(stdout).lines();
    let mut err = BufReader::new(stderr).lines();
    let (mut out_open, mut err_open) = (true, true);
    let mut file = LogFile::open(&log_path).await;
    if let Some(f) = file.as_mut() {
        // A marker per start, so a person reading the log sees where each process begins.
        f.write_line(&format!(
            "# finpay up: {name} started at {} (unix ms)",
            cluster::now_ms()
        ))
        .await;
    }
    let mut seen_listening = false;
    while out_open || err_open {
        let line = tokio::select! {
            l = out.next_line(), if out_open => match l {
                Ok(Some(l)) => l,
                _ => { out_open = false; continue; }
            },
            l = err.next_line(), if err_open => match l {
                Ok(Some(l)) => l,
                _ => { err_open = false; continue; }
            },
        };
        if !seen_listening {
            if let Some(addr) = listening_addr(&line) {
                seen_listening = true;
                if !addr.ends_with(&format!(":{port}")) {
                    tracing::warn!(replica = %name, %addr, port, "replica listens on an unexpected address");
                } else {
                    tracing::debug!(replica = %name, %addr, "listening");
                }
            }
        }
        if let Some(f) = file.as_mut() {
            f.write_line(&line).await;
        }
    }
}

/// The `addr` of a `{"event":"listening",...}` line.
pub fn listening_addr(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("event")?.as_str()? != "listening" {
        return None;
    }
    Some(v.get("addr")?.as_str()?.to_owned())
}

struct LogFile {
    path: PathBuf,
    file: tokio::fs::File,
    bytes: u64,
}

impl LogFile {
    async fn open(path: &Path) -> Option<Self> {
        let file = match tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open log file; output dropped");
                return None;
            }
        };
        let bytes = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        Some(Self {
            path: path.to_owned(),
            file,
            bytes,
        })
    }

    async fn write_line(&mut self, line: &str) {
        if self.bytes >= LOG_BYTES_MAX {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            let _ = tokio::fs::rename(&self.path, &rotated).await;
            if let Some(fresh) = LogFile::open(&self.path).await {
                *self = fresh;
            }
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        if self.file.write_all(&buf).await.is_ok() {
            self.bytes += buf.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_is_recognised() {
        assert_eq!(
            listening_addr(
                r#"{"event":"listening","service":"fraud","addr":"127.0.0.1:40123","pid":1}"#
            ),
            Some("127.0.0.1:40123".into())
        );
        assert_eq!(listening_addr(r#"{"event":"other"}"#), None);
        assert_eq!(listening_addr("not json"), None);
    }

    fn state(name: &str) -> ClusterState {
        ClusterState {
            data_dir: PathBuf::from("/x"),
            supervisor_pid: 1,
            phase: "running".into(),
            ready: false,
            payment_url: String::new(),
            started_at_ms: 0,
            updated_at_ms: 0,
            replicas: vec![ReplicaState {
                name: name.into(),
                service: finpay_services::ServiceKind::Payment,
                pid: None,
                port: 1,
                url: String::new(),
                phase: "starting".into(),
                ready: false,
                live: false,
                restarts: 0,
                last_exit: None,
                started_at_ms: None,
                liveness_failures: 0,
            }],
        }
    }

    #[test]
    fn cluster_is_ready_when_payment_is() {
        let shared = Shared::new(state("payment-0"));
        shared.update_replica("payment-0", |r| r.ready = true);
        assert!(shared.snapshot().ready);
        shared.update_replica("payment-0", |r| r.ready = false);
        assert!(!shared.snapshot().ready);
    }

    /// A tiny HTTP server that answers 200 to everything, standing in for a service.
    async fn health_server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            for _ in 0..10_000 {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt as _;
                    let mut buf = [0u8; 1024];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        port
    }

    fn no_args() -> Arc<dyn Fn(u32) -> Vec<OsString> + Send + Sync> {
        Arc::new(|_| Vec::new())
    }

    fn fast_probes() -> ProbePolicy {
        ProbePolicy {
            startup_period: Duration::from_millis(20),
            startup_failure_threshold: 500,
            period: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            liveness_failure_threshold: 3,
            grace: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn an_exiting_child_is_restarted_and_its_exit_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = health_server().await;
        let shared = Shared::new(state("payment-0"));
        let (stop_tx, stop_rx) = watch::channel(false);
        let cmd = ReplicaCommand {
            name: "payment-0".into(),
            program: "sh".into(),
            args: vec!["-c".into(), "echo hello; exit 3".into()],
            per_generation: no_args(),
            port,
            log_path: dir.path().join("p.log"),
        };
        let task = tokio::spawn(run_replica(
            shared.clone(),
            cmd,
            fast_probes(),
            BackoffPolicy {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(20),
                reset_after: Duration::from_secs(60),
            },
            stop_rx,
        ));
        let mut restarts = 0;
        for _ in 0..500 {
            restarts = shared.snapshot().replicas[0].restarts;
            if restarts >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(restarts >= 3, "restarted {restarts} times");
        let snap = shared.snapshot();
        assert_eq!(
            snap.replicas[0].last_exit.as_deref(),
            Some("exit status: 3")
        );
        stop_tx.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("runner stops")
            .expect("runner did not panic");
        assert_eq!(shared.snapshot().replicas[0].phase, "stopped");
        let log = std::fs::read_to_string(dir.path().join("p.log")).expect("log written");
        assert!(log.contains("hello"));
    }

    #[tokio::test]
    async fn a_child_refusing_its_config_is_not_restarted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = Shared::new(state("payment-0"));
        let (_stop_tx, stop_rx) = watch::channel(false);
        let cmd = ReplicaCommand {
            name: "payment-0".into(),
            program: "sh".into(),
            args: vec!["-c".into(), "exit 64".into()],
            per_generation: no_args(),
            port: 1,
            log_path: dir.path().join("p.log"),
        };
        tokio::time::timeout(
            Duration::from_secs(10),
            run_replica(
                shared.clone(),
                cmd,
                fast_probes(),
                BackoffPolicy::default(),
                stop_rx,
            ),
        )
        .await
        .expect("runner gives up at once");
        let r = &shared.snapshot().replicas[0];
        assert_eq!(r.phase, "failed");
        assert_eq!(r.restarts, 0);
        assert!(r
            .last_exit
            .as_deref()
            .is_some_and(|e| e.contains("bad config")));
    }

    #[tokio::test]
    async fn a_live_child_becomes_ready_and_is_stopped_with_sigterm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = health_server().await;
        let shared = Shared::new(state("payment-0"));
        let (stop_tx, stop_rx) = watch::channel(false);
        let cmd = ReplicaCommand {
            name: "payment-0".into(),
            program: "sleep".into(),
            args: vec!["30".into()],
            per_generation: no_args(),
            port,
            log_path: dir.path().join("p.log"),
        };
        let task = tokio::spawn(run_replica(
            shared.clone(),
            cmd,
            fast_probes(),
            BackoffPolicy::default(),
            stop_rx,
        ));
        let mut ready = false;
        for _ in 0..500 {
            if shared.snapshot().ready {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ready, "never became ready: {:?}", shared.snapshot());
        let pid = shared.snapshot().replicas[0]
            .pid
            .expect("pid while running");
        stop_tx.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("runner stops")
            .expect("runner did not panic");
        let r = &shared.snapshot().replicas[0];
        assert_eq!(r.restarts, 0);
        assert_eq!(r.last_exit.as_deref(), Some("signal: 15 (SIGTERM)"));
        // The process is gone (reaped, so not even a zombie).
        assert!(kill(Pid::from_raw(pid as i32), None).is_err());
    }

    /// Answers 200 to the first `n` connections, then accepts and never answers (a frozen process).
    async fn server_that_freezes_after(n: usize) -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            for i in 0..10_000 {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                if i < n {
                    use tokio::io::AsyncReadExt as _;
                    let mut buf = [0u8; 1024];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                } else {
                    held.push(sock);
                }
            }
        });
        (port, task)
    }

    #[tokio::test]
    async fn a_running_child_that_freezes_is_killed_after_three_liveness_failures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, server) = server_that_freezes_after(20).await;
        let shared = Shared::new(state("payment-0"));
        let (stop_tx, stop_rx) = watch::channel(false);
        let cmd = ReplicaCommand {
            name: "payment-0".into(),
            program: "sleep".into(),
            args: vec!["30".into()],
            per_generation: no_args(),
            port,
            log_path: dir.path().join("p.log"),
        };
        let mut probes = fast_probes();
        probes.timeout = Duration::from_millis(100);
        let task = tokio::spawn(run_replica(
            shared.clone(),
            cmd,
            probes,
            BackoffPolicy::default(),
            stop_rx,
        ));
        let mut was_ready = false;
        let mut last_exit = None;
        for _ in 0..1000 {
            let snap = shared.snapshot();
            was_ready |= snap.replicas[0].ready;
            last_exit = snap.replicas[0].last_exit.clone();
            if last_exit.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(was_ready, "was ready before it froze");
        let last_exit = last_exit.expect("killed when frozen");
        assert!(
            last_exit.contains("liveness probe failed 3 times") && last_exit.contains("SIGKILL"),
            "{last_exit}"
        );
        stop_tx.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("runner stops")
            .expect("runner did not panic");
        server.abort();
    }

    #[tokio::test]
    async fn a_child_that_never_answers_fails_its_startup_probe() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A listener that accepts and never answers, like a SIGSTOPped process.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Shared::new(state("payment-0"));
        let (stop_tx, stop_rx) = watch::channel(false);
        let cmd = ReplicaCommand {
            name: "payment-0".into(),
            program: "sleep".into(),
            args: vec!["30".into()],
            per_generation: no_args(),
            port,
            log_path: dir.path().join("p.log"),
        };
        let mut probes = fast_probes();
        probes.timeout = Duration::from_millis(100);
        probes.startup_failure_threshold = 3;
        let task = tokio::spawn(run_replica(
            shared.clone(),
            cmd,
            probes,
            BackoffPolicy::default(),
            stop_rx,
        ));
        let mut last_exit = None;
        for _ in 0..1000 {
            last_exit = shared.snapshot().replicas[0].last_exit.clone();
            if last_exit.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let last_exit = last_exit.expect("killed for failing its probe");
        assert!(last_exit.contains("SIGKILL"), "{last_exit}");
        assert!(
            last_exit.contains("startup probe failed 3 times"),
            "{last_exit}"
        );
        stop_tx.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("runner stops")
            .expect("runner did not panic");
        drop(listener);
    }
}
