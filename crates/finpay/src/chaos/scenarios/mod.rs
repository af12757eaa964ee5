//! The scenarios, one file each, listed once. Each file holds one `pub static SPEC:
//! ScenarioSpec`: its name, the fault in words, its stated bounds, its README row and the
//! function that pushes its steps; nothing else in the harness names a scenario (after
//! mini-redis, which dispatches each command to a file of its own, `src/cmd/mod.rs`).
//!
//! Adding a scenario: a new file here, and its module name as one line of the list below.
//!
//! The bounds follow one rule: fault kinds the resilience toolkit covers must keep 0.999 over
//! every request; only a scenario where no toolkit can hide the fault (every fraud replica down:
//! fail closed; the payment process itself killed: connections refused) is measured outside its
//! windows, and its windows have bounds of their own.

use super::scenario::ScenarioSpec;

/// Declares each scenario's module and lists its `SPEC` in [`ALL`], in the order given.
macro_rules! scenarios {
    ($($file:ident),+ $(,)?) => {
        $(mod $file;)+

        /// Every scenario, in the order `--scenario all` runs them and the tables list them.
        pub const ALL: &[&ScenarioSpec] = &[$(&$file::SPEC),+];
    };
}

scenarios! {
    fraud_errors,
    fraud_hangs,
    fraud_crash,
    fraud_outage,
    wallet_kill,
    wallet_ambiguous,
    payment_kill,
    notification_down,
    network_glitch,
    replica_freeze,
    payment_replica_kill,
    database_connections_killed,
    rolling_restart,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use crate::chaos::scenario::{Scenario, Scope};
    use crate::chaos::schedule::{for_backend, Action, Schedule};
    use crate::storage::Backend;

    /// The schedule of `s` on every backend it runs on.
    fn schedules(s: Scenario, d: Duration, seed: u64) -> Vec<Schedule> {
        [Backend::Sqlite, Backend::Postgres]
            .into_iter()
            .filter(|b| s.run_shape().runs_on(*b))
            .map(|b| for_backend(s, d, seed, b))
            .collect()
    }

    #[test]
    fn every_scenario_has_a_unique_kebab_case_name_that_parses_back() {
        let names: BTreeSet<&str> = Scenario::all().map(Scenario::name).collect();
        assert_eq!(names.len(), super::ALL.len());
        for s in Scenario::all() {
            let name = s.name();
            assert!(
                !name.is_empty()
                    && name
                        .split('-')
                        .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())),
                "{name}"
            );
            assert_eq!(name.parse::<Scenario>().expect("parses"), s);
            assert!(!s.fault().is_empty(), "{name}");
        }
        assert!("nope".parse::<Scenario>().is_err());
    }

    #[test]
    fn toolkit_covered_faults_keep_three_nines_over_every_request() {
        for s in Scenario::all() {
            let b = s.bounds();
            assert!(b.success_rate_min >= 0.999, "{}", s.name());
            let window_scoped = matches!(
                s.name(),
                "fraud-outage" | "payment-kill" | "database-connections-killed"
            );
            assert_eq!(
                matches!(b.scope, Scope::OutsideWindows { .. }),
                window_scoped,
                "{}",
                s.name()
            );
            assert_eq!(b.window.is_some(), window_scoped, "{}", s.name());
        }
    }

    #[test]
    fn readme_rows_say_what_the_bounds_say() {
        for s in Scenario::all() {
            let (b, r) = (s.bounds(), s.spec().readme);
            let every = r.measured_over.starts_with("every request");
            assert_eq!(every, matches!(b.scope, Scope::AllRequests), "{}", s.name());
            if every {
                let heal = b
                    .heal_ms_max
                    .map_or_else(String::new, |h| format!("; heal ≤ {} s", h / 1000));
                let retries = match b.first_answer_min {
                    None => String::new(),
                    Some(first) => format!(
                        ", after up to {} client retries (first answers ≥ {first})",
                        s.run_shape().client_retries
                    ),
                };
                assert_eq!(
                    r.measured_over,
                    format!("every request{retries}{heal}"),
                    "{}",
                    s.name()
                );
            }
            // A first-answer bound is stated exactly when the client retries.
            assert_eq!(
                b.first_answer_min.is_some(),
                s.run_shape().client_retries > 0,
                "{}",
                s.name()
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let d = Duration::from_secs(20);
        for s in Scenario::all() {
            assert_eq!(schedules(s, d, 42), schedules(s, d, 42), "{}", s.name());
            assert_ne!(schedules(s, d, 42), schedules(s, d, 43), "{}", s.name());
        }
    }

    #[test]
    fn schedules_fit_the_load_and_end_healthy() {
        for s in Scenario::all() {
            for seed in 0..50 {
                for secs in [4, 6, 8, 20, 60] {
                    for sch in schedules(s, Duration::from_secs(secs), seed) {
                        assert!(!sch.steps.is_empty(), "{}", s.name());
                        assert!(!sch.windows.is_empty(), "{}", s.name());
                        assert!(sch.steps.windows(2).all(|w| w[0].at <= w[1].at));
                        assert!(
                            sch.steps.iter().all(|st| st.at < sch.load),
                            "{} seed {seed}: a step after the load",
                            s.name()
                        );
                        assert!(sch.windows.iter().all(|w| w.start_ms < w.end_ms));
                        assert!(sch.steps[0].at >= Duration::from_millis(500));
                        let faults_set = sch
                            .steps
                            .iter()
                            .any(|st| matches!(st.action, Action::SetFaults { .. }));
                        if faults_set {
                            assert!(matches!(
                                sch.steps.last().map(|st| &st.action),
                                Some(Action::Restore)
                            ));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn scheduled_faults_are_settings_the_services_accept() {
        for s in Scenario::all() {
            for seed in 0..20 {
                for sch in schedules(s, Duration::from_secs(20), seed) {
                    for st in sch.steps {
                        if let Action::SetFaults { faults, .. } = st.action {
                            assert_eq!(faults.validate(), Ok(()), "{} seed {seed}", s.name());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_kill_and_freeze_has_a_window_naming_its_replica() {
        for s in Scenario::all() {
            for seed in 0..20 {
                for sch in schedules(s, Duration::from_secs(20), seed) {
                    let signalled: Vec<&str> = sch
                        .steps
                        .iter()
                        .filter_map(|st| match &st.action {
                            Action::Kill { replica } | Action::Freeze { replica } => {
                                Some(replica.as_str())
                            }
                            _ => None,
                        })
                        .collect();
                    let windows: Vec<&str> = sch
                        .windows
                        .iter()
                        .filter_map(|w| w.signalled_replica())
                        .collect();
                    assert_eq!(signalled, windows, "{} seed {seed}", s.name());
                }
            }
        }
    }
}
