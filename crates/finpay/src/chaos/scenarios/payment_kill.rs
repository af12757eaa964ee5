//! payment-kill: `kill -9` of the payment process itself mid-load, like the deleted pod of
//! scenario 1 in docs/scenarios.md. No toolkit inside payment can hide its own death: from the kill until
//! payment is ready again clients see only refused connections or 503, and every payment it had
//! answered must still reach a terminal state. The bound is over the requests outside that window.

use finpay_services::ServiceKind;

use crate::chaos::scenario::{RunShape, Bounds, ReadmeRow, ScenarioSpec, Scope, WindowBounds, P99_MS};
use crate::chaos::schedule::{Builder, Dice};
use crate::chaos::topology::replica_name;

pub static SPEC: ScenarioSpec = ScenarioSpec {
    name: "payment-kill",
    fault: "kill -9 of the payment process mid-load",
    bounds: Bounds {
        success_rate_min: 0.999,
        first_answer_min: None,
        p99_ms_max: P99_MS,
        // The window runs from the kill until payment is ready again; then 1 s of grace.
        scope: Scope::OutsideWindows { grace_ms: 1_000 },
        window: Some(WindowBounds {
            allowed_failures: &["transport", "503"],
            p99_ms_max: None,
        }),
        heal_ms_max: Some(2_000),
    },
    readme: ReadmeRow {
        fault: "`kill -9` of the payment process",
        measured_over: "outside kill → ready (+1 s); inside only transport errors/503",
    },
    run: RunShape::STANDARD,
    schedule,
};

/// One kill, in the middle of the load rather than in the drawn span, so there is load on both
/// sides of the outage.
fn schedule(d: f64, dice: &mut Dice, b: &mut Builder) {
    let t = dice.between(0.35 * d, 0.5 * d);
    b.kill(t, replica_name(ServiceKind::Payment, 0));
}
