//! database-connections-killed: every database connection of the cluster is cut
//! (`pg_terminate_backend`), twice: a failover of the database, or a network partition from it, in
//! the family of scenario 3 (network glitch) of docs/scenarios.md. The pools reconnect; a write
//! whose connection died is retried or left to the resumer, so nothing is lost and nothing is
//! doubled. Inside the short windows payments may answer 503 (storage unavailable, retry); outside
//! them the usual bound holds. PostgreSQL only: SQLite has no connections to cut.

use crate::chaos::scenario::{
    Bounds, ReadmeRow, RunShape, ScenarioSpec, Scope, WindowBounds, P99_MS,
};
use crate::chaos::schedule::{Builder, Dice};
use crate::storage::Backend;

pub static SPEC: ScenarioSpec = ScenarioSpec {
    name: "database-connections-killed",
    fault: "pg_terminate_backend of every connection of the cluster, twice",
    bounds: Bounds {
        success_rate_min: 0.999,
        first_answer_min: None,
        p99_ms_max: P99_MS,
        // The pools notice a dead connection on its next use and reconnect at once.
        scope: Scope::OutsideWindows { grace_ms: 2_000 },
        window: Some(WindowBounds {
            allowed_failures: &["503", "504", "transport"],
            p99_ms_max: None,
        }),
        heal_ms_max: None,
    },
    readme: ReadmeRow {
        fault: "every database connection terminated, twice",
        measured_over: "outside the cuts (+2 s); inside only 503/504/transport, no money lost",
    },
    run: RunShape {
        backends: &[Backend::Postgres],
        min_replicas: &[],
        client_retries: 0,
    },
    schedule,
};

/// Two cuts: one early in the fault span, one late.
fn schedule(_d: f64, dice: &mut Dice, b: &mut Builder) {
    let first = b.start + dice.between(0.0, 0.2) * (b.end - b.start);
    let second = b.start + dice.between(0.6, 0.8) * (b.end - b.start);
    b.kill_db_connections(first);
    b.kill_db_connections(second);
}
