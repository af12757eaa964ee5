//! The step executor: runs a schedule's steps at their times against a running cluster (admin
//! faults, signals, proxy toxics), watches each killed or frozen replica until it is back, and
//! restores health.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use finpay_services::http::FaultSettings;
use finpay_services::ServiceKind;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::proxy::FaultProxy;
use super::result::{Heal, Replaced};
use super::schedule::{ms, Action, Schedule, Target, Toxic};
use crate::supervisor::Shared;
use crate::up::Cluster;

/// Longest wait for a killed or frozen replica to be back, before it counts as not healed.
pub const HEAL_WATCH_MAX: Duration = Duration::from_secs(30);
/// Tries of one `PUT /admin/faults`, 200 ms apart (a replica may be restarting).
const PUT_TRIES: usize = 5;

/// What the injector did.
pub struct Injected {
    pub heals: Vec<Heal>,
    pub errors: Vec<String>,
    /// Processes stopped with SIGSTOP (replica name, pid).
    pub frozen: Vec<(String, u32)>,
    /// Outbox rows pending at the first restore step (the notification backlog).
    pub pending_at_restore: Option<u64>,
    /// Replicas replaced as a rolling update does, in order.
    pub replaced: Vec<Replaced>,
    /// Database connections terminated.
    pub db_connections_killed: u64,
}

/// How the harness reaches the cluster's faults: the supervisor's live state (which process is
/// each replica now), the admin API, and the fault proxies (empty when the schedule uses none).
pub struct Injector<'a> {
    pub shared: &'a Arc<Shared>,
    pub http: &'a reqwest::Client,
    pub proxies: &'a BTreeMap<String, FaultProxy>,
}

/// The injector's state between steps.
#[derive(Default)]
struct Progress {
    errors: Vec<String>,
    frozen: Vec<(String, u32)>,
    pending_at_restore: Option<u64>,
    watchers: JoinSet<(usize, Heal)>,
    replaced: Vec<Replaced>,
    db_connections_killed: u64,
    /// Signals sent so far: the heals come back in this order.
    signalled: usize,
}

