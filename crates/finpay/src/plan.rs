//! What `finpay up` starts: the replica plan, each replica's TOML config, its fault seed and its port.
//!
//! A replica keeps its port and its config file across restarts, so the replica URLs handed to
//! payment never go stale while the replica lives; `finpay scale` adds replicas with [`plan_replica`]
//! and the supervisor hands payment the new set at run time. Payment's replicas share one public
//! port (`http.shared_port`, SO_REUSEPORT) besides their own.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use finpay_services::http::FaultSettings;
use finpay_services::ServiceKind;
use serde::Serialize;

use crate::storage::{Backend, Storage};

/// Which fault `--fraud-fault` injects into every fraud replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FraudFault {
    /// HTTP 500/503 at the given rate.
    Error,
    /// Hang for `hang_ms` (3 s) at the given rate.
    Hang,
    /// Exit abruptly at the given rate, like a pod crash, once the replica has run 10 s (replica
    /// `i` waits `3.7 s × i` more), so the replicas crash one at a time and are replaced.
    Crash,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WalletFault {
    /// Commit the transfer, then lose the response: the ambiguous failure.
    CommitThenFail,
    None,
}

impl FraudFault {
    /// The faults of fraud replica `index` for this choice at `rate`.
    pub fn faults(self, rate: f64, index: u16) -> FaultSettings {
        let mut f = FaultSettings::default();
        match self {
            FraudFault::Error => f.error_rate = rate,
            FraudFault::Hang => f.hang_rate = rate,
            FraudFault::Crash => {
                // Each replica serves a while, then dies on a call with this probability: the pod
                // that crashes and is replaced (scenario B of docs/scenarios.md). The while is at
                // least the supervisor's backoff reset, so every such crash restarts after 100 ms
                // (a replica dying on 30% of its calls from the start would only crash-loop), and
                // it differs per replica, so the replicas do not all die at the same moment.
                f.crash_rate = rate;
                f.crash_after_ms = CRASH_AFTER_MS + u64::from(index) * CRASH_STAGGER_MS;
            }
            FraudFault::None => {}
        }
        f
    }
}

impl WalletFault {
    /// The faults of every wallet replica for this choice at `rate`.
    pub fn faults(self, rate: f64) -> FaultSettings {
        let mut f = FaultSettings::default();
        if self == WalletFault::CommitThenFail {
            f.commit_then_fail_rate = rate;
        }
        f
    }
}

/// How many replicas of each service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    pub fraud: u16,
    pub wallet: u16,
    pub notification: u16,
    pub payment: u16,
}

impl Replicas {
    /// Upper bound on replicas of one service: every one is a process on this machine.
    pub const MAX: u16 = 32;

    /// What `finpay up` starts on `storage`: on SQLite one payment and one notification (each
    /// owns its file) and two wallets (one writes, one stands by); on PostgreSQL two of each.
    pub fn default_for(backend: Backend) -> Self {
        let two = backend == Backend::Postgres;
        Self {
            fraud: 3,
            wallet: 2,
            notification: if two { 2 } else { 1 },
            payment: if two { 2 } else { 1 },
        }
    }

    /// At least `n` replicas of `kind`.
    pub fn raise(&mut self, kind: ServiceKind, n: u16) {
        let slot = match kind {
            ServiceKind::Fraud => &mut self.fraud,
            ServiceKind::Wallet => &mut self.wallet,
            ServiceKind::Notification => &mut self.notification,
            ServiceKind::Payment => &mut self.payment,
        };
        *slot = (*slot).max(n);
    }

    pub fn get(&self, kind: ServiceKind) -> u16 {
        match kind {
            ServiceKind::Fraud => self.fraud,
            ServiceKind::Wallet => self.wallet,
            ServiceKind::Notification => self.notification,
            ServiceKind::Payment => self.payment,
        }
    }

    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        for kind in ServiceKind::ALL {
            let n = self.get(kind);
            if n == 0 || n > Self::MAX {
                return Err(crate::ConfigError(format!(
                    "--{kind}-replicas must be between 1 and {}, got {n}",
                    Self::MAX
                )));
            }
        }
        Ok(())
    }
}

/// The choices of `finpay up` that shape the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    pub replicas: Replicas,
    pub fraud_fault: FraudFault,
    pub fraud_fault_rate: f64,
    pub wallet_fault: WalletFault,
    pub wallet_fault_rate: f64,
    pub notification_down: bool,
    pub seed: u64,
    /// The public port all payment replicas share; 0 picks a free one.
    pub payment_port: u16,
    pub storage: Storage,
}

