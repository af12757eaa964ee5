//! What a load run counts: the running aggregate (one HDR histogram for the run, one per second),
//! how an answer is classified, and the report for a person or for `--json`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{LATENCY_MAX_US, TIMELINE_MAX};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One second of the run (by completion time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Second {
    pub second: u64,
    pub requests: u64,
    pub succeeded: u64,
    /// None when no request completed in this second.
    pub success_rate: Option<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One bucket of the run's latency histogram: the requests slower than the previous bucket's
/// bound and at most `le_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub le_ms: f64,
    pub count: u64,
}

/// The histogram's first bucket bound (µs); each next bound doubles it.
const FIRST_BUCKET_US: u64 = 250;

/// The run's latencies in buckets whose bounds double from 0.25 ms, up to the slowest request.
fn buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut below = 0;
    let mut le = FIRST_BUCKET_US;
    loop {
        let upto = h.count_between(0, le);
        out.push(Bucket {
            le_ms: ms(le),
            count: upto - below,
        });
        below = upto;
        if below >= h.len() || le >= LATENCY_MAX_US {
            return out;
        }
        le = le.saturating_mul(2);
    }
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub n: u64,
    pub idempotency_key: String,
    pub account_id: String,
    pub amount_minor: u64,
    /// HTTP status of the last answer, None for a transport error.
    pub http_status: Option<u16>,
    pub payment_id: Option<String>,
    pub payment_status: Option<String>,
    /// How many times the request was sent (1 without client retries).
    #[serde(default = "one")]
    pub attempts: u32,
    /// Whether the first answer was already a success (the last one is in `http_status`).
    #[serde(default = "yes")]
    pub first_ok: bool,
    /// When the request was due (open loop) or sent, in µs after the start of the run.
    #[serde(default)]
    pub started_us: u64,
    /// From `started_us` to the answer (or the transport error), in µs.
    #[serde(default)]
    pub latency_us: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub requests: u64,
    /// By the first answer each request got: what a user without retries sees.
    pub succeeded: u64,
    pub failed: u64,
    pub declined: u64,
    pub success_rate: f64,
    /// By the last answer, after the client's retries (`--client-retries`).
    pub succeeded_after_retries: u64,
    pub success_rate_after_retries: f64,
    /// Sends beyond the first, over the run.
    pub retries: u64,
    /// Failures left after the retries, by kind.
    pub errors_after_retries: BTreeMap<String, u64>,
    pub throughput_rps: f64,
    pub elapsed_s: f64,
    pub latency_ms: Latency,
    /// Every request's latency, in buckets that double from 0.25 ms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_histogram: Vec<Bucket>,
    pub errors: BTreeMap<String, u64>,
    /// Sum of the amounts of payments answered `succeeded`.
    pub succeeded_amount_minor: u64,
    pub timeline: Vec<Second>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<Outcome>,
}

/// A live view for progress bars: how far the run is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub done: u64,
    pub succeeded: u64,
    pub elapsed: Duration,
    /// The last complete second, if any.
    pub last_second: Option<(f64, f64)>,
}

/// How one response is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Succeeded,
    Declined,
    Failed(String),
}

/// Classifies a response: HTTP status (None = transport error) and the payment's `status` field.
pub fn classify(http_status: Option<u16>, payment_status: Option<&str>) -> Class {
    match (http_status, payment_status) {
        (None, _) => Class::Failed("transport".into()),
        (Some(code), Some("succeeded")) if (200..300).contains(&code) => Class::Succeeded,
        (Some(code), Some("declined")) if (200..300).contains(&code) => Class::Declined,
        (Some(code), Some(other)) if (200..300).contains(&code) => {
            Class::Failed(format!("{code}:{other}"))
        }
        (Some(code), None) if (200..300).contains(&code) => {
            Class::Failed(format!("{code}:unparsed"))
        }
        (Some(code), _) => Class::Failed(code.to_string()),
    }
}

