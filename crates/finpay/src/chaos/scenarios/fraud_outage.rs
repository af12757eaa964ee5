//! fraud-outage: every fraud replica answers errors for half the run. No toolkit can hide a
//! dependency that is down everywhere, so inside the window payment must fail fast and closed (503
//! or a payment `failed` without a debit, never a 500), and after it the breaker must let traffic
//! back: the bound is over the requests outside the window and its recovery grace.

use std::time::Duration;

use finpay_services::http::FaultSettings;
use finpay_services::ServiceKind;

use crate::chaos::scenario::{RunShape, Bounds, ReadmeRow, ScenarioSpec, Scope, WindowBounds, P99_MS};
use crate::chaos::schedule::{secs, Builder, Dice};

pub static SPEC: ScenarioSpec = ScenarioSpec {
    name: "fraud-outage",
    fault: "every fraud replica answers errors (error_rate 1.0)",
    bounds: Bounds {
        success_rate_min: 0.999,
        first_answer_min: None,
        p99_ms_max: P99_MS,
        // The breaker waits 3 s (+20% jitter) before probing again.
        scope: Scope::OutsideWindows { grace_ms: 5_000 },
        window: Some(WindowBounds {
            allowed_failures: &["503", "201:failed"],
            p99_ms_max: Some(500.0),
        }),
        heal_ms_max: None,
    },
    readme: ReadmeRow {
        fault: "every fraud replica errors for 10 s",
        measured_over: "outside the window (+5 s for the breaker); inside: only 503/`failed`, p99 ≤ 500 ms, no 500, no debit",
    },
    run: RunShape::STANDARD,
    schedule,
};

/// Half the duration (10 s of a 20 s run) from a start of its own, then a load long enough that
/// the breaker's recovery after the window and its grace is measured.
fn schedule(d: f64, dice: &mut Dice, b: &mut Builder) {
    let faults = FaultSettings {
        error_rate: 1.0,
        ..b.no_faults()
    };
    let start = dice.between(0.2 * d, 0.3 * d).max(1.0);
    let end = start + 0.5 * d;
    if let Scope::OutsideWindows { grace_ms } = SPEC.bounds.scope {
        b.load_at_least(secs(end) + Duration::from_millis(grace_ms) + secs(3.0));
    }
    b.faults(ServiceKind::Fraud, faults, (start, end), "fraud outage");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::schedule::{for_backend, ms};
    use crate::storage::Backend;

    #[test]
    fn fraud_outage_is_half_the_run_and_its_recovery_is_measured() {
        let sch = for_backend((&SPEC).into(), Duration::from_secs(20), 1, Backend::Sqlite);
        let w = &sch.windows[0];
        assert_eq!(w.end_ms - w.start_ms, 10_000);
        assert!(ms(sch.load) >= w.end_ms + 5_000 + 3_000);
    }
}
