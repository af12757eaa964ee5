//! What the harness reads from the running cluster: the ready replicas of each service, sampled
//! while the load runs, and the services' `/metrics` counters afterwards (evidence the faults
//! happened, and what payment's resilience layers did).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::result::Sample;
use super::run::Live;
use crate::load::Progress;
use crate::supervisor::Shared;
use finpay_services::ServiceKind;

/// Payment's `finpay_client_*_total` counters, keyed `name{dependency}`, summed over its replicas.
pub async fn scrape_client(shared: &Shared, http: &reqwest::Client) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in shared.snapshot().by_service(ServiceKind::Payment) {
        if let Some(text) = metrics(http, &r.admin_url).await {
            add_client_counters(&text, &mut out);
        }
    }
    out
}

/// Sums `finpay_faults_injected_total` by `kind` over every dependency replica's `/metrics`.
pub async fn scrape_faults(shared: &Shared, http: &reqwest::Client) -> BTreeMap<String, u64> {
    let mut by_kind = BTreeMap::new();
    for r in shared.snapshot().replicas {
        if r.service == ServiceKind::Payment {
            continue;
        }
        if let Some(text) = metrics(http, &r.admin_url).await {
            add_faults_injected(&text, &mut by_kind);
        }
    }
    by_kind
}

/// The `/metrics` text of the admin listener at `url`; None when it does not answer.
async fn metrics(http: &reqwest::Client, url: &str) -> Option<String> {
    let resp = http.get(format!("{url}/metrics")).send().await.ok()?;
    resp.text().await.ok()
}

/// Adds each `finpay_client_<name>_total{dependency="d",...} n` line of `text` to `out` under
/// `<name>_total{d}`.
fn add_client_counters(text: &str, out: &mut BTreeMap<String, u64>) {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("finpay_client_") else {
            continue;
        };
        let Some((name_labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = name_labels.split_once('{') else {
            continue;
        };
        if !name.ends_with("_total") {
            continue;
        }
        let dep = labels
            .trim_end_matches('}')
            .split(',')
            .find_map(|l| l.trim().strip_prefix("dependency="))
            .map(|d| d.trim_matches('"').to_owned())
            .unwrap_or_default();
        if let Ok(n) = value.trim().parse::<f64>() {
            *out.entry(format!("{name}{{{dep}}}")).or_insert(0) += n as u64;
        }
    }
}

/// Adds each `finpay_faults_injected_total{kind="k",...} n` line of `text` to `by_kind[k]`.
fn add_faults_injected(text: &str, by_kind: &mut BTreeMap<String, u64>) {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("finpay_faults_injected_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let kind = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("kind="))
            .map(|k| k.trim_matches('"').to_owned());
        let n = value.trim().parse::<f64>().ok();
        if let (Some(kind), Some(n)) = (kind, n) {
            *by_kind.entry(kind).or_insert(0) += n as u64;
        }
    }
}

/// Samples the cluster every 100 ms and keeps, per second, the fewest ready replicas of each
/// service seen in it (so a kill healed in 200 ms still shows); feeds the live view every third
/// sample. Ends when the load is done (bounded by the load's length plus a minute).
pub async fn sample(
    shared: &Shared,
    load_len: Duration,
    t0: Instant,
    done: &AtomicBool,
    progress: &Mutex<Option<Progress>>,
    active: &Mutex<Vec<String>>,
    live: &(dyn Fn(&Live) + Sync),
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(t0, Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let bound = load_len + Duration::from_secs(60);
    let mut second = 0u64;
    let mut fewest: BTreeMap<String, u32> = BTreeMap::new();
    let mut n = 0u64;
    while !done.load(Ordering::Relaxed) && t0.elapsed() < bound {
        tick.tick().await;
        let s = shared.snapshot();
        let now = t0.elapsed();
        if now.as_secs() > second && !fewest.is_empty() {
            samples.push(Sample {
                at_ms: second * 1000,
                ready: std::mem::take(&mut fewest),
                restarts: s.replicas.iter().map(|r| r.restarts).sum(),
            });
            second = now.as_secs();
        }
        let mut ready: BTreeMap<String, u32> = BTreeMap::new();
        for r in &s.replicas {
            *ready.entry(r.service.to_string()).or_insert(0) += u32::from(r.ready);
        }
        for (svc, k) in ready {
            let e = fewest.entry(svc).or_insert(k);
            *e = (*e).min(k);
        }
        n += 1;
        if n.is_multiple_of(3) {
            live(&Live {
                elapsed: now.min(load_len),
                load: load_len,
                progress: *progress.lock().unwrap_or_else(PoisonError::into_inner),
                active_faults: active
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
                ready: s.replicas.iter().map(|r| u32::from(r.ready)).sum(),
                replicas: u32::try_from(s.replicas.len()).unwrap_or(u32::MAX),
                phase: "load",
            });
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_counters_are_keyed_by_name_and_dependency_and_only_totals_count() {
        let text = "# TYPE finpay_client_requests_total counter\n\
            finpay_client_requests_total{dependency=\"fraud\"} 12\n\
            finpay_client_requests_total{dependency=\"wallet\",outcome=\"ok\"} 3\n\
            finpay_client_requests_total{outcome=\"ok\",dependency=\"wallet\"} 4\n\
            finpay_client_latency_seconds{dependency=\"fraud\"} 0.2\n\
            finpay_faults_injected_total{kind=\"error\"} 9\n";
        let mut out = BTreeMap::new();
        add_client_counters(text, &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out["requests_total{fraud}"], 12);
        assert_eq!(out["requests_total{wallet}"], 7);
    }

    #[test]
    fn injected_faults_add_up_by_kind_across_replicas() {
        let mut by_kind = BTreeMap::new();
        add_faults_injected(
            "finpay_faults_injected_total{kind=\"error\",service=\"fraud\"} 2\n\
             finpay_faults_injected_total{kind=\"hang\"} 1\n\
             finpay_client_requests_total{dependency=\"fraud\"} 5\n",
            &mut by_kind,
        );
        add_faults_injected(
            "finpay_faults_injected_total{kind=\"error\"} 3\n",
            &mut by_kind,
        );
        assert_eq!(by_kind.len(), 2, "{by_kind:?}");
        assert_eq!(by_kind["error"], 5);
        assert_eq!(by_kind["hang"], 1);
    }
}
