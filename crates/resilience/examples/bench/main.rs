//! Benchmark of `finpay-resilience` (issue 3, "Tests and benchmark"). Not part of the test suite:
//! timing claims live here, not in timed tests. Run it through `scripts/bench-resilience.sh`, or
//!
//! ```text
//! cargo run --release -p finpay-resilience --example bench -- --scenario all
//! ```
//!
//! It prints a markdown report on stdout (progress goes to stderr). The scenarios:
//!
//! * `overhead` — the whole [`ResilientClient`] stack (deadline, bulkhead, breaker, retry + budget,
//!   hedge, per-try timeout, p2c balancer, health checks; default [`ClientPolicy`]) against a bare
//!   hyper-util pooled client with the same connector and pool settings, both calling one loopback
//!   server that answers at once. Throughput of each and the overhead `1 - finpay / bare`.
//! * `errors` — the fraud hop: 3 loopback replicas each failing a seeded 30% of checks with a 500.
//!   FinPay's client over them, against HAProxy (run as a child process, configured as a retrying
//!   proxy in front of the same replicas) driven by the bare client. Success rate, throughput,
//!   p50/p99, actual/effective load, and the ratios.
//! * `hangs` — the same, but 30% of checks hang for 3 s before answering 200.
//! * `two-down` — 2 of the 3 replicas fail every check: FinPay's success, and when its event
//!   hooks see each dead replica ejected.
//! * `inproc` — the stacks' own CPU per call, one caller, over an endpoint in the process.
//!
//! tower-resilience 0.13 runs in every scenario but `two-down` as a third contender, in two
//! orderings (`peer.rs` says how it is configured); the report ends with FinPay and it side by
//! side, and the issue's targets, met or not.
//!
//! Each scenario runs `--rounds` rounds; in each round every contender runs for `--warmup-secs`
//! (not measured) plus `--duration-secs` at `--concurrency`, and the order alternates between
//! rounds so that a noisy neighbour does not always hit the same one. The report gives per-round
//! figures and medians.
//!
//! Measurement rules: throughput counts calls *completed* inside the measured window; latency and
//! success count calls *started* inside it (a call that started there is followed to its end, so
//! a slow tail is not cut off). Latency covers failed calls too: it is what the caller waits.
//! Every call of every contender carries the same deadline (`--deadline-ms`, the payment
//! service's default of 2 s): FinPay's through [`Deadline`], the others' as a timeout.
//!
//! Everything binds 127.0.0.1. Every loop is bounded in count and time. HAProxy runs from a
//! configuration in a temporary directory and is killed when its scenario ends (and, failing that,
//! when its handle is dropped).

mod peer;

/// The allocator FinPay's binary uses too; every contender shares it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use finpay_resilience::balance::{Balance, EndpointSet};
use finpay_resilience::classify::BoxError;
use finpay_resilience::classify::HttpClassify;
use finpay_resilience::client::{balance_config, HttpEndpoint, Stack};
use finpay_resilience::{CallError, ClientPolicy, Deadline, Idempotent, Outbound, ResilientClient};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

/// The request body: what the payment service sends to fraud (a pure read, marked idempotent).
const CHECK_BODY: &[u8] =
    br#"{"payment_id":"0192f0c4-7d1e-7a3b-9c2d-4e5f60718293","account_id":"acc-bench","amount_minor":1250,"currency":"EUR"}"#;
const CHECK_PATH: &str = "/v1/checks";
const SAFE_BODY: &[u8] = br#"{"verdict":"SAFE"}"#;
/// Connections a replica accepts at most in one scenario (a bound, far above what a run opens).
const MAX_ACCEPTS: u64 = 1_000_000;
/// Connect attempts while waiting for HAProxy to listen (100 ms apart).
const HAPROXY_START_TRIES: u32 = 50;
/// A call still running this long after its deadline is abandoned and counted as stuck (a bug in
/// the contender; it keeps the benchmark bounded in time).
const STUCK_GRACE: Duration = Duration::from_secs(1);

/// The contenders `--only` can pick.
const ONLY: [&str; 4] = [
    "bare",
    "finpay",
    "tower-resilience B",
    "tower-resilience B2",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Stack overhead against a bare hyper-util client, no faults.
    Overhead,
    /// Fraud hop, 30% of checks fail with 500: FinPay vs HAProxy.
    Errors,
    /// Fraud hop, 30% of checks hang for 3 s: FinPay vs HAProxy.
    Hangs,
    /// The stack's own CPU cost per call, in process, FinPay against tower-resilience:
    /// `ResilientClient::with_endpoints` over an endpoint that answers at once (no sockets).
    Inproc,
    /// 2 of 3 replicas fail every check, the third 30%: FinPay's success, and when it ejects the
    /// two (through its event hooks).
    TwoDown,
    /// All of the above, in the order overhead, errors, hangs, two-down, inproc.
    All,
}

/// Benchmark of the finpay-resilience client stack (markdown report on stdout).
#[derive(Debug, Parser)]
struct Args {
    /// Which scenario to run.
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Calls in flight per contender (worker tasks, each calling in a loop).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Unmeasured seconds before each run (pools, EWMAs and the hedge histogram fill up).
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Rounds per scenario; medians are over rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Share of checks each replica fails (errors) or hangs (hangs).
    #[arg(long, default_value_t = 0.3)]
    fault_rate: f64,
    /// How long a hanging check hangs.
    #[arg(long, default_value_t = 3_000)]
    hang_ms: u64,
    /// Deadline of every call, both contenders.
    #[arg(long, default_value_t = 2_000)]
    deadline_ms: u64,
    /// HAProxy `timeout server` (its per-try timeout). Default: FinPay's `per_try_timeout_ms`.
    #[arg(long)]
    haproxy_timeout_server_ms: Option<u64>,
    /// The haproxy executable.
    #[arg(long, default_value = "haproxy")]
    haproxy: PathBuf,
    /// Seed of the replicas' fault choices and of the client's RNG.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Calls per run at most (all workers together), a bound in count besides the one in time.
    #[arg(long, default_value_t = 20_000_000)]
    max_calls_per_run: u64,
    /// In-process scenario: sequential calls per run (fewer under `valgrind --tool=callgrind`).
    #[arg(long, default_value_t = 200_000)]
    inproc_calls: u32,
    /// Overhead scenario: also run the stack with hedging off, with hedging and the breaker off,
    /// and the balancer and endpoint alone (diagnostic: where the overhead goes).
    #[arg(long)]
    breakdown: bool,
    /// Install no `metrics` recorder (the fraud hop then reports no client counters).
    #[arg(long)]
    no_recorder: bool,
    /// Run only the contender with this name (`bare` or `finpay`), to profile one client at a time
    /// (for example under `perf record` or `valgrind --tool=callgrind`). In the in-process
    /// scenario `finpay` runs the default policy alone and `bare` the endpoint alone.
    #[arg(long)]
    only: Option<String>,
}

