//! fraud-hangs: every fraud replica lets 30% of its calls hang for 3 s, the slow side of the
//! intermittent failure of scenario A in docs/scenarios.md. Payment's resilience layers must
//! absorb it: the bound is over every request.

use finpay_services::http::FaultSettings;
use finpay_services::ServiceKind;

use crate::chaos::scenario::{RunShape, Bounds, ReadmeRow, ScenarioSpec, Scope, P99_MS};
use crate::chaos::schedule::{Builder, Dice};

pub static SPEC: ScenarioSpec = ScenarioSpec {
    name: "fraud-hangs",
    fault: "30% of fraud calls hang 3 s, on every fraud replica",
    bounds: Bounds {
        success_rate_min: 0.999,
        first_answer_min: None,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: None,
    },
    readme: ReadmeRow {
        fault: "30% of fraud calls hang 3 s",
        measured_over: "every request",
    },
    run: RunShape::STANDARD,
    schedule,
};

/// The hangs from the drawn start to the drawn end.
fn schedule(_d: f64, _dice: &mut Dice, b: &mut Builder) {
    let faults = FaultSettings {
        hang_rate: 0.3,
        hang_ms: 3_000,
        ..b.no_faults()
    };
    let span = (b.start, b.end);
    b.faults(ServiceKind::Fraud, faults, span, "fraud 30% hangs");
}
