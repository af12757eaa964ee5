//! What the dashboard plots: once a second, every payment replica's `/metrics` is read and summed,
//! and the change since the sample a few seconds earlier becomes one point: the user-visible
//! success rate, p50 and p99 (interpolated within the histogram buckets, as PromQL's
//! `histogram_quantile` does), payments per second, fraud's effective and actual requests per
//! second, hedges fired and won, and the outbox depth. Breaker states come from the last sample.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use finpay_services::ServiceKind;
use serde::Serialize;

use crate::cluster::now_ms;
use crate::supervisor::Shared;

/// How often the replicas are read.
pub const EVERY: Duration = Duration::from_secs(1);
/// A point is the change over this many samples, so a second with few payments does not swing.
const SPAN: usize = 5;
/// Points kept: five minutes.
const KEEP: usize = 300;
/// Payment outcomes that are not a new payment's answer (a replay, a refused key reuse, a
/// payment still running); the success rate leaves them out, as the dashboard JSON does.
const NOT_ANSWERS: [&str; 3] = ["replayed", "key_reused", "in_progress"];

/// One scrape of every payment replica, summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub at_ms: i64,
    /// `finpay_payments_total` by outcome.
    pub payments: BTreeMap<String, f64>,
    /// `finpay_payment_duration_seconds_bucket` of answered payments, by `le` (seconds).
    pub buckets: BTreeMap<Le, f64>,
    /// `finpay_client_requests_total` and `finpay_client_attempts_total` of fraud.
    pub fraud_requests: f64,
    pub fraud_attempts: f64,
    pub hedges: f64,
    pub hedges_won: f64,
    pub outbox_pending: f64,
    /// `finpay_client_breaker_state` by (dependency, endpoint); the highest of the replicas.
    pub breakers: BTreeMap<(String, String), f64>,
}

/// A bucket bound that orders as a number (`+Inf` last).
#[derive(Debug, Clone, Copy)]
pub struct Le(pub f64);
impl PartialEq for Le {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Le {}
impl PartialOrd for Le {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Le {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One sample line of an exposition: its name, its labels and its value.
type SampleLine<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

/// One point of the live charts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub at_ms: i64,
    /// Answered payments per second.
    pub payments_per_s: f64,
    /// Succeeded or declined among answered payments; None when none was answered.
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub fraud_effective_per_s: f64,
    pub fraud_actual_per_s: f64,
    pub hedges_per_s: f64,
    pub hedges_won_per_s: f64,
    pub outbox_pending: f64,
}

/// One breaker, as the last sample saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerView {
    pub dependency: String,
    /// Empty for the dependency-wide breaker.
    pub endpoint: String,
    /// `closed`, `half_open` or `open`.
    pub state: &'static str,
}

/// The samples and the points made of them.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Totals>,
    points: VecDeque<Point>,
}

impl History {
    /// Adds a sample and, once there is one [`SPAN`] samples older, a point.
    pub fn push(&mut self, t: Totals) {
        if self.samples.len() > SPAN {
            self.samples.pop_front();
        }
        if let Some(old) = self.samples.front() {
            if let Some(p) = point(old, &t) {
                if self.points.len() == KEEP {
                    self.points.pop_front();
                }
                self.points.push_back(p);
            }
        }
        self.samples.push_back(t);
    }

    pub fn points(&self) -> Vec<Point> {
        self.points.iter().cloned().collect()
    }

    pub fn breakers(&self) -> Vec<BreakerView> {
        let Some(last) = self.samples.back() else {
            return Vec::new();
        };
        last.breakers
            .iter()
            .map(|((dependency, endpoint), v)| BreakerView {
                dependency: dependency.clone(),
                endpoint: endpoint.clone(),
                state: match *v as i64 {
                    0 => "closed",
                    1 => "half_open",
                    _ => "open",
                },
            })
            .collect()
    }
}

