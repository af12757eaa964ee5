//! rolling-restart: every replica of every service is replaced in turn, the way a rolling update
//! of a Kubernetes Deployment replaces pods: a new replica starts and becomes ready, then the old
//! one leaves payment's routes, drains and gets SIGTERM. Scenarios 1 and B of docs/scenarios.md,
//! done on purpose to every pod. No payment may fail: the client retries like a careful payment
//! SDK, for the connections a stopping payment replica closes.

use std::time::Duration;

use finpay_services::ServiceKind;

use crate::chaos::scenario::{Bounds, ReadmeRow, RunShape, ScenarioSpec, Scope, P99_MS};
use crate::chaos::schedule::{secs, Builder, Dice};
use crate::storage::Backend;

/// Time given to each replacement: start, ready, a drain of one second, and the stop.
const STEP_S: f64 = 3.0;

pub static SPEC: ScenarioSpec = ScenarioSpec {
    name: "rolling-restart",
    fault: "every replica of every service replaced in turn (new one ready, old one drained, SIGTERM)",
    bounds: Bounds {
        success_rate_min: 1.0,
        first_answer_min: Some(0.99),
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: None,
    },
    readme: ReadmeRow {
        fault: "every replica replaced in turn, as a rolling update",
        measured_over: "every request, after up to 5 client retries (first answers ≥ 0.99)",
    },
    run: RunShape {
        backends: &[Backend::Sqlite, Backend::Postgres],
        min_replicas: &[],
        client_retries: 5,
    },
    schedule,
};

/// Every replica, service by service in start order, one every [`STEP_S`] from the start of the
/// fault span; the load runs until the last one is done and a tail after it.
fn schedule(_d: f64, _dice: &mut Dice, b: &mut Builder) {
    let replicas = b.all_replicas(&ServiceKind::ALL);
    let mut t = b.start;
    for replica in replicas {
        b.replace(t, replica, STEP_S);
        t += STEP_S;
    }
    b.load_at_least(secs(t) + Duration::from_secs(4));
}
