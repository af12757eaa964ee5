//! Active health checks: probe every endpoint in the background, skip the ones that fail.
//!
//! Passive ejection needs real traffic to fail first; a probe finds a dead replica before a user
//! request does, and finds it back when it recovers. The probe is a closure, so any protocol works;
//! the HTTP client probes `GET /health/ready`. The task holds only a weak reference to the set and
//! ends when the set is dropped.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::EndpointSet;

/// Health check settings.
#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    /// Time between rounds.
    pub interval: Duration,
    /// A probe slower than this failed.
    pub timeout: Duration,
    /// Failed probes in a row before unhealthy.
    pub unhealthy_threshold: u32,
    /// Good probes in a row before healthy again.
    pub healthy_threshold: u32,
}

/// A probe of one endpoint key: resolves to whether it is healthy.
pub type ProbeFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Starts the background task (needs a tokio runtime). Returns its handle.
pub fn spawn<K, S, F>(
    set: &EndpointSet<K, S>,
    cfg: HealthCheckConfig,
    probe: F,
) -> tokio::task::JoinHandle<()>
where
    K: PartialEq + std::fmt::Display + Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
    F: Fn(K) -> ProbeFuture + Send + Sync + 'static,
{
    let weak = set.downgrade();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            let set = EndpointSet::from_inner(inner);
            let eps = set.snapshot();
            drop(set);
            let probes = eps.iter().map(|e| {
                let fut = probe(e.key().clone());
                let t = cfg.timeout;
                async move { tokio::time::timeout(t, fut).await.unwrap_or(false) }
            });
            let results = futures::future::join_all(probes).await;
            for (ep, ok) in eps.iter().zip(results) {
                ep.with_stats(|s| {
                    if ok {
                        s.probe_failures = 0;
                        s.probe_successes = s.probe_successes.saturating_add(1);
                        if !s.healthy && s.probe_successes >= cfg.healthy_threshold {
                            s.healthy = true;
                        }
                    } else {
                        s.probe_successes = 0;
                        s.probe_failures = s.probe_failures.saturating_add(1);
                        if s.healthy && s.probe_failures >= cfg.unhealthy_threshold {
                            s.healthy = false;
                        }
                    }
                });
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::BalanceConfig;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn failing_probes_mark_unhealthy_and_good_ones_recover() {
        let set: EndpointSet<u8, ()> = EndpointSet::new(BalanceConfig::default());
        set.insert(1, ());
        let up = Arc::new(AtomicBool::new(false));
        let up2 = up.clone();
        let cfg = HealthCheckConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(50),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        };
        let task = spawn(&set, cfg, move |_k| {
            let ok = up2.load(Ordering::Relaxed);
            Box::pin(async move { ok })
        });
        // Probes run at 0, 100, 200 ms, ...
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            set.snapshot()[0].with_stats(|s| s.healthy),
            "one failure is not enough"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!set.snapshot()[0].with_stats(|s| s.healthy));
        up.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(set.snapshot()[0].with_stats(|s| s.healthy));
        drop(set);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(task.is_finished(), "the task ends with the set");
    }
}
