//! The services' `/metrics` as Prometheus reads them, across processes: the real `finpay up` (every
//! service in its own process) on free ports, then
//!
//! - before any payment: the series a dashboard needs are there already, at zero (payment's
//!   clients' breaker state, requests, attempts, retries, hedges and ejections per dependency; the
//!   payment outcomes; `finpay_build_info` on every replica);
//! - after a few payments: every replica's exposition passes `promtool check metrics` with no
//!   problem;
//! - every metric that deploy/grafana/finpay.json's panels and deploy/prometheus/alerts.yml's rules
//!   name is one that some replica exports;
//! - under `finpay up --prometheus` with a load running, the real Prometheus answers a nonzero
//!   `sum(rate(finpay_payments_total[30s]))`, has loaded every alert rule, scrapes every replica,
//!   and evaluates every dashboard and rule expression without error.
//!
//! `promtool` comes from Debian's `prometheus` package (.ci/run installs it). Without it the
//! promtool step fails under `CI=true` and is skipped, with a note, elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use finpay::cluster::{self, ReplicaState};
use finpay_services::ServiceKind;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_finpay");
const START_BOUND: Duration = Duration::from_secs(120);

/// Where a replica's metrics are scraped: its admin listener, the one place `/metrics` is served.
fn metrics_url(replica: &ReplicaState) -> String {
    format!("{}/metrics", replica.admin_url.trim_end_matches('/'))
}