impl ClusterSpec {
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        self.replicas.validate()?;
        for (flag, rate) in [
            ("--fraud-fault-rate", self.fraud_fault_rate),
            ("--wallet-fault-rate", self.wallet_fault_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(crate::ConfigError(format!(
                    "{flag} must be between 0 and 1, got {rate}"
                )));
            }
        }
        Ok(())
    }
}

/// One process of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaPlan {
    pub name: String,
    pub service: ServiceKind,
    pub index: u16,
    /// The replica's own port: its business routes and its probes.
    pub port: u16,
    /// The replica's admin listener: `/admin/*`, `/metrics` and the probes.
    pub admin_port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl ReplicaPlan {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }
}

/// A replica's name: `fraud-0`, `payment-1`.
pub fn replica_name(service: ServiceKind, index: u16) -> String {
    format!("{service}-{index}")
}

/// Asks the kernel for a free port on 127.0.0.1 by binding port 0, then lets it go. The port is
/// reused for every restart of the replica. Another process could take it in between; then the
/// replica fails to bind, exits, and the supervisor's backoff shows it in `last_exit`.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .context("bind 127.0.0.1:0 to find a free port")?;
    let port = listener.local_addr().context("read bound port")?.port();
    Ok(port)
}

/// Picks `n` distinct free ports (held open together so the kernel cannot hand out one twice).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(
            TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .context("bind 127.0.0.1:0 to find a free port")?,
        );
    }
    held.iter()
        .map(|l| Ok(l.local_addr().context("read bound port")?.port()))
        .collect()
}

/// The fault seed of one start of one replica: distinct per replica and per restart, and the same
/// for the same `--seed`, so a run is reproducible. SplitMix64 over the inputs, kept to 63 bits so
/// it is a valid (non-negative) TOML integer.
pub fn derive_seed(seed: u64, name: &str, generation: u32) -> u64 {
    let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
    for b in name.bytes().chain(generation.to_le_bytes()) {
        h = splitmix64(h ^ u64::from(b));
    }
    h >> 1
}

pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How long a fraud replica of `finpay up --fraud-fault crash` runs before its crash draws count.
/// Replica `i` runs `CRASH_AFTER_MS + i * CRASH_STAGGER_MS`.
pub const CRASH_AFTER_MS: u64 = 10_000;
/// See [`CRASH_AFTER_MS`].
pub const CRASH_STAGGER_MS: u64 = 3_700;

/// The whole plan: every replica and the public port payment's replicas share.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub replicas: Vec<ReplicaPlan>,
    pub public_port: u16,
}

/// Refuses a public port another process holds (now, with a clear message, rather than payment
/// crash-looping later), or picks a free one for 0.
fn public_port(spec: &ClusterSpec) -> anyhow::Result<u16> {
    if spec.payment_port == 0 {
        return free_port();
    }
    if let Err(e) = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, spec.payment_port))) {
        return Err(crate::ConfigError(format!(
            "--port {}: 127.0.0.1:{} is not free ({e}); stop what uses it or pass --port 0",
            spec.payment_port, spec.payment_port
        ))
        .into());
    }
    Ok(spec.payment_port)
}

/// Lays out the replicas, picks their ports and writes one TOML config per replica under
/// `<data_dir>/config/`. Payment's replica URLs are not in its file: they go on its command line as
/// overrides (see [`payment_overrides`]).
pub fn build(spec: &ClusterSpec, data_dir: &Path) -> anyhow::Result<Plan> {
    spec.validate()?;
    for dir in ["config", "logs"] {
        let d = data_dir.join(dir);
        std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
    }
    let public_port = public_port(spec)?;
    let layout: Vec<(ServiceKind, u16)> = ServiceKind::ALL
        .into_iter()
        .flat_map(|kind| (0..spec.replicas.get(kind)).map(move |i| (kind, i)))
        .collect();
    // Two ports per replica, all distinct: the business port and the admin listener's.
    let ports = free_ports(2 * layout.len())?;
    let replicas = layout
        .into_iter()
        .zip(ports.chunks_exact(2))
        .map(|((kind, index), pair)| {
            let own = ReplicaPorts {
                own: pair[0],
                admin: pair[1],
                shared: None,
            };
            plan_replica(spec, data_dir, public_port, kind, index, own)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Plan {
        replicas,
        public_port,
    })
}

/// Plans one replica on the ports of `own` (its `shared` is set here: payment's replicas share
/// `public_port`) and writes its config file.
pub fn plan_replica(
    spec: &ClusterSpec,
    data_dir: &Path,
    public_port: u16,
    service: ServiceKind,
    index: u16,
    own: ReplicaPorts,
) -> anyhow::Result<ReplicaPlan> {
    let name = replica_name(service, index);
    let config_path = data_dir.join("config").join(format!("{name}.toml"));
    let ports = ReplicaPorts {
        shared: (service == ServiceKind::Payment).then_some(public_port),
        ..own
    };
    let toml = replica_toml(
        spec,
        ports,
        service,
        index,
        data_dir,
        derive_seed(spec.seed, &name, 0),
    )?;
    std::fs::write(&config_path, toml)
        .with_context(|| format!("write {}", config_path.display()))?;
    Ok(ReplicaPlan {
        log_path: data_dir.join("logs").join(format!("{name}.log")),
        name,
        service,
        index,
        port: ports.own,
        admin_port: ports.admin,
        config_path,
    })
}

/// What `finpay up` writes into one replica's config file: the services' own settings types, so a
/// key here is a key the service parses.
#[derive(Serialize)]
struct ReplicaConfig<'a> {
    data_dir: &'a str,
    log_format: &'static str,
    http: ReplicaHttp,
    faults: FaultSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage: Option<crate::storage::ReplicaStorage>,
}

