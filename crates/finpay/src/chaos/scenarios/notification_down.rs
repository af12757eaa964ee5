//! notification-down: notification answers 503 to everything, scenario 2 of docs/scenarios.md.
//! Payments must go on untouched (the outbox holds the notifications), and once notification is
//! back every succeeded payment must get exactly one.

use finpay_services::http::FaultSettings;
use finpay_services::ServiceKind;

use crate::chaos::scenario::{RunShape, Bounds, ReadmeRow, ScenarioSpec, Scope, P99_MS};
use crate::chaos::schedule::{Builder, Dice};

pub static SPEC: ScenarioSpec = ScenarioSpec {
    name: "notification-down",
    fault: "notification answers 503 to everything",
    bounds: Bounds {
        success_rate_min: 0.999,
        first_answer_min: None,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: None,
    },
    readme: ReadmeRow {
        fault: "notification answers 503 to all",
        measured_over: "every request",
    },
    run: RunShape::STANDARD,
    schedule,
};

/// Down from the drawn start to the drawn end.
fn schedule(_d: f64, _dice: &mut Dice, b: &mut Builder) {
    let faults = FaultSettings {
        down: true,
        ..b.no_faults()
    };
    let span = (b.start, b.end);
    b.faults(ServiceKind::Notification, faults, span, "notification down");
}
