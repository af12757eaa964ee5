//! The fault schedule of a run: a pure function of `(scenario, duration, seed, topology)`, so a
//! run is reproducible from `--seed` and testable without a cluster.
//!
//! [`schedule`] draws what every scenario shares (the seed of the services' fault draws, and the
//! span after a warm-up and before a recovery tail in which the faults happen), then hands the
//! dice and a [`Builder`] to the scenario's own `schedule` function (in its file under
//! [`super::scenarios`]), which pushes the scenario's steps and windows. The dice are drawn in one
//! fixed order, so the same seed always gives the same schedule.

use std::time::Duration;

use serde::Serialize;

use finpay_services::http::FaultSettings;
use finpay_services::ServiceKind;

use super::scenario::Scenario;
use super::topology;
use crate::plan::{splitmix64, Replicas};

/// Which replicas an action hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Target {
    /// Every replica of a service.
    Service(ServiceKind),
    /// One replica by name (`fraud-1`).
    Replica(String),
}

/// A network fault of the proxy, after Toxiproxy's toxics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Toxic {
    None,
    /// Every answer waits this long (Toxiproxy `latency`, downstream).
    Latency {
        ms: u64,
    },
    /// Connections are reset, new ones and open ones on their next byte (`reset_peer`).
    Reset,
    /// Bytes are swallowed and never answered; connections stay open (`timeout` with 0).
    Blackhole,
}

/// What the injector does at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// Replace the fault set of the targets through their admin API (`PUT /admin/faults`, the
    /// services' own [`FaultSettings`]).
    SetFaults {
        target: Target,
        faults: FaultSettings,
    },
    /// SIGKILL the replica's current process.
    Kill { replica: String },
    /// SIGSTOP the replica's current process (the supervisor must notice and replace it).
    Freeze { replica: String },
    /// Switch the toxic of the proxy in front of one replica.
    SetToxic { replica: String, toxic: Toxic },
    /// Replace the replica the way a rolling update does: a new replica of its service starts
    /// and becomes ready, then the old one leaves payment's routes, drains and gets SIGTERM.
    Replace { replica: String },
    /// Terminate every database connection of the cluster (`pg_terminate_backend`); the pools
    /// reconnect.
    KillDbConnections,
    /// Every fault off: admin faults cleared, toxics off, frozen processes continued.
    Restore,
}

/// One timed action, `at` after the load started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    #[serde(rename = "at_ms", serialize_with = "ser_ms")]
    pub at: Duration,
    #[serde(flatten)]
    pub action: Action,
}

/// A shaded span of the report and the scope of window bounds, in ms after the load started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub label: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// How the label of a kill window starts ([`Builder::kill`]).
const KILL_LABEL: &str = "kill -9";
/// How the label of a freeze window starts ([`Builder::freeze`]).
const FREEZE_LABEL: &str = "SIGSTOP";
/// The planned length of a kill or freeze window; the measured one ends when the replica is back.
const SIGNAL_WINDOW_S: f64 = 0.5;

impl Window {
    /// The replica of a kill or freeze window, whose real end is when that replica is back;
    /// `None` for a window that ends as planned.
    pub fn signalled_replica(&self) -> Option<&str> {
        [KILL_LABEL, FREEZE_LABEL]
            .into_iter()
            .find_map(|l| self.label.strip_prefix(l)?.strip_prefix(' '))
    }
}

/// Everything a run of one scenario does, decided before it starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub scenario: Scenario,
    pub seed: u64,
    /// How long the load runs (the scenario's duration, stretched when a window's recovery must
    /// be measured after it).
    #[serde(rename = "load_ms", serialize_with = "ser_ms")]
    pub load: Duration,
    pub steps: Vec<Step>,
    /// The planned fault windows. Kill and freeze windows end when the replica is back, which is
    /// measured; the planned ones end at the action.
    pub windows: Vec<Window>,
    /// Whether payment reaches its dependencies through fault proxies.
    pub proxies: bool,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(ms(*d))
}

/// A tiny deterministic generator (SplitMix64) for schedules: no global state, no entropy.
pub struct Dice(u64);

impl Dice {
    fn new(seed: u64, scenario: Scenario) -> Self {
        let mut h = seed;
        for b in scenario.name().bytes() {
            h = splitmix64(h ^ u64::from(b));
        }
        Dice(h)
    }

