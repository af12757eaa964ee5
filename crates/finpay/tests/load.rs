//! `finpay load`'s exit status, across processes: the real binary against an address nobody
//! listens on, and against a stand-in payment service that answers every other payment. Neither
//! needs a cluster.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse as _;

const BIN: &str = env!("CARGO_BIN_EXE_finpay");

fn load(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("load")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run finpay load")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A stand-in for the payment service on a free port: payments 0, 2, 4 ... (in arrival order)
/// succeed, the others get a bare 500, which a careful client does not retry. Stops on drop.
struct HalfServer {
    url: String,
    _rt: tokio::runtime::Runtime,
}

fn half_server() -> HalfServer {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let n = Arc::new(AtomicU64::new(0));
    let pay = move || {
        let n = n.clone();
        async move {
            if n.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
                let body = serde_json::json!({"id": "p-1", "status": "succeeded"});
                (StatusCode::CREATED, axum::Json(body)).into_response()
            } else {
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    };
    let app = axum::Router::new().route("/v1/payments", axum::routing::post(pay));
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    HalfServer { url, _rt: rt }
}

#[test]
fn load_against_an_unreachable_url_prints_the_report_then_exits_1() {
    let out = load(&["--url", "http://127.0.0.1:1", "--requests", "5"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("finpay load: 5 requests"),
        "report first:\n{stdout}"
    );
    assert!(
        stderr.contains("finpay load: no request succeeded: 0 of 5 (transport: 5)"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn load_json_against_an_unreachable_url_still_prints_one_json_object() {
    let out = load(&["--url", "http://127.0.0.1:1", "--requests", "3", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["requests"], 3);
    assert_eq!(report["succeeded_after_retries"], 0);
}

#[test]
fn min_success_passes_at_the_measured_rate_and_fails_above_it() {
    let server = half_server();
    let args = |min: &'static str| {
        vec![
            "--url",
            server.url.as_str(),
            "--requests",
            "10",
            "--concurrency",
            "2",
            "--json",
            "--min-success",
            min,
        ]
    };
    let at = load(&args("0.5"));
    assert_eq!(at.status.code(), Some(0), "{}", text(&at.stderr));
    let report: serde_json::Value = serde_json::from_slice(&at.stdout).expect("JSON");
    assert_eq!(report["success_rate_after_retries"], 0.5, "{report}");

    let above = load(&args("0.6"));
    let stderr = text(&above.stderr);
    assert_eq!(above.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("success rate after retries 0.5000 (5 of 10) is below --min-success 0.6"),
        "{stderr}"
    );
}

#[test]
fn a_min_success_outside_0_to_1_is_refused_naming_the_flag() {
    for bad in ["1.5", "-0.1", "most"] {
        let flag = format!("--min-success={bad}");
        let out = load(&["--url", "http://127.0.0.1:1", &flag]);
        let stderr = text(&out.stderr);
        // clap's own usage error, before anything is sent.
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--min-success"), "{bad}: {stderr}");
        assert!(stderr.contains("between 0 and 1"), "{bad}: {stderr}");
        assert!(out.stdout.is_empty(), "{bad}: nothing is sent");
    }
}

#[test]
fn report_dir_gets_a_self_contained_page_and_the_json_report() {
    let server = half_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let report_dir = dir.path().join("run-1");
    let out = load(&[
        "--url",
        server.url.as_str(),
        "--requests",
        "20",
        "--concurrency",
        "2",
        "--report",
        report_dir.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(report_dir.join("report.html")).expect("report.html");
    assert_eq!(
        page.matches("<svg").count(),
        3,
        "over time, latency, histogram"
    );
    assert!(
        page.contains("<td>500</td><td>10</td><td>10</td>"),
        "errors by kind"
    );
    assert!(!page.contains("<script") && !page.contains("http://cdn"));
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(report_dir.join("report.json")).expect("report.json"),
    )
    .expect("JSON");
    assert_eq!(json["requests"], 20);
    let histogram = json["latency_histogram"].as_array().expect("histogram");
    let counted: u64 = histogram.iter().filter_map(|b| b["count"].as_u64()).sum();
    assert_eq!(counted, 20);
}