/// The point between two samples; None when the clock did not move or a replica restarted (a
/// counter went down).
fn point(old: &Totals, new: &Totals) -> Option<Point> {
    let secs = (new.at_ms - old.at_ms) as f64 / 1000.0;
    if secs <= 0.0 {
        return None;
    }
    let delta = |a: f64, b: f64| (b - a).max(0.0);
    let answered = |t: &Totals| -> f64 {
        t.payments
            .iter()
            .filter(|(k, _)| !NOT_ANSWERS.contains(&k.as_str()))
            .map(|(_, v)| v)
            .sum()
    };
    let ok = |t: &Totals| -> f64 {
        ["succeeded", "declined"]
            .iter()
            .filter_map(|k| t.payments.get(*k))
            .sum()
    };
    let answers = delta(answered(old), answered(new));
    let succeeded = delta(ok(old), ok(new));
    let buckets: Vec<(f64, f64)> = new
        .buckets
        .iter()
        .map(|(le, n)| (le.0, delta(old.buckets.get(le).copied().unwrap_or(0.0), *n)))
        .collect();
    Some(Point {
        at_ms: new.at_ms,
        payments_per_s: answers / secs,
        success_rate: (answers > 0.0).then(|| (succeeded / answers).min(1.0)),
        p50_ms: quantile(0.5, &buckets).map(|s| s * 1000.0),
        p99_ms: quantile(0.99, &buckets).map(|s| s * 1000.0),
        fraud_effective_per_s: delta(old.fraud_requests, new.fraud_requests) / secs,
        fraud_actual_per_s: delta(old.fraud_attempts, new.fraud_attempts) / secs,
        hedges_per_s: delta(old.hedges, new.hedges) / secs,
        hedges_won_per_s: delta(old.hedges_won, new.hedges_won) / secs,
        outbox_pending: new.outbox_pending,
    })
}

/// The `q` quantile of cumulative buckets `(le, count)` sorted by `le`, interpolated linearly
/// within its bucket; the highest finite bound when it falls in `+Inf`.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let inside = count - prev.1;
            let frac = if inside > 0.0 {
                (rank - prev.1) / inside
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

/// One sample line: name, labels, value.
fn parse_line(line: &str) -> Option<SampleLine<'_>> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => {
            let labels = rest
                .trim_end_matches('}')
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.trim_start_matches(','), v.trim_matches('"')))
                })
                .collect();
            (name, labels)
        }
    };
    Some((name, labels, value))
}

/// Adds one replica's exposition to `t`.
pub fn add(text: &str, t: &mut Totals) {
    for (name, labels, v) in text.lines().filter_map(parse_line) {
        let label = |k: &str| labels.iter().find(|l| l.0 == k).map_or("", |l| l.1);
        let fraud = label("dependency") == "fraud";
        match name {
            "finpay_payments_total" => {
                *t.payments.entry(label("outcome").to_owned()).or_default() += v;
            }
            "finpay_payment_duration_seconds_bucket"
                if !NOT_ANSWERS.contains(&label("outcome")) =>
            {
                let le = match label("le") {
                    "+Inf" => f64::INFINITY,
                    s => s.parse().unwrap_or(f64::INFINITY),
                };
                *t.buckets.entry(Le(le)).or_default() += v;
            }
            "finpay_client_requests_total" if fraud => t.fraud_requests += v,
            "finpay_client_attempts_total" if fraud => t.fraud_attempts += v,
            "finpay_client_hedges_total" if fraud => t.hedges += v,
            "finpay_client_hedges_won_total" if fraud => t.hedges_won += v,
            "finpay_outbox_pending" => t.outbox_pending += v,
            "finpay_client_breaker_state" => {
                let key = (label("dependency").to_owned(), label("endpoint").to_owned());
                let e = t.breakers.entry(key).or_insert(0.0);
                *e = e.max(v);
            }
            _ => {}
        }
    }
}

