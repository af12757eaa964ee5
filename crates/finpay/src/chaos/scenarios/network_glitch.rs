//! network-glitch: a fault proxy between payment and each dependency replica, and episodes of
//! latency spikes, resets and a blackhole on one replica at a time, scenario 3 of
//! docs/scenarios.md. This kernel has no netem, so the toxics are the userspace proxy's
//! ([`crate::chaos::proxy`]); payment must absorb them: the bound is over every request.

use finpay_services::ServiceKind;

use crate::chaos::scenario::{RunShape, Bounds, ReadmeRow, ScenarioSpec, Scope, P99_MS};
use crate::chaos::schedule::{Action, Builder, Dice, Toxic};

pub static SPEC: ScenarioSpec = ScenarioSpec {
    name: "network-glitch",
    fault: "fault proxy between payment and one dependency replica at a time: latency spikes, resets, blackhole",
    bounds: Bounds {
        success_rate_min: 0.999,
        first_answer_min: None,
        p99_ms_max: P99_MS,
        scope: Scope::AllRequests,
        window: None,
        heal_ms_max: None,
    },
    readme: ReadmeRow {
        fault: "fault proxy: latency spikes, resets, blackhole",
        measured_over: "every request",
    },
    run: RunShape::STANDARD,
    schedule,
};

/// Episodes from the drawn start to the drawn end, each a toxic on a dependency replica the dice
/// pick, with a pause between them; then a restore.
fn schedule(d: f64, dice: &mut Dice, b: &mut Builder) {
    b.through_proxies();
    // The first three episodes are one of each toxic, in an order the seed picks, so even a short
    // run meets all three; later ones are drawn freely.
    let mut kinds = [0u64, 1, 2];
    let first = dice.below(3) as usize;
    kinds.swap(0, first);
    let second = 1 + dice.below(2) as usize;
    kinds.swap(1, second);
    let mut episode = 0usize;
    let (start, end) = (b.start, b.end);
    let mut t = start;
    while t < end {
        let replica = b.pick_replica(dice, &ServiceKind::DEPENDENCIES);
        let kind = kinds.get(episode).copied().unwrap_or_else(|| dice.below(3));
        episode += 1;
        let toxic = match kind {
            0 => Toxic::Latency {
                ms: 150 + dice.below(250),
            },
            1 => Toxic::Reset,
            _ => Toxic::Blackhole,
        };
        let len = dice.between(0.08 * d, 0.15 * d).min(end - t).max(0.3);
        b.step(
            t,
            Action::SetToxic {
                replica: replica.clone(),
                toxic,
            },
        );
        b.step(
            t + len,
            Action::SetToxic {
                replica: replica.clone(),
                toxic: Toxic::None,
            },
        );
        let name = match toxic {
            Toxic::Latency { ms } => format!("latency {ms} ms"),
            Toxic::Reset => "reset".into(),
            Toxic::Blackhole => "blackhole".into(),
            Toxic::None => "none".into(),
        };
        b.window(&format!("{name} {replica}"), t, t + len);
        t += len + dice.between(0.03 * d, 0.08 * d);
    }
    // Every toxic is off again by `end` (the last one may run 0.3 s past it at worst).
    b.step(end, Action::Restore);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::chaos::schedule::for_backend;
    use crate::storage::Backend;

    #[test]
    fn network_glitch_meets_every_toxic_even_in_a_short_run() {
        for seed in 0..50 {
            let sch = for_backend((&SPEC).into(), Duration::from_secs(6), seed, Backend::Sqlite);
            let kinds: std::collections::BTreeSet<&str> = sch
                .steps
                .iter()
                .filter_map(|st| match &st.action {
                    Action::SetToxic { toxic, .. } => match toxic {
                        Toxic::Latency { .. } => Some("latency"),
                        Toxic::Reset => Some("reset"),
                        Toxic::Blackhole => Some("blackhole"),
                        Toxic::None => None,
                    },
                    _ => None,
                })
                .collect();
            assert_eq!(kinds.len(), 3, "seed {seed}: {kinds:?}");
        }
    }

    #[test]
    fn payment_reaches_its_dependencies_through_the_proxies() {
        let sch = for_backend((&SPEC).into(), Duration::from_secs(6), 1, Backend::Sqlite);
        assert!(sch.proxies);
    }
}