/// A running `finpay up`, stopped (SIGTERM, then SIGKILL) on drop.
struct Up {
    child: Child,
    data_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Up {
    fn start(extra: &[&str]) -> Up {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let log = std::fs::File::create(tmp.path().join("up.log")).expect("up.log");
        let child = Command::new(BIN)
            .args(["up", "--port", "0", "--seed", "7", "--data-dir"])
            .arg(&data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn finpay up");
        let mut up = Up {
            child,
            data_dir,
            _tmp: tmp,
        };
        let deadline = Instant::now() + START_BOUND;
        loop {
            if let Ok(Some(status)) = up.child.try_wait() {
                panic!("finpay up exited with {status}:\n{}", up.log());
            }
            if cluster::read(&up.data_dir).is_ok_and(|s| s.ready && s.phase == "running") {
                return up;
            }
            assert!(Instant::now() < deadline, "not ready:\n{}", up.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let path = self.data_dir.with_file_name("up.log");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn replicas(&self) -> Vec<ReplicaState> {
        cluster::read(&self.data_dir)
            .expect("cluster.json")
            .replicas
    }

    fn payment_url(&self) -> String {
        cluster::read(&self.data_dir)
            .expect("cluster.json")
            .payment_url
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scrape(replica: &ReplicaState) -> String {
    let url = metrics_url(replica);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let resp = reqwest::get(&url).await.expect("scrape");
        assert_eq!(resp.status(), 200, "{url}");
        resp.text().await.expect("body")
    })
}

/// Every sample line of an exposition, as `name{labels}` (as written) and value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The metric names of an exposition's samples (`_bucket`, `_sum`, `_count` as exported).
fn names(text: &str) -> BTreeSet<String> {
    samples(text)
        .keys()
        .map(|s| s.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// The family a sample's name belongs to: a histogram's `_bucket`, `_sum` and `_count` series share
/// their family's HELP line.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Whether `bin` (a command of Debian's `prometheus` package) can be run; under `CI=true` it
/// must. Elsewhere a missing one prints a note saying what is `skipped`.
fn present(bin: &str, skipped: &str) -> bool {
    let found = Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{bin} is missing; .ci/run installs Debian's prometheus package"
        );
        eprintln!(
            "note: {bin} not found; {skipped} skipped \
             (apt-get install --no-install-recommends prometheus)"
        );
    }
    found
}

/// `promtool check metrics` on `text`: what it printed, if it found a problem.
fn promtool_problems(text: &str) -> Option<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (!out.status.success() || !said.trim().is_empty()).then_some(said)
}

/// The series payment's clients and routes register when they are built, before any call.
fn assert_registered_at_zero(payment: &str) {
    let s = samples(payment);
    let value = |series: &str| match s.get(series) {
        Some(v) => *v,
        None => panic!("{series} is not exported before the first payment:\n{payment}"),
    };
    for dep in ["fraud", "wallet", "notification"] {
        assert_eq!(
            value(&format!(
                "finpay_client_breaker_state{{dependency=\"{dep}\"}}"
            )),
            0.0,
            "{dep}: closed"
        );
        assert_eq!(
            value(&format!(
                "finpay_client_requests_total{{dependency=\"{dep}\",outcome=\"ok\"}}"
            )),
            0.0,
            "{dep}: no call yet"
        );
        for name in [
            "attempts",
            "retries",
            "budget_rejections",
            "hedges",
            "hedges_won",
        ] {
            value(&format!(
                "finpay_client_{name}_total{{dependency=\"{dep}\"}}"
            ));
        }
        value(&format!(
            "finpay_client_ejections_total{{dependency=\"{dep}\"}}"
        ));
    }
    for outcome in ["succeeded", "declined", "failed", "pending", "error"] {
        assert_eq!(
            value(&format!("finpay_payments_total{{outcome=\"{outcome}\"}}")),
            0.0,
            "{outcome}"
        );
    }
}

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The metric names a PromQL expression reads: its identifiers outside label matchers, strings
/// and range brackets, less functions (an identifier before `(`), keywords and the label lists of
/// `by (...)` and the like.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset"];
    // Aggregations may put `by (...)` between their name and their parenthesis.
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        let close = match c {
            '{' => Some('}'),
            '[' => Some(']'),
            '"' | '\'' | '`' => Some(c),
            '(' if skip_list => Some(')'),
            _ => None,
        };
        if let Some(close) = close {
            skip_list = false;
            i += 1;
            while i < chars.len() && chars[i] != close {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if GROUPING.contains(&word.as_str()) {
                skip_list = true;
            } else if next != Some(&'(')
                && !KEYWORDS.contains(&word.as_str())
                && !AGGREGATIONS.contains(&word.as_str())
            {
                out.insert(word);
            }
            continue;
        }
        if c.is_ascii_digit() || c == '.' {
            // A number, or a duration such as 5m: letters right after digits belong to it.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Every panel's target expressions in a Grafana dashboard (rows' nested panels included).
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = stack.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            stack.extend(nested);
        }
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("a panel has a title");
        let targets = panel["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "{title}: no target");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        for t in targets {
            let expr = t["expr"].as_str().expect("a target has an expr");
            out.push((title.to_owned(), expr.to_owned()));
        }
    }
    out
}

/// Every `expr:` of a rule file: inline, or a `|`/`>` block of the lines indented below it.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if !value.starts_with(['|', '>']) {
            out.push(value.to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            .copied()
            .collect();
        out.push(block.join("\n"));
    }
    out
}

fn assert_names_exported(what: &str, expr: &str, exported: &BTreeSet<String>) {
    let read = promql_metrics(expr);
    assert!(!read.is_empty(), "{what}: reads no metric: {expr}");
    let missing: Vec<_> = read.difference(exported).collect();
    assert!(
        missing.is_empty(),
        "{what}: {missing:?} is exported by no service\n{expr}"
    );
}

#[test]
fn promql_metrics_finds_the_names_and_nothing_else() {
    let expr = r#"histogram_quantile(0.99, sum by (le, outcome) (rate(a_bucket{outcome!~"x|y"}[$__rate_interval])))
        / on (job) group_left (instance) max without (instance) (b_total offset 5m) > bool 1.5e3 and c"#;
    let got: Vec<String> = promql_metrics(expr).into_iter().collect();
    assert_eq!(got, ["a_bucket", "b_total", "c"]);
}

#[test]
fn every_service_exports_described_metrics_that_the_dashboard_and_alerts_use() {
    let up = Up::start(&[]);
    let replicas = up.replicas();
    let kinds: BTreeSet<ServiceKind> = replicas.iter().map(|r| r.service).collect();
    assert_eq!(kinds.len(), 4, "fraud, wallet, notification, payment");

    let payment = replicas
        .iter()
        .find(|r| r.service == ServiceKind::Payment)
        .expect("a payment replica");
    assert_registered_at_zero(&scrape(payment));

    let load = Command::new(BIN)
        .args(["load", "--url", &up.payment_url(), "--requests", "20"])
        .args(["--concurrency", "2", "--json"])
        .output()
        .expect("finpay load");
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );

    let promtool = present("promtool", "`promtool check metrics`");
    let mut exported = BTreeSet::new();
    let mut problems = Vec::new();
    for r in &replicas {
        let text = scrape(r);
        let version = format!(
            "finpay_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(
            samples(&text).get(&version),
            Some(&1.0),
            "{}: {version}",
            r.name
        );
        let undescribed: Vec<_> = names(&text)
            .into_iter()
            .filter(|n| !text.contains(&format!("# HELP {} ", family(n))))
            .collect();
        assert!(
            undescribed.is_empty(),
            "{}: no HELP for {undescribed:?}",
            r.name
        );
        if promtool {
            if let Some(said) = promtool_problems(&text) {
                problems.push(format!("{} ({}):\n{said}", r.name, metrics_url(r)));
            }
        }
        exported.extend(names(&text));
    }
    assert!(
        problems.is_empty(),
        "promtool check metrics:\n{}",
        problems.join("\n")
    );

    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/finpay.json")).expect("dashboard JSON");
    let panels = dashboard_exprs(&dashboard);
    assert!(panels.len() >= 8, "{} panel expressions", panels.len());
    for (title, expr) in &panels {
        assert_names_exported(&format!("panel {title:?}"), expr, &exported);
    }
    let rules = rule_exprs(&repo_file("deploy/prometheus/alerts.yml"));
    assert!(rules.len() >= 6, "{} rule expressions", rules.len());
    for expr in &rules {
        assert_names_exported("alerts.yml", expr, &exported);
    }
}

/// One instant query through Prometheus' HTTP API: its `data`, or the error it reported.
fn instant_query(
    rt: &tokio::runtime::Runtime,
    base: &str,
    expr: &str,
) -> Result<serde_json::Value, String> {
    rt.block_on(async {
        let body: serde_json::Value = reqwest::Client::new()
            .get(format!("{base}/api/v1/query"))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match body["status"].as_str() {
            Some("success") => Ok(body["data"].clone()),
            _ => Err(body.to_string()),
        }
    })
}

/// The first sample's value of an instant query's vector result.
fn first_value(data: &serde_json::Value) -> Option<f64> {
    data["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn up_with_prometheus_answers_the_payment_rate_and_evaluates_every_expression() {
    if !present("prometheus", "the `finpay up --prometheus` test") {
        return;
    }
    let up = Up::start(&["--prometheus"]);
    // The Prometheus starts once the cluster is ready; cluster.json names it when it answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (state, base) = loop {
        let state = cluster::read(&up.data_dir).expect("cluster.json");
        if let Some(url) = state.prometheus_url.clone() {
            break (state, url);
        }
        assert!(
            Instant::now() < deadline,
            "no prometheus_url:\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // A load of a few seconds; Prometheus scrapes every 2 s, so a 30 s rate has samples by its end.
    let load = Command::new(BIN)
        .args(["load", "--url", &state.payment_url, "--requests", "3000"])
        .args(["--concurrency", "4", "--duration", "15", "--json"])
        .output()
        .expect("finpay load");
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );

    let rate_expr = "sum(rate(finpay_payments_total[30s]))";
    let deadline = Instant::now() + Duration::from_secs(60);
    let rate = loop {
        let data = instant_query(&rt, &base, rate_expr).expect("the rate query runs");
        match first_value(&data) {
            Some(v) if v > 0.0 => break v,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            other => panic!("{rate_expr} stayed at {other:?}:\n{data}\n{}", up.log()),
        }
    };
    eprintln!("{rate_expr} = {rate:.1}/s");

    let up_targets = instant_query(&rt, &base, "sum(up{job=\"finpay\"})").expect("up");
    assert_eq!(
        first_value(&up_targets),
        Some(state.replicas.len() as f64),
        "every replica is scraped and up"
    );
    let rules = rt.block_on(async {
        reqwest::get(format!("{base}/api/v1/rules"))
            .await
            .expect("rules")
            .json::<serde_json::Value>()
            .await
            .expect("rules JSON")
    });
    let loaded = rules["data"]["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["health"] == "ok")
        .count();
    let written = repo_file("deploy/prometheus/alerts.yml")
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(loaded, written, "every alert rule is loaded and healthy");

    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/finpay.json")).expect("dashboard JSON");
    let mut failed = Vec::new();
    let panels = dashboard_exprs(&dashboard)
        .into_iter()
        .map(|(title, expr)| (format!("panel {title:?}"), expr));
    let rules = rule_exprs(&repo_file("deploy/prometheus/alerts.yml"))
        .into_iter()
        .map(|expr| ("alerts.yml".to_owned(), expr));
    for (what, expr) in panels.chain(rules) {
        // Grafana's own variable: the range it would pick for a 2 s scrape interval.
        let expr = expr.replace("$__rate_interval", "30s");
        if let Err(e) = instant_query(&rt, &base, &expr) {
            failed.push(format!("{what}: {expr}\n  {e}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