    fn next(&mut self) -> u64 {
        self.0 = splitmix64(self.0);
        self.0
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Seconds (as the schedules compute them) to a `Duration`; negative is 0.
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Whole milliseconds, saturating.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Shortest `--duration` a schedule is made for: the faults need room after a warm-up.
pub const DURATION_MIN: Duration = Duration::from_secs(4);

/// What a scenario's `schedule` function fills in: its steps, windows, and the two choices a
/// scenario may make about the run (a longer load, fault proxies in front of the dependencies).
/// Times are in seconds after the load started.
pub struct Builder {
    /// Seed of the services' fault draws ([`FaultSettings::seed`]); each replica derives its own.
    pub fault_seed: u64,
    /// When the faults of a scenario with one span of faults start: after a warm-up.
    pub start: f64,
    /// When they end: before a tail that shows the recovery.
    pub end: f64,
    /// The replicas of the cluster the schedule is for.
    pub topology: Replicas,
    steps: Vec<Step>,
    windows: Vec<Window>,
    load: Duration,
    proxies: bool,
}

impl Builder {
    /// Adds one timed action.
    pub fn step(&mut self, at: f64, action: Action) {
        self.steps.push(Step {
            at: secs(at),
            action,
        });
    }

    /// Adds a fault window from `a` to `b`.
    pub fn window(&mut self, label: &str, a: f64, b: f64) {
        self.windows.push(Window {
            label: label.to_owned(),
            start_ms: ms(secs(a)),
            end_ms: ms(secs(b)),
        });
    }

    /// `faults` on every replica of `service` from `a` until everything is restored at `b`: one
    /// window.
    pub fn faults(
        &mut self,
        service: ServiceKind,
        faults: FaultSettings,
        (a, b): (f64, f64),
        label: &str,
    ) {
        self.step(
            a,
            Action::SetFaults {
                target: Target::Service(service),
                faults,
            },
        );
        self.step(b, Action::Restore);
        self.window(label, a, b);
    }

    /// The services' fault settings with this run's fault seed and nothing injected yet.
    pub fn no_faults(&self) -> FaultSettings {
        FaultSettings {
            seed: self.fault_seed,
            ..FaultSettings::default()
        }
    }

    /// SIGKILL of `replica` at `t`; its window ends when the replica is back.
    pub fn kill(&mut self, t: f64, replica: String) {
        self.window(&format!("{KILL_LABEL} {replica}"), t, t + SIGNAL_WINDOW_S);
        self.step(t, Action::Kill { replica });
    }

    /// SIGSTOP of `replica` at `t`; its window ends when the replica is replaced and ready.
    pub fn freeze(&mut self, t: f64, replica: String) {
        self.window(&format!("{FREEZE_LABEL} {replica}"), t, t + SIGNAL_WINDOW_S);
        self.step(t, Action::Freeze { replica });
    }

    /// `replica` replaced by a new one at `t` (a rolling update's step); the window lasts until
    /// the next step of the schedule could start.
    pub fn replace(&mut self, t: f64, replica: String, window_s: f64) {
        self.window(&format!("replace {replica}"), t, t + window_s);
        self.step(t, Action::Replace { replica });
    }

    /// Every database connection cut at `t`.
    pub fn kill_db_connections(&mut self, t: f64) {
        self.window("database connections killed", t, t + SIGNAL_WINDOW_S);
        self.step(t, Action::KillDbConnections);
    }

    /// Every replica of `services`, service by service, each by index.
    pub fn all_replicas(&self, services: &[ServiceKind]) -> Vec<String> {
        topology::replicas(&self.topology, services)
    }

    /// A replica of `services` drawn uniformly, counting the replicas service by service.
    pub fn pick_replica(&self, dice: &mut Dice, services: &[ServiceKind]) -> String {
        let all = topology::replicas(&self.topology, services);
        let i = usize::try_from(dice.below(all.len() as u64)).unwrap_or(0);
        all.get(i).cloned().unwrap_or_default()
    }

    /// Runs the load at least `load` long (to measure a recovery after the last window).
    pub fn load_at_least(&mut self, load: Duration) {
        self.load = self.load.max(load);
    }

    /// Payment reaches every dependency replica through a fault proxy of its own.
    pub fn through_proxies(&mut self) {
        self.proxies = true;
    }
}

/// The schedule of `scenario` for a load of `duration` and `seed` on a cluster of `topology`
/// ([`topology::replicas_for`]): a pure function.
pub fn schedule(scenario: Scenario, duration: Duration, seed: u64, topology: Replicas) -> Schedule {
    let d = duration.max(DURATION_MIN).as_secs_f64();
    let mut dice = Dice::new(seed, scenario);
    let fault_seed = dice.next() >> 1;
    // A warm-up before the faults, and a tail after them to see the recovery.
    let start = dice.between(0.15 * d, 0.25 * d).max(1.0);
    let end = dice.between(0.7 * d, 0.8 * d);
    let mut b = Builder {
        fault_seed,
        start,
        end,
        topology,
        steps: Vec::new(),
        windows: Vec::new(),
        load: secs(d),
        proxies: false,
    };
    (scenario.spec().schedule)(d, &mut dice, &mut b);
    b.steps.sort_by_key(|s| s.at);
    Schedule {
        scenario,
        seed,
        load: b.load,
        steps: b.steps,
        windows: b.windows,
        proxies: b.proxies,
    }
}

/// The schedule of `scenario` on the cluster a run on `backend` starts for it.
pub fn for_backend(
    scenario: Scenario,
    duration: Duration,
    seed: u64,
    backend: crate::storage::Backend,
) -> Schedule {
    let topology = topology::replicas_for(backend, scenario.run_shape());
    schedule(scenario, duration, seed, topology)
}