#[derive(Serialize)]
struct ReplicaHttp {
    host: &'static str,
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    shared_port: Option<u16>,
    admin_port: u16,
}

/// A replica's own port, its admin listener's, and the port it shares with its service's other
/// replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaPorts {
    pub own: u16,
    pub admin: u16,
    pub shared: Option<u16>,
}

impl ReplicaPorts {
    /// Two free ports, for a replica planned while the cluster runs.
    pub fn free() -> anyhow::Result<Self> {
        let ports = free_ports(2)?;
        Ok(Self {
            own: ports[0],
            admin: ports[1],
            shared: None,
        })
    }
}

/// The faults `spec` gives replica `index` of `service`, before its seed is set.
pub fn replica_faults(spec: &ClusterSpec, service: ServiceKind, index: u16) -> FaultSettings {
    match service {
        ServiceKind::Fraud => spec.fraud_fault.faults(spec.fraud_fault_rate, index),
        ServiceKind::Wallet => spec.wallet_fault.faults(spec.wallet_fault_rate),
        ServiceKind::Notification => FaultSettings {
            down: spec.notification_down,
            ..FaultSettings::default()
        },
        ServiceKind::Payment => FaultSettings::default(),
    }
}

/// The TOML config of one replica, in the services' settings keys. A database URL is not in the
/// file: it may carry a password, so it reaches the replica in its environment.
pub fn replica_toml(
    spec: &ClusterSpec,
    ports: ReplicaPorts,
    service: ServiceKind,
    index: u16,
    data_dir: &Path,
    fault_seed: u64,
) -> anyhow::Result<String> {
    let data_dir = data_dir
        .to_str()
        .context("the data dir path must be valid UTF-8")?;
    anyhow::ensure!(
        i64::try_from(fault_seed).is_ok(),
        "fault seed must fit 63 bits"
    );
    let config = ReplicaConfig {
        data_dir,
        log_format: "json",
        http: ReplicaHttp {
            host: "127.0.0.1",
            port: ports.own,
            shared_port: ports.shared,
            admin_port: ports.admin,
        },
        faults: FaultSettings {
            seed: fault_seed,
            ..replica_faults(spec, service, index)
        },
        storage: spec.storage.replica(service),
    };
    let header = format!(
        "# {service} replica config, written by `finpay up`. Change the flags of `finpay up`, not this file:\n\
         # it is rewritten on every start.\n"
    );
    Ok(header + &toml::to_string(&config).context("encode replica config")?)
}

/// The `--set` overrides that tell payment where its dependencies are and how to balance them on
/// this storage, and that turn on the demo's `GET /pay` (a local demo cluster serves it).
pub fn payment_overrides(
    storage: &Storage,
    urls: impl Fn(ServiceKind) -> Vec<String>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = ServiceKind::DEPENDENCIES
        .into_iter()
        .map(|svc| {
            let urls: Vec<toml::Value> = urls(svc).into_iter().map(toml::Value::String).collect();
            (
                format!("{}.urls", svc.as_str()),
                toml::Value::Array(urls).to_string(),
            )
        })
        .collect();
    out.extend(storage.payment_overrides());
    out.push(("demo.enabled".to_owned(), "true".to_owned()));
    out
}

