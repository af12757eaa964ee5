//! What every service has: health, metrics, request ids, deadlines, admin faults, problem fallbacks.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn health_metrics_and_request_ids_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_wallet(dir.path(), |_| {}).await;
    let http = client();
    let live = http
        .get(format!("{}/health/live", app.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(live.status(), 200);
    assert!(
        live.headers().contains_key("x-request-id"),
        "request id is set"
    );
    let ready = http
        .get(format!("{}/health/ready", app.url))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.headers()["x-request-id"],
        "abc-123",
        "request id is propagated"
    );
    let _ = balance(&http, &app.url, CUSTOMER).await;
    let metrics = http
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .expect("sent");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    assert!(text.contains("finpay_http_requests_total"), "{text}");
}

#[tokio::test]
async fn the_business_port_serves_neither_admin_nor_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_fraud(dir.path(), |_| {}).await;
    let http = client();
    for path in ["/metrics", "/admin/faults"] {
        let r = http
            .get(format!("{}{path}", app.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("sent");
        assert_problem(r, 404).await;
    }
    let r = http
        .put(format!("{}/admin/faults", app.url))
        .bearer_auth(ADMIN)
        .json(&json!({"down": true}))
        .send()
        .await
        .expect("sent");
    assert_problem(r, 404).await;
    // The admin listener has the probes too, for a kubelet pointed at it.
    for path in ["/health/live", "/health/ready"] {
        let r = http
            .get(format!("{}{path}", app.admin))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn fraud_checks_answer_by_the_rules_and_get_check_says_safe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_fraud(dir.path(), |_| {}).await;
    let http = client();
    let legacy = http
        .get(format!("{}/check", app.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(legacy.status(), 200);
    assert_eq!(legacy.text().await.expect("text"), "SAFE");
    let check = |account: &str, amount: u64| {
        let http = http.clone();
        let url = format!("{}/v1/checks", app.url);
        let body = json!({
            "payment_id": "0190b7d2-7d3e-7cc0-8000-000000000001",
            "account_id": account,
            "amount_minor": amount,
            "currency": "USD",
        });
        async move {
            let r = http.post(url).json(&body).send().await.expect("sent");
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("json")
        }
    };
    assert_eq!(check("cust-0001", 100).await["verdict"], "SAFE");
    let deny = check("cust-0001", 1_000_001).await;
    assert_eq!(deny["verdict"], "DENY");
    assert_eq!(deny["reasons"].as_array().map(Vec::len), Some(1));
    assert_eq!(check("cust-blocked", 100).await["verdict"], "DENY");
}

#[tokio::test]
async fn admin_faults_need_the_bearer_token_and_a_valid_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_fraud(dir.path(), |_| {}).await;
    let http = client();
    let url = format!("{}/admin/faults", app.admin);
    let r = http
        .put(&url)
        .json(&json!({"down": true}))
        .send()
        .await
        .expect("sent");
    let p = assert_problem(r, 401).await;
    assert_eq!(p["field"], "authorization");
    let r = http
        .put(&url)
        .bearer_auth("wrong")
        .json(&json!({"down": true}))
        .send()
        .await
        .expect("sent");
    assert_problem(r, 403).await;
    let r = http
        .put(&url)
        .bearer_auth(ADMIN)
        .json(&json!({"error_rate": 1.5}))
        .send()
        .await
        .expect("sent");
    let p = assert_problem(r, 422).await;
    assert_eq!(p["field"], "error_rate");
    let r = http
        .put(&url)
        .bearer_auth(ADMIN)
        .json(&json!({"eror_rate": 0.5}))
        .send()
        .await
        .expect("sent");
    let p = assert_problem(r, 422).await;
    assert_eq!(p["field"], "eror_rate");

    let r = http
        .put(&url)
        .bearer_auth(ADMIN)
        .json(&json!({"down": true}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let now: Value = r.json().await.expect("json");
    assert_eq!(now["down"], true);
    let got: Value = http
        .get(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(got["down"], true);

    // Down: business routes 503, operational routes still answer.
    let r = http
        .get(format!("{}/check", app.url))
        .send()
        .await
        .expect("sent");
    let p = assert_problem(r, 503).await;
    assert_eq!(p["type"], "urn:finpay:problem:service-down");
    let r = http
        .get(format!("{}/health/live", app.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);

    let r = http
        .put(&url)
        .bearer_auth(ADMIN)
        .json(&json!({}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{}/check", app.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn patch_changes_only_the_named_fault_fields_and_put_replaces_them_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_fraud(dir.path(), |_| {}).await;
    let http = client();
    let url = format!("{}/admin/faults", app.admin);
    let send =
        |req: reqwest::RequestBuilder, body: Value| req.bearer_auth(ADMIN).json(&body).send();
    let r = send(http.put(&url), json!({"error_rate": 0.3, "seed": 9}))
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let r = send(http.patch(&url), json!({"hang_rate": 0.2}))
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let now: Value = r.json().await.expect("json");
    assert_eq!(now["error_rate"], 0.3, "kept: {now}");
    assert_eq!(now["seed"], 9, "kept: {now}");
    assert_eq!(now["hang_rate"], 0.2, "changed: {now}");
    // A bad field is named and changes nothing.
    for bad in [
        json!({"hang_rate": 2.0}),
        json!({"hang_rat": 0.1}),
        json!({"seed": "x"}),
    ] {
        let r = send(http.patch(&url), bad.clone()).await.expect("sent");
        let p = assert_problem(r, 422).await;
        assert!(p["field"].is_string(), "{bad}: {p}");
    }
    let got: Value = http
        .get(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(got, now, "a refused patch changed nothing");
    // PUT replaces: what it omits goes back to its default.
    let r = send(http.put(&url), json!({"hang_rate": 0.1}))
        .await
        .expect("sent");
    let now: Value = r.json().await.expect("json");
    assert_eq!(now["error_rate"], 0.0, "{now}");
    assert_eq!(now["seed"], 0, "{now}");
    let r = http
        .patch(&url)
        .json(&json!({"down": true}))
        .send()
        .await
        .expect("sent");
    assert_problem(r, 401).await;
}

#[tokio::test]
async fn a_spent_deadline_is_answered_504_without_doing_the_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_wallet(dir.path(), |_| {}).await;
    let http = client();
    let r = http
        .post(format!("{}/v1/transfers", app.url))
        .header("finpay-deadline-ms", "1000")
        .json(&json!({
            "id": "t-deadline",
            "debit_account_id": CUSTOMER,
            "credit_account_id": MERCHANT,
            "amount_minor": 10,
            "currency": "USD",
        }))
        .send()
        .await
        .expect("sent");
    let p = assert_problem(r, 504).await;
    assert_eq!(p["type"], "urn:finpay:problem:deadline-exceeded");
    assert_eq!(
        balance(&http, &app.url, CUSTOMER).await,
        OPENING,
        "nothing moved"
    );
    let r = http
        .get(format!("{}/v1/transfers/t-deadline", app.url))
        .send()
        .await
        .expect("sent");
    assert_problem(r, 404).await;
}

#[tokio::test]
async fn a_hang_is_cut_short_by_the_callers_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_fraud(dir.path(), |s| {
        s.common.faults.hang_rate = 1.0;
        s.common.faults.hang_ms = 20_000;
    })
    .await;
    let http = client();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let started = std::time::Instant::now();
    let r = http
        .get(format!("{}/check", app.url))
        .header("finpay-deadline-ms", (now_ms + 300).to_string())
        .send()
        .await
        .expect("sent");
    assert_problem(r, 504).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "not the full 20 s hang"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_fraud(dir.path(), |_| {}).await;
    let http = client();
    let r = http
        .get(format!("{}/nope", app.url))
        .send()
        .await
        .expect("sent");
    assert_problem(r, 404).await;
    let r = http
        .delete(format!("{}/v1/checks", app.url))
        .send()
        .await
        .expect("sent");
    assert_problem(r, 405).await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = finpay_services::fraud::Settings::default();
    s.common.data_dir = dir.path().to_path_buf();
    s.common.admin_token = finpay_services::http::Secret::new(ADMIN);
    s.common.faults.latency_ms = 700;
    let app = finpay_services::fraud::Application::build(s)
        .await
        .expect("builds");
    let url = format!("http://127.0.0.1:{}/check", app.port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let http = client();
    let slow = tokio::spawn(async move { http.get(url).send().await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tx.send(()).expect("server is running");
    let resp = slow
        .await
        .expect("joined")
        .expect("the in-flight request is answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("text"), "SAFE");
    server.await.expect("joined").expect("stops cleanly");
}

#[tokio::test]
async fn serve_refuses_bad_settings_naming_the_field() {
    use finpay_services::{serve, ServeError, ServiceKind};
    let token = ("admin_token".to_owned(), ADMIN.to_owned());
    let err = serve(ServiceKind::Fraud, None, vec![])
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, ServeError::Config(m) if m.contains("admin_token")),
        "{err}"
    );
    let err = serve(
        ServiceKind::Fraud,
        None,
        vec![token.clone(), ("faults.error_rate".into(), "2.0".into())],
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(&err, ServeError::Config(m) if m.contains("faults.error_rate")),
        "{err}"
    );
    let err = serve(ServiceKind::Payment, None, vec![token.clone()])
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, ServeError::Config(m) if m.contains("fraud.urls")),
        "{err}"
    );
    let err = serve(
        ServiceKind::Payment,
        None,
        vec![
            token.clone(),
            ("fraud.urls".into(), r#"["http://127.0.0.1:1"]"#.into()),
            ("wallet.urls".into(), r#"["http://127.0.0.1:1"]"#.into()),
            (
                "notification.urls".into(),
                r#"["http://127.0.0.1:1"]"#.into(),
            ),
            ("wallet.client.max_attempts".into(), "0".into()),
        ],
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(&err, ServeError::Config(m) if m.contains("wallet.client.max_attempts")),
        "{err}"
    );
    let err = serve(
        ServiceKind::Wallet,
        Some("/nonexistent/finpay.toml".into()),
        vec![],
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, ServeError::Config(_)), "{err}");
    let err = serve(
        ServiceKind::Fraud,
        None,
        vec![("rules.max_amount_minor".into(), "\"lots\"".into())],
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(&err, ServeError::Config(m) if m.contains("rules.max_amount_minor")),
        "{err}"
    );
}

#[tokio::test]
async fn extractor_rejections_are_problems_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = spawn_notification(dir.path(), |_| {}).await;
    let http = client();
    let r = http
        .get(format!("{}/v1/notifications?account_id=%FF%FE", n.url))
        .send()
        .await
        .expect("sent");
    let status = r.status().as_u16();
    assert!((400..500).contains(&status), "{status}");
    assert_problem(r, status).await;
    let r = http
        .post(format!("{}/v1/notifications", n.url))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .expect("sent");
    let p = assert_problem(r, 415).await;
    assert_eq!(p["field"], "content-type");
    // A JSON body without any content type is refused too, and nothing is stored.
    let r = http
        .post(format!("{}/v1/notifications", n.url))
        .body(r#"{"id":"n-1","payment_id":"p","account_id":"cust-0001","message":"hi"}"#)
        .send()
        .await
        .expect("sent");
    let p = assert_problem(r, 415).await;
    assert_eq!(p["field"], "content-type");
    let listed: Value = http
        .get(format!("{}/v1/notifications?account_id=cust-0001", n.url))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["notifications"], json!([]), "{listed}");
}

#[tokio::test]
async fn a_deadline_header_that_is_not_an_integer_is_a_400_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_wallet(dir.path(), |_| {}).await;
    let http = client();
    let get = |value: String| {
        http.get(format!("{}/v1/accounts/{CUSTOMER}", app.url))
            .header("finpay-deadline-ms", value)
            .send()
    };
    let bad = get("soon".into()).await.expect("sent");
    assert_eq!(bad.status(), 400);
    let problem: Value = bad.json().await.expect("a problem");
    assert_eq!(problem["field"], "finpay-deadline-ms");
    // As far as the header reaches is no overflow: the request is served.
    let far = get(u64::MAX.to_string()).await.expect("sent");
    assert_eq!(far.status(), 200);
    let spent = get("1".into()).await.expect("sent");
    assert_eq!(spent.status(), 504);
    // A method the route does not take is a 405 whatever the deadline: routing comes first.
    let trace = http
        .request(
            reqwest::Method::TRACE,
            format!("{}/v1/accounts/{CUSTOMER}", app.url),
        )
        .header("finpay-deadline-ms", "1")
        .send()
        .await
        .expect("sent");
    assert_eq!(trace.status(), 405);
    assert_eq!(trace.headers()["allow"], "GET,HEAD");
}
