//! The steady-state check: which requests the bounds are measured over, what they showed, and
//! the violations of the stated bounds.

use std::time::Duration;

use super::inject::HEAL_WATCH_MAX;
use super::result::{Heal, Measured, WindowMeasured};
use super::scenario::{Bounds, Scope};
use super::schedule::{ms, Window};
use crate::load::{self, Class, LoadReport, Outcome};

/// The fault windows as they happened: a kill or freeze window starts when its replica was
/// signalled and ends when the replica was back (or at the end of the load when it never was).
/// Each heal ends the window of the same replica planned nearest to it.
pub fn windows_as_happened(planned: &[Window], heals: &[Heal], load: Duration) -> Vec<Window> {
    let mut windows = planned.to_vec();
    let mut unused: Vec<&Heal> = heals.iter().collect();
    for w in windows.iter_mut() {
        let Some(replica) = w.signalled_replica() else {
            continue;
        };
        let nearest = unused
            .iter()
            .enumerate()
            .filter(|(_, h)| h.replica == replica)
            .min_by_key(|(_, h)| h.at_ms.abs_diff(w.start_ms))
            .map(|(i, _)| i);
        if let Some(i) = nearest {
            let h = unused.remove(i);
            w.start_ms = h.at_ms;
            w.end_ms = h.healed_ms.map_or(ms(load), |x| h.at_ms + x);
        }
    }
    windows
}

/// Whether a request `[start, start + latency]` overlaps a window widened by `grace_ms`.
fn overlaps(o: &Outcome, windows: &[Window], grace_ms: u64) -> bool {
    let start = o.started_us / 1000;
    let end = (o.started_us.saturating_add(o.latency_us)) / 1000;
    windows
        .iter()
        .any(|w| start < w.end_ms.saturating_add(grace_ms) && end >= w.start_ms)
}

fn p99_ms(mut latencies_us: Vec<u64>) -> f64 {
    if latencies_us.is_empty() {
        return 0.0;
    }
    latencies_us.sort_unstable();
    let idx = ((latencies_us.len() as f64) * 0.99).ceil() as usize;
    let idx = idx.clamp(1, latencies_us.len()) - 1;
    latencies_us[idx] as f64 / 1000.0
}

fn is_success(o: &Outcome) -> (bool, String) {
    match load::classify(o.http_status, o.payment_status.as_deref()) {
        Class::Succeeded | Class::Declined => (true, String::new()),
        Class::Failed(k) => (false, k),
    }
}

/// The success rate and p99 over the scenario's scope, and the window's own figures.
pub fn measure(report: &LoadReport, windows: &[Window], bounds: &Bounds) -> Measured {
    match bounds.scope {
        Scope::AllRequests => Measured {
            requests: report.requests,
            success_rate: report.success_rate_after_retries,
            first_answer_success_rate: report.success_rate,
            p99_ms: report.latency_ms.p99,
            window: None,
        },
        Scope::OutsideWindows { grace_ms } => {
            let (mut out_n, mut out_ok, mut out_lat) = (0u64, 0u64, Vec::new());
            let mut out_first_ok = 0u64;
            let mut w = WindowMeasured::default();
            let mut w_lat = Vec::new();
            for o in &report.outcomes {
                let (ok, kind) = is_success(o);
                if overlaps(o, windows, grace_ms) {
                    w.requests += 1;
                    w_lat.push(o.latency_us);
                    if ok {
                        w.succeeded += 1;
                    } else {
                        *w.failures.entry(kind).or_insert(0) += 1;
                    }
                } else {
                    out_n += 1;
                    out_ok += u64::from(ok);
                    out_first_ok += u64::from(o.first_ok && ok);
                    out_lat.push(o.latency_us);
                }
            }
            w.p99_ms = p99_ms(w_lat);
            let rate = |n: u64| {
                if out_n == 0 {
                    0.0
                } else {
                    n as f64 / out_n as f64
                }
            };
            Measured {
                requests: out_n,
                success_rate: rate(out_ok),
                first_answer_success_rate: rate(out_first_ok),
                p99_ms: p99_ms(out_lat),
                window: Some(w),
            }
        }
    }
}

