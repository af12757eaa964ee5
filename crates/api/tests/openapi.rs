//! The checked-in documents (`docs/openapi/<service>.json`, and `docs/openapi.json`, the payment
//! one) are what the code generates. With `FINPAY_REGENERATE_OPENAPI=1` the test writes them
//! instead of comparing.

use std::path::{Path, PathBuf};

use finpay_api::openapi::{self, DOCUMENTS};
use serde_json::Value;

const REGENERATE: &str = "FINPAY_REGENERATE_OPENAPI";

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// Every checked-in file with the text it must hold.
fn expected() -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = DOCUMENTS
        .iter()
        .map(|(name, build)| {
            let path = docs().join("openapi").join(format!("{name}.json"));
            (path, openapi::to_json(&build()))
        })
        .collect();
    files.push((
        docs().join("openapi.json"),
        openapi::to_json(&openapi::payment()),
    ));
    files
}

#[test]
fn checked_in_documents_match_the_code() {
    let regenerate = std::env::var(REGENERATE).is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (path, text) in expected() {
        if regenerate {
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&path, &text).expect("write");
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != text {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date with the code: {stale:?}\nregenerate them with\n  \
         {REGENERATE}=1 cargo test -p finpay-api --test openapi\nand commit the result"
    );
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            ops.push((path.clone(), method.clone(), op.clone()));
        }
    }
    ops
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_document_is_openapi_3_1_with_its_references_resolved() {
    for (name, build) in DOCUMENTS {
        let doc = serde_json::to_value(build()).expect("serializes");
        assert_eq!(doc["openapi"], "3.1.0", "{name}");
        let mut found = Vec::new();
        refs(&doc, &mut found);
        for r in found {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{name}: {r} dangles");
        }
        let scheme = &doc["components"]["securitySchemes"]["admin_token"];
        assert_eq!(scheme["scheme"], "bearer", "{name}");
    }
}

#[test]
fn every_service_lists_its_probes_its_document_and_its_admin_routes() {
    for (name, build) in DOCUMENTS {
        let doc = serde_json::to_value(build()).expect("serializes");
        for path in ["/health/live", "/health/ready", "/openapi.json", "/metrics"] {
            assert!(doc["paths"][path]["get"].is_object(), "{name}: {path}");
        }
        for method in ["get", "put", "patch"] {
            let op = &doc["paths"]["/admin/faults"][method];
            assert_eq!(op["tags"][0], "admin", "{name} {method}");
            assert!(op["security"][0]["admin_token"].is_array(), "{name}");
            assert!(op["responses"]["401"].is_object(), "{name}");
        }
    }
    let payment = serde_json::to_value(openapi::payment()).expect("serializes");
    for (path, method) in [
        ("/v1/payments", "post"),
        ("/v1/payments/{id}", "get"),
        ("/pay", "get"),
        ("/admin/dependencies/{service}", "put"),
    ] {
        assert!(payment["paths"][path][method].is_object(), "{path}");
    }
}

#[test]
fn problems_are_problem_json_and_every_503_says_retry_after() {
    for (name, build) in DOCUMENTS {
        let doc = serde_json::to_value(build()).expect("serializes");
        for (path, method, op) in operations(&doc) {
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{name} {method} {path}");
            for (status, resp) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = resp["content"].as_object().expect("content");
                    assert!(
                        content.contains_key("application/problem+json"),
                        "{name} {method} {path} {status}"
                    );
                }
                if status == "503" {
                    assert!(
                        resp["headers"]["Retry-After"].is_object(),
                        "{name} {method} {path}"
                    );
                }
            }
        }
    }
}

#[test]
fn creating_a_payment_requires_an_idempotency_key_and_a_body() {
    let doc = serde_json::to_value(openapi::payment()).expect("serializes");
    let op = &doc["paths"]["/v1/payments"]["post"];
    let key = op["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .expect("the key is a parameter");
    assert_eq!(key["in"], "header");
    assert_eq!(key["required"], true);
    assert_eq!(op["requestBody"]["required"], true);
    let body = &doc["components"]["schemas"]["CreatePayment"];
    assert_eq!(body["additionalProperties"], false);
    let required: Vec<&str> = body["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        required,
        [
            "account_id",
            "merchant_account_id",
            "amount_minor",
            "currency"
        ]
    );
    for status in ["201", "400", "409", "413", "415", "422", "503", "504"] {
        assert!(op["responses"][status].is_object(), "{status}");
    }
}

#[test]
fn the_bounds_written_in_schema_attributes_are_the_contract_constants() {
    use finpay_api::admin::{ENDPOINTS_MAX, MAX_FAULT_DELAY_MS};
    use finpay_api::notification::MESSAGE_MAX_CHARS;
    use finpay_api::payment::DESCRIPTION_MAX_CHARS_DEFAULT;
    let payment = serde_json::to_value(openapi::payment()).expect("serializes");
    let schemas = &payment["components"]["schemas"];
    let description = &schemas["CreatePayment"]["properties"]["description"];
    assert_eq!(description["maxLength"], DESCRIPTION_MAX_CHARS_DEFAULT);
    assert_eq!(
        schemas["Endpoints"]["properties"]["urls"]["maxItems"],
        ENDPOINTS_MAX
    );
    assert_eq!(
        schemas["FaultSettings"]["properties"]["hang_ms"]["maximum"],
        MAX_FAULT_DELAY_MS
    );
    let notification = serde_json::to_value(openapi::notification()).expect("serializes");
    let message =
        &notification["components"]["schemas"]["CreateNotification"]["properties"]["message"];
    assert_eq!(message["maxLength"], MESSAGE_MAX_CHARS);
}
