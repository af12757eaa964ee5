//! The scenarios, their stated bounds (one table), and the fault schedule of each: a pure function
//! of `(scenario, duration, seed)`, so a run is reproducible from `--seed` and testable without a
//! cluster.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use finpay_services::http::FaultSettings;
use finpay_services::ServiceKind;

use crate::plan::splitmix64;

/// One chaos experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    FraudErrors,
    FraudHangs,
    FraudCrash,
    FraudOutage,
    WalletKill,
    WalletAmbiguous,
    PaymentKill,
    NotificationDown,
    NetworkGlitch,
    ReplicaFreeze,
}

impl Scenario {
    pub const ALL: [Scenario; 10] = [
        Scenario::FraudErrors,
        Scenario::FraudHangs,
        Scenario::FraudCrash,
        Scenario::FraudOutage,
        Scenario::WalletKill,
        Scenario::WalletAmbiguous,
        Scenario::PaymentKill,
        Scenario::NotificationDown,
        Scenario::NetworkGlitch,
        Scenario::ReplicaFreeze,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::FraudErrors => "fraud-errors",
            Scenario::FraudHangs => "fraud-hangs",
            Scenario::FraudCrash => "fraud-crash",
            Scenario::FraudOutage => "fraud-outage",
            Scenario::WalletKill => "wallet-kill",
            Scenario::WalletAmbiguous => "wallet-ambiguous",
            Scenario::PaymentKill => "payment-kill",
            Scenario::NotificationDown => "notification-down",
            Scenario::NetworkGlitch => "network-glitch",
            Scenario::ReplicaFreeze => "replica-freeze",
        }
    }

    /// What is done to the cluster, for a person.
    pub fn fault(self) -> &'static str {
        match self {
            Scenario::FraudErrors => "30% of fraud calls answer 500/503, on every fraud replica",
            Scenario::FraudHangs => "30% of fraud calls hang 3 s, on every fraud replica",
            Scenario::FraudCrash => "kill -9 of a fraud replica every 1.5-3 s",
            Scenario::FraudOutage => "every fraud replica answers errors (error_rate 1.0)",
            Scenario::WalletKill => "kill -9 of a wallet replica, once per 10 s of load",
            Scenario::WalletAmbiguous => {
                "wallet commits, then loses 30% of its answers (500 or dropped connection)"
            }
            Scenario::PaymentKill => "kill -9 of the payment process mid-load",
            Scenario::NotificationDown => "notification answers 503 to everything",
            Scenario::NetworkGlitch => {
                "fault proxy between payment and one dependency replica at a time: latency spikes, resets, blackhole"
            }
            Scenario::ReplicaFreeze => "SIGSTOP of a fraud or wallet replica, once per 8 s of load",
        }
    }

    /// The stated bounds of this scenario (a row of [`BOUNDS`]).
    pub fn bounds(self) -> &'static Bounds {
        // Every scenario has a row; the table test checks it.
        BOUNDS
            .iter()
            .find(|b| b.scenario == self)
            .unwrap_or(&BOUNDS[0])
    }
}

impl std::str::FromStr for Scenario {
    type Err = crate::ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|x| x.name()).collect();
                crate::ConfigError(format!(
                    "--scenario {s:?}: unknown; expected all or one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// Which requests the success-rate and p99 bounds are measured over.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Scope {
    /// Every request of the run, fault windows included.
    AllRequests,
    /// Requests that do not overlap a fault window widened by `grace_ms` after its end (the time the
    /// system is allowed to recover, e.g. a breaker's open wait). Requests inside are checked by
    /// the window bounds instead.
    OutsideWindows { grace_ms: u64 },
}

/// What must hold for requests inside the fault windows when the scope excludes them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowBounds {
    /// Failures inside the window are only these (fail fast and closed, or "connection refused").
    pub allowed_failures: &'static [&'static str],
    /// p99 of every request in the window (failures included): fail fast, not slow.
    pub p99_ms_max: Option<f64>,
}

