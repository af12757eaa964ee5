//! payment-replica-kill: `kill -9` of one of two payment replicas under load, the deleted pod of
//! scenario 1 in docs/scenarios.md, for the service the customers talk to. The other replica keeps
//! the shared public port; the payments the dead one was driving are taken over once their leases
//! expire. A killed process drops its open connections, and only a client's retry can hide that:
//! the load's client retries like a careful payment SDK (same Idempotency-Key), so the bound is on
//! what it finally sees, and a second, lower bound on the first answers.

use finpay_services::ServiceKind;

use crate::chaos::scenario::{Bounds, ReadmeRow, RunShape, ScenarioSpec, Scope, P99_MS};
use crate::chaos::schedule::{Builder, Dice};
use crate::storage::Backend;

pub static SPEC: ScenarioSpec = ScenarioSpec {
    name: "payment-replica-kill",
    fault: "kill -9 of one of two payment replicas behind the shared port, mid-load",
    bounds: Bounds {
        success_rate_min: 0.999,
        // Requests in flight on the killed replica (a handful at 100 payments/s) lose their answer.
        first_answer_min: Some(0.99),
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: Some(2_000),
    },
    readme: ReadmeRow {
        fault: "`kill -9` of one of two payment replicas",
        measured_over: "every request, after up to 10 client retries (first answers ≥ 0.99); heal ≤ 2 s",
    },
    run: RunShape {
        backends: &[Backend::Sqlite, Backend::Postgres],
        min_replicas: &[(ServiceKind::Payment, 2)],
        client_retries: 10,
    },
    schedule,
};

/// One kill of a payment replica drawn from the two, in the middle of the load.
fn schedule(d: f64, dice: &mut Dice, b: &mut Builder) {
    let t = dice.between(0.35 * d, 0.5 * d);
    let replica = b.pick_replica(dice, &[ServiceKind::Payment]);
    b.kill(t, replica);
}