/// The running totals; one lock, held for a few hundred nanoseconds per request.
pub(super) struct Aggregate {
    start: Instant,
    all: Histogram<u64>,
    requests: u64,
    succeeded: u64,
    declined: u64,
    succeeded_amount_minor: u64,
    errors: BTreeMap<String, u64>,
    succeeded_after_retries: u64,
    errors_after_retries: BTreeMap<String, u64>,
    retries: u64,
    second: u64,
    second_hist: Histogram<u64>,
    second_requests: u64,
    second_succeeded: u64,
    timeline: Vec<Second>,
    pub(super) outcomes: Vec<Outcome>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).context("latency histogram")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Aggregate {
    pub(super) fn new(start: Instant) -> anyhow::Result<Self> {
        Ok(Self {
            start,
            all: histogram()?,
            requests: 0,
            succeeded: 0,
            declined: 0,
            succeeded_amount_minor: 0,
            errors: BTreeMap::new(),
            succeeded_after_retries: 0,
            errors_after_retries: BTreeMap::new(),
            retries: 0,
            second: 0,
            second_hist: histogram()?,
            second_requests: 0,
            second_succeeded: 0,
            timeline: Vec::new(),
            outcomes: Vec::new(),
        })
    }

    /// Counts one request: its first answer's class, its last answer's class (the same without
    /// client retries), the amount it moved and how often it was sent again. The latency runs to
    /// the last answer.
    pub(super) fn record(
        &mut self,
        latency: Duration,
        first: &Class,
        last: &Class,
        amount_minor: u64,
        retries: u32,
    ) {
        let sec = self.start.elapsed().as_secs();
        while self.second < sec {
            self.close_second();
        }
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(LATENCY_MAX_US)
            .clamp(1, LATENCY_MAX_US);
        let _ = self.all.record(us);
        let _ = self.second_hist.record(us);
        self.requests += 1;
        self.second_requests += 1;
        self.retries += u64::from(retries);
        match first {
            Class::Succeeded | Class::Declined => {
                self.succeeded += 1;
                self.second_succeeded += 1;
                self.declined += u64::from(*first == Class::Declined);
            }
            Class::Failed(key) => *self.errors.entry(key.clone()).or_insert(0) += 1,
        }
        match last {
            Class::Succeeded => {
                self.succeeded_after_retries += 1;
                self.succeeded_amount_minor =
                    self.succeeded_amount_minor.saturating_add(amount_minor);
            }
            Class::Declined => self.succeeded_after_retries += 1,
            Class::Failed(key) => *self.errors_after_retries.entry(key.clone()).or_insert(0) += 1,
        }
    }

    fn close_second(&mut self) {
        if self.timeline.len() < TIMELINE_MAX {
            self.timeline.push(Second {
                second: self.second,
                requests: self.second_requests,
                succeeded: self.second_succeeded,
                success_rate: (self.second_requests > 0)
                    .then(|| self.second_succeeded as f64 / self.second_requests as f64),
                p50_ms: ms(self.second_hist.value_at_quantile(0.5)),
                p99_ms: ms(self.second_hist.value_at_quantile(0.99)),
            });
        }
        self.second_hist.reset();
        self.second_requests = 0;
        self.second_succeeded = 0;
        self.second += 1;
    }

    pub(super) fn progress(&self) -> Progress {
        Progress {
            done: self.requests,
            succeeded: self.succeeded,
            elapsed: self.start.elapsed(),
            last_second: self
                .timeline
                .last()
                .map(|s| (s.success_rate.unwrap_or(0.0), s.p99_ms)),
        }
    }

    pub(super) fn report(mut self, elapsed: Duration) -> LoadReport {
        if self.second_requests > 0 {
            self.close_second();
        }
        let secs = elapsed.as_secs_f64().max(1e-9);
        let q = |p: f64| ms(self.all.value_at_quantile(p));
        LoadReport {
            requests: self.requests,
            succeeded: self.succeeded,
            failed: self.requests - self.succeeded,
            declined: self.declined,
            success_rate: if self.requests == 0 {
                0.0
            } else {
                self.succeeded as f64 / self.requests as f64
            },
            throughput_rps: self.requests as f64 / secs,
            elapsed_s: elapsed.as_secs_f64(),
            latency_ms: Latency {
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
                p999: q(0.999),
                max: ms(self.all.max()),
            },
            latency_histogram: buckets(&self.all),
            succeeded_after_retries: self.succeeded_after_retries,
            success_rate_after_retries: if self.requests == 0 {
                0.0
            } else {
                self.succeeded_after_retries as f64 / self.requests as f64
            },
            retries: self.retries,
            errors_after_retries: self.errors_after_retries,
            errors: self.errors,
            succeeded_amount_minor: self.succeeded_amount_minor,
            timeline: self.timeline,
            outcomes: self.outcomes,
        }
    }
}

impl LoadReport {
    /// The report for a person.
    pub fn human(&self, url: &str, concurrency: usize) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "finpay load: {} requests to {url} in {:.2} s, {:.1} req/s (concurrency {concurrency})",
            self.requests, self.elapsed_s, self.throughput_rps
        );
        let _ = writeln!(
            out,
            "  succeeded   {} ({:.2}%), of which declined {}",
            self.succeeded,
            self.success_rate * 100.0,
            self.declined
        );
        let _ = writeln!(out, "  failed      {}", self.failed);
        if !self.errors.is_empty() {
            let errs: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(out, "  errors      {}", errs.join(", "));
        }
        if self.retries > 0 {
            let _ = writeln!(
                out,
                "  after {} client retries: succeeded {} ({:.2}%)",
                self.retries,
                self.succeeded_after_retries,
                self.success_rate_after_retries * 100.0
            );
        }
        let l = &self.latency_ms;
        let _ = writeln!(
            out,
            "  latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        out
    }

    /// The one JSON object of `finpay load --json` (outcomes are written elsewhere).
    pub fn summary_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("outcomes");
        }
        v
    }
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}