/// The stated steady-state hypothesis of one scenario.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bounds {
    #[serde(skip)]
    pub scenario: Scenario,
    /// Lowest user-visible success rate (succeeded or declined for a business reason).
    pub success_rate_min: f64,
    /// Highest p99 latency, in ms, over the same requests.
    pub p99_ms_max: f64,
    pub scope: Scope,
    pub window: Option<WindowBounds>,
    /// Longest time from a `kill -9` or SIGSTOP of a replica until its replacement is ready.
    pub heal_ms_max: Option<u64>,
}

/// Latency bound for scenarios the resilience toolkit absorbs: well under payment's 2 s deadline.
const P99_MS: f64 = 1_000.0;

/// The bounds of every scenario. Fault kinds the resilience toolkit covers must keep 0.999 over
/// every request; only the two scenarios where no toolkit can hide the fault (every fraud replica
/// down: fail closed; the payment process itself killed: connections refused) are measured outside
/// their windows, and their windows have bounds of their own.
pub const BOUNDS: [Bounds; 10] = [
    Bounds {
        scenario: Scenario::FraudErrors,
        success_rate_min: 0.999,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: None,
    },
    Bounds {
        scenario: Scenario::FraudHangs,
        success_rate_min: 0.999,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: None,
    },
    Bounds {
        scenario: Scenario::FraudCrash,
        success_rate_min: 0.999,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: Some(2_000),
    },
    Bounds {
        scenario: Scenario::FraudOutage,
        success_rate_min: 0.999,
        p99_ms_max: P99_MS,
        // The breaker waits 3 s (+20% jitter) before probing again.
        scope: Scope::OutsideWindows { grace_ms: 5_000 },
        window: Some(WindowBounds {
            allowed_failures: &["503", "201:failed"],
            p99_ms_max: Some(500.0),
        }),
        heal_ms_max: None,
    },
    Bounds {
        scenario: Scenario::WalletKill,
        success_rate_min: 0.999,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: Some(2_000),
    },
    Bounds {
        scenario: Scenario::WalletAmbiguous,
        success_rate_min: 0.999,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: None,
    },
    Bounds {
        scenario: Scenario::PaymentKill,
        success_rate_min: 0.999,
        p99_ms_max: P99_MS,
        // The window runs from the kill until payment is ready again; then 1 s of grace.
        scope: Scope::OutsideWindows { grace_ms: 1_000 },
        window: Some(WindowBounds {
            allowed_failures: &["transport", "503"],
            p99_ms_max: None,
        }),
        heal_ms_max: Some(2_000),
    },
    Bounds {
        scenario: Scenario::NotificationDown,
        success_rate_min: 0.999,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: None,
    },
    Bounds {
        scenario: Scenario::NetworkGlitch,
        success_rate_min: 0.999,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: None,
    },
    Bounds {
        scenario: Scenario::ReplicaFreeze,
        success_rate_min: 0.999,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: Some(5_000),
    },
];

/// The bounds table for a person.
pub fn bounds_table() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:>8} {:>8}  {:<34} {:<40} {:>8}  FAULT",
        "SCENARIO", "SUCCESS", "P99 MS", "MEASURED OVER", "IN THE WINDOW", "HEAL MS"
    );
    for s in Scenario::ALL {
        let b = s.bounds();
        let scope = match b.scope {
            Scope::AllRequests => "every request, faults included".to_owned(),
            Scope::OutsideWindows { grace_ms } => {
                format!("outside the window (+{grace_ms} ms grace)")
            }
        };
        let window = b.window.map_or_else(
            || "-".to_owned(),
            |w| {
                let p99 = w
                    .p99_ms_max
                    .map_or_else(String::new, |p| format!(", p99 <= {p} ms"));
                format!("failures only {}{p99}", w.allowed_failures.join("/"))
            },
        );
        let heal = b
            .heal_ms_max
            .map_or_else(|| "-".to_owned(), |h| h.to_string());
        let _ = writeln!(
            out,
            "{:<18} {:>8} {:>8}  {:<34} {:<40} {:>8}  {}",
            s.name(),
            format!(">={}", b.success_rate_min),
            format!("<={}", b.p99_ms_max),
            scope,
            window,
            heal,
            s.fault()
        );
    }
    out
}

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
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A tiny deterministic generator (SplitMix64) for schedules: no global state, no entropy.
struct Dice(u64);

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
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Shortest `--duration` a schedule is made for: the faults need room after a warm-up.
pub const DURATION_MIN: Duration = Duration::from_secs(4);

