//! What a scenario is: a [`ScenarioSpec`] (name, fault, stated bounds, schedule), one per file
//! under [`super::scenarios`], and [`Scenario`], the handle the harness passes around. The tables
//! a person reads (`finpay chaos bounds`, the README's bounds table) are built from the list.

use std::fmt::{self, Write as _};

use serde::Serialize;

use finpay_services::ServiceKind;

use super::scenarios;
use super::schedule::{Builder, Dice};
use crate::storage::Backend;

/// One chaos experiment: everything the harness needs to know about it. Adding a scenario is a
/// file under `chaos/scenarios/` with one `pub static SPEC` and its line in the list there.
#[derive(Debug)]
pub struct ScenarioSpec {
    /// The `--scenario` name, kebab-case (`fraud-errors`).
    pub name: &'static str,
    /// What is done to the cluster, for a person (`finpay chaos bounds`, the report, `--json`).
    pub fault: &'static str,
    /// The stated steady-state hypothesis.
    pub bounds: Bounds,
    /// The scenario's cells of the README's bounds table ([`readme_table_rows`]).
    pub readme: ReadmeRow,
    /// The cluster and the client it needs: which storage it runs on, the fewest replicas of a
    /// service, and how often the load's client retries.
    pub run: RunShape,
    /// Pushes the scenario's steps and windows for a load of `duration_s` seconds. The dice have
    /// drawn the fault seed and the fault span ([`Builder::start`], [`Builder::end`]) already;
    /// what this draws, and in which order, is the scenario's own.
    pub schedule: fn(duration_s: f64, dice: &mut Dice, b: &mut Builder),
}

/// What a scenario asks of its cluster and its client, beyond the schedule.
#[derive(Debug, Clone, Copy)]
pub struct RunShape {
    /// The storage backends the scenario makes sense on (`--scenario all` skips the others).
    pub backends: &'static [Backend],
    /// The fewest replicas of a service the scenario needs (more than the backend's default).
    pub min_replicas: &'static [(ServiceKind, u16)],
    /// How many times the load's client sends a payment again (`finpay load --client-retries`).
    pub client_retries: u32,
}

impl RunShape {
    /// Either backend, the standard cluster, a client that never retries.
    pub const STANDARD: RunShape = RunShape {
        backends: &[Backend::Sqlite, Backend::Postgres],
        min_replicas: &[],
        client_retries: 0,
    };

    pub fn runs_on(&self, backend: Backend) -> bool {
        self.backends.contains(&backend)
    }
}

/// The README's words for one scenario, where they differ from [`ScenarioSpec::fault`] and the
/// bounds table's.
#[derive(Debug, Clone, Copy)]
pub struct ReadmeRow {
    /// The fault, shorter than [`ScenarioSpec::fault`].
    pub fault: &'static str,
    /// Which requests the bounds are measured over, and what holds inside the windows.
    pub measured_over: &'static str,
}

/// One chaos experiment, as the harness passes it around: a copyable handle to its spec. Two
/// handles are equal when their names are (the list's test keeps names unique).
#[derive(Clone, Copy)]
pub struct Scenario(&'static ScenarioSpec);

impl Scenario {
    /// Every scenario, in the order of the list (`--scenario all`).
    pub fn all() -> impl Iterator<Item = Scenario> {
        scenarios::ALL.iter().map(|&s| Scenario(s))
    }

    pub fn spec(self) -> &'static ScenarioSpec {
        self.0
    }

    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// What is done to the cluster, for a person.
    pub fn fault(self) -> &'static str {
        self.0.fault
    }

    /// The stated bounds of this scenario.
    pub fn bounds(self) -> &'static Bounds {
        &self.0.bounds
    }

    pub fn run_shape(self) -> &'static RunShape {
        &self.0.run
    }
}

impl From<&'static ScenarioSpec> for Scenario {
    fn from(spec: &'static ScenarioSpec) -> Self {
        Scenario(spec)
    }
}

impl PartialEq for Scenario {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Scenario {}

impl std::hash::Hash for Scenario {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scenario serialises as its name (`"fraud-errors"`).
impl Serialize for Scenario {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl std::str::FromStr for Scenario {
    type Err = crate::ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::all().find(|x| x.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Scenario::all().map(|x| x.name()).collect();
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
    /// Lowest user-visible success rate (succeeded or declined for a business reason), after the
    /// client's retries when the scenario's client retries.
    pub success_rate_min: f64,
    /// Lowest success rate of the first answers, for a scenario whose client retries; `None`
    /// when it does not (the rate above is then the first answers').
    pub first_answer_min: Option<f64>,
    /// Highest p99 latency, in ms, over the same requests.
    pub p99_ms_max: f64,
    pub scope: Scope,
    pub window: Option<WindowBounds>,
    /// Longest time from a `kill -9` or SIGSTOP of a replica until its replacement is ready.
    pub heal_ms_max: Option<u64>,
}

/// Latency bound for scenarios the resilience toolkit absorbs: well under payment's 2 s deadline.
pub const P99_MS: f64 = 1_000.0;

/// The bounds table for a person (`finpay chaos bounds`), one line per scenario of the list.
pub fn bounds_table() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:>8} {:>8}  {:<34} {:<40} {:>8}  FAULT",
        "SCENARIO", "SUCCESS", "P99 MS", "MEASURED OVER", "IN THE WINDOW", "HEAL MS"
    );
    for s in Scenario::all() {
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

/// The README's bounds table ("Chaos scenarios and their bounds"), one Markdown row per scenario
/// of the list, with the columns the specs state: scenario, fault, success ≥, p99 ≤, measured
/// over. The README's rows add one more cell, the results of a recorded run, so each of its rows
/// starts with the matching row here.
pub fn readme_table_rows() -> Vec<String> {
    Scenario::all()
        .map(|s| {
            let (b, r) = (s.bounds(), s.spec().readme);
            format!(
                "| {} | {} | {} | {} ms | {} |",
                s.name(),
                r.fault,
                b.success_rate_min,
                b.p99_ms_max,
                r.measured_over
            )
        })
        .collect()
}
