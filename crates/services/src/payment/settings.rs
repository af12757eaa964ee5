//! The payment service's settings.

use std::time::Duration;

use finpay_core::{AccountId, Amount, Currency};
use finpay_ledger::payments::LeaseOwner;
use finpay_resilience::client::BalanceStrategy;
use finpay_resilience::ClientPolicy;
use serde::{Deserialize, Serialize};

use crate::http::config::{config_err, CommonSettings, ServiceSettings};
use crate::{ServeError, ServiceKind};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The keys every service has (extracted separately; see `http::config::load`).
    #[serde(skip)]
    pub common: CommonSettings,
    pub fraud: FraudDependency,
    pub wallet: Dependency,
    pub notification: Dependency,
    pub payment: PaymentSettings,
    pub demo: DemoSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            common: CommonSettings::default(),
            fraud: FraudDependency::default(),
            wallet: Dependency {
                urls: Vec::new(),
                client: wallet_policy(),
            },
            notification: Dependency::default(),
            payment: PaymentSettings::default(),
            demo: DemoSettings::default(),
        }
    }
}

/// One downstream service that is written to (wallet, notification): its replicas and the resilience
/// policy of the client that calls them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dependency {
    /// Base URLs of the replicas, e.g. `["http://127.0.0.1:9001"]`.
    pub urls: Vec<String>,
    pub client: ClientPolicy,
}

impl Default for Dependency {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            client: write_policy(),
        }
    }
}

/// The default policy for a dependency that is written to. Unlike fraud's, it does not hedge: a
/// hedged write is safe (the transfer id / notification id deduplicates it) but doubles the work of
/// the one SQLite writer behind it. A longer per-try timeout, because a durable commit waits for an
/// fsync, and a retry of a write that is merely slow only adds to the queue.
pub fn write_policy() -> ClientPolicy {
    let mut p = ClientPolicy::default();
    p.hedge.enabled = false;
    p.per_try_timeout_ms = 500;
    // Without hedges every round is one try, so the rounds alone must carry the failure rate this
    // system lives with: at p = 0.3 per try, 8 tries fail together with 0.3^8 ≈ 0.0066%, where 4
    // would fail together with 0.3^4 ≈ 0.81%, far more than a payment path can show its users. The
    // retry budget still bounds the load when the wallet is down for real.
    p.max_attempts = 8;
    p
}

/// The wallet's policy: [`write_policy`] with failover balancing. Every wallet replica of `finpay up`
/// writes to one SQLite file, which takes one writer at a time; two active replicas would queue on
/// its lock (SQLite's busy handler sleeps 1, 2, 5, 10, 15... ms while it waits), which puts a p99
/// of about 100 ms on every write (docs/bench-payments.md). So one replica takes the writes and the
/// others stand by; with the PostgreSQL backend `balancer.strategy = "p2c_ewma"` spreads them.
///
/// A frozen primary (a stopped process, a stalled disk) would then hold every write for the whole
/// per-try timeout until it is ejected; so a write still unanswered after a fixed 100 ms, far above
/// the wallet's normal tail, gets one hedged copy to the standby. The transfer id makes the copy
/// harmless, and under normal load almost no write waits that long.
pub fn wallet_policy() -> ClientPolicy {
    let mut p = write_policy();
    p.balancer.strategy = BalanceStrategy::Failover;
    p.hedge.enabled = true;
    p.hedge.max_hedges = 1;
    p.hedge.percentile = 0.0;
    p.hedge.delay_ms = WALLET_HEDGE_DELAY_MS;
    p
}

/// See [`wallet_policy`].
pub const WALLET_HEDGE_DELAY_MS: u64 = 100;

/// The fraud dependency, which may also have a fallback policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FraudDependency {
    pub urls: Vec<String>,
    pub client: ClientPolicy,
    pub fallback: FraudFallback,
}

