//! The checks after the load: the outbox drains, every payment the load saw converges to what its
//! client was told, and the final (stopped) stores keep the money and notification invariants.

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use tokio::time::Instant;

use super::result::{AuditSummary, ScenarioResult};
use crate::load::Outcome;

/// Longest wait for the outbox to drain and every payment to reach a terminal state.
pub const DRAIN_MAX: Duration = Duration::from_secs(120);
/// Most violations listed per check; the rest are counted.
const LISTED_MAX: usize = 20;
/// Tries of one payment lookup.
const LOOKUP_TRIES: usize = 3;

/// Polls the audit until nothing is pending in the outbox and no payment is resumable.
/// Ok(false) when [`DRAIN_MAX`] passed first.
pub async fn drain(state: &crate::cluster::ClusterState) -> anyhow::Result<bool> {
    let start = Instant::now();
    loop {
        let r = crate::check::audit_cluster(state)
            .await
            .context("audit while draining")?;
        if r.outbox_pending == 0 && r.payments_resumable == 0 {
            return Ok(true);
        }
        if start.elapsed() >= DRAIN_MAX {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Looks up every payment the load saw: each must be terminal, and one the load was told
/// succeeded (or declined) must say so. Returns how many were checked.
pub async fn converged(
    http: &reqwest::Client,
    payment_url: &str,
    outcomes: &[Outcome],
    violations: &mut Vec<String>,
) -> u64 {
    let seen: Vec<&Outcome> = outcomes.iter().filter(|o| o.payment_id.is_some()).collect();
    let answers: Vec<(String, Option<String>, Result<String, String>)> =
        futures::stream::iter(seen.iter().map(|o| {
            let id = o.payment_id.clone().unwrap_or_default();
            let said = o
                .http_status
                .filter(|c| (200..300).contains(c))
                .and(o.payment_status.clone());
            let url = format!("{}/v1/payments/{id}", payment_url.trim_end_matches('/'));
            async move {
                let now = lookup_status(http, &url).await;
                (id, said, now)
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await;
    let mut bad = Vec::new();
    for (id, said, now) in &answers {
        match now {
            Err(e) => bad.push(format!("payment {id}: lookup failed: {e}")),
            Ok(s) if !matches!(s.as_str(), "succeeded" | "declined" | "failed") => {
                bad.push(format!("payment {id} is still {s} after the drain"))
            }
            Ok(s) => {
                if let Some(said) = said {
                    if said != s {
                        bad.push(format!(
                            "payment {id}: the client was told {said}, the store says {s}"
                        ));
                    }
                }
            }
        }
    }
    let n = bad.len();
    violations.extend(bad.into_iter().take(LISTED_MAX));
    if n > LISTED_MAX {
        violations.push(format!("{} more payments not converged", n - LISTED_MAX));
    }
    u64::try_from(answers.len()).unwrap_or(u64::MAX)
}

/// `GET /v1/payments/{id}`'s `status`, with a few tries 100 ms apart.
async fn lookup_status(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let mut last = Err("not asked".to_owned());
    for _ in 0..LOOKUP_TRIES {
        last = match http.get(url).send().await {
            Ok(r) if r.status().is_success() => match r.json::<serde_json::Value>().await {
                Ok(v) => v
                    .get("status")
                    .and_then(|s| s.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| "no status field".to_owned()),
                Err(e) => Err(e.to_string()),
            },
            Ok(r) => Err(format!("HTTP {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// The money and notification checks on the final (stopped) stores.
pub fn check_stores(r: &finpay_ledger::audit::AuditReport, result: &mut ScenarioResult) {
    let succeeded = r.payments_by_status.get("succeeded").copied().unwrap_or(0);
    result.invariants_ok = r.ok;
    for v in r.violations.iter().take(LISTED_MAX) {
        result.violations.push(format!("money: {v}"));
    }
    if r.payments_resumable > 0 {
        result.violations.push(format!(
            "{} payments left in a non-terminal state",
            r.payments_resumable
        ));
    }
    let d = &r.delivery;
    let mut notif = Vec::new();
    for v in d.violations.iter().take(LISTED_MAX) {
        notif.push(format!("notifications: {v}"));
    }
    if d.outbox_pending > 0 {
        notif.push(format!(
            "notifications: {} still pending in the outbox",
            d.outbox_pending
        ));
    }
    // Exactly one delivered notification per succeeded payment: one outbox row each (part of
    // `ok`), every row delivered and in the inbox, and nothing else in the inbox.
    if d.outbox_delivered != succeeded || d.delivered_in_inbox != succeeded {
        notif.push(format!(
            "notifications: {succeeded} succeeded payments but {} delivered outbox rows, {} of them in the inbox",
            d.outbox_delivered, d.delivered_in_inbox
        ));
    }
    if d.notifications != succeeded {
        notif.push(format!(
            "notifications: the inbox holds {} notifications for {succeeded} succeeded payments",
            d.notifications
        ));
    }
    result.notifications_ok = d.ok && notif.is_empty();
    result.violations.extend(notif);
    result.audit = AuditSummary {
        payments: r.payments,
        payments_by_status: r.payments_by_status.clone(),
        payments_resumable: r.payments_resumable,
        transfers: r.transfers,
        outbox_pending: r.outbox_pending,
        outbox_delivered: r.outbox_delivered,
        notifications: r.notifications,
        delivered_in_inbox: d.delivered_in_inbox,
    };
}
