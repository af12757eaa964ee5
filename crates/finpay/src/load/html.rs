//! `finpay load --report DIR`: `DIR/report.html`, one self-contained page (inline SVG and CSS, no
//! script, no network) with the run's numbers, its success rate and latency over time, its latency
//! histogram and its errors by kind; and `DIR/report.json`, the same report as `--json` prints it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::LoadReport;
use crate::chart::{bars, esc, latency_chart, success_chart};

/// Writes `report.html` and `report.json` into `dir` (created if missing).
pub fn write(report: &LoadReport, url: &str, concurrency: usize, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let json = serde_json::to_vec_pretty(&report.summary_json()).context("encode report")?;
    let html_path = dir.join("report.html");
    std::fs::write(dir.join("report.json"), json)
        .and_then(|()| std::fs::write(&html_path, html(report, url, concurrency)))
        .with_context(|| format!("write {}", html_path.display()))
}

/// The page.
pub fn html(r: &LoadReport, url: &str, concurrency: usize) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>finpay load: {}</title>\
         <style>body{{font-family:sans-serif;margin:24px;max-width:920px}}\
         table{{border-collapse:collapse;margin:8px 0 16px}}td,th{{border:1px solid #ccc;\
         padding:3px 8px;text-align:right}}th{{background:#f3f3f3}}td:first-child,th:first-child\
         {{text-align:left}}</style></head><body>",
        esc(url)
    );
    let _ = write!(
        s,
        "<h1>finpay load</h1><p>{} payments to <code>{}</code> in {:.2} s at concurrency \
         {concurrency}: {:.1} per second.</p>",
        r.requests,
        esc(url),
        r.elapsed_s,
        r.throughput_rps
    );
    summary(r, &mut s);
    let x_max = r.timeline.last().map_or(1.0, |sec| sec.second as f64 + 1.0);
    s.push_str(&success_chart(&r.timeline, x_max, &[], 0, None).svg());
    s.push('\n');
    s.push_str(&latency_chart(&r.timeline, x_max, &[], 0, None).svg());
    s.push('\n');
    let buckets: Vec<(String, u64)> = r
        .latency_histogram
        .iter()
        .map(|b| (bound(b.le_ms), b.count))
        .collect();
    s.push_str(&bars("latency histogram, requests", "≤ ms", &buckets));
    s.push('\n');
    errors(r, &mut s);
    s.push_str("</body></html>\n");
    s
}

fn bound(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.0}")
    }
}

fn summary(r: &LoadReport, s: &mut String) {
    let l = &r.latency_ms;
    let _ = write!(
        s,
        "<table><tr><th>requests</th><th>succeeded</th><th>declined</th><th>failed</th>\
         <th>success rate</th><th>after client retries</th><th>retries</th></tr>\
         <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td></tr>\
         </table><table><tr><th>latency, ms</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th>\
         <th>max</th></tr><tr><td>all requests</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td>\
         <td>{:.2}</td><td>{:.2}</td></tr></table>",
        r.requests,
        r.succeeded,
        r.declined,
        r.failed,
        r.success_rate,
        r.success_rate_after_retries,
        r.retries,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max
    );
}

/// Errors by kind: by each request's first answer, and what was left after the client's retries.
fn errors(r: &LoadReport, s: &mut String) {
    s.push_str("<h2>Errors by kind</h2>");
    if r.errors.is_empty() && r.errors_after_retries.is_empty() {
        s.push_str("<p>None: every request got a payment answer.</p>");
        return;
    }
    s.push_str("<table><tr><th>kind</th><th>first answers</th><th>after retries</th></tr>");
    let kinds: std::collections::BTreeSet<&String> = r
        .errors
        .keys()
        .chain(r.errors_after_retries.keys())
        .collect();
    for kind in kinds {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(kind),
            r.errors.get(kind).copied().unwrap_or(0),
            r.errors_after_retries.get(kind).copied().unwrap_or(0)
        );
    }
    s.push_str(
        "</table><p>A kind is the HTTP status, a 2xx whose payment ended elsewhere \
                (<code>201:failed</code>), or <code>transport</code> when no answer came.</p>",
    );
}
