//! wallet-ambiguous: the wallet commits a transfer, then loses 30% of its answers (a 500 or a
//! dropped connection). Payment cannot tell a lost answer from a failed transfer, so its retries
//! must be idempotent: exactly one debit each, and the bound over every request.

use finpay_services::http::FaultSettings;
use finpay_services::ServiceKind;

use crate::chaos::scenario::{RunShape, Bounds, ReadmeRow, ScenarioSpec, Scope, P99_MS};
use crate::chaos::schedule::{Builder, Dice};

pub static SPEC: ScenarioSpec = ScenarioSpec {
    name: "wallet-ambiguous",
    fault: "wallet commits, then loses 30% of its answers (500 or dropped connection)",
    bounds: Bounds {
        success_rate_min: 0.999,
        first_answer_min: None,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: None,
    },
    readme: ReadmeRow {
        fault: "wallet commits, then loses 30% of answers",
        measured_over: "every request",
    },
    run: RunShape::STANDARD,
    schedule,
};

/// The lost answers from the drawn start to the drawn end.
fn schedule(_d: f64, _dice: &mut Dice, b: &mut Builder) {
    let faults = FaultSettings {
        commit_then_fail_rate: 0.3,
        ..b.no_faults()
    };
    let span = (b.start, b.end);
    b.faults(ServiceKind::Wallet, faults, span, "wallet commit-then-fail 30%");
}
