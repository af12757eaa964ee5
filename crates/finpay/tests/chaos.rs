//! The chaos harness, cross-process: every scenario in a short form through the real binary
//! (`finpay chaos run --scenario NAME --json`), which starts its own seven-process cluster, drives
//! open-loop load, injects the faults and checks the steady state, the money and the notifications.
//! Each test asserts the scenario's invariants from the JSON, plus evidence that its fault really
//! happened (restarts, failures inside the window, heals), so a harness that injects nothing fails.
//!
//! One scenario at a time (a lock): each is seven processes on a 2-core machine. Every wait is
//! bounded by the harness itself; a guard kills the child if a test panics while waiting. No test
//! asserts timing beyond the scenario's own stated bounds.

use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_finpay");
/// Short form for CI: seconds of load per scenario, and a rate a debug build on 2 cores carries.
const DURATION_S: &str = "6";
const RATE: &str = "50";
const SEED: &str = "7";
/// Far above a scenario's run time; only a hung harness reaches it.
const RUN_BOUND: Duration = Duration::from_secs(240);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn exclusive() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `finpay chaos run` for one scenario and returns its JSON entry (and the exit status).
fn chaos(scenario: &str, extra: &[&str]) -> (Value, Option<i32>) {
    let _one = exclusive();
    let mut child = Command::new(BIN)
        .args([
            "chaos",
            "run",
            "--scenario",
            scenario,
            "--duration",
            DURATION_S,
            "--rate",
            RATE,
            "--seed",
            SEED,
            "--json",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn finpay chaos run");
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().expect("poll child").is_some() {
            break;
        }
        if started.elapsed() > RUN_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("finpay chaos run --scenario {scenario} did not finish within {RUN_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("collect output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("one JSON object on stdout ({e}):\n{stdout}\nstderr:\n{stderr}")
    });
    let scenarios = summary["scenarios"].as_array().expect("scenarios array");
    assert_eq!(scenarios.len(), 1, "{summary}");
    let entry = scenarios[0].clone();
    assert_eq!(entry["name"], scenario);
    assert_eq!(
        summary["passed"].as_bool(),
        entry["passed"].as_bool(),
        "{summary}"
    );
    (entry, out.status.code())
}

/// The invariants every scenario must keep, with the entry in the message when one fails.
fn assert_kept(e: &Value, code: Option<i32>) {
    let pretty = serde_json::to_string_pretty(e).unwrap_or_default();
    for key in [
        "name",
        "passed",
        "success_rate",
        "invariants_ok",
        "notifications_ok",
        "restarts",
        "violations",
    ] {
        assert!(e.get(key).is_some(), "missing {key}: {pretty}");
    }
    for key in ["p50", "p99", "max"] {
        assert!(
            e["latency_ms"][key].is_number(),
            "latency_ms.{key}: {pretty}"
        );
    }
    assert_eq!(e["invariants_ok"], true, "money: {pretty}");
    assert_eq!(e["notifications_ok"], true, "notifications: {pretty}");
    let measured = e["measured"]["success_rate"].as_f64().expect("measured");
    let bound = e["bounds"]["success_rate_min"].as_f64().expect("bound");
    assert!(measured >= bound, "success {measured} < {bound}: {pretty}");
    let p99 = e["measured"]["p99_ms"].as_f64().expect("p99");
    let p99_bound = e["bounds"]["p99_ms_max"].as_f64().expect("p99 bound");
    assert!(p99 <= p99_bound, "p99 {p99} > {p99_bound}: {pretty}");
    assert_eq!(e["audit"]["outbox_pending"], 0, "{pretty}");
    assert_eq!(e["audit"]["payments_resumable"], 0, "{pretty}");
    let succeeded = e["audit"]["payments_by_status"]["succeeded"]
        .as_u64()
        .unwrap_or(0);
    assert!(succeeded > 0, "no payment succeeded: {pretty}");
    assert_eq!(
        e["audit"]["notifications"].as_u64(),
        Some(succeeded),
        "{pretty}"
    );
    assert_eq!(e["violations"], Value::Array(Vec::new()), "{pretty}");
    assert_eq!(e["passed"], true, "{pretty}");
    assert_eq!(code, Some(0), "exit status of a passing run: {pretty}");
}

fn restarts(e: &Value) -> u64 {
    e["restarts"].as_u64().expect("restarts")
}

/// How many faults of `kind` the services say they injected (evidence the fault happened).
fn injected(e: &Value, kind: &str) -> u64 {
    e["faults_injected"][kind].as_u64().unwrap_or(0)
}

fn heals(e: &Value) -> Vec<Value> {
    e["heals"].as_array().cloned().unwrap_or_default()
}

#[test]
fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
    let schedule = |seed: &str| {
        let out = Command::new(BIN)
            .args([
                "chaos",
                "schedule",
                "--scenario",
                "all",
                "--duration",
                "20",
                "--seed",
                seed,
            ])
            .output()
            .expect("run finpay chaos schedule");
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        v.as_array().expect("one schedule per scenario").clone()
    };
    let (a, b, c) = (schedule("11"), schedule("11"), schedule("12"));
    // `all` on the default storage (SQLite): every scenario that runs there, in list order.
    let listed: Vec<&str> = finpay::chaos::scenarios::ALL
        .iter()
        .filter(|s| s.run.runs_on(finpay::storage::Backend::Sqlite))
        .map(|s| s.name)
        .collect();
    let printed: Vec<&str> = a.iter().filter_map(|x| x["scenario"].as_str()).collect();
    assert_eq!(
        printed, listed,
        "one schedule per listed scenario, in order"
    );
    assert_eq!(a, b);
    for (x, y) in a.iter().zip(&c) {
        assert_eq!(x["scenario"], y["scenario"]);
        assert_ne!(x["steps"], y["steps"], "{}", x["scenario"]);
        assert!(!x["steps"].as_array().expect("steps").is_empty());
    }
}