/// Every replica's URL of `service` in `plans`, in index order.
pub fn urls_of(plans: &[ReplicaPlan], service: ServiceKind) -> Vec<String> {
    let mut of: Vec<&ReplicaPlan> = plans.iter().filter(|p| p.service == service).collect();
    of.sort_by_key(|p| p.index);
    of.into_iter().map(ReplicaPlan::url).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ClusterSpec {
        ClusterSpec {
            replicas: Replicas::default_for(Backend::Sqlite),
            storage: Storage::Sqlite,
            fraud_fault: FraudFault::Error,
            fraud_fault_rate: 0.3,
            wallet_fault: WalletFault::None,
            wallet_fault_rate: 0.0,
            notification_down: false,
            seed: 7,
            payment_port: 0,
        }
    }

    #[test]
    fn plan_has_every_replica_on_a_distinct_port_with_its_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plans = build(&spec(), dir.path()).expect("plan").replicas;
        let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fraud-0",
                "fraud-1",
                "fraud-2",
                "wallet-0",
                "wallet-1",
                "notification-0",
                "payment-0"
            ]
        );
        let mut ports: Vec<u16> = plans.iter().flat_map(|p| [p.port, p.admin_port]).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 2 * plans.len());
        assert!(ports.iter().all(|p| *p != 0));
        for p in &plans {
            let text = std::fs::read_to_string(&p.config_path).expect("config written");
            let table: toml::Table = text.parse().expect("valid TOML");
            assert_eq!(table["http"]["port"].as_integer(), Some(i64::from(p.port)));
            let admin = table["http"]["admin_port"].as_integer();
            assert_eq!(admin, Some(i64::from(p.admin_port)));
            assert_eq!(table["http"]["host"].as_str(), Some("127.0.0.1"));
            assert_eq!(table["data_dir"].as_str(), dir.path().to_str());
        }
    }

    #[test]
    fn fraud_fault_lands_in_fraud_configs_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec();
        s.fraud_fault = FraudFault::Hang;
        s.wallet_fault = WalletFault::CommitThenFail;
        s.wallet_fault_rate = 0.5;
        s.notification_down = true;
        let plans = build(&s, dir.path()).expect("plan").replicas;
        for p in &plans {
            let table: toml::Table = std::fs::read_to_string(&p.config_path)
                .expect("read")
                .parse()
                .expect("toml");
            let faults: FaultSettings = table["faults"].clone().try_into().expect("fault settings");
            let seed = faults.seed;
            let want = match p.service {
                ServiceKind::Fraud => FaultSettings {
                    hang_rate: 0.3,
                    ..FaultSettings::default()
                },
                ServiceKind::Wallet => FaultSettings {
                    commit_then_fail_rate: 0.5,
                    ..FaultSettings::default()
                },
                ServiceKind::Notification => FaultSettings {
                    down: true,
                    ..FaultSettings::default()
                },
                ServiceKind::Payment => FaultSettings::default(),
            };
            assert_eq!(faults, FaultSettings { seed, ..want }, "{}", p.name);
            assert_eq!(seed, derive_seed(s.seed, &p.name, 0));
        }
    }

    #[test]
    fn every_replica_config_is_accepted_by_its_services_settings_parser() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec();
        s.fraud_fault = FraudFault::Crash;
        let plans = build(&s, dir.path()).expect("plan").replicas;
        for p in &plans {
            // The token reaches a replica in its environment; here it is one more override.
            let mut overrides = vec![("admin_token".to_owned(), "t".repeat(32))];
            if p.service == ServiceKind::Payment {
                overrides.extend(payment_overrides(&Storage::Sqlite, |k| urls_of(&plans, k)));
            }
            finpay_services::check_config(p.service, Some(p.config_path.clone()), overrides)
                .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
    }

    #[test]
    fn crashing_fraud_replicas_run_a_while_before_they_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec();
        s.fraud_fault = FraudFault::Crash;
        let plans = build(&s, dir.path()).expect("plan").replicas;
        let mut afters = Vec::new();
        for fraud in plans.iter().filter(|p| p.service == ServiceKind::Fraud) {
            let table: toml::Table = std::fs::read_to_string(&fraud.config_path)
                .expect("read")
                .parse()
                .expect("toml");
            let faults = table["faults"].as_table().expect("faults table");
            assert_eq!(faults["crash_rate"].as_float(), Some(0.3));
            afters.push(
                faults["crash_after_ms"]
                    .as_integer()
                    .expect("crash_after_ms"),
            );
        }
        assert_eq!(
            afters,
            [10_000, 13_700, 17_400],
            "staggered, never below 10 s"
        );
        assert_eq!(
            std::time::Duration::from_millis(CRASH_AFTER_MS),
            crate::backoff::BackoffPolicy::default().reset_after,
            "a replica that crashes after its run is restarted at the first backoff step"
        );
    }

    #[test]
    fn a_taken_payment_port_is_a_config_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut s = spec();
        s.payment_port = taken.local_addr().expect("addr").port();
        let err = build(&s, dir.path()).expect_err("port in use");
        assert!(err.is::<crate::ConfigError>(), "{err:#}");
    }

    #[test]
    fn every_payment_replica_shares_the_fixed_public_port_beside_a_port_of_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec();
        s.payment_port = 18080;
        s.replicas.payment = 2;
        let plan = build(&s, dir.path()).expect("plan");
        assert_eq!(plan.public_port, 18080);
        let payments: Vec<&ReplicaPlan> = plan
            .replicas
            .iter()
            .filter(|p| p.service == ServiceKind::Payment)
            .collect();
        assert_eq!(payments.len(), 2);
        for p in payments {
            assert_ne!(p.port, 18080, "{} keeps a port of its own", p.name);
            let table: toml::Table = std::fs::read_to_string(&p.config_path)
                .expect("read")
                .parse()
                .expect("toml");
            assert_eq!(table["http"]["shared_port"].as_integer(), Some(18080));
        }
        let fraud = plan
            .replicas
            .iter()
            .find(|p| p.service == ServiceKind::Fraud);
        let table: toml::Table = std::fs::read_to_string(&fraud.expect("fraud").config_path)
            .expect("read")
            .parse()
            .expect("toml");
        assert!(table["http"].get("shared_port").is_none());
    }

    #[test]
    fn postgres_replicas_name_their_schema_and_never_the_database_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec();
        s.storage = Storage::Postgres {
            url: "postgres://u:hunter2@db/x".into(),
            prefix: "finpay_abc".into(),
        };
        s.replicas = Replicas::default_for(s.storage.backend());
        let plan = build(&s, dir.path()).expect("plan");
        for p in &plan.replicas {
            let text = std::fs::read_to_string(&p.config_path).expect("read");
            assert!(!text.contains("hunter2"), "{}", p.name);
            let table: toml::Table = text.parse().expect("toml");
            let schema = table
                .get("storage")
                .and_then(|st| st.get("schema"))
                .and_then(|v| v.as_str());
            let want = crate::storage::Schemas::of("finpay_abc");
            assert_eq!(schema, want.of_service(p.service), "{}", p.name);
        }
        assert_eq!(
            plan.replicas
                .iter()
                .filter(|p| p.service == ServiceKind::Payment)
                .count(),
            2
        );
        let o = payment_overrides(&s.storage, |k| urls_of(&plan.replicas, k));
        assert!(o.contains(&(
            "wallet.client.balancer.strategy".into(),
            "\"p2c_ewma\"".into()
        )));
    }

    #[test]
    fn payment_overrides_list_every_replica_url_as_a_toml_array() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plans = build(&spec(), dir.path()).expect("plan").replicas;
        let overrides = payment_overrides(&Storage::Sqlite, |k| urls_of(&plans, k));
        let keys: Vec<&str> = overrides.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "fraud.urls",
                "wallet.urls",
                "notification.urls",
                "demo.enabled"
            ]
        );
        let parsed: toml::Table = format!("v = {}", overrides[0].1)
            .parse()
            .expect("toml value");
        let urls = parsed["v"].as_array().expect("array");
        assert_eq!(urls.len(), 3);
        assert_eq!(urls[0].as_str(), Some(plans[0].url().as_str()));
    }

    #[test]
    fn seeds_differ_per_replica_and_restart_and_repeat_per_seed() {
        let mut seen = std::collections::HashSet::new();
        for name in ["fraud-0", "fraud-1", "fraud-2", "wallet-0"] {
            for generation in 0..50 {
                assert!(seen.insert(derive_seed(1, name, generation)));
            }
        }
        assert_eq!(derive_seed(9, "fraud-1", 3), derive_seed(9, "fraud-1", 3));
        assert_ne!(derive_seed(9, "fraud-1", 3), derive_seed(10, "fraud-1", 3));
    }

    #[test]
    fn bad_rates_and_replica_counts_are_config_errors() {
        let mut s = spec();
        s.fraud_fault_rate = 1.5;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.replicas.fraud = 0;
        assert!(s.validate().is_err());
        assert!(spec().validate().is_ok());
    }
}
