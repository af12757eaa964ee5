//! wallet-kill: `kill -9` of a wallet replica, once per 10 s of load, like the deleted pod of
//! scenario 1 in docs/scenarios.md, on the service that moves the money. The supervisor must
//! replace it within the heal bound, and payment must not notice.

use finpay_services::ServiceKind;

use crate::chaos::scenario::{RunShape, Bounds, ReadmeRow, ScenarioSpec, Scope, P99_MS};
use crate::chaos::schedule::{Builder, Dice};

pub static SPEC: ScenarioSpec = ScenarioSpec {
    name: "wallet-kill",
    fault: "kill -9 of a wallet replica, once per 10 s of load",
    bounds: Bounds {
        success_rate_min: 0.999,
        first_answer_min: None,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: Some(2_000),
    },
    readme: ReadmeRow {
        fault: "`kill -9` of a wallet replica",
        measured_over: "every request; heal ≤ 2 s",
    },
    run: RunShape::STANDARD,
    schedule,
};

/// The drawn span cut into one slot per 10 s (at least one); a kill in the first half of each
/// slot, of a wallet replica the dice pick.
fn schedule(d: f64, dice: &mut Dice, b: &mut Builder) {
    let n = ((d / 10.0).floor() as usize).max(1);
    let slot = (b.end - b.start) / n as f64;
    for i in 0..n {
        let t = b.start + slot * i as f64 + dice.between(0.0, 0.5 * slot);
        let replica = b.pick_replica(dice, &[ServiceKind::Wallet]);
        b.kill(t, replica);
    }
}