impl Args {
    fn check(&self) -> Result<(), String> {
        let bad = |what: &str| Err(what.to_owned());
        if !(1..=1024).contains(&self.concurrency) {
            return bad("--concurrency must be within 1..=1024");
        }
        if !(1..=600).contains(&self.duration_secs) || self.warmup_secs > 60 {
            return bad("--duration-secs must be within 1..=600 and --warmup-secs <= 60");
        }
        if !(1..=50).contains(&self.rounds) {
            return bad("--rounds must be within 1..=50");
        }
        if !(0.0..=1.0).contains(&self.fault_rate) {
            return bad("--fault-rate must be within 0..=1");
        }
        if !(1..=60_000).contains(&self.hang_ms) || !(1..=60_000).contains(&self.deadline_ms) {
            return bad("--hang-ms and --deadline-ms must be within 1..=60000");
        }
        if self.inproc_calls == 0 {
            return bad("--inproc-calls must be >= 1");
        }
        if self.max_calls_per_run < self.concurrency as u64 {
            return bad("--max-calls-per-run must be >= --concurrency");
        }
        if let Some(only) = &self.only {
            if !ONLY.contains(&only.as_str()) {
                return bad("--only must be `bare`, `finpay`, `tower-resilience B` or `tower-resilience B2`");
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Client counters of the fraud hop (dependency "fraud"), to tell failure causes apart: budget
// rejections, retries, hedges, breaker transitions. The overhead scenario's clients are named
// "bench" and get no-op handles, so the overhead is measured without a recorder.

#[derive(Default)]
struct CountingRecorder {
    counters: std::sync::Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

struct Count(Arc<AtomicU64>);

impl metrics::CounterFn for Count {
    fn increment(&self, v: u64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    fn absolute(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

impl metrics::Recorder for CountingRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        if !key
            .labels()
            .any(|l| l.key() == "dependency" && l.value() == "fraud")
        {
            return metrics::Counter::noop();
        }
        let short = key
            .name()
            .trim_start_matches("finpay_client_")
            .trim_end_matches("_total");
        let mut name = short.to_owned();
        for l in key.labels().filter(|l| l.key() != "dependency") {
            name.push_str(&format!(" {}={}", l.key(), l.value()));
        }
        let Ok(mut map) = self.counters.lock() else {
            return metrics::Counter::noop();
        };
        metrics::Counter::from_arc(Arc::new(Count(map.entry(name).or_default().clone())))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

static RECORDER: std::sync::OnceLock<&'static CountingRecorder> = std::sync::OnceLock::new();

/// The fraud client's counters so far, as `name value` pairs.
fn counters() -> BTreeMap<String, u64> {
    RECORDER
        .get()
        .and_then(|r| r.counters.lock().ok())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
                .collect()
        })
        .unwrap_or_default()
}

fn counters_delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| format!("{k}: {d}"))
        })
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

fn main() {
    let args = Args::parse();
    if !args.no_recorder {
        let recorder: &'static CountingRecorder = Box::leak(Box::default());
        if metrics::set_global_recorder(recorder).is_ok() {
            let _ = RECORDER.set(recorder);
        }
    }
    if let Err(e) = args.check() {
        eprintln!("bench: {e}");
        std::process::exit(64);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    let policy = ClientPolicy {
        seed: Some(args.seed),
        ..ClientPolicy::default()
    };
    policy.validate()?;
    println!("# finpay-resilience benchmark\n");
    println!(
        "concurrency {}, {} s measured after {} s warm-up per run, {} rounds (order alternates), \
         deadline {} ms per call, seed {}, {} tokio worker threads, {} CPUs visible.\n",
        args.concurrency,
        args.duration_secs,
        args.warmup_secs,
        args.rounds,
        args.deadline_ms,
        args.seed,
        tokio::runtime::Handle::current().metrics().num_workers(),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    let all = args.scenario == Scenario::All;
    if all || args.scenario == Scenario::Overhead {
        overhead(&args, &policy).await?;
    }
    if all || args.scenario == Scenario::Errors {
        fraud_hop(&args, &policy, Fault::Error(args.fault_rate)).await?;
    }
    if all || args.scenario == Scenario::Hangs {
        let hang = Duration::from_millis(args.hang_ms);
        fraud_hop(&args, &policy, Fault::Hang(args.fault_rate, hang)).await?;
    }
    if all || args.scenario == Scenario::TwoDown {
        two_down(&args, &policy).await?;
    }
    if all || args.scenario == Scenario::Inproc {
        inproc(&args, &policy).await?;
    }
    print_side_by_side();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Servers

/// What a replica does to a check (health probes are always answered 200).
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// Answer 500 with this probability.
    Error(f64),
    /// Hang this long, then answer 200, with this probability.
    Hang(f64, Duration),
}

/// A replica's accept loop; aborted when dropped.
struct Replica {
    addr: SocketAddr,
    /// Checks this replica received.
    own: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

/// Checks the replicas of a scenario received: all together, and each replica's.
#[derive(Clone, Default)]
struct Checks {
    total: Arc<AtomicU64>,
    per_replica: Vec<Arc<AtomicU64>>,
}

impl Checks {
    fn of(total: &Arc<AtomicU64>, replicas: &[&Replica]) -> Self {
        Self {
            total: total.clone(),
            per_replica: replicas.iter().map(|r| r.own.clone()).collect(),
        }
    }

    fn per_replica_now(&self) -> Vec<u64> {
        self.per_replica
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// SplitMix64: a seeded, lock-free stream of fault decisions (one per request number).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) for request `n` of a replica whose stream starts at `key`.
fn unit(key: u64, n: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let u = (splitmix64(key.wrapping_add(n)) >> 11) as f64 / (1u64 << 53) as f64;
    u
}

/// Starts a replica on 127.0.0.1:0. `checks` counts the checks it receives (health probes not).
async fn start_replica(
    index: u64,
    seed: u64,
    fault: Fault,
    checks: Arc<AtomicU64>,
) -> Result<Replica, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let key = splitmix64(seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
    let numbered = Arc::new(AtomicU64::new(0));
    let own = Arc::new(AtomicU64::new(0));
    let own_in_task = own.clone();
    let task = tokio::spawn(async move {
        for _ in 0..MAX_ACCEPTS {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let checks = checks.clone();
            let numbered = numbered.clone();
            let own = own_in_task.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let counters = [checks.clone(), own.clone()];
                        let numbered = numbered.clone();
                        answer(req, fault, key, counters, numbered)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Replica { addr, own, task })
}

async fn answer(
    req: http::Request<hyper::body::Incoming>,
    fault: Fault,
    key: u64,
    checks: [Arc<AtomicU64>; 2],
    numbered: Arc<AtomicU64>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let is_check = req.uri().path() == CHECK_PATH;
    // Read the body, as the fraud service does before it answers.
    let _ = req.into_body().collect().await;
    let mut resp = http::Response::new(Full::new(Bytes::from_static(SAFE_BODY)));
    if !is_check {
        return Ok(resp);
    }
    for c in &checks {
        c.fetch_add(1, Ordering::Relaxed);
    }
    let n = numbered.fetch_add(1, Ordering::Relaxed);
    match fault {
        Fault::None => {}
        Fault::Error(p) => {
            if unit(key, n) < p {
                *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                *resp.body_mut() = Full::new(Bytes::from_static(b"injected fault"));
            }
        }
        Fault::Hang(p, hang) => {
            if unit(key, n) < p {
                tokio::time::sleep(hang).await;
            }
        }
    }
    Ok(resp)
}

/// HAProxy as a child process, with its configuration in a temporary directory.
struct Haproxy {
    child: tokio::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    async fn start(
        exe: &Path,
        replicas: &[SocketAddr],
        timeout_server: Duration,
        policy: &ClientPolicy,
    ) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        // A free port: bind, read it, release it. HAProxy binds it a moment later.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, a)| format!("    server r{i} {a}\n"))
            .collect();
        let cfg = format!(
            "global\n\
             \x20   maxconn 4096\n\
             defaults\n\
             \x20   mode http\n\
             \x20   timeout connect {connect}ms\n\
             \x20   timeout client 30s\n\
             \x20   timeout server {server}ms\n\
             \x20   timeout http-keep-alive 30s\n\
             \x20   timeout queue 1s\n\
             \x20   retries 3\n\
             \x20   option redispatch 1\n\
             \x20   retry-on all-retryable-errors 500 503 response-timeout conn-failure\n\
             frontend fe\n\
             \x20   bind {addr}\n\
             \x20   default_backend fraud\n\
             backend fraud\n\
             \x20   balance roundrobin\n\
             {servers}",
            connect = policy.connect_timeout_ms,
            server = timeout_server.as_millis(),
        );
        let path = dir.path().join("haproxy.cfg");
        tokio::fs::write(&path, &cfg).await?;
        let child = tokio::process::Command::new(exe)
            .arg("-db") // foreground, no daemon: the handle owns the process
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {}: {e}", exe.display()))?;
        let mut me = Self {
            child,
            addr,
            _dir: dir,
        };
        for _ in 0..HAPROXY_START_TRIES {
            if let Some(status) = me.child.try_wait()? {
                return Err(format!("haproxy exited at start: {status}\n{cfg}").into());
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                eprintln!("haproxy listening on {addr}");
                return Ok(me);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        me.stop().await;
        Err(format!("haproxy did not listen on {addr} within 5 s").into())
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Contenders

type BareClient = Client<HttpConnector, Full<Bytes>>;

/// A hyper-util pooled client with the same connector and pool settings as `ResilientClient`.
fn bare_client(policy: &ClientPolicy) -> BareClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_millis(policy.connect_timeout_ms)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(policy.pool_idle_timeout_ms))
        .pool_max_idle_per_host(policy.pool_max_idle_per_host)
        .build(connector)
}

enum Driver {
    Finpay(ResilientClient),
    /// A stack of the crate's parts fed the same [`Outbound`] `ResilientClient::call` makes.
    Stack(Stack),
    Bare(Box<BareClient>, http::Uri),
    /// tower-resilience, see [`peer`].
    Peer(peer::PeerDriver),
}

impl Driver {
    /// One fraud check: `Ok` when it was answered 200, else what went wrong.
    async fn call(&self, deadline: Duration) -> Result<(), &'static str> {
        match self {
            Driver::Stack(stack) => {
                let req = Outbound::new(
                    check_request().map_err(|_| "bad request")?,
                    Some(Deadline::after(deadline)),
                );
                match stack.clone().oneshot(req).await {
                    Ok(r) if r.status() == http::StatusCode::OK => Ok(()),
                    Ok(_) => Err("other status"),
                    Err(_) => Err("error"),
                }
            }
            Driver::Finpay(client) => {
                match client
                    .call(
                        check_request().map_err(|_| "bad request")?,
                        Deadline::after(deadline),
                    )
                    .await
                {
                    Ok(r) if r.status() == http::StatusCode::OK => Ok(()),
                    Ok(_) => Err("other status"),
                    Err(CallError::DeadlineExceeded) => Err("deadline exceeded"),
                    Err(CallError::BreakerOpen { .. }) => Err("breaker open"),
                    Err(CallError::BulkheadFull) => Err("bulkhead full"),
                    Err(CallError::NoEndpoint) => Err("no endpoint"),
                    Err(CallError::Exhausted {
                        status: Some(_), ..
                    }) => Err("exhausted (last: 5xx)"),
                    Err(CallError::Exhausted { status: None, .. }) => {
                        Err("exhausted (last: error/timeout)")
                    }
                }
            }
            Driver::Peer(p) => tokio::time::timeout(deadline, p.call())
                .await
                .map_err(|_| "deadline exceeded")?,
            Driver::Bare(client, uri) => {
                let req = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from_static(CHECK_BODY)))
                    .map_err(|_| "bad request")?;
                let call = async {
                    let resp = client.request(req).await.map_err(|_| "transport error")?;
                    let status = resp.status();
                    resp.into_body().collect().await.map_err(|_| "body error")?;
                    match status {
                        http::StatusCode::OK => Ok(()),
                        s if s.is_server_error() => Err("5xx"),
                        _ => Err("other status"),
                    }
                };
                tokio::time::timeout(deadline, call)
                    .await
                    .map_err(|_| "deadline exceeded")?
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement

struct RunStats {
    /// Calls started in the measured window.
    calls: u64,
    /// Of those, answered 200.
    ok: u64,
    /// Calls completed in the measured window, per second.
    throughput: f64,
    /// Latency of the calls started in the window, microseconds.
    latency_us: Histogram<u64>,
    /// Checks the replicas received per call made (whole run, warm-up included).
    load: f64,
    /// Calls abandoned `STUCK_GRACE` after their deadline (whole run).
    stuck: u64,
    /// The run took much longer than it can (the process was stopped or starved): discard it.
    disturbed: bool,
    /// Failed calls started in the window, by kind.
    failures: BTreeMap<&'static str, u64>,
    /// Process CPU time (user + system, every thread: load generator, servers and client) in the
    /// measured window per call completed in it, microseconds; `NAN` where `/proc` is missing.
    /// Unlike throughput it hardly depends on how much CPU other processes take.
    cpu_us_per_call: f64,
    /// The FinPay client's counters in this run (whole run), or `-`.
    counters: String,
    /// Checks each replica received in this run (whole run).
    split: Vec<u64>,
    /// FinPay's `finpay_client_ejections_total` in this run (whole run).
    ejections: u64,
}

/// User + system CPU time of this process so far, from `/proc/self/stat` (Linux).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis((utime + stime) * 10))
}

impl RunStats {
    fn p_ms(&self, q: f64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let us = self.latency_us.value_at_quantile(q) as f64;
        us / 1000.0
    }
}

struct WorkerStats {
    calls: u64,
    ok: u64,
    completed_in_window: u64,
    made: u64,
    stuck: u64,
    failures: BTreeMap<&'static str, u64>,
    stopped: Instant,
    latency_us: Histogram<u64>,
}

impl WorkerStats {
    /// Nothing counted yet; `stopped` starts at `at` (the window's start).
    fn empty(at: Instant) -> Result<Self, BoxError> {
        Ok(Self {
            calls: 0,
            ok: 0,
            completed_in_window: 0,
            made: 0,
            stuck: 0,
            failures: BTreeMap::new(),
            stopped: at,
            latency_us: histogram()?,
        })
    }

    /// Adds another worker's counts; `stopped` becomes the later of the two.
    fn add(&mut self, w: WorkerStats) -> Result<(), BoxError> {
        self.calls += w.calls;
        self.ok += w.ok;
        self.completed_in_window += w.completed_in_window;
        self.made += w.made;
        self.stuck += w.stuck;
        for (k, n) in w.failures {
            *self.failures.entry(k).or_insert(0) += n;
        }
        self.stopped = self.stopped.max(w.stopped);
        self.latency_us.add(&w.latency_us)?;
        Ok(())
    }
}

fn histogram() -> Result<Histogram<u64>, BoxError> {
    Ok(Histogram::new_with_bounds(1, 120_000_000, 3)?)
}

/// The times of one run: warm-up until `start`, measured until `end`; every call has `deadline`,
/// and a worker makes at most `cap` calls.
#[derive(Clone, Copy)]
struct RunWindow {
    start: Instant,
    end: Instant,
    deadline: Duration,
    cap: u64,
}

/// One closed-loop worker: calls `driver` back to back until the window ends (or `cap` calls),
/// counting the calls that started in the window and the ones that completed in it.
async fn worker(driver: Arc<Driver>, w: RunWindow, mut latency_us: Histogram<u64>) -> WorkerStats {
    let (mut calls, mut ok, mut completed_in_window, mut made) = (0u64, 0u64, 0u64, 0u64);
    let mut stuck = 0u64;
    let mut failures = BTreeMap::new();
    while made < w.cap {
        let t0 = Instant::now();
        if t0 >= w.end {
            break;
        }
        let outcome =
            match tokio::time::timeout(w.deadline + STUCK_GRACE, driver.call(w.deadline)).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    stuck += 1;
                    Err("stuck")
                }
            };
        let t1 = Instant::now();
        made += 1;
        if t1 >= w.start && t1 < w.end {
            completed_in_window += 1;
        }
        if t0 >= w.start {
            calls += 1;
            match outcome {
                Ok(()) => ok += 1,
                Err(kind) => *failures.entry(kind).or_insert(0u64) += 1,
            }
            let us = u64::try_from((t1 - t0).as_micros()).unwrap_or(u64::MAX);
            latency_us.saturating_record(us.max(1));
        }
    }
    WorkerStats {
        calls,
        ok,
        completed_in_window,
        made,
        stuck,
        failures,
        stopped: Instant::now(),
        latency_us,
    }
}

async fn measure(driver: &Arc<Driver>, args: &Args, checks: &Checks) -> Result<RunStats, BoxError> {
    let deadline = Duration::from_millis(args.deadline_ms);
    let start = Instant::now();
    let window_start = start + Duration::from_secs(args.warmup_secs);
    let window_end = window_start + Duration::from_secs(args.duration_secs);
    let cap = args.max_calls_per_run / args.concurrency as u64;
    let run = RunWindow {
        start: window_start,
        end: window_end,
        deadline,
        cap,
    };
    let checks_before = checks.total.load(Ordering::Relaxed);
    let split_before = checks.per_replica_now();
    let cpu_probe = tokio::spawn(async move {
        tokio::time::sleep_until(window_start).await;
        let a = process_cpu();
        tokio::time::sleep_until(window_end).await;
        let b = process_cpu();
        a.zip(b).map(|(a, b)| b.saturating_sub(a))
    });
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency {
        workers.spawn(worker(driver.clone(), run, histogram()?));
    }
    let mut total = WorkerStats::empty(window_start)?;
    while let Some(w) = workers.join_next().await {
        total.add(w?)?;
    }
    if total.made >= cap * args.concurrency as u64 {
        eprintln!("warning: --max-calls-per-run reached before the time was up");
    }
    // Normally the whole window; shorter only when the count bound stopped the run early.
    let window = total
        .stopped
        .min(window_end)
        .saturating_duration_since(window_start);
    let checks_sent = checks.total.load(Ordering::Relaxed) - checks_before;
    let split: Vec<u64> = checks
        .per_replica_now()
        .iter()
        .zip(&split_before)
        .map(|(a, b)| a - b)
        .collect();
    let cpu = cpu_probe.await.ok().flatten();
    // Workers stop starting calls at `window_end`, and a call lasts at most deadline + grace.
    let longest = window_end + deadline + STUCK_GRACE + Duration::from_secs(1);
    let disturbed = Instant::now() > longest;
    if disturbed {
        eprintln!("warning: the run took longer than it can; the process was stopped or starved");
    }
    let completed = total.completed_in_window;
    #[allow(clippy::cast_precision_loss)]
    let stats = RunStats {
        calls: total.calls,
        ok: total.ok,
        throughput: completed as f64 / window.as_secs_f64().max(1e-9),
        latency_us: total.latency_us,
        load: checks_sent as f64 / total.made.max(1) as f64,
        stuck: total.stuck,
        disturbed,
        failures: total.failures,
        counters: "-".to_owned(),
        split,
        ejections: 0,
        cpu_us_per_call: cpu.map_or(f64::NAN, |c| {
            c.as_secs_f64() * 1e6 / completed.max(1) as f64
        }),
    };
    Ok(stats)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs every contender once per round, alternating the order, and returns stats per contender.
async fn rounds(
    contenders: &[(&str, Arc<Driver>)],
    args: &Args,
    checks: &Checks,
) -> Result<Vec<Vec<RunStats>>, BoxError> {
    let mut out: Vec<Vec<RunStats>> = contenders.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..contenders.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (name, driver) = &contenders[i];
            let before = counters();
            let mut s = measure(driver, args, checks).await?;
            let after = counters();
            s.counters = counters_delta(&before, &after);
            s.ejections = after.get("ejections").copied().unwrap_or(0)
                - before.get("ejections").copied().unwrap_or(0);
            eprintln!(
                "round {}/{} {name}: {:.0} req/s, {:.1} CPU us/call, success {}/{}, p50 {:.2} ms, p99 {:.2} ms, load {:.3}, stuck {}",
                round + 1,
                args.rounds,
                s.throughput,
                s.cpu_us_per_call,
                s.ok,
                s.calls,
                s.p_ms(0.5),
                s.p_ms(0.99),
                s.load,
                s.stuck
            );
            if !s.failures.is_empty() {
                eprintln!("  failures: {}", failure_kinds(&s.failures));
            }
            if s.counters != "-" {
                eprintln!("  client counters: {}", s.counters);
            }
            out[i].push(s);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Scenarios

async fn overhead(args: &Args, policy: &ClientPolicy) -> Result<(), BoxError> {
    eprintln!("scenario overhead");
    let total = Arc::new(AtomicU64::new(0));
    let server = start_replica(0, args.seed, Fault::None, total.clone()).await?;
    let checks = Checks::of(&total, &[&server]);
    let mut contenders = overhead_contenders(args, policy, server.addr)?;
    if let Some(only) = &args.only {
        contenders.retain(|(name, _)| name == only);
        let stats = rounds(&contenders, args, &checks).await?;
        for ((name, _), runs) in contenders.iter().zip(&stats) {
            let cpu = median(runs.iter().map(|s| s.cpu_us_per_call).collect());
            let rps = median(runs.iter().map(|s| s.throughput).collect());
            println!("{name}: {rps:.0} req/s, {cpu:.2} CPU us/call (medians)");
        }
        return Ok(());
    }
    let stats = rounds(&contenders, args, &checks).await?;
    let (bare, fin) = (&stats[0], &stats[1]);
    print_overhead(policy, bare, fin);
    print_breakdown(&contenders, &stats, bare);
    side_by_side_overhead(&stats);
    let named: Vec<(&str, &Vec<RunStats>)> = contenders
        .iter()
        .map(|(n, _)| *n)
        .zip(stats.iter())
        .collect();
    stuck_note(&named);
    drop(server);
    Ok(())
}

/// The overhead scenario's contenders against the server at `addr`: the bare client first, then
/// FinPay's default stack; with `--breakdown` also the stack with parts turned off and the floor.
fn overhead_contenders(
    args: &Args,
    policy: &ClientPolicy,
    addr: SocketAddr,
) -> Result<Vec<(&'static str, Arc<Driver>)>, BoxError> {
    let uri: http::Uri = format!("http://{addr}").parse()?;
    let check_uri: http::Uri = format!("http://{addr}{CHECK_PATH}").parse()?;
    let finpay = ResilientClient::new("bench", vec![uri.clone()], policy.clone())?;
    let mut contenders = vec![
        (
            "bare",
            Arc::new(Driver::Bare(
                Box::new(bare_client(policy)),
                check_uri.clone(),
            )),
        ),
        ("finpay", Arc::new(Driver::Finpay(finpay))),
        (
            "tower-resilience B",
            Arc::new(Driver::Peer(peer::over_http(
                policy,
                std::slice::from_ref(&check_uri),
                &bare_client(policy),
                peer::Order::RetryOutside,
            )?)),
        ),
        (
            "tower-resilience B2",
            Arc::new(Driver::Peer(peer::over_http(
                policy,
                std::slice::from_ref(&check_uri),
                &bare_client(policy),
                peer::Order::RetryInside,
            )?)),
        ),
    ];
    if !args.breakdown {
        return Ok(contenders);
    }
    let mut no_hedge = policy.clone();
    no_hedge.hedge.enabled = false;
    let mut bare_bones = no_hedge.clone();
    bare_bones.breaker.enabled = false;
    bare_bones.health_check.enabled = false;
    contenders.push((
        "finpay, hedging off",
        Arc::new(Driver::Finpay(ResilientClient::new(
            "bench",
            vec![uri.clone()],
            no_hedge,
        )?)),
    ));
    contenders.push((
        "finpay, hedging, breaker, health checks off",
        Arc::new(Driver::Finpay(ResilientClient::new(
            "bench",
            vec![uri.clone()],
            bare_bones,
        )?)),
    ));
    // The floor: the balancer over the same endpoint, type-erased and fed the same `Outbound`
    // as ResilientClient's stack, with no other layer: what a balanced call costs at least.
    let set = EndpointSet::new(balance_config("bench", policy));
    let endpoint = HttpEndpoint::new(uri.clone(), bare_client(policy), policy.max_response_bytes);
    set.insert(uri, endpoint);
    contenders.push((
        "balancer and endpoint only (no other layer)",
        Arc::new(Driver::Stack(BoxCloneSyncService::new(Balance::new(
            set,
            HttpClassify,
        )))),
    ));
    Ok(contenders)
}

/// The median over runs of the `q` latency quantile, milliseconds.
fn median_p_ms(v: &[RunStats], q: f64) -> f64 {
    median(v.iter().map(|s| s.p_ms(q)).collect())
}

/// Section 1 of the report: bare against FinPay per round, the medians and the verdict.
fn print_overhead(policy: &ClientPolicy, bare: &[RunStats], fin: &[RunStats]) {
    println!("## 1. Stack overhead: ResilientClient vs bare hyper-util client\n");
    println!(
        "One loopback hyper server answering at once (no faults); both clients use the same \
         connector and pool settings (nodelay, connect timeout {} ms, {} idle per host, idle \
         timeout {} ms). FinPay: `ResilientClient::new` with the default `ClientPolicy` (seeded) \
         over that one endpoint; every call is a POST {CHECK_PATH} marked `Idempotent`.\n",
        policy.connect_timeout_ms, policy.pool_max_idle_per_host, policy.pool_idle_timeout_ms,
    );
    println!("| round | bare req/s | finpay req/s | overhead | bare p50 / p99 ms | finpay p50 / p99 ms | finpay actual/effective |");
    println!("|---|---|---|---|---|---|---|");
    let mut overheads = Vec::new();
    for (i, (b, f)) in bare.iter().zip(fin).enumerate() {
        let o = 1.0 - f.throughput / b.throughput;
        overheads.push(o);
        println!(
            "| {} | {:.0} | {:.0} | {:.1}% | {:.2} / {:.2} | {:.2} / {:.2} | {:.3} |",
            i + 1,
            b.throughput,
            f.throughput,
            o * 100.0,
            b.p_ms(0.5),
            b.p_ms(0.99),
            f.p_ms(0.5),
            f.p_ms(0.99),
            f.load
        );
    }
    let bare_med = median(bare.iter().map(|s| s.throughput).collect());
    let fin_med = median(fin.iter().map(|s| s.throughput).collect());
    println!(
        "| **median** | **{bare_med:.0}** | **{fin_med:.0}** | **{:.1}%** (ratio of medians {:.1}%) | {:.2} / {:.2} | {:.2} / {:.2} | {:.3} |\n",
        median(overheads.clone()) * 100.0,
        (1.0 - fin_med / bare_med) * 100.0,
        median_p_ms(bare, 0.5),
        median_p_ms(bare, 0.99),
        median_p_ms(fin, 0.5),
        median_p_ms(fin, 0.99),
        median(fin.iter().map(|s| s.load).collect()),
    );
    let verdict = if median(overheads) <= 0.10 {
        "met"
    } else {
        "NOT met"
    };
    println!("Target: overhead <= 10% (median of per-round overheads): **{verdict}**.\n");
}

/// The `--breakdown` table: every contender against the bare client, in throughput and in CPU.
fn print_breakdown(contenders: &[(&str, Arc<Driver>)], stats: &[Vec<RunStats>], bare: &[RunStats]) {
    println!("Every contender against the bare client (same rounds, same server):\n");
    println!("| client | req/s (median) | overhead vs bare (median of rounds) | p50 / p99 ms (median) | CPU us/call (median) | CPU overhead vs bare (median of rounds) |");
    println!("|---|---|---|---|---|---|");
    for ((name, _), runs) in contenders.iter().zip(stats) {
        let o: Vec<f64> = runs
            .iter()
            .zip(bare)
            .map(|(r, b)| 1.0 - r.throughput / b.throughput)
            .collect();
        // The throughput a CPU-bound closed loop loses to the extra CPU per call.
        let co: Vec<f64> = runs
            .iter()
            .zip(bare)
            .map(|(r, b)| 1.0 - b.cpu_us_per_call / r.cpu_us_per_call)
            .collect();
        println!(
            "| {name} | {:.0} | {:.1}% | {:.2} / {:.2} | {:.1} | {:.1}% |",
            median(runs.iter().map(|s| s.throughput).collect()),
            median(o) * 100.0,
            median_p_ms(runs, 0.5),
            median_p_ms(runs, 0.99),
            median(runs.iter().map(|s| s.cpu_us_per_call).collect()),
            median(co) * 100.0,
        );
    }
    println!();
}

/// An endpoint that answers 200 at once, for [`inproc`].
#[derive(Clone)]
struct Instant200;

impl tower::Service<http::Request<Bytes>> for Instant200 {
    type Response = http::Response<Bytes>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<http::Response<Bytes>, BoxError>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Request<Bytes>) -> Self::Future {
        std::future::ready(Ok(http::Response::new(Bytes::from_static(SAFE_BODY))))
    }
}

/// The request every FinPay call sends (what the payment service sends to fraud).
fn check_request() -> Result<http::Request<Bytes>, BoxError> {
    let mut req = http::Request::post(CHECK_PATH)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Bytes::from_static(CHECK_BODY))?;
    req.extensions_mut().insert(Idempotent);
    Ok(req)
}

/// Sequential calls through the stack over [`Instant200`]: process CPU time per call, and the same
/// calls made on the endpoint directly (the baseline the stack's cost is the difference from).
/// The tower-resilience stacks run over an endpoint of theirs that answers the same way.
async fn inproc(args: &Args, policy: &ClientPolicy) -> Result<(), BoxError> {
    let calls = args.inproc_calls;
    let mut no_hedge = policy.clone();
    no_hedge.hedge.enabled = false;
    let mut bare_bones = no_hedge.clone();
    bare_bones.breaker.enabled = false;
    let uri: http::Uri = "http://inproc:80".parse()?;
    let finpay = |p: ClientPolicy| -> Result<Inproc, BoxError> {
        Ok(Inproc::Finpay(ResilientClient::with_endpoints(
            "bench",
            vec![(uri.clone(), Instant200)],
            p,
        )?))
    };
    let variants: Vec<(&str, Inproc)> = vec![
        ("endpoint alone (baseline)", Inproc::Endpoint),
        ("finpay", finpay(policy.clone())?),
        (
            "tower-resilience B",
            Inproc::Peer(peer::in_process(policy, peer::Order::RetryOutside)?),
        ),
        (
            "tower-resilience B2",
            Inproc::Peer(peer::in_process(policy, peer::Order::RetryInside)?),
        ),
        ("finpay, hedging off", finpay(no_hedge)?),
        ("finpay, hedging and breaker off", finpay(bare_bones)?),
    ];
    let variants: Vec<(&str, Inproc)> = variants
        .into_iter()
        .filter(|(name, _)| match args.only.as_deref() {
            None => true,
            Some("bare") => name.starts_with("endpoint"),
            Some(only) => *name == only,
        })
        .collect();
    let deadline = Duration::from_millis(args.deadline_ms);
    println!("## 4. In-process stack cost\n");
    println!(
        "{calls} sequential calls per run, one caller, through each stack over one in-process \
         endpoint answering 200 at once (no sockets); process CPU time per call; {} runs \
         (`--rounds`), the variants alternating within each run; median and minimum.\n",
        args.rounds
    );
    let mut runs: Vec<Vec<f64>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let v = &variants[i].1;
            let a = process_cpu().ok_or("no /proc/self/stat")?;
            for _ in 0..calls {
                v.call(deadline).await?;
            }
            let b = process_cpu().ok_or("no /proc/self/stat")?;
            runs[i].push(b.saturating_sub(a).as_secs_f64() * 1e6 / f64::from(calls));
        }
    }
    println!("| variant | CPU us/call (median) | CPU us/call (min) |");
    println!("|---|---|---|");
    let mut medians = BTreeMap::new();
    for ((name, _), r) in variants.iter().zip(runs) {
        let min = r.iter().copied().fold(f64::INFINITY, f64::min);
        eprintln!("inproc {name}: {r:.2?}");
        let m = median(r);
        medians.insert(*name, m);
        println!("| {name} | {m:.2} | {min:.2} |");
    }
    println!();
    side_by_side_inproc(&medians);
    Ok(())
}

/// One in-process contender.
enum Inproc {
    Endpoint,
    Finpay(ResilientClient),
    Peer(peer::PeerDriver),
}

impl Inproc {
    async fn call(&self, deadline: Duration) -> Result<(), BoxError> {
        match self {
            Inproc::Endpoint => {
                drop(tower::ServiceExt::oneshot(Instant200, check_request()?).await?)
            }
            Inproc::Finpay(c) => drop(c.call(check_request()?, Deadline::after(deadline)).await?),
            Inproc::Peer(p) => p.call().await?,
        }
        Ok(())
    }
}

/// The fraud hop's section title and what its replicas do, for the report.
fn fault_description(fault: Fault) -> (&'static str, String) {
    match fault {
        Fault::Hang(p, d) => (
            "3. Fraud hop, hangs",
            format!(
                "{:.0}% of checks hang for {} ms, then answer 200",
                p * 100.0,
                d.as_millis()
            ),
        ),
        Fault::Error(p) => (
            "2. Fraud hop, errors",
            format!("{:.0}% of checks fail with 500", p * 100.0),
        ),
        Fault::None => ("Fraud hop, no faults", "no faults".to_owned()),
    }
}

/// The fraud hop's contenders, in the order of their stats.
const HOP: [&str; 4] = [
    "finpay",
    "haproxy",
    "tower-resilience B",
    "tower-resilience B2",
];

async fn fraud_hop(args: &Args, policy: &ClientPolicy, fault: Fault) -> Result<(), BoxError> {
    let (title, what) = fault_description(fault);
    eprintln!("scenario {title}");
    let timeout_server = Duration::from_millis(
        args.haproxy_timeout_server_ms
            .unwrap_or(policy.per_try_timeout_ms),
    );
    let stats = fraud_hop_rounds(args, policy, fault, timeout_server).await?;

    println!("## {title}: FinPay client vs HAProxy vs tower-resilience\n");
    println!(
        "3 loopback replicas; {what} (seeded, independent per request). FinPay: \
         `ResilientClient` (default policy: per-try {} ms, {} rounds of tries, up to {} hedges, \
         budget ratio {}) over the 3 replicas. HAProxy: `mode http`, `balance roundrobin`, \
         `retries 3`, `option redispatch 1`, `retry-on all-retryable-errors 500 503 \
         response-timeout conn-failure`, `timeout server {} ms`, driven by the bare hyper-util \
         client. tower-resilience 0.13: B (retry outside its hedge, our ordering) and B2 (retry \
         inside its hedge), configured as in `examples/bench/peer.rs`, over tower's p2c. Every \
         call has a {} ms deadline. Latency covers failed calls too.\n",
        policy.per_try_timeout_ms,
        policy.max_attempts,
        policy.hedge.max_hedges,
        policy.budget.ratio,
        timeout_server.as_millis(),
        args.deadline_ms,
    );
    print_fraud_hop_rounds(&stats);
    let summaries: Vec<Summary> = stats.iter().map(|v| Summary::of(v)).collect();
    print_fraud_hop_summary(&summaries);
    print_split(&stats[0]);
    side_by_side_hop(fault, &stats, &summaries);
    let named: Vec<(&str, &Vec<RunStats>)> = HOP.iter().copied().zip(stats.iter()).collect();
    stuck_note(&named);
    Ok(())
}

/// The fraud hop's rounds: 3 replicas with `fault`, and the contenders of [`HOP`] over them
/// (HAProxy's `timeout server` = `timeout_server`); stats per contender, in [`HOP`]'s order.
async fn fraud_hop_rounds(
    args: &Args,
    policy: &ClientPolicy,
    fault: Fault,
    timeout_server: Duration,
) -> Result<Vec<Vec<RunStats>>, BoxError> {
    let total = Arc::new(AtomicU64::new(0));
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(start_replica(i, args.seed, fault, total.clone()).await?);
    }
    let checks = Checks::of(&total, &replicas.iter().collect::<Vec<_>>());
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let mut haproxy = Haproxy::start(&args.haproxy, &addrs, timeout_server, policy).await?;
    let result = async {
        let uris = addrs
            .iter()
            .map(|a| format!("http://{a}").parse())
            .collect::<Result<Vec<http::Uri>, _>>()?;
        let check_uris = addrs
            .iter()
            .map(|a| format!("http://{a}{CHECK_PATH}").parse())
            .collect::<Result<Vec<http::Uri>, _>>()?;
        let finpay = ResilientClient::new("fraud", uris, policy.clone())?;
        let via_haproxy: http::Uri = format!("http://{}{CHECK_PATH}", haproxy.addr).parse()?;
        let peer = |order| peer::over_http(policy, &check_uris, &bare_client(policy), order);
        let contenders = [
            (HOP[0], Arc::new(Driver::Finpay(finpay))),
            (
                HOP[1],
                Arc::new(Driver::Bare(Box::new(bare_client(policy)), via_haproxy)),
            ),
            (
                HOP[2],
                Arc::new(Driver::Peer(peer(peer::Order::RetryOutside)?)),
            ),
            (
                HOP[3],
                Arc::new(Driver::Peer(peer(peer::Order::RetryInside)?)),
            ),
        ];
        rounds(&contenders, args, &checks).await
    }
    .await;
    haproxy.stop().await;
    drop(replicas);
    result
}

/// The fraud hop's per-round table, every contender of a round one after the other.
fn print_fraud_hop_rounds(stats: &[Vec<RunStats>]) {
    println!("| round | client | success | req/s | p50 ms | p99 ms | p99.9 ms | max ms | actual/effective | failures by kind | FinPay client counters (whole run) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let rounds = stats.first().map_or(0, Vec::len);
    for i in 0..rounds {
        for (name, runs) in HOP.iter().zip(stats) {
            let s = &runs[i];
            println!(
                "| {} | {name} | {}/{} ({:.3}%) | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {} | {} |",
                i + 1,
                s.ok,
                s.calls,
                pct(s.ok, s.calls),
                s.throughput,
                s.p_ms(0.5),
                s.p_ms(0.99),
                s.p_ms(0.999),
                s.p_ms(1.0),
                s.load,
                failure_kinds(&s.failures),
                s.counters
            );
        }
    }
    println!();
}

/// One contender's figures over all rounds of a scenario.
struct Summary {
    ok: u64,
    calls: u64,
    /// Whether every round succeeded on every call.
    every_round_perfect: bool,
    throughput: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    load: f64,
    cpu_us_per_call: f64,
}

impl Summary {
    fn of(v: &[RunStats]) -> Self {
        Self {
            ok: v.iter().map(|s| s.ok).sum(),
            calls: v.iter().map(|s| s.calls).sum(),
            every_round_perfect: v.iter().all(|s| s.ok == s.calls),
            throughput: median(v.iter().map(|s| s.throughput).collect()),
            p50: median_p_ms(v, 0.5),
            p99: median_p_ms(v, 0.99),
            p999: median_p_ms(v, 0.999),
            load: median(v.iter().map(|s| s.load).collect()),
            cpu_us_per_call: median(v.iter().map(|s| s.cpu_us_per_call).collect()),
        }
    }
}

/// The fraud hop's summary: success over all rounds, medians, and FinPay's ratios to the others.
fn print_fraud_hop_summary(summaries: &[Summary]) {
    println!("| client | success, all rounds pooled | req/s (median) | p50 ms | p99 ms | p99.9 ms (medians) | actual/effective (median) |");
    println!("|---|---|---|---|---|---|---|");
    for (name, s) in HOP.iter().zip(summaries) {
        println!(
            "| {name} | {:.4}% ({} failed of {}) | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} |",
            pct(s.ok, s.calls),
            s.calls - s.ok,
            s.calls,
            s.throughput,
            s.p50,
            s.p99,
            s.p999,
            s.load
        );
    }
    println!();
    let f = &summaries[0];
    for (name, o) in HOP.iter().zip(summaries).skip(1) {
        println!(
            "Ratios FinPay / {name}: throughput **{:.2}x**, p50 **{:.2}x**, p99 **{:.2}x**, \
             p99.9 **{:.2}x**, failure rate **{}**.\n",
            f.throughput / o.throughput,
            f.p50 / o.p50,
            f.p99 / o.p99,
            f.p999 / o.p999,
            failure_ratio(f, o),
        );
    }
}

/// FinPay's tries per replica in each round, as shares, and its ejections.
fn print_split(fin: &[RunStats]) {
    let rounds: Vec<String> = fin
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let total: u64 = s.split.iter().sum();
            #[allow(clippy::cast_precision_loss)]
            let shares: Vec<String> = s
                .split
                .iter()
                .map(|n| format!("{:.1}%", *n as f64 * 100.0 / total.max(1) as f64))
                .collect();
            format!(
                "round {}: {} ({} ejections)",
                i + 1,
                shares.join(" / "),
                s.ejections
            )
        })
        .collect();
    println!(
        "FinPay's tries per replica (whole run): {}.\n",
        rounds.join("; ")
    );
}

fn pct(ok: u64, calls: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let p = ok as f64 * 100.0 / calls.max(1) as f64;
    p
}

fn failure_ratio(f: &Summary, h: &Summary) -> String {
    let rate = |s: &Summary| 100.0 - pct(s.ok, s.calls);
    let (fr, hr) = (rate(f), rate(h));
    if fr == 0.0 {
        format!("0 vs {hr:.4}% (FinPay failed no call)")
    } else {
        format!("{:.4}x ({fr:.4}% vs {hr:.4}%)", fr / hr.max(1e-12))
    }
}

/// Says how many calls had to be abandoned past their deadline (0 expected).
fn stuck_note(runs: &[(&str, &Vec<RunStats>)]) {
    let parts: Vec<String> = runs
        .iter()
        .map(|(name, v)| format!("{name} {}", v.iter().map(|s| s.stuck).sum::<u64>()))
        .collect();
    println!(
        "Calls still running {} s past their deadline (abandoned, counted as failed; 0 expected): {}.\n",
        STUCK_GRACE.as_secs(),
        parts.join(", ")
    );
    let disturbed: usize = runs
        .iter()
        .map(|(_, v)| v.iter().filter(|s| s.disturbed).count())
        .sum();
    if disturbed > 0 {
        println!(
            "**Warning:** {disturbed} run(s) took longer than they can (process stopped or starved \
             by the machine); treat their figures with suspicion.\n"
        );
    }
}

fn failure_kinds(f: &BTreeMap<&'static str, u64>) -> String {
    if f.is_empty() {
        return "-".to_owned();
    }
    f.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// The side-by-side table and the issue's targets, printed at the end of the report.

/// Rows of the side-by-side table (scenario and measure, FinPay, tower-resilience B / B2, ratio)
/// and the verdicts, gathered as the scenarios run.
#[derive(Default)]
struct SideBySide {
    rows: Vec<[String; 4]>,
    verdicts: Vec<(String, bool)>,
}

static SIDE: std::sync::Mutex<SideBySide> = std::sync::Mutex::new(SideBySide {
    rows: Vec::new(),
    verdicts: Vec::new(),
});

fn side_row(measure: &str, ours: String, peer: String, ratio: String) {
    if let Ok(mut s) = SIDE.lock() {
        s.rows.push([measure.to_owned(), ours, peer, ratio]);
    }
}

fn verdict(what: String, met: bool) {
    if let Ok(mut s) = SIDE.lock() {
        s.verdicts.push((what, met));
    }
}

/// The errors and hangs rows, and their targets: errors throughput >= 2x tower-resilience's best
/// ordering, no ejection and 30-37% of tries per replica; hangs throughput >= 1x and p99.9 <= 1x
/// its best ordering; success 100% in every round.
fn side_by_side_hop(fault: Fault, stats: &[Vec<RunStats>], s: &[Summary]) {
    let (f, b, b2) = (&s[0], &s[2], &s[3]);
    let name = match fault {
        Fault::Error(_) => "errors",
        Fault::Hang(..) => "hangs",
        Fault::None => "no faults",
    };
    let best_rps = b.throughput.max(b2.throughput);
    let best_p999 = b.p999.min(b2.p999);
    side_row(
        &format!("30% {name}: req/s"),
        format!("{:.0}", f.throughput),
        format!("{:.0} / {:.0}", b.throughput, b2.throughput),
        format!("{:.2}x", f.throughput / best_rps),
    );
    side_row(
        &format!("30% {name}: p99 / p99.9 ms"),
        format!("{:.2} / {:.2}", f.p99, f.p999),
        format!(
            "{:.2} / {:.2} (B), {:.2} / {:.2} (B2)",
            b.p99, b.p999, b2.p99, b2.p999
        ),
        format!(
            "{:.2}x / {:.2}x",
            f.p99 / b.p99.min(b2.p99),
            f.p999 / best_p999
        ),
    );
    side_row(
        &format!("30% {name}: success, every round pooled"),
        format!("{:.4}%", pct(f.ok, f.calls)),
        format!("{:.4}% / {:.4}%", pct(b.ok, b.calls), pct(b2.ok, b2.calls)),
        String::new(),
    );
    verdict(
        format!("{name}: FinPay success 100% in every round"),
        f.every_round_perfect,
    );
    match fault {
        Fault::Error(_) => {
            verdict(
                format!(
                    "errors: throughput >= 2x tower-resilience's best ordering ({:.2}x)",
                    f.throughput / best_rps
                ),
                f.throughput >= 2.0 * best_rps,
            );
            let ejections: u64 = stats[0].iter().map(|r| r.ejections).sum();
            let shares_ok = stats[0].iter().all(|r| {
                let total: u64 = r.split.iter().sum();
                #[allow(clippy::cast_precision_loss)]
                r.split.iter().all(|n| {
                    let share = *n as f64 / total.max(1) as f64;
                    (0.30..=0.37).contains(&share)
                })
            });
            verdict(
                format!("errors: FinPay ejects no replica ({ejections} ejections)"),
                ejections == 0,
            );
            verdict(
                "errors: each replica gets 30-37% of FinPay's tries in every round".to_owned(),
                shares_ok,
            );
        }
        Fault::Hang(..) => {
            verdict(
                format!(
                    "hangs: throughput >= 1x tower-resilience's best ordering ({:.2}x)",
                    f.throughput / best_rps
                ),
                f.throughput >= best_rps,
            );
            verdict(
                format!(
                    "hangs: p99.9 <= 1x tower-resilience's best ordering ({:.2}x)",
                    f.p999 / best_p999
                ),
                f.p999 <= best_p999,
            );
        }
        Fault::None => {}
    }
}

/// The overhead rows: throughput and CPU per call against a server that answers at once.
fn side_by_side_overhead(stats: &[Vec<RunStats>]) {
    let s: Vec<Summary> = stats.iter().take(4).map(|v| Summary::of(v)).collect();
    let (bare, f, b, b2) = (&s[0], &s[1], &s[2], &s[3]);
    side_row(
        "overhead (no faults): req/s (bare client)",
        format!("{:.0} ({:.0})", f.throughput, bare.throughput),
        format!("{:.0} / {:.0}", b.throughput, b2.throughput),
        format!("{:.2}x", f.throughput / b.throughput.max(b2.throughput)),
    );
    side_row(
        "overhead: process CPU per call, us (bare client)",
        format!("{:.1} ({:.1})", f.cpu_us_per_call, bare.cpu_us_per_call),
        format!("{:.1} / {:.1}", b.cpu_us_per_call, b2.cpu_us_per_call),
        format!(
            "{:.2}x",
            f.cpu_us_per_call / b.cpu_us_per_call.min(b2.cpu_us_per_call)
        ),
    );
}

/// The in-process row (the stack's own CPU, one caller), and its target of <= 2 us.
fn side_by_side_inproc(medians: &BTreeMap<&str, f64>) {
    let get = |k: &str| medians.get(k).copied().unwrap_or(f64::NAN);
    let (f, b, b2) = (
        get("finpay"),
        get("tower-resilience B"),
        get("tower-resilience B2"),
    );
    side_row(
        "in-process CPU per call, one caller, us",
        format!("{f:.2}"),
        format!("{b:.2} / {b2:.2}"),
        format!("{:.2}x", f / b.min(b2)),
    );
    verdict(
        format!("in-process CPU per call <= 2 us ({f:.2} us)"),
        f <= 2.0,
    );
}

/// The side-by-side table and the verdicts.
fn print_side_by_side() {
    let Ok(s) = SIDE.lock() else { return };
    if s.rows.is_empty() && s.verdicts.is_empty() {
        return;
    }
    println!("## Side by side: FinPay vs tower-resilience 0.13\n");
    println!("Medians over the rounds above. B: tower-resilience's retry outside its hedge (our ordering); B2: its retry inside its hedge. The ratio is FinPay's over tower-resilience's better ordering for that measure.\n");
    println!("| scenario | FinPay | tower-resilience (B / B2) | ratio FinPay / best |");
    println!("|---|---|---|---|");
    for [m, o, p, r] in &s.rows {
        println!("| {m} | {o} | {p} | {r} |");
    }
    println!();
    println!("Targets:\n");
    for (what, met) in &s.verdicts {
        println!("- {what}: **{}**", if *met { "met" } else { "NOT met" });
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Two of three replicas down

/// When each endpoint was ejected, through the client's event hooks.
#[derive(Default)]
struct EjectionLog(std::sync::Mutex<Vec<(Instant, String)>>);

impl finpay_resilience::Events for EjectionLog {
    fn on_ejection(&self, _: &'static str, endpoint: &str, _: Duration) {
        if let Ok(mut v) = self.0.lock() {
            v.push((Instant::now(), endpoint.to_owned()));
        }
    }
}

/// 2 of 3 replicas answer every check with a 500, the third fails 30%: FinPay's success in every
/// round, when it first ejects each dead replica (from the client's first call), and the share of
/// its tries the dead ones still get.
async fn two_down(args: &Args, policy: &ClientPolicy) -> Result<(), BoxError> {
    eprintln!("scenario two-down");
    let total = Arc::new(AtomicU64::new(0));
    let faults = [
        Fault::Error(1.0),
        Fault::Error(1.0),
        Fault::Error(args.fault_rate),
    ];
    let mut replicas = Vec::new();
    for (i, f) in (0u64..).zip(faults) {
        replicas.push(start_replica(i, args.seed, f, total.clone()).await?);
    }
    let checks = Checks::of(&total, &replicas.iter().collect::<Vec<_>>());
    let uris = replicas
        .iter()
        .map(|r| format!("http://{}", r.addr).parse())
        .collect::<Result<Vec<http::Uri>, _>>()?;
    let log = Arc::new(EjectionLog::default());
    let hooks = finpay_resilience::EventHooks::new(log.clone());
    let client = ResilientClient::new_with_events("fraud", uris.clone(), policy.clone(), hooks)?;
    let started = Instant::now();
    let contenders = [("finpay", Arc::new(Driver::Finpay(client)))];
    let stats = rounds(&contenders, args, &checks).await?;
    let fin = &stats[0];
    println!("## 5. Two of three replicas down: FinPay\n");
    println!(
        "3 loopback replicas: two answer every check with a 500, the third fails {:.0}% of them. \
         FinPay's client (default policy) over the three, {} rounds as above.\n",
        args.fault_rate * 100.0,
        args.rounds
    );
    println!(
        "| round | success | req/s | p99 ms | p99.9 ms | tries to the dead replicas | ejections |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, s) in fin.iter().enumerate() {
        let all: u64 = s.split.iter().sum();
        let dead: u64 = s.split.iter().take(2).sum();
        #[allow(clippy::cast_precision_loss)]
        let dead_share = dead as f64 * 100.0 / all.max(1) as f64;
        println!(
            "| {} | {}/{} ({:.3}%) | {:.0} | {:.2} | {:.2} | {dead} of {all} ({dead_share:.2}%) | {} |",
            i + 1,
            s.ok,
            s.calls,
            pct(s.ok, s.calls),
            s.throughput,
            s.p_ms(0.99),
            s.p_ms(0.999),
            s.ejections
        );
    }
    let first: Vec<Option<Duration>> = uris
        .iter()
        .take(2)
        .map(|u| {
            let key = u.to_string();
            log.0.lock().ok().and_then(|v| {
                v.iter()
                    .find(|(_, k)| *k == key)
                    .map(|(t, _)| t.duration_since(started))
            })
        })
        .collect();
    let shown: Vec<String> = first
        .iter()
        .map(|d| {
            d.map_or("never".to_owned(), |d| {
                format!("{:.1} ms", d.as_secs_f64() * 1e3)
            })
        })
        .collect();
    println!(
        "\nFirst ejection of each dead replica, from the client's first call: {}. (An ejection \
         lasts 5 s, then 10 s, ...; a dead replica that comes back is ejected again.)\n",
        shown.join(" and ")
    );
    let perfect = fin.iter().all(|s| s.ok == s.calls);
    let within = first
        .iter()
        .all(|d| d.is_some_and(|d| d <= Duration::from_secs(1)));
    verdict(
        "two of three replicas down: FinPay success 100% in every round".to_owned(),
        perfect,
    );
    verdict(
        format!(
            "two of three replicas down: both ejected within 1 s ({})",
            shown.join(", ")
        ),
        within,
    );
    drop(replicas);
    Ok(())
}
