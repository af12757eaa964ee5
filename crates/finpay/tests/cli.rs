//! The binary's contract for bad input: a clear message and exit status 64, never a panic.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_finpay");

/// Runs the binary without an admin token from the environment, whatever the caller's has.
fn finpay(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("FINPAY_ADMIN_TOKEN")
        .output()
        .expect("run finpay")
}

fn assert_config_error(args: &[&str], needle: &str) {
    let out = finpay(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

#[test]
fn bad_flags_exit_64_with_a_message_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    assert_config_error(
        &["up", "--data-dir", d, "--fraud-fault-rate", "1.5"],
        "--fraud-fault-rate",
    );
    assert_config_error(
        &["up", "--data-dir", d, "--fraud-replicas", "0"],
        "--fraud-replicas",
    );
    assert_config_error(&["load", "--concurrency", "0"], "--concurrency");
    assert_config_error(
        &["load", "--amount-min", "9", "--amount-max", "1"],
        "--amount-min",
    );
    assert_config_error(&["serve", "fraud", "--set", "no-equals-sign"], "key=value");
    assert_config_error(
        &["check", "--data-dir", &format!("{d}/missing")],
        "does not exist",
    );
}

#[test]
fn serve_with_invalid_settings_exits_64_before_listening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    assert_config_error(
        &[
            "serve",
            "fraud",
            "--port",
            "0",
            "--data-dir",
            d,
            "--set",
            "admin_token=a-token-of-at-least-32-characters",
            "--set",
            "faults.error_rate=2",
        ],
        "error_rate",
    );
}

#[test]
fn every_service_refuses_to_start_without_an_admin_token_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    for service in ["fraud", "wallet", "notification", "payment"] {
        let args = ["serve", service, "--port", "0", "--data-dir", d];
        assert_config_error(&args, "admin_token");
        let short = [&args[..], &["--set", "admin_token=finpay-admin"]].concat();
        assert_config_error(&short, "at least 32 characters");
    }
}

#[test]
fn up_refuses_a_payment_port_that_is_taken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    assert_config_error(
        &[
            "up",
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
            "--port",
            &port,
        ],
        "not free",
    );
}

#[test]
fn status_without_a_cluster_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = finpay(&["status", "--data-dir", dir.path().to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("finpay up"));
}