/// Compares the measurements with the stated bounds. A window-scoped run with no request outside
/// its windows measured nothing, which is a violation too.
pub fn steady_state(bounds: &Bounds, m: &Measured, heals: &[Heal], violations: &mut Vec<String>) {
    let over = match bounds.scope {
        Scope::AllRequests => "every request".to_owned(),
        Scope::OutsideWindows { grace_ms } => {
            format!("requests outside the fault window (+{grace_ms} ms)")
        }
    };
    if m.success_rate < bounds.success_rate_min {
        violations.push(format!(
            "success rate {:.5} over {} {over} is below the bound {}",
            m.success_rate, m.requests, bounds.success_rate_min
        ));
    }
    if let Some(min) = bounds.first_answer_min {
        if m.first_answer_success_rate < min {
            violations.push(format!(
                "first-answer success rate {:.5} over {} {over} is below the bound {min}",
                m.first_answer_success_rate, m.requests
            ));
        }
    }
    if m.p99_ms > bounds.p99_ms_max {
        violations.push(format!(
            "p99 {:.1} ms over {over} is above the bound {} ms",
            m.p99_ms, bounds.p99_ms_max
        ));
    }
    if let (Some(wb), Some(wm)) = (bounds.window, &m.window) {
        for (kind, n) in &wm.failures {
            if !wb.allowed_failures.contains(&kind.as_str()) {
                violations.push(format!(
                    "{n} requests in the fault window failed with {kind}; only {} are allowed there",
                    wb.allowed_failures.join("/")
                ));
            }
        }
        if let Some(max) = wb.p99_ms_max {
            if wm.p99_ms > max {
                violations.push(format!(
                    "p99 {:.1} ms in the fault window is above the fail-fast bound {max} ms",
                    wm.p99_ms
                ));
            }
        }
    }
    if let Some(max) = bounds.heal_ms_max {
        for h in heals {
            match h.healed_ms {
                None => violations.push(format!(
                    "{} ({} at {} ms) was not replaced within {} s",
                    h.replica,
                    h.signal,
                    h.at_ms,
                    HEAL_WATCH_MAX.as_secs()
                )),
                Some(t) if t > max => violations.push(format!(
                    "{} ({} at {} ms) took {t} ms to be replaced and ready; the bound is {max} ms",
                    h.replica, h.signal, h.at_ms
                )),
                Some(_) => {}
            }
        }
    }
    if matches!(bounds.scope, Scope::OutsideWindows { .. }) && m.requests == 0 {
        violations.push("no request outside the fault window: nothing measured".into());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::chaos::scenario::Scenario;

    fn scenario(name: &str) -> Scenario {
        name.parse().expect("a listed scenario")
    }

    fn outcome(start_ms: u64, latency_ms: u64, status: Option<u16>, st: Option<&str>) -> Outcome {
        Outcome {
            n: 0,
            idempotency_key: "k".into(),
            account_id: "a".into(),
            amount_minor: 1,
            http_status: status,
            payment_id: None,
            payment_status: st.map(str::to_owned),
            attempts: 1,
            first_ok: true,
            started_us: start_ms * 1000,
            latency_us: latency_ms * 1000,
        }
    }

    fn report(outcomes: Vec<Outcome>) -> LoadReport {
        LoadReport {
            requests: outcomes.len() as u64,
            succeeded: 0,
            failed: 0,
            declined: 0,
            success_rate: 0.5,
            succeeded_after_retries: 0,
            success_rate_after_retries: 0.5,
            retries: 0,
            errors_after_retries: BTreeMap::new(),
            throughput_rps: 0.0,
            elapsed_s: 0.0,
            latency_ms: load::Latency::default(),
            latency_histogram: Vec::new(),
            errors: BTreeMap::new(),
            succeeded_amount_minor: 0,
            timeline: Vec::new(),
            outcomes,
        }
    }

    #[test]
    fn window_scoped_bounds_split_requests_by_overlap_with_the_widened_window() {
        let b = *scenario("fraud-outage").bounds();
        let w = vec![Window {
            label: "outage".into(),
            start_ms: 1_000,
            end_ms: 2_000,
        }];
        let r = report(vec![
            outcome(0, 10, Some(201), Some("succeeded")),
            // In flight when the window opened.
            outcome(990, 20, Some(503), None),
            outcome(1_500, 5, Some(503), None),
            // Inside the grace after the window.
            outcome(6_900, 5, Some(503), None),
            outcome(7_100, 5, Some(201), Some("declined")),
        ]);
        let m = measure(&r, &w, &b);
        assert_eq!(m.requests, 2);
        assert_eq!(m.success_rate, 1.0);
        let wm = m.window.clone().expect("window measured");
        assert_eq!(wm.requests, 3);
        assert_eq!(wm.failures.get("503"), Some(&3));
        let mut v = Vec::new();
        steady_state(&b, &m, &[], &mut v);
        assert!(v.is_empty(), "{v:?}");

        let r = report(vec![
            outcome(0, 10, Some(500), None),
            outcome(1_500, 5, Some(500), None),
        ]);
        let mut v = Vec::new();
        steady_state(&b, &measure(&r, &w, &b), &[], &mut v);
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn a_slow_or_missing_heal_is_a_violation() {
        let b = *scenario("replica-freeze").bounds();
        let m = Measured {
            requests: 1,
            success_rate: 1.0,
            first_answer_success_rate: 1.0,
            p99_ms: 1.0,
            window: None,
        };
        let heal = |healed_ms| Heal {
            replica: "fraud-0".into(),
            signal: "SIGSTOP".into(),
            at_ms: 100,
            healed_ms,
        };
        let mut v = Vec::new();
        steady_state(&b, &m, &[heal(Some(4_000))], &mut v);
        assert!(v.is_empty(), "{v:?}");
        steady_state(&b, &m, &[heal(Some(6_000)), heal(None)], &mut v);
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn p99_of_a_hundred_is_the_ninety_ninth() {
        let lat: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(p99_ms(lat), 99.0);
        assert_eq!(p99_ms(Vec::new()), 0.0);
    }

    #[test]
    fn kill_windows_end_when_their_replica_is_back_and_others_as_planned() {
        let w = |label: &str, start_ms, end_ms| Window {
            label: label.into(),
            start_ms,
            end_ms,
        };
        let heal = |replica: &str, at_ms, healed_ms| Heal {
            replica: replica.into(),
            signal: "SIGKILL".into(),
            at_ms,
            healed_ms,
        };
        let planned = [
            w("kill -9 fraud-1", 1_000, 1_500),
            w("SIGSTOP wallet-0", 3_000, 3_500),
            w("kill -9 fraud-1", 5_000, 5_500),
            w("fraud 30% errors", 6_000, 7_000),
        ];
        let heals = [
            heal("fraud-1", 5_010, Some(300)),
            heal("fraud-1", 1_020, Some(200)),
            heal("wallet-0", 3_030, None),
        ];
        let got = windows_as_happened(&planned, &heals, Duration::from_secs(9));
        assert_eq!(
            got,
            [
                w("kill -9 fraud-1", 1_020, 1_220),
                w("SIGSTOP wallet-0", 3_030, 9_000),
                w("kill -9 fraud-1", 5_010, 5_310),
                w("fraud 30% errors", 6_000, 7_000),
            ]
        );
    }

    #[test]
    fn a_window_scoped_run_with_nothing_outside_the_window_is_a_violation() {
        let b = *scenario("payment-kill").bounds();
        let w = vec![Window {
            label: "kill -9 payment-0".into(),
            start_ms: 0,
            end_ms: 10_000,
        }];
        let r = report(vec![outcome(500, 5, None, None)]);
        let m = measure(&r, &w, &b);
        assert_eq!(m.requests, 0);
        let mut v = Vec::new();
        steady_state(&b, &m, &[], &mut v);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[1].contains("nothing measured"), "{v:?}");
    }
}