/// Reads every payment replica once a second into `history`, until the task is aborted.
pub async fn run(shared: Arc<Shared>, history: Arc<Mutex<History>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap_or_default();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut t = Totals {
            at_ms: now_ms(),
            ..Totals::default()
        };
        for r in shared.snapshot().by_service(ServiceKind::Payment) {
            let url = format!("{}/metrics", r.admin_url.trim_end_matches('/'));
            if let Ok(resp) = http.get(url).send().await {
                if let Ok(text) = resp.text().await {
                    add(&text, &mut t);
                }
            }
        }
        history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# HELP finpay_payments_total Payments.
finpay_payments_total{outcome="succeeded"} 90
finpay_payments_total{outcome="declined"} 8
finpay_payments_total{outcome="failed"} 2
finpay_payments_total{outcome="replayed"} 50
finpay_payment_duration_seconds_bucket{outcome="succeeded",le="0.01"} 50
finpay_payment_duration_seconds_bucket{outcome="succeeded",le="0.1"} 100
finpay_payment_duration_seconds_bucket{outcome="succeeded",le="+Inf"} 100
finpay_payment_duration_seconds_bucket{outcome="replayed",le="0.01"} 50
finpay_client_requests_total{dependency="fraud",outcome="ok"} 100
finpay_client_attempts_total{dependency="fraud"} 140
finpay_client_attempts_total{dependency="wallet"} 999
finpay_client_breaker_state{dependency="fraud"} 0
finpay_client_breaker_state{dependency="fraud",endpoint="http://127.0.0.1:1/"} 2
finpay_outbox_pending 3
"#;

    #[test]
    fn an_exposition_is_summed_by_what_the_dashboard_shows() {
        let mut t = Totals::default();
        add(EXPOSITION, &mut t);
        add(EXPOSITION, &mut t);
        assert_eq!(t.payments["succeeded"], 180.0);
        assert_eq!(t.buckets[&Le(0.01)], 100.0, "replays left out");
        assert_eq!(t.buckets[&Le(f64::INFINITY)], 200.0);
        assert_eq!((t.fraud_requests, t.fraud_attempts), (200.0, 280.0));
        assert_eq!(t.outbox_pending, 6.0);
        let open = ("fraud".to_owned(), "http://127.0.0.1:1/".to_owned());
        assert_eq!(t.breakers[&open], 2.0);
    }

    #[test]
    fn a_point_is_the_change_between_samples_and_a_restart_is_not_negative() {
        let mut h = History::default();
        let mut first = Totals::default();
        add(EXPOSITION, &mut first);
        let mut second = first.clone();
        second.at_ms = 2000;
        *second.payments.entry("succeeded".into()).or_default() += 19.0;
        *second.payments.entry("failed".into()).or_default() += 1.0;
        for (le, add) in [(0.01, 10.0), (0.1, 20.0), (f64::INFINITY, 20.0)] {
            *second.buckets.entry(Le(le)).or_default() += add;
        }
        second.fraud_attempts += 60.0;
        h.push(first.clone());
        h.push(second);
        let p = h.points().pop().expect("a point");
        assert_eq!(p.payments_per_s, 10.0);
        assert_eq!(p.success_rate, Some(0.95));
        assert_eq!(p.fraud_actual_per_s, 30.0);
        // 10 of 20 at or under 10 ms: the median is that bucket's top; p99 is 98% of the way
        // through the 10..100 ms bucket.
        assert_eq!(p.p50_ms, Some(10.0));
        let p99 = p.p99_ms.expect("p99");
        assert!((p99 - 98.2).abs() < 1e-9, "{p99}");
        let states: Vec<_> = h.breakers().iter().map(|b| b.state).collect();
        assert_eq!(states, ["closed", "open"]);

        let mut restarted = Totals {
            at_ms: 3000,
            ..Totals::default()
        };
        add(
            "finpay_payments_total{outcome=\"succeeded\"} 1\n",
            &mut restarted,
        );
        let p = point(&first, &restarted).expect("a point");
        assert!(p.payments_per_s >= 0.0 && p.fraud_actual_per_s >= 0.0);
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        let b = [(0.1, 0.0), (0.2, 100.0), (f64::INFINITY, 100.0)];
        let median = quantile(0.5, &b).expect("counted");
        assert!((median - 0.15).abs() < 1e-12, "{median}");
        assert_eq!(quantile(0.5, &[(0.1, 0.0)]), None, "nothing counted");
        assert_eq!(
            quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 5.0)]),
            Some(0.1)
        );
    }
}
