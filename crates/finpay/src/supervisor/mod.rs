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

mod output;
mod probe;
mod process;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::process::Child;
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, MissedTickBehavior};

use crate::backoff::{BackoffPolicy, RestartBackoff};
use crate::cluster::{self, ClusterState, ReplicaState};
pub use output::{listening_addr, LOG_BYTES_MAX};
pub use probe::ProbePolicy;
pub use process::terminate;

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
    /// Arguments that depend on the start's generation (restart count), e.g. the fault seed, or on
    /// the cluster at the moment of the start (payment's dependency URLs).
    pub per_generation: Arc<dyn Fn(u32) -> Vec<OsString> + Send + Sync>,
    /// Environment variables of every start (the database URL, kept out of files).
    pub env: Vec<(String, String)>,
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
    let client = match probe::probe_client(probes.timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(replica = %cmd.name, error = format!("{e:#}"), "cannot build probe client");
            return;
        }
    };
    let mut schedule = RestartBackoff::new(backoff);
    let mut generation: u32 = 0;
    while !*stop.borrow() {
        let started = Instant::now();
        let last_exit = match run_once(&shared, &cmd, &client, probes, generation, &mut stop).await
        {
            Ended::Exited(s) | Ended::Unhealthy(s) => s,
            // Stopped on purpose, or refused its config (the same config would fail again).
            Ended::Stopping | Ended::BadConfig(_) => return,
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
            return;
        }
        generation = generation.saturating_add(1);
        shared.update_replica(&cmd.name, |r| r.restarts = r.restarts.saturating_add(1));
    }
}

/// One process of the replica, from its start to its end. A stopped or refused replica has its
/// final state recorded here.
async fn run_once(
    shared: &Shared,
    cmd: &ReplicaCommand,
    client: &reqwest::Client,
    probes: ProbePolicy,
    generation: u32,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let mut child = match process::spawn(cmd, generation) {
        Err(e) => return Ended::Exited(format!("spawn failed: {e:#}")),
        Ok(child) => child,
    };
    started(shared, cmd, &mut child, generation);
    let ended = tokio::select! {
        status = child.wait() => match status {
            Ok(s) if s.code() == Some(i32::from(crate::EXIT_CONFIG)) => Ended::BadConfig(s.to_string()),
            Ok(s) => Ended::Exited(s.to_string()),
            Err(e) => Ended::Exited(format!("wait failed: {e}")),
        },
        reason = probe::probe(shared, cmd, client, probes) => Ended::Unhealthy(reason),
        _ = stop.wait_for(|v| *v) => Ended::Stopping,
    };
    match ended {
        Ended::Unhealthy(reason) => {
            tracing::warn!(replica = %cmd.name, %reason, "killing unhealthy replica");
            let status = process::force_kill(&mut child, probes.grace).await;
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
            Ended::Stopping
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
            Ended::BadConfig(status)
        }
        exited => exited,
    }
}

/// Records a freshly started process and starts copying its output into its log.
fn started(shared: &Shared, cmd: &ReplicaCommand, child: &mut Child, generation: u32) {
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
        tokio::spawn(output::forward_output(
            cmd.name.clone(),
            cmd.port,
            out,
            err,
            cmd.log_path.clone(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    use tokio::io::AsyncWriteExt as _;

    fn state(name: &str) -> ClusterState {
        ClusterState {
            data_dir: PathBuf::from("/x"),
            supervisor_pid: 1,
            phase: "running".into(),
            ready: false,
            payment_url: String::new(),
            control_url: None,
            prometheus_url: None,
            admin_token: String::new(),
            storage: crate::storage::StorageInfo::default(),
            started_at_ms: 0,
            updated_at_ms: 0,
            replicas: vec![ReplicaState {
                name: name.into(),
                service: finpay_services::ServiceKind::Payment,
                pid: None,
                port: 1,
                url: String::new(),
                admin_url: String::new(),
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
            env: Vec::new(),
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
            env: Vec::new(),
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
            env: Vec::new(),
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
            env: Vec::new(),
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
            env: Vec::new(),
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
