//! `report.html`: one self-contained page (inline SVG and CSS, no script, no network) with, per
//! scenario, the success rate, p50 and p99, and the ready replicas over time, fault windows shaded.
//! The charts are [`crate::chart`]'s.

use std::fmt::Write as _;

use super::result::ScenarioResult;
use super::run::RunConfig;
use super::scenario::Scope;
use crate::chart::{esc, latency_chart, success_chart, Chart, Series};

/// The three charts of one scenario, on one time axis.
fn charts(r: &ScenarioResult) -> String {
    let grace_ms = match r.bounds.scope {
        Scope::AllRequests => 0,
        Scope::OutsideWindows { grace_ms } => grace_ms,
    };
    let x_max = r
        .load_s
        .max(r.timeline.last().map_or(0.0, |s| s.second as f64 + 1.0));
    format!(
        "{}\n{}\n{}\n",
        success_chart(
            &r.timeline,
            x_max,
            &r.fault_windows,
            grace_ms,
            Some((
                format!("bound {}%", r.bounds.success_rate_min * 100.0),
                r.bounds.success_rate_min * 100.0,
            )),
        )
        .svg(),
        latency_chart(
            &r.timeline,
            x_max,
            &r.fault_windows,
            grace_ms,
            Some((
                format!("p99 bound {} ms", r.bounds.p99_ms_max),
                r.bounds.p99_ms_max,
            )),
        )
        .svg(),
        replicas_chart(r, x_max, grace_ms).svg()
    )
}

/// Ready replicas of each service over time, as steps.
fn replicas_chart(r: &ScenarioResult, x_max: f64, grace_ms: u64) -> Chart<'_> {
    let colors = [
        ("fraud", "#e76f51"),
        ("wallet", "#264653"),
        ("notification", "#8d5fd3"),
        ("payment", "#2a9d8f"),
    ];
    // Each service's line is nudged a little so equal counts (notification and payment are both
    // one replica) do not hide each other.
    let series = colors
        .iter()
        .enumerate()
        .map(|(i, (svc, color))| Series {
            label: svc,
            color,
            points: r
                .samples
                .iter()
                .map(|s| {
                    (
                        s.at_ms as f64 / 1000.0,
                        f64::from(s.ready.get(*svc).copied().unwrap_or(0))
                            + 0.04 * (i as f64 - 1.5),
                    )
                })
                .collect(),
            step: true,
        })
        .collect();
    Chart {
        title: "replicas ready (fewest seen in each second, sampled every 100 ms)",
        x_max,
        y_min: 0.0,
        y_max: 4.0,
        y_unit: "",
        windows: &r.fault_windows,
        grace_ms,
        series,
        bound: None,
    }
}

