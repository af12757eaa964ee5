//! Cross-process tests: the real `finpay` binary runs `up` (seven child processes) in a fresh temp dir
//! on free ports, and the tests drive it with `finpay load`, `kill -9` and `finpay check`.
//!
//! The clusters are heavy for a 2-core machine, so the tests take a lock and run one at a time. Every
//! wait is bounded; no test asserts on timing (heal times are printed, not asserted). A guard stops the
//! cluster (SIGTERM, then SIGKILL) when a test ends, passing or not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use finpay::cluster::{self, ClusterState};
use finpay::load::Outcome;
use finpay_services::ServiceKind;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_finpay");
const START_BOUND: Duration = Duration::from_secs(120);
const COMMAND_BOUND: Duration = Duration::from_secs(300);

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn exclusive() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A running `finpay up`, stopped on drop.
struct Cluster {
    up: Child,
    data_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    fn start(extra: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let out = std::fs::File::create(tmp.path().join("up.out")).expect("up.out");
        let err = std::fs::File::create(tmp.path().join("up.err")).expect("up.err");
        let up = Command::new(BIN)
            .args(["up", "--port", "0", "--seed", "7", "--data-dir"])
            .arg(&data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn finpay up");
        let mut cluster = Cluster {
            up,
            data_dir,
            _tmp: tmp,
        };
        let deadline = Instant::now() + START_BOUND;
        loop {
            if let Ok(Some(status)) = cluster.up.try_wait() {
                panic!(
                    "finpay up exited with {status} before ready:\n{}",
                    cluster.output()
                );
            }
            if let Ok(s) = cluster::read(&cluster.data_dir) {
                if s.ready && s.phase == "running" {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "cluster not ready within {START_BOUND:?}:\n{}",
                cluster.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    fn output(&self) -> String {
        let dir = self.data_dir.parent().expect("tmp dir");
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
        format!(
            "--- up.out\n{}--- up.err\n{}",
            read("up.out"),
            read("up.err")
        )
    }

    fn state(&self) -> ClusterState {
        cluster::read(&self.data_dir).expect("cluster.json")
    }

    fn url(&self) -> String {
        self.state().payment_url
    }

    /// Polls cluster.json until `pred` holds for a replica, bounded.
    fn wait_replica(&self, name: &str, what: &str, pred: impl Fn(&cluster::ReplicaState) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.state();
            if s.replica(name).is_some_and(&pred) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never {what}:\n{}",
                s.table()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Cluster {
    /// SIGTERM to `finpay up`; waits (bounded) for it to exit, then SIGKILL.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.up.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(self.up.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.up.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.up.kill();
        let _ = self.up.wait();
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a process is gone (or a zombie nobody reaped yet, which serves nothing).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_all_gone(pids: &[u32], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pids.iter().all(|p| gone(*p)) {
        assert!(Instant::now() < deadline, "{what}: {pids:?} still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `finpay <args>` to completion, killed if it outlives `COMMAND_BOUND`.
fn finpay(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn finpay");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(COMMAND_BOUND) {
        Ok(out) => out.expect("finpay ran"),
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            panic!("finpay {args:?} did not finish within {COMMAND_BOUND:?}");
        }
    }
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn check(data_dir: &Path) -> (bool, serde_json::Value) {
    let out = finpay(&[
        "check",
        "--json",
        "--data-dir",
        data_dir.to_str().expect("utf-8"),
    ]);
    let report = json_of(&out);
    assert_eq!(
        out.status.success(),
        report["ok"] == true,
        "exit status and `ok` disagree: {report}"
    );
    (out.status.success(), report)
}

/// Waits (bounded) until the audit finds no payment left in a non-terminal state, then returns it.
fn check_until_all_terminal(data_dir: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, report) = check(data_dir);
        if report["payments_resumable"] == 0 {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "payments still not terminal: {report}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The final status of every payment the load sent, asking the server like a client would: GET the
/// payment when its id is known, else POST again with the same key and body (which replays the stored
/// outcome, or finishes a payment a crash left behind). Bounded.
fn reconcile(url: &str, outcomes: &[Outcome]) -> BTreeMap<String, (String, u64, String)> {
    runtime().block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let mut finals = BTreeMap::new();
        for o in outcomes {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut id = o.payment_id.clone();
            loop {
                let resp = match &id {
                    Some(id) => client.get(format!("{url}/v1/payments/{id}")).send().await,
                    None => {
                        client
                            .post(format!("{url}/v1/payments"))
                            .header("Idempotency-Key", &o.idempotency_key)
                            .json(&serde_json::json!({
                                "account_id": o.account_id,
                                "merchant_account_id": "merchant-0",
                                "amount_minor": o.amount_minor,
                                "currency": "USD",
                                "description": "finpay load",
                            }))
                            .send()
                            .await
                    }
                };
                if let Ok(resp) = resp {
                    let v: serde_json::Value = resp.json().await.unwrap_or_default();
                    let pid = v["id"].as_str().or(v["payment_id"].as_str());
                    if let Some(pid) = pid {
                        id = Some(pid.to_owned());
                    }
                    if let (Some(pid), Some(status)) = (pid, v["status"].as_str()) {
                        if ["succeeded", "declined", "failed"].contains(&status) {
                            finals.insert(
                                pid.to_owned(),
                                (o.account_id.clone(), o.amount_minor, status.to_owned()),
                            );
                            break;
                        }
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "payment {:?} (key {}) never became terminal",
                    id,
                    o.idempotency_key
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        finals
    })
}

fn read_outcomes(path: &Path) -> Vec<Outcome> {
    std::fs::read_to_string(path)
        .expect("outcomes file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("outcome line"))
        .collect()
}

/// Balances straight from the wallet file.
fn balances(data_dir: &Path, ids: &[String]) -> BTreeMap<String, u64> {
    use finpay_ledger::wallet::WalletStore as _;
    runtime().block_on(async {
        let wallet = finpay_ledger::sqlite::SqliteWallet::open(
            &data_dir.join(finpay_ledger::files::WALLET_DB),
            &finpay_ledger::sqlite::SqliteOptions::default(),
        )
        .await
        .expect("open wallet");
        let mut out = BTreeMap::new();
        for id in ids {
            let account_id = finpay_core::AccountId::try_from(id.as_str()).expect("account id");
            let account = wallet
                .account(&account_id)
                .await
                .expect("read account")
                .expect("account exists");
            out.insert(id.clone(), account.balance.minor());
        }
        out
    })
}

#[test]
fn up_at_30_percent_fraud_errors_serves_1000_payments_at_99_percent_and_check_passes() {
    let _one = exclusive();
    let c = Cluster::start(&["--fraud-fault", "error", "--fraud-fault-rate", "0.3"]);
    let out = finpay(&[
        "load",
        "--url",
        &c.url(),
        "--requests",
        "1000",
        "--concurrency",
        "16",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out);
    eprintln!("load report: {report}");
    assert_eq!(report["requests"], 1000);
    let rate = report["success_rate"].as_f64().expect("success_rate");
    assert!(rate >= 0.99, "success rate {rate} < 0.99: {report}");
    let (ok, audit) = check(&c.data_dir);
    assert!(ok, "check failed: {audit}");
}

#[test]
fn wallet_commit_then_fail_debits_each_payment_exactly_once() {
    let _one = exclusive();
    let c = Cluster::start(&[
        "--fraud-fault",
        "none",
        "--wallet-fault",
        "commit-then-fail",
        "--wallet-fault-rate",
        "0.3",
    ]);
    let outcomes_path = c.data_dir.join("outcomes.jsonl");
    let out = finpay(&[
        "load",
        "--url",
        &c.url(),
        "--requests",
        "300",
        "--concurrency",
        "8",
        "--accounts",
        "20",
        "--json",
        "--outcomes",
        outcomes_path.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("load report: {}", json_of(&out));
    let outcomes = read_outcomes(&outcomes_path);
    assert_eq!(outcomes.len(), 300);
    let finals = reconcile(&c.url(), &outcomes);
    let audit = check_until_all_terminal(&c.data_dir);
    assert_eq!(audit["ok"], true, "{audit}");

    // Money: the merchant got exactly the succeeded amounts, each customer lost exactly theirs.
    let mut spent: BTreeMap<String, u64> = BTreeMap::new();
    let mut merchant_expected = 0u64;
    for (account, amount, status) in finals.values() {
        if status == "succeeded" {
            *spent.entry(account.clone()).or_insert(0) += amount;
            merchant_expected += amount;
        }
    }
    assert!(merchant_expected > 0, "no payment succeeded: {finals:?}");
    let mut ids: Vec<String> = (0..20).map(finpay::seed::customer_id).collect();
    ids.push("merchant-0".into());
    let got = balances(&c.data_dir, &ids);
    assert_eq!(got["merchant-0"], merchant_expected);
    for id in &ids[..20] {
        let want = finpay::seed::CUSTOMER_OPENING_MINOR - spent.get(id).copied().unwrap_or(0);
        assert_eq!(got[id], want, "balance of {id}");
    }
    // The audit agrees: one transfer per succeeded payment (seeding writes no transfers).
    let succeeded = audit["payments_by_status"]["succeeded"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(audit["transfers"].as_u64(), Some(succeeded), "{audit}");
}

#[test]
fn kill_9_and_sigstop_of_replicas_are_healed_and_sigterm_stops_all() {
    let _one = exclusive();
    let c = Cluster::start(&["--fraud-fault", "none"]);
    let before = c.state();
    let victim = before.replica("fraud-1").expect("fraud-1").clone();
    let old_pid = victim.pid.expect("fraud-1 runs");
    let killed_at = Instant::now();
    kill(Pid::from_raw(old_pid as i32), Signal::SIGKILL).expect("kill -9 fraud-1");
    c.wait_replica("fraud-1", "came back ready with a new pid", |r| {
        r.ready && r.pid.is_some_and(|p| p != old_pid) && r.restarts == victim.restarts + 1
    });
    eprintln!("fraud-1 healed in {:?}", killed_at.elapsed());
    let after = c.state();
    let healed = after.replica("fraud-1").expect("fraud-1");
    assert_eq!(healed.port, victim.port, "a restart keeps the port");
    assert!(
        healed
            .last_exit
            .as_deref()
            .is_some_and(|e| e.contains("SIGKILL")),
        "{healed:?}"
    );
    assert!(
        kill(Pid::from_raw(old_pid as i32), None).is_err(),
        "old process is gone"
    );
    // The others were not touched.
    for r in after.replicas.iter().filter(|r| r.name != "fraud-1") {
        assert_eq!(r.restarts, 0, "{} restarted:\n{}", r.name, after.table());
    }
    // And `finpay status --json` shows the same.
    let out = finpay(&[
        "status",
        "--json",
        "--data-dir",
        c.data_dir.to_str().expect("utf-8"),
    ]);
    let status = json_of(&out);
    let row = status["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .find(|r| r["name"] == "fraud-1")
        .expect("fraud-1 row")
        .clone();
    assert_eq!(row["restarts"], 1);
    assert!(row["admin_url"]
        .as_str()
        .is_some_and(|u| u.starts_with("http://127.0.0.1:")));
    assert!(
        status.get("admin_token").is_none(),
        "status never prints the token"
    );
    // `--watch --json`: one state per line, `--count` of them.
    let out = finpay(&[
        "status",
        "--watch",
        "--json",
        "--interval",
        "0.2",
        "--count",
        "3",
        "--data-dir",
        c.data_dir.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON state per line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["phase"] == "running"), "{lines:?}");

    // A frozen replica (SIGSTOP) still accepts connections but never answers: the liveness probe
    // fails three times and the supervisor replaces it.
    let frozen = c.state().replica("wallet-1").expect("wallet-1").clone();
    let frozen_pid = frozen.pid.expect("wallet-1 runs");
    let frozen_at = Instant::now();
    kill(Pid::from_raw(frozen_pid as i32), Signal::SIGSTOP).expect("SIGSTOP wallet-1");
    c.wait_replica("wallet-1", "was replaced after freezing", |r| {
        r.ready && r.pid.is_some_and(|p| p != frozen_pid)
    });
    eprintln!("frozen wallet-1 replaced in {:?}", frozen_at.elapsed());
    let replaced = c.state().replica("wallet-1").expect("wallet-1").clone();
    assert!(
        replaced
            .last_exit
            .as_deref()
            .is_some_and(|e| e.contains("liveness probe failed 3 times")),
        "{replaced:?}"
    );
    wait_all_gone(&[frozen_pid], "frozen wallet-1 after SIGKILL");

    // Ctrl-C/SIGTERM stops every child and exits 0.
    let pids: Vec<u32> = c.state().replicas.iter().filter_map(|r| r.pid).collect();
    assert_eq!(pids.len(), 7);
    let mut c = c;
    let status = c.stop().expect("finpay up exits on SIGTERM");
    assert!(status.success(), "finpay up exited with {status}");
    wait_all_gone(&pids, "children after SIGTERM");
    let last = c.state();
    assert_eq!(last.phase, "stopped");
    assert!(last
        .replicas
        .iter()
        .all(|r| r.pid.is_none() && r.phase == "stopped"));
}

#[test]
fn children_do_not_outlive_a_supervisor_killed_with_sigkill() {
    let _one = exclusive();
    let mut c = Cluster::start(&["--fraud-fault", "none"]);
    let pids: Vec<u32> = c.state().replicas.iter().filter_map(|r| r.pid).collect();
    assert_eq!(pids.len(), 7);
    c.up.kill().expect("kill -9 finpay up");
    let _ = c.up.wait();
    wait_all_gone(&pids, "orphaned children");
}

#[test]
fn kill_9_of_payment_mid_load_leaves_every_payment_terminal_and_check_passes() {
    let _one = exclusive();
    let c = Cluster::start(&["--fraud-fault", "error", "--fraud-fault-rate", "0.3"]);
    let url = c.url();
    let outcomes_path = c.data_dir.join("outcomes.jsonl");
    let load = Command::new(BIN)
        .args([
            "load",
            "--url",
            &url,
            "--duration",
            "6",
            "--requests",
            "100000",
            "--concurrency",
            "8",
            "--timeout-ms",
            "10000",
            "--json",
            "--outcomes",
            outcomes_path.to_str().expect("utf-8"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn load");
    // Let payments flow, then kill payment while requests are in flight.
    std::thread::sleep(Duration::from_secs(2));
    let old = c.state().replica("payment-0").expect("payment").clone();
    let old_pid = old.pid.expect("payment runs");
    let killed_at = Instant::now();
    kill(Pid::from_raw(old_pid as i32), Signal::SIGKILL).expect("kill -9 payment");
    c.wait_replica("payment-0", "came back ready", |r| {
        r.ready && r.pid.is_some_and(|p| p != old_pid)
    });
    eprintln!("payment healed in {:?}", killed_at.elapsed());

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(load.wait_with_output());
    });
    let out = rx
        .recv_timeout(COMMAND_BOUND)
        .expect("load finishes")
        .expect("load ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out);
    eprintln!("load report: {report}");
    let outcomes = read_outcomes(&outcomes_path);
    assert!(!outcomes.is_empty());

    // Every payment the load started ends terminal, as seen by a client and by the audit.
    let finals = reconcile(&url, &outcomes);
    assert!(finals.len() <= outcomes.len());
    let audit = check_until_all_terminal(&c.data_dir);
    assert_eq!(audit["ok"], true, "{audit}");
    let by_status = audit["payments_by_status"].as_object().expect("by status");
    for status in by_status.keys() {
        assert!(
            ["succeeded", "declined", "failed"].contains(&status.as_str()),
            "non-terminal status {status} left: {audit}"
        );
    }
}

/// The `finpay_fraud_verdicts_total` a fraud replica has answered, from its own `/metrics`.
fn verdicts(url: &str) -> f64 {
    let text = runtime().block_on(async {
        let resp = reqwest::get(format!("{url}/metrics")).await.ok()?;
        resp.text().await.ok()
    });
    text.unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("finpay_fraud_verdicts_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

#[test]
fn scaling_fraud_up_and_down_and_payment_up_under_load_fails_no_payment() {
    let _one = exclusive();
    let c = Cluster::start(&["--fraud-fault", "none"]);
    let url = c.url();
    let data_dir = c.data_dir.to_str().expect("utf-8").to_owned();
    let load = std::thread::spawn(move || {
        finpay(&[
            "load",
            "--url",
            &url,
            "--duration",
            "14",
            "--rate",
            "40",
            "--concurrency",
            "32",
            "--client-retries",
            "5",
            "--json",
        ])
    });
    std::thread::sleep(Duration::from_secs(2));
    let scale = |svc: &str, n: &str| {
        let out = finpay(&["scale", svc, n, "--json", "--data-dir", &data_dir]);
        assert!(
            out.status.success(),
            "scale {svc} {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<ClusterState>(&out.stdout).expect("the new state")
    };
    let five = scale("fraud", "5");
    let fresh: Vec<_> = five
        .replicas
        .iter()
        .filter(|r| r.name == "fraud-3" || r.name == "fraud-4")
        .collect();
    assert_eq!(fresh.len(), 2, "{}", five.table());
    assert!(fresh.iter().all(|r| r.ready), "{}", five.table());
    // Payment's client learns the new endpoints at once: they answer checks within seconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fresh.iter().any(|r| verdicts(&r.admin_url) == 0.0) {
        assert!(Instant::now() < deadline, "new fraud replicas got no tries");
        std::thread::sleep(Duration::from_millis(100));
    }
    let two = scale("fraud", "2");
    assert_eq!(
        two.by_service(ServiceKind::Fraud).count(),
        2,
        "{}",
        two.table()
    );
    let pay = scale("payment", "2");
    assert_eq!(
        pay.by_service(ServiceKind::Payment).count(),
        2,
        "{}",
        pay.table()
    );
    let out = load.join().expect("load thread");
    let report = json_of(&out);
    eprintln!("load report: {report}");
    assert_eq!(
        report["success_rate_after_retries"], 1.0,
        "a payment failed while scaling: {report}"
    );
    let (ok, audit) = check(&c.data_dir);
    assert!(ok, "check failed: {audit}");
}

#[test]
fn the_dashboard_serves_its_page_and_view_and_refuses_actions_from_other_origins() {
    let _one = exclusive();
    let c = Cluster::start(&[]);
    let control = c.state().control_url.expect("control url");
    let rt = runtime();
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("{control}{path}");
        rt.block_on(async { http.get(&url).send().await.expect("get").text().await })
            .expect("body")
    };
    assert!(get("/").contains("FinPay: live"));
    let state: serde_json::Value = serde_json::from_str(&get("/v1/state")).expect("state");
    assert!(
        state.get("admin_token").is_none(),
        "the token stays server-side"
    );

    let load = finpay(&[
        "load",
        "--url",
        &c.url(),
        "--requests",
        "200",
        "--concurrency",
        "4",
    ]);
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let view: serde_json::Value = serde_json::from_str(&get("/v1/dashboard")).expect("view");
        let answered = view["points"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["payments_per_s"].as_f64() > Some(0.0)));
        if answered {
            break view;
        }
        assert!(Instant::now() < deadline, "no point with payments: {view}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(view["replicas"].as_array().map(Vec::len), Some(7));
    let fraud_breaker = view["breakers"]
        .as_array()
        .and_then(|b| {
            b.iter()
                .find(|b| b["dependency"] == "fraud" && b["endpoint"] == "")
        })
        .unwrap_or_else(|| panic!("fraud's breaker: {view}"));
    assert_eq!(fraud_breaker["state"], "closed");

    let post = |action: &str, marked: bool| {
        let mut req = http.post(format!("{control}/v1/actions/{action}"));
        if marked {
            req = req.header("x-finpay-dashboard", "1");
        }
        rt.block_on(async { req.send().await.expect("post").status().as_u16() })
    };
    let pid = |state: &ClusterState| state.replica("payment-0").and_then(|r| r.pid);
    let before = pid(&c.state());
    assert_eq!(post("kill-payment", false), 403, "a plain cross-site POST");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pid(&c.state()), before, "nothing was killed");
    assert_eq!(post("drop-tables", true), 404);
    assert_eq!(post("restore", true), 200);
}