/// What to do when fraud cannot answer. Off by default: money fails closed.
///
/// When enabled, a payment of at most `max_amount_minor` from an account that got a SAFE verdict in
/// the last `safe_verdict_max_age_ms` passes without a fresh verdict, and is recorded with
/// `needs_review = true` so a person looks at it later.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FraudFallback {
    pub enabled: bool,
    pub max_amount_minor: u64,
    pub safe_verdict_max_age_ms: u64,
    /// Accounts remembered; the memory is cleared when full (bounded).
    pub max_accounts: usize,
}

impl Default for FraudFallback {
    fn default() -> Self {
        Self {
            enabled: false,
            max_amount_minor: 10_000,
            safe_verdict_max_age_ms: 300_000,
            max_accounts: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentSettings {
    /// One end-to-end deadline per payment, passed to every call.
    pub deadline_ms: u64,
    /// How often the resumer looks for payments left in a non-terminal state.
    pub resume_interval_ms: u64,
    pub resume_batch: u32,
    pub resume_concurrency: usize,
    /// How often the outbox dispatcher looks for due notifications.
    pub outbox_interval_ms: u64,
    pub outbox_batch: u32,
    pub outbox_concurrency: usize,
    /// Deadline of one delivery attempt.
    pub outbox_deadline_ms: u64,
    /// Capped exponential backoff with full jitter between delivery attempts.
    pub outbox_backoff_base_ms: u64,
    pub outbox_backoff_max_ms: u64,
    /// Longest description accepted, in characters.
    pub description_max_chars: usize,
    /// `Retry-After` sent with a 503.
    pub retry_after_s: u64,
    /// Seed of the outbox backoff jitter; absent = from entropy.
    pub seed: Option<u64>,
    /// How long a payment's lease lasts after each write of its driver. Longer than `deadline_ms`,
    /// so a live drive never loses it between two writes; a replica that dies leaves its payments
    /// to the others' resumers this long after its last write.
    pub lease_ms: u64,
    /// This replica's name on its leases (e.g. `payment-1`); the process id and a random suffix are
    /// added, so two processes never share an owner. Absent = `payment-<hostname>`.
    pub replica: Option<String>,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        Self {
            deadline_ms: 2_000,
            resume_interval_ms: 1_000,
            resume_batch: 100,
            resume_concurrency: 8,
            outbox_interval_ms: 200,
            outbox_batch: 100,
            outbox_concurrency: 8,
            outbox_deadline_ms: 2_000,
            outbox_backoff_base_ms: 200,
            outbox_backoff_max_ms: 60_000,
            description_max_chars: finpay_api::payment::DESCRIPTION_MAX_CHARS_DEFAULT,
            retry_after_s: 1,
            seed: None,
            lease_ms: 5_000,
            replica: None,
        }
    }
}

impl PaymentSettings {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(self.retry_after_s)
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// How long the outbox dispatcher's claim on a batch lasts: the longest a pass can take (its
    /// rows delivered `outbox_concurrency` at a time, each within `outbox_deadline_ms`), plus one
    /// lease. Past it, another replica may deliver the rows again (harmless: the inbox drops
    /// duplicates), so it is generous rather than tight.
    pub fn outbox_claim_ttl(&self) -> Duration {
        let rounds = u64::from(self.outbox_batch).div_ceil(self.outbox_concurrency.max(1) as u64);
        Duration::from_millis(
            self.outbox_deadline_ms
                .saturating_mul(rounds)
                .saturating_add(self.lease_ms),
        )
    }

    /// This process's lease owner: `<replica or payment-<hostname>>:<pid>:<random>`.
    pub fn lease_owner(&self) -> LeaseOwner {
        let base = match &self.replica {
            Some(name) => name.clone(),
            None => format!("payment-{}", hostname()),
        };
        let name = format!(
            "{}:{}:{:08x}",
            owner_part(&base),
            std::process::id(),
            rand::random::<u32>()
        );
        LeaseOwner::try_from(name).unwrap_or_else(|_| {
            LeaseOwner::try_from(format!("payment:{}", std::process::id()))
                .unwrap_or_else(|_| unreachable_owner())
        })
    }
}

/// The longest replica name `payment.replica` takes.
pub const REPLICA_NAME_MAX_LEN: usize = 64;

/// `s` cut to what a lease owner holds: visible ASCII, at most [`REPLICA_NAME_MAX_LEN`] bytes.
fn owner_part(s: &str) -> String {
    let part: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != ':')
        .take(REPLICA_NAME_MAX_LEN)
        .collect();
    if part.is_empty() {
        "payment".to_owned()
    } else {
        part
    }
}

/// A constant owner that always parses, for the impossible case that the built ones do not.
fn unreachable_owner() -> LeaseOwner {
    match LeaseOwner::try_from("payment") {
        Ok(o) => o,
        Err(_) => unreachable!("\"payment\" is a valid lease owner"),
    }
}

/// The machine's name, or `localhost` when it cannot be read.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The payment `GET /pay` makes (the demo of docs/scenarios.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoSettings {
    /// Off by default: `GET /pay` moves money for anyone who asks, so only a demo serves it
    /// (`finpay up` turns it on).
    pub enabled: bool,
    pub customer_account: String,
    pub merchant_account: String,
    pub amount_minor: u64,
    pub currency: String,
}

