//! The defaults are written once, in each settings type's `Default`. The settings block of the crate
//! docs and the README's table of client defaults are checked against them here, so neither can
//! drift: a failing test prints what the text should say.

use finpay_services::http::CommonSettings;
use finpay_services::{fraud, notification, payment, wallet};
use toml::Value;

const LIB_RS: &str = include_str!("../src/lib.rs");
const README: &str = include_str!("../../../README.md");

/// The ```toml block of the crate docs, without the `//! ` prefixes.
fn doc_toml() -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in LIB_RS.lines() {
        let Some(text) = line.strip_prefix("//!") else {
            continue;
        };
        let text = text.strip_prefix(' ').unwrap_or(text);
        match (inside, text.trim()) {
            (false, "```toml") => inside = true,
            (true, "```") => break,
            (true, _) => {
                out.push_str(text);
                out.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// The block's sections: the text after each `# <name>` marker line, up to the next marker.
fn doc_section(name: &str) -> String {
    let doc = doc_toml();
    let markers = ["# every service", "# fraud", "# payment"];
    let mut out = String::new();
    let mut current = "";
    for line in doc.lines() {
        if let Some(m) = markers.iter().find(|m| line.trim() == **m) {
            current = m;
            continue;
        }
        if current == format!("# {name}") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn serialized<T: serde::Serialize>(value: &T) -> Value {
    Value::try_from(value).expect("defaults serialize to TOML")
}

/// Every leaf of `doc` equals the leaf at the same path of `defaults`; returns the mismatches.
fn mismatches(path: &str, doc: &Value, defaults: &Value, out: &mut Vec<String>) {
    match (doc, defaults) {
        (Value::Table(d), Value::Table(v)) => {
            for (k, dv) in d {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match v.get(k) {
                    Some(vv) => mismatches(&p, dv, vv, out),
                    None => out.push(format!("{p}: documented but not a setting")),
                }
            }
        }
        (d, v) if d == v => {}
        (d, v) => out.push(format!("{path}: documented {d}, default {v}")),
    }
}

fn check_section(name: &str, defaults: Value) {
    let text = doc_section(name);
    let doc: Value = toml::from_str(&text).unwrap_or_else(|e| panic!("# {name}: {e}\n{text}"));
    let mut bad = Vec::new();
    mismatches("", &doc, &defaults, &mut bad);
    assert!(
        bad.is_empty(),
        "the crate docs' `# {name}` settings differ from the defaults:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_documented_settings_are_the_defaults() {
    check_section("every service", serialized(&CommonSettings::default()));
    check_section("fraud", serialized(&fraud::Settings::default()));
    check_section("payment", serialized(&payment::Settings::default()));
    // Wallet and notification have only the common keys.
    for s in [
        serialized(&wallet::Settings::default()),
        serialized(&notification::Settings::default()),
    ] {
        assert!(s.as_table().is_some_and(|t| t.is_empty()), "{s}");
    }
}

/// One row of the README's client defaults table: which settings table, which keys, and why.
struct Row {
    /// A label before the keys, e.g. `wallet`; empty for fraud's client.
    label: &'static str,
    /// The dotted path of the table the keys are in, inside payment's settings.
    table: &'static str,
    keys: &'static [&'static str],
    why: &'static str,
}

const ROWS: &[Row] = &[
    Row {
        label: "",
        table: "fraud.client",
        keys: &["per_try_timeout_ms"],
        why: "far above a healthy answer (a few ms), far below a 3 s hang",
    },
    Row {
        label: "",
        table: "fraud.client",
        keys: &["max_attempts"],
        why: "rounds; each round may hedge to other replicas: up to 4 × (1 + 4) = 20 tries, bounded by the budget and the deadline",
    },
    Row {
        label: "",
        table: "fraud.client",
        keys: &["backoff_base_ms", "backoff_max_ms", "jitter"],
        why: "the retry goes to another replica",
    },
    Row {
        label: "",
        table: "fraud.client",
        keys: &["budget.ratio", "budget.min_per_second"],
        why: "p = 0.3 needs p/(1-p) ≈ 0.43 extra tries per call; the usual 0.2 caps success near 84%",
    },
    Row {
        label: "",
        table: "fraud.client",
        keys: &["breaker.failure_rate_threshold", "breaker.minimum_calls", "breaker.window_size"],
        why: "a steady 30% never opens it; an outage does within 40 calls",
    },
    Row {
        label: "",
        table: "fraud.client",
        keys: &["breaker.open_wait_ms", "breaker.open_wait_jitter", "breaker.half_open_probes"],
        why: "exactly 3 probes, taken atomically",
    },
    Row {
        label: "",
        table: "fraud.client",
        keys: &["bulkhead.max_concurrent", "bulkhead.max_wait_ms"],
        why: "reject, do not queue",
    },
    Row {
        label: "",
        table: "fraud.client",
        keys: &["hedge.max_hedges", "hedge.percentile", "hedge.min_delay_ms", "hedge.max_delay_ms"],
        why: "cuts the 3 s hang out of the tail: all 5 tries of a round hang for 0.3^5 = 0.24% of calls, below the 1% a p99 allows",
    },
    Row {
        label: "",
        table: "fraud.client",
        keys: &["outlier.consecutive_failures", "outlier.consecutive_derived", "outlier.false_ejections_per_hour"],
        why: "the streak that ejects is sized to the replica's try rate and the best replica's failure rate p: the shortest k ≥ 10 with rate × 3600 × (1-p) × p^k ≤ 1e-6, 27 at p = 0.3 and 50,000 tries/s (a fixed 10 ejects a healthy replica every ~15 s at 17,000 tries/s); a dead replica goes after k tries",
    },
    Row {
        label: "",
        table: "fraud.client",
        keys: &["outlier.failure_rate_threshold", "outlier.failure_rate_min_requests"],
        why: "also ejected: ≥ 85% failed of ≥ 50 tries in an interval (at p = 0.3, 43 of the first 50 has probability 3e-16)",
    },
    Row {
        label: "",
        table: "fraud.client",
        keys: &["outlier.max_ejected_percent", "outlier.panic_threshold_percent"],
        why: "2 of 3 may be out, never all 3; only below 30% usable, use all",
    },
    Row {
        label: "",
        table: "fraud.client",
        keys: &["health_check.path", "health_check.interval_ms"],
        why: "the replica's own readiness",
    },
    Row {
        label: "payment",
        table: "payment",
        keys: &["deadline_ms"],
        why: "one end-to-end deadline for fraud + wallet",
    },
    Row {
        label: "wallet and notification",
        table: "notification.client",
        keys: &["per_try_timeout_ms", "max_attempts"],
        why: "writes: retried only with an idempotency key; notification does not hedge",
    },
    Row {
        label: "wallet",
        table: "wallet.client",
        keys: &["balancer.strategy"],
        why: "one SQLite file takes one writer: the first usable replica writes, the others stand by (use `p2c_ewma` with PostgreSQL)",
    },
    Row {
        label: "wallet",
        table: "wallet.client",
        keys: &["hedge.max_hedges", "hedge.delay_ms"],
        why: "a frozen primary costs a write 100 ms, not the 500 ms per-try timeout",
    },
];

fn at<'a>(root: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(root, |v, k| {
        v.get(k)
            .unwrap_or_else(|| panic!("{path}: no such setting ({k})"))
    })
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The README's table, rendered from the defaults.
fn defaults_table() -> String {
    let defaults = serialized(&payment::Settings::default());
    let mut out = String::from("| key | default | why |\n| --- | --- | --- |\n");
    for row in ROWS {
        let table = at(&defaults, row.table);
        let keys: Vec<String> = row.keys.iter().map(|k| format!("`{k}`")).collect();
        let values: Vec<String> = row.keys.iter().map(|k| plain(at(table, k))).collect();
        let label = if row.label.is_empty() {
            String::new()
        } else {
            format!("{} ", row.label)
        };
        out.push_str(&format!(
            "| {label}{} | {} | {} |\n",
            keys.join(" / "),
            values.join(" / "),
            row.why
        ));
    }
    out
}

#[test]
fn the_readme_table_of_client_defaults_is_the_defaults() {
    let want = defaults_table();
    assert!(
        README.contains(&want),
        "README.md's table under \"Resilience defaults\" must read:\n\n{want}"
    );
    // The wallet's write policy is the notification one plus failover and one hedge.
    let d = serialized(&payment::Settings::default());
    for k in ["per_try_timeout_ms", "max_attempts"] {
        assert_eq!(
            at(&d, &format!("wallet.client.{k}")),
            at(&d, &format!("notification.client.{k}"))
        );
    }
}
