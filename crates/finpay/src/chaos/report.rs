//! `report.html`: one self-contained page (inline SVG and CSS, no script, no network) with, per
//! scenario, the success rate, p50 and p99, and the ready replicas over time, fault windows shaded.
//!
//! Hand-written SVG rather than a plotting crate: three line charts need a few dozen lines, and
//! the output stays small, diffable and free of fonts or rasterisers.

use std::fmt::Write as _;

use super::result::ScenarioResult;
use super::run::RunConfig;
use super::scenario::Scope;
use super::schedule::Window;

const W: f64 = 880.0;
const H: f64 = 200.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 130.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 28.0;

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Series<'a> {
    label: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
    step: bool,
}

struct Chart<'a> {
    title: &'a str,
    x_max: f64,
    y_min: f64,
    y_max: f64,
    y_unit: &'a str,
    windows: &'a [Window],
    /// Lighter shading after each window: the recovery grace of window-scoped bounds.
    grace_ms: u64,
    series: Vec<Series<'a>>,
    /// A dashed horizontal line: (label, y).
    bound: Option<(String, f64)>,
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

/// The plot area of a chart and its data-to-pixel mapping.
struct Frame {
    /// Plot width and height in pixels.
    pw: f64,
    ph: f64,
    x_max: f64,
    y_min: f64,
    span: f64,
}

impl Frame {
    fn x(&self, v: f64) -> f64 {
        LEFT + self.pw * (v / self.x_max).clamp(0.0, 1.0)
    }

    fn y(&self, v: f64) -> f64 {
        TOP + self.ph * (1.0 - ((v - self.y_min) / self.span).clamp(0.0, 1.0))
    }
}

impl Chart<'_> {
    fn svg(&self) -> String {
        let f = Frame {
            pw: W - LEFT - RIGHT,
            ph: H - TOP - BOTTOM,
            x_max: self.x_max.max(1.0),
            y_min: self.y_min,
            span: (self.y_max - self.y_min).max(1e-9),
        };
        let mut s = String::new();
        let _ = write!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"##
        );
        let _ = write!(
            s,
            r##"<text x="{LEFT}" y="14" font-size="13" font-weight="bold">{}</text>"##,
            esc(self.title)
        );
        self.windows_svg(&f, &mut s);
        self.axes_svg(&f, &mut s);
        self.bound_svg(&f, &mut s);
        for (i, ser) in self.series.iter().enumerate() {
            series_svg(ser, i, &f, &mut s);
        }
        s.push_str("</svg>");
        s
    }

    /// The shaded fault windows, each after its lighter recovery grace.
    fn windows_svg(&self, f: &Frame, s: &mut String) {
        let ph = f.ph;
        for w in self.windows {
            if self.grace_ms > 0 {
                let (a, b) = (
                    w.end_ms as f64 / 1000.0,
                    (w.end_ms + self.grace_ms) as f64 / 1000.0,
                );
                let _ = write!(
                    s,
                    r##"<rect x="{:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="#f4a261" fill-opacity="0.1"><title>recovery grace, not measured against the bound</title></rect>"##,
                    f.x(a),
                    (f.x(b) - f.x(a)).max(0.0)
                );
            }
            let (a, b) = (w.start_ms as f64 / 1000.0, w.end_ms as f64 / 1000.0);
            let _ = write!(
                s,
                r##"<rect x="{:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="#f4a261" fill-opacity="0.25"><title>{}</title></rect>"##,
                f.x(a),
                (f.x(b) - f.x(a)).max(1.5),
                esc(&w.label)
            );
        }
    }

    /// The plot's border, five horizontal grid lines with their values, and the time axis.
    fn axes_svg(&self, f: &Frame, s: &mut String) {
        let (pw, ph) = (f.pw, f.ph);
        let _ = write!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
        );
        for i in 0..=4 {
            let v = self.y_min + f.span * f64::from(i) / 4.0;
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}{}</text>"##,
                LEFT + pw,
                f.y(v),
                f.y(v),
                LEFT - 4.0,
                f.y(v) + 4.0,
                fmt_num(v),
                self.y_unit
            );
        }
        let x_step = nice_max(f.x_max / 8.0);
        let mut t = 0.0;
        while t <= f.x_max + 1e-9 {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}s</text>"##,
                f.x(t),
                TOP + ph + 14.0,
                fmt_num(t)
            );
            t += x_step;
        }
    }

    /// The bound as a dashed line, when it is inside the plot.
    fn bound_svg(&self, f: &Frame, s: &mut String) {
        let Some((label, v)) = &self.bound else {
            return;
        };
        if *v >= self.y_min && *v <= self.y_max {
            let pw = f.pw;
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#c00" stroke-dasharray="5,4"/><text x="{:.1}" y="{:.1}" fill="#c00" text-anchor="end">{}</text>"##,
                LEFT + pw,
                f.y(*v),
                f.y(*v),
                LEFT + pw - 4.0,
                (f.y(*v) - 4.0).max(TOP + 10.0),
                esc(label)
            );
        }
    }
}