impl Default for DemoSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            customer_account: "cust-0000".into(),
            merchant_account: "merchant-0".into(),
            amount_minor: 100,
            currency: "USD".into(),
        }
    }
}

/// The demo payment, parsed.
#[derive(Debug, Clone)]
pub struct Demo {
    pub enabled: bool,
    pub customer: AccountId,
    pub merchant: AccountId,
    pub amount: Amount,
    pub currency: Currency,
}

impl DemoSettings {
    pub fn parse(&self) -> Result<Demo, ServeError> {
        Ok(Demo {
            enabled: self.enabled,
            customer: AccountId::try_from(self.customer_account.as_str())
                .map_err(|e| config_err("demo.customer_account", e))?,
            merchant: AccountId::try_from(self.merchant_account.as_str())
                .map_err(|e| config_err("demo.merchant_account", e))?,
            amount: Amount::try_new(self.amount_minor)
                .map_err(|e| config_err("demo.amount_minor", e))?,
            currency: self
                .currency
                .parse()
                .map_err(|e| config_err("demo.currency", e))?,
        })
    }
}

/// Parses a dependency's URLs; the error names `<name>.urls[i]`.
pub fn parse_urls(name: &str, urls: &[String]) -> Result<Vec<http::Uri>, ServeError> {
    if urls.is_empty() {
        return Err(config_err(
            &format!("{name}.urls"),
            "must list at least one URL",
        ));
    }
    if urls.len() > 64 {
        return Err(config_err(
            &format!("{name}.urls"),
            "must list at most 64 URLs",
        ));
    }
    urls.iter()
        .enumerate()
        .map(|(i, u)| {
            let uri: http::Uri = u
                .parse()
                .map_err(|e| config_err(&format!("{name}.urls[{i}]"), format!("{u:?}: {e}")))?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err(config_err(
                    &format!("{name}.urls[{i}]"),
                    format!("{u:?}: must be an absolute http:// URL"),
                ));
            }
            Ok(uri)
        })
        .collect()
}

fn check_range(field: &str, value: u64, lo: u64, hi: u64) -> Result<(), ServeError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(config_err(
            field,
            format!("must be within {lo}..={hi}, got {value}"),
        ))
    }
}

impl ServiceSettings for Settings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }

    fn set_common(&mut self, common: CommonSettings) {
        self.common = common;
    }

    fn validate(&self) -> Result<(), ServeError> {
        for (kind, dep) in self.dependencies() {
            let name = kind.as_str();
            parse_urls(name, &dep.urls)?;
            dep.client
                .validate()
                .map_err(|e| config_err(&format!("{name}.client.{}", e.field), e.reason))?;
        }
        self.payment.validate()?;
        self.fraud.fallback.validate()?;
        self.demo.parse()?;
        Ok(())
    }
}

