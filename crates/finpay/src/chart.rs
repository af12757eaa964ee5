//! Line charts as inline SVG, for the self-contained HTML reports of `finpay chaos` and
//! `finpay load` (no script, no network, no fonts).
//!
//! Hand-written SVG rather than a plotting crate: a few line charts and a bar chart need a few
//! dozen lines, and the output stays small, diffable and free of fonts or rasterisers.

use std::fmt::Write as _;

use crate::chaos::schedule::Window;
use crate::load::Second;

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

pub(crate) struct Series<'a> {
    pub(crate) label: &'a str,
    pub(crate) color: &'a str,
    pub(crate) points: Vec<(f64, f64)>,
    pub(crate) step: bool,
}

pub(crate) struct Chart<'a> {
    pub(crate) title: &'a str,
    pub(crate) x_max: f64,
    pub(crate) y_min: f64,
    pub(crate) y_max: f64,
    pub(crate) y_unit: &'a str,
    pub(crate) windows: &'a [Window],
    /// Lighter shading after each window: the recovery grace of window-scoped bounds.
    pub(crate) grace_ms: u64,
    pub(crate) series: Vec<Series<'a>>,
    /// A dashed horizontal line: (label, y).
    pub(crate) bound: Option<(String, f64)>,
}

pub(crate) fn nice_max(v: f64) -> f64 {
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
    /// The chart as one `<svg>` element.
    pub(crate) fn svg(&self) -> String {
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

pub(crate) fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else if v.abs() < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// Success rate per second (by completion), with an optional bound; the y axis starts low enough
/// to show the dips.
pub(crate) fn success_chart<'a>(
    timeline: &[Second],
    x_max: f64,
    windows: &'a [Window],
    grace_ms: u64,
    bound: Option<(String, f64)>,
) -> Chart<'a> {
    let rates: Vec<(f64, f64)> = timeline
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
        windows,
        grace_ms,
        series: vec![Series {
            label: "success",
            color: "#2a9d8f",
            points: rates,
            step: false,
        }],
        bound,
    }
}

/// p50 and p99 per second, with an optional bound.
pub(crate) fn latency_chart<'a>(
    timeline: &[Second],
    x_max: f64,
    windows: &'a [Window],
    grace_ms: u64,
    bound: Option<(String, f64)>,
) -> Chart<'a> {
    let per_second = |q: fn(&Second) -> f64| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .filter(|s| s.requests > 0)
            .map(|s| (s.second as f64 + 0.5, q(s)))
            .collect()
    };
    let p50 = per_second(|s| s.p50_ms);
    let p99 = per_second(|s| s.p99_ms);
    let top = p99.iter().map(|p| p.1).fold(1.0, f64::max);
    Chart {
        title: "latency per second, ms",
        x_max,
        y_min: 0.0,
        y_max: nice_max(top * 1.1),
        y_unit: "",
        windows,
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
        bound,
    }
}

/// A bar chart of labelled counts (a histogram's buckets), one bar per entry, left to right.
pub(crate) fn bars(title: &str, x_label: &str, entries: &[(String, u64)]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"##
    );
    let _ = write!(
        s,
        r##"<text x="{LEFT}" y="14" font-size="13" font-weight="bold">{}</text>"##,
        esc(title)
    );
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
    );
    let top = nice_max(entries.iter().map(|e| e.1).max().unwrap_or(0) as f64);
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end">0</text>"##,
        LEFT - 4.0,
        TOP + 4.0,
        fmt_num(top),
        LEFT - 4.0,
        TOP + ph + 4.0
    );
    let n = entries.len().max(1) as f64;
    let slot = pw / n;
    for (i, (label, count)) in entries.iter().enumerate() {
        let h = ph * (*count as f64 / top);
        let x = LEFT + slot * i as f64;
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#457b9d"><title>{} {}: {count}</title></rect>"##,
            x + 1.0,
            TOP + ph - h,
            (slot - 2.0).max(1.0),
            esc(x_label),
            esc(label)
        );
        // Every other label when they would crowd each other.
        if entries.len() <= 16 || i % 2 == 0 {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                x + slot / 2.0,
                TOP + ph + 14.0,
                esc(label)
            );
        }
    }
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}">{}</text>"##,
        LEFT + pw + 6.0,
        TOP + ph + 14.0,
        esc(x_label)
    );
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_maxima_round_up() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(130.0), 200.0);
        assert_eq!(nice_max(400.0), 500.0);
    }
}
