//! fraud-errors: every fraud replica answers 30% of its calls with 500 or 503, the intermittent
//! failure of scenario A in docs/scenarios.md. Payment's resilience layers must absorb it: the
//! bound is over every request.

use finpay_services::http::FaultSettings;
use finpay_services::ServiceKind;

use crate::chaos::scenario::{RunShape, Bounds, ReadmeRow, ScenarioSpec, Scope, P99_MS};
use crate::chaos::schedule::{Builder, Dice};

pub static SPEC: ScenarioSpec = ScenarioSpec {
    name: "fraud-errors",
    fault: "30% of fraud calls answer 500/503, on every fraud replica",
    bounds: Bounds {
        success_rate_min: 0.999,
        first_answer_min: None,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: None,
    },
    readme: ReadmeRow {
        fault: "30% of fraud calls answer 500/503",
        measured_over: "every request",
    },
    run: RunShape::STANDARD,
    schedule,
};

/// The errors from the drawn start to the drawn end.
fn schedule(_d: f64, _dice: &mut Dice, b: &mut Builder) {
    let faults = FaultSettings {
        error_rate: 0.3,
        ..b.no_faults()
    };
    let span = (b.start, b.end);
    b.faults(ServiceKind::Fraud, faults, span, "fraud 30% errors");
}