impl Injector<'_> {
    /// Runs the schedule's steps at their times, `t0` being the start of the load, and keeps
    /// `active` (the live view's list of faults on now) current. Heals of killed or frozen
    /// replicas are watched concurrently, each bounded by [`HEAL_WATCH_MAX`].
    pub async fn run(
        &self,
        schedule: &Schedule,
        t0: Instant,
        active: &Mutex<Vec<String>>,
        cluster: &mut Cluster,
    ) -> Injected {
        let mut p = Progress::default();
        for step in &schedule.steps {
            tokio::time::sleep_until(t0 + step.at).await;
            let at_ms = ms(t0.elapsed());
            if let Some(now) = self.exec(&step.action, at_ms, &mut p, cluster).await {
                *active.lock().unwrap_or_else(PoisonError::into_inner) = now;
            }
        }
        let mut heals: Vec<(usize, Heal)> = Vec::new();
        while let Some(joined) = p.watchers.join_next().await {
            match joined {
                Ok(h) => heals.push(h),
                Err(e) => p.errors.push(format!("heal watcher failed: {e}")),
            }
        }
        heals.sort_by_key(|(i, _)| *i);
        // The last fault clears itself from the live view when its replica is back.
        active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|f| !f.starts_with("SIG"));
        Injected {
            heals: heals.into_iter().map(|(_, h)| h).collect(),
            errors: p.errors,
            frozen: p.frozen,
            pending_at_restore: p.pending_at_restore,
            replaced: p.replaced,
            db_connections_killed: p.db_connections_killed,
        }
    }

    /// Carries out one action; the faults on now when it changed them.
    async fn exec(
        &self,
        action: &Action,
        at_ms: u64,
        p: &mut Progress,
        cluster: &mut Cluster,
    ) -> Option<Vec<String>> {
        match action {
            Action::Replace { replica } => {
                let started = Instant::now();
                match cluster.replace(replica).await {
                    Ok(fresh) => p.replaced.push(Replaced {
                        replica: replica.clone(),
                        by: fresh,
                        at_ms,
                        took_ms: ms(started.elapsed()),
                    }),
                    Err(e) => p
                        .errors
                        .push(format!("replace {replica} at {at_ms} ms: {e:#}")),
                }
                Some(vec![format!("replaced {replica}")])
            }
            Action::KillDbConnections => {
                match crate::storage::terminate_connections(&cluster.state().storage).await {
                    Ok(n) => p.db_connections_killed += n,
                    Err(e) => p.errors.push(format!("kill database connections: {e:#}")),
                }
                Some(vec!["database connections killed".to_owned()])
            }
            Action::SetFaults { target, faults } => {
                if let Err(e) = self.set_faults(target, faults).await {
                    p.errors.push(format!("inject at {at_ms} ms: {e:#}"));
                }
                let label = match target {
                    Target::Service(s) => format!("faults on {s}"),
                    Target::Replica(s) => format!("faults on {s}"),
                };
                Some(vec![label])
            }
            Action::Kill { replica } => self.signal(replica, Signal::SIGKILL, at_ms, p),
            Action::Freeze { replica } => self.signal(replica, Signal::SIGSTOP, at_ms, p),
            Action::SetToxic { replica, toxic } => match self.proxies.get(replica) {
                Some(proxy) => {
                    proxy.set(*toxic);
                    Some(self.toxics_on())
                }
                None => {
                    p.errors
                        .push(format!("inject: no proxy in front of {replica}"));
                    None
                }
            },
            Action::Restore => {
                if p.pending_at_restore.is_none() {
                    p.pending_at_restore = crate::check::audit_cluster(&cluster.state())
                        .await
                        .ok()
                        .map(|r| r.outbox_pending);
                }
                if let Err(e) = self.restore(&p.frozen).await {
                    p.errors.push(format!("restore at {at_ms} ms: {e:#}"));
                }
                Some(Vec::new())
            }
        }
    }

    /// Sends `signal` (SIGKILL or SIGSTOP) to the replica's current process and starts watching
    /// for its replacement; the fault on now when the signal went out.
    fn signal(
        &self,
        replica: &str,
        signal: Signal,
        at_ms: u64,
        p: &mut Progress,
    ) -> Option<Vec<String>> {
        let pid = self.shared.snapshot().replica(replica).and_then(|r| r.pid);
        let Some(raw) = pid.and_then(|p| i32::try_from(p).ok()) else {
            p.errors.push(format!(
                "inject at {at_ms} ms: {replica} has no process to signal"
            ));
            return None;
        };
        if let Err(e) = kill(Pid::from_raw(raw), signal) {
            p.errors
                .push(format!("inject at {at_ms} ms: {signal} {replica}: {e}"));
            return None;
        }
        let old = raw.unsigned_abs();
        if signal == Signal::SIGSTOP {
            p.frozen.push((replica.to_owned(), old));
        }
        let (shared, replica_name, i) = (self.shared.clone(), replica.to_owned(), p.signalled);
        p.signalled += 1;
        p.watchers.spawn(async move {
            let healed = watch_heal(&shared, &replica_name, old).await;
            let heal = Heal {
                replica: replica_name,
                signal: signal.to_string(),
                at_ms,
                healed_ms: healed.map(ms),
            };
            (i, heal)
        });
        Some(vec![format!("{signal} {replica}")])
    }

    /// The toxics on now, one `"<toxic> <replica>"` each.
    fn toxics_on(&self) -> Vec<String> {
        self.proxies
            .iter()
            .filter(|(_, p)| p.toxic() != Toxic::None)
            .map(|(n, p)| format!("{:?} {n}", p.toxic()))
            .collect()
    }

    /// Replaces the faults of every targeted replica through `PUT /admin/faults`, with a few tries
    /// each (a replica may be restarting).
    pub async fn set_faults(&self, target: &Target, faults: &FaultSettings) -> anyhow::Result<()> {
        let state = self.shared.snapshot();
        let urls: Vec<(String, String)> = state
            .replicas
            .iter()
            .filter(|r| match target {
                Target::Service(s) => r.service == *s,
                Target::Replica(n) => &r.name == n,
            })
            .map(|r| (r.name.clone(), r.admin_url.clone()))
            .collect();
        anyhow::ensure!(!urls.is_empty(), "no replica matches {target:?}");
        for (name, url) in urls {
            // Each replica draws from its own seed: replicas with one seed would fail in lockstep,
            // and a retry that moves to the other replica would meet the same draw again.
            let faults = FaultSettings {
                seed: crate::plan::derive_seed(faults.seed, &name, 0),
                ..faults.clone()
            };
            self.put_faults(&name, &url, &state.admin_token, &faults)
                .await?;
        }
        Ok(())
    }

    /// `PUT {url}/admin/faults` of one replica's admin listener, with [`PUT_TRIES`] tries.
    async fn put_faults(
        &self,
        name: &str,
        url: &str,
        token: &str,
        faults: &FaultSettings,
    ) -> anyhow::Result<()> {
        let mut last = String::new();
        for _ in 0..PUT_TRIES {
            match self
                .http
                .put(format!("{url}/admin/faults"))
                .bearer_auth(token)
                .json(faults)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("PUT {url}/admin/faults ({name}): {last}")
    }

    /// Every fault off: admin faults back to none on every dependency, toxics off, and any frozen
    /// process that is still the replica's current one continued.
    pub async fn restore(&self, frozen: &[(String, u32)]) -> anyhow::Result<()> {
        for p in self.proxies.values() {
            p.set(Toxic::None);
        }
        let state = self.shared.snapshot();
        for (name, pid) in frozen {
            if state.replica(name).and_then(|r| r.pid) == Some(*pid) {
                if let Ok(raw) = i32::try_from(*pid) {
                    let _ = kill(Pid::from_raw(raw), Signal::SIGCONT);
                }
            }
        }
        let none = FaultSettings::default();
        for svc in ServiceKind::DEPENDENCIES {
            self.set_faults(&Target::Service(svc), &none).await?;
        }
        Ok(())
    }
}

/// Waits until `replica` runs a process other than `old` and is ready; the time it took.
async fn watch_heal(shared: &Shared, replica: &str, old: u32) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < HEAL_WATCH_MAX {
        let s = shared.snapshot();
        if let Some(r) = s.replica(replica) {
            if r.ready && r.pid.is_some_and(|p| p != old) {
                return Some(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
