//! replica-freeze: SIGSTOP of a fraud or wallet replica, once per 8 s of load: a process that
//! hangs without dying, so only the supervisor's liveness probe can tell. It must replace the
//! frozen replica within the heal bound, and payment must not notice.

use finpay_services::ServiceKind;

use crate::chaos::scenario::{RunShape, Bounds, ReadmeRow, ScenarioSpec, Scope, P99_MS};
use crate::chaos::schedule::{Action, Builder, Dice};

pub static SPEC: ScenarioSpec = ScenarioSpec {
    name: "replica-freeze",
    fault: "SIGSTOP of a fraud or wallet replica, once per 8 s of load",
    bounds: Bounds {
        success_rate_min: 0.999,
        first_answer_min: None,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: Some(5_000),
    },
    readme: ReadmeRow {
        fault: "SIGSTOP of a fraud or wallet replica",
        measured_over: "every request; heal ≤ 5 s",
    },
    run: RunShape::STANDARD,
    schedule,
};

/// The drawn span cut into one slot per 8 s (at least one); a freeze in the first half of each
/// slot, of a fraud or wallet replica the dice pick; a restore just before the load ends.
fn schedule(d: f64, dice: &mut Dice, b: &mut Builder) {
    let n = ((d / 8.0).floor() as usize).max(1);
    let slot = (b.end - b.start) / n as f64;
    for i in 0..n {
        let t = b.start + slot * i as f64 + dice.between(0.0, 0.5 * slot);
        let replica = b.pick_replica(dice, &[ServiceKind::Fraud, ServiceKind::Wallet]);
        b.freeze(t, replica);
    }
    // Only a safety net: the supervisor should have replaced every frozen one by now.
    b.step(d - 0.2, Action::Restore);
}