#[test]
fn fraud_errors_are_absorbed_and_the_report_renders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("r");
    let (e, code) = chaos(
        "fraud-errors",
        &["--report", report.to_str().expect("utf-8")],
    );
    assert_kept(&e, code);
    assert!(injected(&e, "error") > 0, "{e}");
    let html = std::fs::read_to_string(report.join("report.html")).expect("report.html");
    assert_eq!(html.matches("<svg").count(), 3, "three plots per scenario");
    assert!(html.contains("fraud-errors"));
    assert!(!html.contains("<script") && !html.contains("src="));
}

#[test]
fn fraud_hangs_are_absorbed() {
    let (e, code) = chaos("fraud-hangs", &[]);
    assert_kept(&e, code);
    assert!(injected(&e, "hang") > 0, "{e}");
}

#[test]
fn fraud_crashes_are_healed_and_absorbed() {
    let (e, code) = chaos("fraud-crash", &[]);
    assert_kept(&e, code);
    assert!(restarts(&e) >= 1, "{e}");
    assert!(heals(&e).iter().all(|h| h["healed_ms"].is_u64()), "{e}");
}

#[test]
fn fraud_outage_fails_fast_and_closed_then_recovers() {
    let (e, code) = chaos("fraud-outage", &[]);
    assert_kept(&e, code);
    assert!(injected(&e, "error") > 0, "{e}");
    let w = &e["measured"]["window"];
    let failed: u64 = w["failures"]
        .as_object()
        .expect("failures")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert!(failed > 0, "the outage failed no payment: {e}");
    assert!(w["failures"].get("500").is_none(), "{e}");
    // Failed closed: the failed payments were not debited (the audit's "no debit without a
    // verdict" is part of invariants_ok), and they are in the store as failed.
    assert!(
        e["audit"]["payments_by_status"]["failed"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{e}"
    );
    // Recovered: requests after the window and its grace were measured and met the bound.
    assert!(e["measured"]["requests"].as_u64().unwrap_or(0) > 0, "{e}");
}

#[test]
fn a_killed_wallet_replica_is_healed_and_absorbed() {
    let (e, code) = chaos("wallet-kill", &[]);
    assert_kept(&e, code);
    assert!(restarts(&e) >= 1, "{e}");
}

#[test]
fn an_ambiguous_wallet_never_double_debits() {
    let (e, code) = chaos("wallet-ambiguous", &[]);
    assert_kept(&e, code);
    assert!(injected(&e, "commit_then_fail") > 0, "{e}");
}

#[test]
fn a_killed_payment_process_restarts_and_its_payments_converge() {
    let (e, code) = chaos("payment-kill", &[]);
    assert_kept(&e, code);
    assert!(restarts(&e) >= 1, "{e}");
    let h = heals(&e);
    assert_eq!(h.len(), 1, "{e}");
    assert!(h[0]["healed_ms"].is_u64(), "{e}");
    assert!(e["payments_checked"].as_u64().unwrap_or(0) > 0, "{e}");
}

#[test]
fn notification_down_leaves_payments_untouched_and_everything_delivered_once() {
    let (e, code) = chaos("notification-down", &[]);
    assert_kept(&e, code);
    assert!(injected(&e, "down") > 0, "{e}");
    assert!(
        e["outbox_pending_at_restore"].as_u64().unwrap_or(0) > 0,
        "no backlog built up while notification was down: {e}"
    );
    let succeeded = e["audit"]["payments_by_status"]["succeeded"].as_u64();
    assert_eq!(e["audit"]["outbox_delivered"].as_u64(), succeeded, "{e}");
    assert_eq!(e["audit"]["delivered_in_inbox"].as_u64(), succeeded, "{e}");
}

#[test]
fn network_glitches_through_the_fault_proxy_are_absorbed() {
    let (e, code) = chaos("network-glitch", &[]);
    assert_kept(&e, code);
    assert!(
        e["fault_windows"].as_array().is_some_and(|w| !w.is_empty()),
        "{e}"
    );
    assert!(e["proxy"]["connections"].as_u64().unwrap_or(0) > 0, "{e}");
    assert!(e["proxy"]["toxic_hits"].as_u64().unwrap_or(0) > 0, "{e}");
}

#[test]
fn a_frozen_replica_is_replaced_and_absorbed() {
    let (e, code) = chaos("replica-freeze", &[]);
    assert_kept(&e, code);
    let h = heals(&e);
    assert!(!h.is_empty(), "{e}");
    assert!(
        h.iter()
            .all(|h| h["signal"] == "SIGSTOP" && h["healed_ms"].is_u64()),
        "{e}"
    );
    assert!(restarts(&e) >= 1, "{e}");
}

#[test]
fn an_unknown_scenario_or_a_bad_duration_is_a_config_error() {
    for args in [
        &["chaos", "run", "--scenario", "fraud"][..],
        &["chaos", "run", "--scenario", "all", "--duration", "1"][..],
        &["chaos", "run", "--scenario", "all", "--rate", "0"][..],
    ] {
        let out = Command::new(BIN).args(args).output().expect("run finpay");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn the_bounds_table_states_every_scenario() {
    let out = Command::new(BIN)
        .args(["chaos", "bounds"])
        .output()
        .expect("run finpay chaos bounds");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "fraud-errors",
        "fraud-hangs",
        "fraud-crash",
        "fraud-outage",
        "wallet-kill",
        "wallet-ambiguous",
        "payment-kill",
        "notification-down",
        "network-glitch",
        "replica-freeze",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert!(line.contains(">=0.999"), "{line}");
    }
}