/// The whole page.
pub fn html(results: &[ScenarioResult], cfg: &RunConfig) -> String {
    let mut s = String::new();
    s.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>finpay chaos report</title>\n<style>\
         body{font-family:sans-serif;margin:24px;color:#222;max-width:960px}\
         table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
         .pass{color:#1a7f37;font-weight:bold}.fail{color:#c00;font-weight:bold}\
         section{margin-top:28px;border-top:2px solid #ddd;padding-top:8px}\
         .v{color:#c00;font-family:monospace;font-size:12px}.note{color:#555;font-size:13px}\
         </style></head><body>\n",
    );
    let passed = results.iter().filter(|r| r.passed).count();
    let _ = writeln!(
        s,
        "<h1>finpay chaos report</h1><p>{passed}/{} scenarios passed. Seed {}, {} s of load per scenario at {} payments/s (open loop). \
         Shaded: fault windows (kill and SIGSTOP windows end when the replacement is ready).</p>",
        results.len(),
        cfg.seed,
        cfg.duration.as_secs_f64(),
        cfg.rate_per_s
    );
    summary_table(results, &mut s);
    for r in results {
        section(r, &mut s);
    }
    s.push_str("</body></html>\n");
    s
}

/// One row per scenario: result, measured against bound, and the checks.
fn summary_table(results: &[ScenarioResult], s: &mut String) {
    s.push_str(
        "<table><tr><th>scenario</th><th>result</th><th>success (scope)</th><th>bound</th><th>p99 ms</th><th>bound</th>\
         <th>p50 / max ms</th><th>payments</th><th>money</th><th>notifications</th><th>restarts</th></tr>\n",
    );
    for r in results {
        let scope = match r.bounds.scope {
            Scope::AllRequests => "all requests".to_owned(),
            Scope::OutsideWindows { grace_ms } => format!("outside window +{grace_ms} ms"),
        };
        let _ = writeln!(
            s,
            "<tr><td><a href=\"#{n}\">{n}</a></td><td class=\"{c}\">{res}</td><td>{:.4} ({})</td><td>&ge; {}</td><td>{:.1}</td><td>&le; {}</td>\
             <td>{:.1} / {:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.measured.success_rate,
            esc(&scope),
            r.bounds.success_rate_min,
            r.measured.p99_ms,
            r.bounds.p99_ms_max,
            r.latency_ms.p50,
            r.latency_ms.max,
            r.requests,
            if r.invariants_ok { "ok" } else { "VIOLATED" },
            if r.notifications_ok { "ok" } else { "VIOLATED" },
            r.restarts,
            n = esc(&r.name),
            c = if r.passed { "pass" } else { "fail" },
            res = if r.passed { "passed" } else { "FAILED" },
        );
    }
    s.push_str("</table>\n");
}

/// One scenario: the figures, the heals, the violations and the charts.
fn section(r: &ScenarioResult, s: &mut String) {
    let _ = writeln!(
        s,
        "<section id=\"{n}\"><h2>{n} <span class=\"{c}\">{res}</span></h2><p class=\"note\">Fault: {}. \
         Overall success {:.4}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} payments; \
         {} restarts; outbox drained in {}.</p>",
        esc(r.fault),
        r.success_rate,
        r.latency_ms.p50,
        r.latency_ms.p99,
        r.latency_ms.max,
        r.requests,
        r.restarts,
        r.drain_ms
            .map_or_else(|| "-".to_owned(), |d| format!("{d} ms")),
        n = esc(&r.name),
        c = if r.passed { "pass" } else { "fail" },
        res = if r.passed { "passed" } else { "FAILED" },
    );
    if let Some(w) = &r.measured.window {
        let _ = writeln!(
            s,
            "<p class=\"note\">In the fault window: {} requests, {} succeeded, failures {}, p99 {:.1} ms.</p>",
            w.requests,
            w.succeeded,
            esc(&format!("{:?}", w.failures)),
            w.p99_ms
        );
    }
    for h in &r.heals {
        let _ = writeln!(
            s,
            "<p class=\"note\">{} {} at {} ms: {}</p>",
            esc(&h.signal),
            esc(&h.replica),
            h.at_ms,
            h.healed_ms.map_or_else(
                || "not replaced".to_owned(),
                |x| format!("replaced and ready after {x} ms")
            )
        );
    }
    for v in &r.violations {
        let _ = writeln!(s, "<div class=\"v\">violation: {}</div>", esc(v));
    }
    s.push_str(&charts(r));
    s.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::schedule::Window;

    #[test]
    fn text_is_escaped_and_the_page_has_one_svg_per_chart() {
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
        let cfg = RunConfig {
            storage: crate::storage::Backend::Sqlite,
            database_url: String::new(),
            duration: std::time::Duration::from_secs(6),
            seed: 1,
            rate_per_s: 100.0,
            concurrency: 16,
            warmup: std::time::Duration::ZERO,
        };
        let mut r = ScenarioResult::harness_failure(
            "fraud-errors".parse().expect("a listed scenario"),
            &cfg,
            "<boom>".into(),
        );
        r.fault_windows.push(Window {
            label: "x".into(),
            start_ms: 1000,
            end_ms: 2000,
        });
        let page = html(&[r], &cfg);
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(page.contains("&lt;boom&gt;"));
        assert!(!page.contains("src=") && !page.contains("<link"));
        assert!(!page.contains("<script"));
    }
}
