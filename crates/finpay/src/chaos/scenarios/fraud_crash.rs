//! fraud-crash: `kill -9` of a fraud replica every 1.5 to 3 s, the crashing pod that is replaced
//! of scenario B (auto-healing) in docs/scenarios.md. The supervisor must replace each one within
//! the heal bound, and payment must not notice.

use finpay_services::ServiceKind;

use crate::chaos::scenario::{RunShape, Bounds, ReadmeRow, ScenarioSpec, Scope, P99_MS};
use crate::chaos::schedule::{Builder, Dice};

pub static SPEC: ScenarioSpec = ScenarioSpec {
    name: "fraud-crash",
    fault: "kill -9 of a fraud replica every 1.5-3 s",
    bounds: Bounds {
        success_rate_min: 0.999,
        first_answer_min: None,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: Some(2_000),
    },
    readme: ReadmeRow {
        fault: "`kill -9` of a fraud replica every 1.5–3 s",
        measured_over: "every request; heal ≤ 2 s",
    },
    run: RunShape::STANDARD,
    schedule,
};

/// Kills from the drawn start until the drawn end, each of a fraud replica the dice pick.
fn schedule(_d: f64, dice: &mut Dice, b: &mut Builder) {
    let mut t = b.start;
    while t < b.end {
        let replica = b.pick_replica(dice, &[ServiceKind::Fraud]);
        b.kill(t, replica);
        t += dice.between(1.5, 3.0);
    }
}