impl Settings {
    /// Each dependency's replicas and client policy, by the service it names.
    pub fn dependencies(&self) -> [(ServiceKind, Dependency); 3] {
        [
            (
                ServiceKind::Fraud,
                Dependency {
                    urls: self.fraud.urls.clone(),
                    client: self.fraud.client.clone(),
                },
            ),
            (ServiceKind::Wallet, self.wallet.clone()),
            (ServiceKind::Notification, self.notification.clone()),
        ]
    }
}

impl PaymentSettings {
    fn validate(&self) -> Result<(), ServeError> {
        let ranges: [(&str, u64, u64, u64); 12] = [
            ("deadline_ms", self.deadline_ms, 1, 600_000),
            ("resume_interval_ms", self.resume_interval_ms, 10, 3_600_000),
            ("resume_batch", self.resume_batch.into(), 1, 10_000),
            (
                "resume_concurrency",
                self.resume_concurrency as u64,
                1,
                1_000,
            ),
            ("outbox_interval_ms", self.outbox_interval_ms, 10, 3_600_000),
            ("outbox_batch", self.outbox_batch.into(), 1, 10_000),
            (
                "outbox_concurrency",
                self.outbox_concurrency as u64,
                1,
                1_000,
            ),
            ("outbox_deadline_ms", self.outbox_deadline_ms, 1, 600_000),
            (
                "outbox_backoff_base_ms",
                self.outbox_backoff_base_ms,
                1,
                600_000,
            ),
            (
                "outbox_backoff_max_ms",
                self.outbox_backoff_max_ms,
                self.outbox_backoff_base_ms,
                86_400_000,
            ),
            (
                "description_max_chars",
                self.description_max_chars as u64,
                1,
                10_000,
            ),
            ("retry_after_s", self.retry_after_s, 1, 3_600),
        ];
        for (field, value, lo, hi) in ranges {
            check_range(&format!("payment.{field}"), value, lo, hi)?;
        }
        // A lease that could run out between two writes of a live drive would hand the payment
        // to a second driver while the first still works on it.
        let lease_min = self.deadline_ms.saturating_add(1);
        check_range("payment.lease_ms", self.lease_ms, lease_min, 3_600_000)?;
        if let Some(name) = &self.replica {
            let ok = !name.is_empty()
                && name.len() <= REPLICA_NAME_MAX_LEN
                && name.chars().all(|c| c.is_ascii_graphic() && c != ':');
            if !ok {
                return Err(config_err(
                    "payment.replica",
                    format!("must be 1..={REPLICA_NAME_MAX_LEN} visible ASCII characters without ':', got {name:?}"),
                ));
            }
        }
        Ok(())
    }
}