/// One series as a path, and its entry `i` in the legend.
fn series_svg(ser: &Series<'_>, i: usize, f: &Frame, s: &mut String) {
    let mut d = String::new();
    let mut prev: Option<(f64, f64)> = None;
    for &(px, py) in &ser.points {
        match prev {
            None => {
                let _ = write!(d, "M{:.1},{:.1}", f.x(px), f.y(py));
            }
            Some((_, qy)) if ser.step => {
                let _ = write!(
                    d,
                    " L{:.1},{:.1} L{:.1},{:.1}",
                    f.x(px),
                    f.y(qy),
                    f.x(px),
                    f.y(py)
                );
            }
            Some(_) => {
                let _ = write!(d, " L{:.1},{:.1}", f.x(px), f.y(py));
            }
        }
        prev = Some((px, py));
    }
    if !d.is_empty() {
        let _ = write!(
            s,
            r##"<path d="{d}" fill="none" stroke="{}" stroke-width="1.8"/>"##,
            ser.color
        );
    }
    let pw = f.pw;
    let ly = TOP + 12.0 + 16.0 * i as f64;
    let _ = write!(
        s,
        r##"<line x1="{:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"##,
        LEFT + pw + 6.0,
        LEFT + pw + 22.0,
        ser.color,
        LEFT + pw + 26.0,
        ly + 4.0,
        esc(ser.label)
    );
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else if v.abs() < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

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
        success_chart(r, x_max, grace_ms).svg(),
        latency_chart(r, x_max, grace_ms).svg(),
        replicas_chart(r, x_max, grace_ms).svg()
    )
}

/// Success rate per second against the bound; the y axis starts low enough to show the dips.
fn success_chart(r: &ScenarioResult, x_max: f64, grace_ms: u64) -> Chart<'_> {
    let rates: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .filter_map(|s| s.success_rate.map(|v| (s.second as f64 + 0.5, v * 100.0)))
        .collect();
    let lowest = rates.iter().map(|p| p.1).fold(100.0, f64::min);
    let y_min = if lowest >= 99.0 {
        98.0
    } else if lowest >= 90.0 {
        90.0
    } else {
        0.0
    };
    Chart {
        title: "success rate per second (by completion)",
        x_max,
        y_min,
        y_max: 100.0,
        y_unit: "%",
        windows: &r.fault_windows,
        grace_ms,
        series: vec![Series {
            label: "success",
            color: "#2a9d8f",
            points: rates,
            step: false,
        }],
        bound: Some((
            format!("bound {}%", r.bounds.success_rate_min * 100.0),
            r.bounds.success_rate_min * 100.0,
        )),
    }
}

/// p50 and p99 per second against the p99 bound.
fn latency_chart(r: &ScenarioResult, x_max: f64, grace_ms: u64) -> Chart<'_> {
    let p50: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .filter(|s| s.requests > 0)
        .map(|s| (s.second as f64 + 0.5, s.p50_ms))
        .collect();
    let p99: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .filter(|s| s.requests > 0)
        .map(|s| (s.second as f64 + 0.5, s.p99_ms))
        .collect();
    let top = p99.iter().map(|p| p.1).fold(1.0, f64::max);
    Chart {
        title: "latency per second, ms",
        x_max,
        y_min: 0.0,
        y_max: nice_max(top * 1.1),
        y_unit: "",
        windows: &r.fault_windows,
        grace_ms,
        series: vec![
            Series {
                label: "p50",
                color: "#457b9d",
                points: p50,
                step: false,
            },
            Series {
                label: "p99",
                color: "#e63946",
                points: p99,
                step: false,
            },
        ],
        bound: Some((
            format!("p99 bound {} ms", r.bounds.p99_ms_max),
            r.bounds.p99_ms_max,
        )),
    }
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

    #[test]
    fn nice_maxima_round_up() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(130.0), 200.0);
        assert_eq!(nice_max(400.0), 500.0);
    }
}