/// The schedule of `scenario` for a load of `duration` and `seed`: a pure function. The cluster
/// always has 3 fraud replicas, 2 wallet replicas, 1 notification and 1 payment.
pub fn schedule(scenario: Scenario, duration: Duration, seed: u64) -> Schedule {
    let d = duration.max(DURATION_MIN).as_secs_f64();
    let mut dice = Dice::new(seed, scenario);
    let fault_seed = dice.next() >> 1;
    // A warm-up before the faults, and a tail after them to see the recovery.
    let start = dice.between(0.15 * d, 0.25 * d).max(1.0);
    let end = dice.between(0.7 * d, 0.8 * d);
    let mut steps = Vec::new();
    let mut windows = Vec::new();
    let mut load = secs(d);
    let mut proxies = false;
    let service = Target::Service;
    let mut window = |label: &str, a: f64, b: f64| {
        windows.push(Window {
            label: label.to_owned(),
            start_ms: ms(secs(a)),
            end_ms: ms(secs(b)),
        })
    };
    match scenario {
        Scenario::FraudErrors | Scenario::FraudHangs | Scenario::FraudOutage => {
            let faults = match scenario {
                Scenario::FraudErrors => FaultSettings {
                    seed: fault_seed,
                    error_rate: 0.3,
                    hang_ms: 3_000,
                    ..FaultSettings::default()
                },
                Scenario::FraudHangs => FaultSettings {
                    seed: fault_seed,
                    hang_rate: 0.3,
                    hang_ms: 3_000,
                    ..FaultSettings::default()
                },
                _ => FaultSettings {
                    seed: fault_seed,
                    error_rate: 1.0,
                    hang_ms: 3_000,
                    ..FaultSettings::default()
                },
            };
            let (a, b) = if scenario == Scenario::FraudOutage {
                // Half the duration (10 s of a 20 s run), then the breaker's recovery is measured.
                let a = dice.between(0.2 * d, 0.3 * d).max(1.0);
                let b = a + 0.5 * d;
                if let Scope::OutsideWindows { grace_ms } = scenario.bounds().scope {
                    load = load.max(secs(b) + Duration::from_millis(grace_ms) + secs(3.0));
                }
                (a, b)
            } else {
                (start, end)
            };
            steps.push(Step {
                at: secs(a),
                action: Action::SetFaults {
                    target: service(ServiceKind::Fraud),
                    faults,
                },
            });
            steps.push(Step {
                at: secs(b),
                action: Action::Restore,
            });
            window(
                match scenario {
                    Scenario::FraudErrors => "fraud 30% errors",
                    Scenario::FraudHangs => "fraud 30% hangs",
                    _ => "fraud outage",
                },
                a,
                b,
            );
        }
        Scenario::FraudCrash => {
            let mut t = start;
            while t < end {
                let replica = format!("fraud-{}", dice.below(3));
                steps.push(Step {
                    at: secs(t),
                    action: Action::Kill {
                        replica: replica.clone(),
                    },
                });
                window(&format!("kill -9 {replica}"), t, t + 0.5);
                t += dice.between(1.5, 3.0);
            }
        }
        Scenario::WalletKill | Scenario::ReplicaFreeze => {
            let every = if scenario == Scenario::WalletKill {
                10.0
            } else {
                8.0
            };
            let n = ((d / every).floor() as usize).max(1);
            let slot = (end - start) / n as f64;
            for i in 0..n {
                let t = start + slot * i as f64 + dice.between(0.0, 0.5 * slot);
                let (replica, action, label) = if scenario == Scenario::WalletKill {
                    let r = format!("wallet-{}", dice.below(2));
                    (r.clone(), Action::Kill { replica: r }, "kill -9")
                } else {
                    let k = dice.below(5);
                    let r = if k < 3 {
                        format!("fraud-{k}")
                    } else {
                        format!("wallet-{}", k - 3)
                    };
                    (r.clone(), Action::Freeze { replica: r }, "SIGSTOP")
                };
                steps.push(Step {
                    at: secs(t),
                    action,
                });
                window(&format!("{label} {replica}"), t, t + 0.5);
            }
            if scenario == Scenario::ReplicaFreeze {
                // Only a safety net: the supervisor should have replaced every frozen one by now.
                steps.push(Step {
                    at: secs(d - 0.2),
                    action: Action::Restore,
                });
            }
        }
        Scenario::WalletAmbiguous => {
            steps.push(Step {
                at: secs(start),
                action: Action::SetFaults {
                    target: service(ServiceKind::Wallet),
                    faults: FaultSettings {
                        seed: fault_seed,
                        commit_then_fail_rate: 0.3,
                        hang_ms: 3_000,
                        ..FaultSettings::default()
                    },
                },
            });
            steps.push(Step {
                at: secs(end),
                action: Action::Restore,
            });
            window("wallet commit-then-fail 30%", start, end);
        }
        Scenario::PaymentKill => {
            let t = dice.between(0.35 * d, 0.5 * d);
            steps.push(Step {
                at: secs(t),
                action: Action::Kill {
                    replica: "payment-0".into(),
                },
            });
            window("kill -9 payment-0", t, t + 0.5);
        }
        Scenario::NotificationDown => {
            steps.push(Step {
                at: secs(start),
                action: Action::SetFaults {
                    target: service(ServiceKind::Notification),
                    faults: FaultSettings {
                        seed: fault_seed,
                        down: true,
                        hang_ms: 3_000,
                        ..FaultSettings::default()
                    },
                },
            });
            steps.push(Step {
                at: secs(end),
                action: Action::Restore,
            });
            window("notification down", start, end);
        }
        Scenario::NetworkGlitch => {
            proxies = true;
            let replicas = [
                "fraud-0",
                "fraud-1",
                "fraud-2",
                "wallet-0",
                "wallet-1",
                "notification-0",
            ];
            // The first three episodes are one of each toxic, in an order the seed picks, so even
            // a short run meets all three; later ones are drawn freely.
            let mut kinds = [0u64, 1, 2];
            let first = dice.below(3) as usize;
            kinds.swap(0, first);
            let second = 1 + dice.below(2) as usize;
            kinds.swap(1, second);
            let mut episode = 0usize;
            let mut t = start;
            while t < end {
                let replica = replicas[dice.below(replicas.len() as u64) as usize].to_owned();
                let kind = kinds.get(episode).copied().unwrap_or_else(|| dice.below(3));
                episode += 1;
                let toxic = match kind {
                    0 => Toxic::Latency {
                        ms: 150 + dice.below(250),
                    },
                    1 => Toxic::Reset,
                    _ => Toxic::Blackhole,
                };
                let len = dice.between(0.08 * d, 0.15 * d).min(end - t).max(0.3);
                steps.push(Step {
                    at: secs(t),
                    action: Action::SetToxic {
                        replica: replica.clone(),
                        toxic,
                    },
                });
                steps.push(Step {
                    at: secs(t + len),
                    action: Action::SetToxic {
                        replica: replica.clone(),
                        toxic: Toxic::None,
                    },
                });
                let name = match toxic {
                    Toxic::Latency { ms } => format!("latency {ms} ms"),
                    Toxic::Reset => "reset".into(),
                    Toxic::Blackhole => "blackhole".into(),
                    Toxic::None => "none".into(),
                };
                window(&format!("{name} {replica}"), t, t + len);
                t += len + dice.between(0.03 * d, 0.08 * d);
            }
            // Every toxic is off again by `end` (the last one may run 0.3 s past it at worst).
            steps.push(Step {
                at: secs(end),
                action: Action::Restore,
            });
        }
    }
    steps.sort_by_key(|s| s.at);
    Schedule {
        scenario,
        seed,
        load,
        steps,
        windows,
        proxies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_its_own_bounds_row_and_a_name_that_parses_back() {
        for s in Scenario::ALL {
            assert_eq!(s.bounds().scenario, s);
            assert_eq!(s.name().parse::<Scenario>().expect("parses"), s);
        }
        assert!("nope".parse::<Scenario>().is_err());
    }

    #[test]
    fn toolkit_covered_faults_keep_three_nines_over_every_request() {
        for s in Scenario::ALL {
            let b = s.bounds();
            assert!(b.success_rate_min >= 0.999, "{}", s.name());
            let window_scoped = matches!(s, Scenario::FraudOutage | Scenario::PaymentKill);
            assert_eq!(
                matches!(b.scope, Scope::OutsideWindows { .. }),
                window_scoped,
                "{}",
                s.name()
            );
            assert_eq!(b.window.is_some(), window_scoped, "{}", s.name());
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let d = Duration::from_secs(20);
        for s in Scenario::ALL {
            assert_eq!(schedule(s, d, 42), schedule(s, d, 42), "{}", s.name());
            assert_ne!(schedule(s, d, 42), schedule(s, d, 43), "{}", s.name());
        }
    }

    #[test]
    fn schedules_fit_the_load_and_end_healthy() {
        for s in Scenario::ALL {
            for seed in 0..50 {
                for secs in [4, 6, 8, 20, 60] {
                    let sch = schedule(s, Duration::from_secs(secs), seed);
                    assert!(!sch.steps.is_empty(), "{}", s.name());
                    assert!(!sch.windows.is_empty(), "{}", s.name());
                    assert!(sch.steps.windows(2).all(|w| w[0].at <= w[1].at));
                    assert!(
                        sch.steps.iter().all(|st| st.at < sch.load),
                        "{} seed {seed}: a step after the load",
                        s.name()
                    );
                    assert!(sch.windows.iter().all(|w| w.start_ms < w.end_ms));
                    assert!(sch.steps[0].at >= Duration::from_millis(500));
                    let faults_set = sch
                        .steps
                        .iter()
                        .any(|st| matches!(st.action, Action::SetFaults { .. }));
                    if faults_set {
                        assert!(matches!(
                            sch.steps.last().map(|st| &st.action),
                            Some(Action::Restore)
                        ));
                    }
                }
            }
        }
    }

    #[test]
    fn network_glitch_meets_every_toxic_even_in_a_short_run() {
        for seed in 0..50 {
            let sch = schedule(Scenario::NetworkGlitch, Duration::from_secs(6), seed);
            let kinds: std::collections::BTreeSet<&str> = sch
                .steps
                .iter()
                .filter_map(|st| match &st.action {
                    Action::SetToxic { toxic, .. } => match toxic {
                        Toxic::Latency { .. } => Some("latency"),
                        Toxic::Reset => Some("reset"),
                        Toxic::Blackhole => Some("blackhole"),
                        Toxic::None => None,
                    },
                    _ => None,
                })
                .collect();
            assert_eq!(kinds.len(), 3, "seed {seed}: {kinds:?}");
        }
    }

    #[test]
    fn fraud_outage_is_half_the_run_and_its_recovery_is_measured() {
        let sch = schedule(Scenario::FraudOutage, Duration::from_secs(20), 1);
        let w = &sch.windows[0];
        assert_eq!(w.end_ms - w.start_ms, 10_000);
        assert!(ms(sch.load) >= w.end_ms + 5_000 + 3_000);
    }
}
