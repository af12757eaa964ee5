//! The kubelet's probes: startup, then liveness and readiness, over fresh connections.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::{ReplicaCommand, Shared};

/// Probe timings. See the module docs for the Kubernetes mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePolicy {
    pub startup_period: Duration,
    pub startup_failure_threshold: u32,
    pub period: Duration,
    pub timeout: Duration,
    pub liveness_failure_threshold: u32,
    pub grace: Duration,
}

impl Default for ProbePolicy {
    fn default() -> Self {
        Self {
            startup_period: Duration::from_millis(100),
            startup_failure_threshold: 300,
            period: Duration::from_secs(1),
            timeout: Duration::from_millis(800),
            liveness_failure_threshold: 3,
            grace: Duration::from_secs(10),
        }
    }
}

pub(super) fn probe_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    // No connection reuse: like the kubelet, every probe is a fresh connection, so a stale pooled
    // connection to a previous process can never answer for a new one.
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()?)
}

async fn get_ok(client: &reqwest::Client, url: &str) -> bool {
    matches!(client.get(url).send().await, Ok(r) if r.status().is_success())
}

/// Probes one process. Returns only when it should be killed, with the reason; otherwise records
/// `live`/`ready` in the shared state forever (the caller's select ends it).
pub(super) async fn probe(
    shared: &Shared,
    cmd: &ReplicaCommand,
    client: &reqwest::Client,
    policy: ProbePolicy,
) -> String {
    let live_url = format!("http://127.0.0.1:{}/health/live", cmd.port);
    let ready_url = format!("http://127.0.0.1:{}/health/ready", cmd.port);

    // Startup probe: until the first success, liveness does not count.
    let mut interval = tokio::time::interval(policy.startup_period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        interval.tick().await;
        if get_ok(client, &live_url).await {
            break;
        }
        failures += 1;
        if failures >= policy.startup_failure_threshold {
            return format!("startup probe failed {failures} times");
        }
    }
    shared.update_replica(&cmd.name, |r| {
        r.live = true;
        r.phase = "running".into();
    });

    // Readiness every tick (every `startup_period` until first ready, then every `period`);
    // liveness once per `period`, counted in ticks so timer jitter never skips one.
    let mut ever_ready = false;
    let mut liveness_failures = 0u32;
    let fast_ticks_per_period =
        u32::try_from(policy.period.as_millis() / policy.startup_period.as_millis().max(1))
            .unwrap_or(u32::MAX)
            .max(1);
    let mut ticks = 0u32;
    let mut interval = tokio::time::interval(policy.startup_period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        ticks = ticks.wrapping_add(1);
        let due = ever_ready || ticks.is_multiple_of(fast_ticks_per_period);
        let (ready, live) = if due {
            let (ready, live) = tokio::join!(get_ok(client, &ready_url), get_ok(client, &live_url));
            (ready, Some(live))
        } else {
            (get_ok(client, &ready_url).await, None)
        };
        if let Some(live) = live {
            liveness_failures = if live { 0 } else { liveness_failures + 1 };
        }
        if ready && !ever_ready {
            ever_ready = true;
            interval = tokio::time::interval_at(Instant::now() + policy.period, policy.period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        shared.update_replica(&cmd.name, |r| {
            r.ready = ready;
            r.live = liveness_failures == 0;
            r.liveness_failures = liveness_failures;
        });
        if liveness_failures >= policy.liveness_failure_threshold {
            return format!("liveness probe failed {liveness_failures} times");
        }
    }
}