impl FraudFallback {
    fn validate(&self) -> Result<(), ServeError> {
        if !self.enabled {
            return Ok(());
        }
        let ranges: [(&str, u64, u64, u64); 3] = [
            (
                "max_amount_minor",
                self.max_amount_minor,
                1,
                Amount::MAX_MINOR,
            ),
            (
                "safe_verdict_max_age_ms",
                self.safe_verdict_max_age_ms,
                1,
                86_400_000,
            ),
            ("max_accounts", self.max_accounts as u64, 1, 10_000_000),
        ];
        for (field, value, lo, hi) in ranges {
            check_range(&format!("fraud.fallback.{field}"), value, lo, hi)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::config::load;

    /// The dependencies' urls, after the admin token every service needs to load.
    fn urls() -> Vec<(String, String)> {
        let token = ("admin_token".to_owned(), "t".repeat(32));
        std::iter::once(token)
            .chain(
                ["fraud", "wallet", "notification"]
                    .iter()
                    .map(|d| (format!("{d}.urls"), r#"["http://127.0.0.1:9"]"#.to_owned())),
            )
            .collect()
    }

    #[test]
    fn write_dependencies_keep_their_policies_with_a_partial_client_table() {
        let mut o = urls();
        o.push(("wallet.client.max_attempts".into(), "6".into()));
        let s: Settings = load(None, &o).expect("loads");
        assert_eq!(s.wallet.client.max_attempts, 6);
        assert_eq!(s.wallet.client, {
            let mut p = wallet_policy();
            p.max_attempts = 6;
            p
        });
        assert_eq!(s.notification.client, write_policy());
        assert_eq!(Settings::default().wallet.client, wallet_policy());
        assert_eq!(wallet_policy().balancer.strategy, BalanceStrategy::Failover);
        assert!(s.fraud.client.hedge.enabled, "fraud keeps hedging");
        assert!(
            !s.notification.client.hedge.enabled,
            "notification never hedges"
        );
        let h = &s.wallet.client.hedge;
        assert!(h.enabled && h.max_hedges == 1 && h.percentile == 0.0);
        assert_eq!(h.delay_ms, WALLET_HEDGE_DELAY_MS);
    }

    #[test]
    fn lease_owners_name_the_replica_and_differ_per_start() {
        let cfg = PaymentSettings {
            replica: Some("payment-1".into()),
            ..PaymentSettings::default()
        };
        let (a, b) = (cfg.lease_owner(), cfg.lease_owner());
        let pid = std::process::id().to_string();
        assert!(a.as_str().starts_with(&format!("payment-1:{pid}:")), "{a}");
        assert_ne!(a, b, "a random part tells two starts apart");
        let default = PaymentSettings::default().lease_owner();
        assert!(default.as_str().starts_with("payment-"), "{default}");
        assert!(PaymentSettings::default().lease_ms > PaymentSettings::default().deadline_ms);
    }

    #[test]
    fn the_outbox_claim_outlasts_the_longest_pass() {
        let cfg = PaymentSettings::default();
        let rounds = u64::from(cfg.outbox_batch).div_ceil(cfg.outbox_concurrency as u64);
        let pass = Duration::from_millis(cfg.outbox_deadline_ms * rounds);
        assert!(cfg.outbox_claim_ttl() > pass);
    }

    #[test]
    fn bad_policies_and_urls_name_the_field() {
        let mut o = urls();
        o.push((
            "fraud.client.breaker.failure_rate_threshold".into(),
            "0".into(),
        ));
        let e = load::<Settings>(None, &o).expect_err("refused");
        assert!(
            e.to_string()
                .contains("fraud.client.breaker.failure_rate_threshold"),
            "{e}"
        );
        let mut o = urls();
        o.push(("wallet.urls".into(), r#"["ftp://x"]"#.into()));
        let e = load::<Settings>(None, &o).expect_err("refused");
        assert!(e.to_string().contains("wallet.urls[0]"), "{e}");
        let mut o = urls();
        o.push(("payment.deadline_ms".into(), "0".into()));
        let e = load::<Settings>(None, &o).expect_err("refused");
        assert!(e.to_string().contains("payment.deadline_ms"), "{e}");
        let mut o = urls();
        o.push(("payment.deadline_ms".into(), "6000".into()));
        let e = load::<Settings>(None, &o).expect_err("a lease shorter than the deadline");
        assert!(e.to_string().contains("payment.lease_ms"), "{e}");
        let mut o = urls();
        o.push(("payment.replica".into(), "\"a b\"".into()));
        let e = load::<Settings>(None, &o).expect_err("refused");
        assert!(e.to_string().contains("payment.replica"), "{e}");
        let mut o = urls();
        o.push(("demo.currency".into(), "\"XYZ\"".into()));
        let e = load::<Settings>(None, &o).expect_err("refused");
        assert!(e.to_string().contains("demo.currency"), "{e}");
    }
}
