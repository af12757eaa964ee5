//! The one place that maps errors to HTTP: [`ApiError`], rendered as RFC 9457 problem+json.
//!
//! The client gets a safe message, a stable `type` (`urn:finpay:problem:<slug>`) it can branch on, and
//! where it helps an extension member: `field` names the offending input, `payment_id` names the
//! payment a 503 is about. The cause chain of an internal error goes to the log, never to the client.
//!
//! The `type` slugs, stable for clients to branch on, are listed once in `finpay_api::problem::slug`:
//!
//! | status | slugs |
//! |--------|-------|
//! | 400 | `invalid-request` (headers, `finpay-deadline-ms` included; path, query), `malformed-json` |
//! | 401 / 403 | `unauthorized`, `forbidden` (admin routes) |
//! | 404 | `not-found`, `unknown-account`, `unknown-transfer`, `unknown-payment` |
//! | 405 / 413 / 415 | `method-not-allowed`, `payload-too-large`, `unsupported-media-type` |
//! | 409 | `idempotency-conflict` (wallet, inbox), `request-in-progress` (payment), `account-conflict` |
//! | 422 | `invalid-request` (body values), `insufficient-funds`, `unknown-account`, `currency-mismatch`, `same-account`, `balance-overflow`, `idempotency-key-reused` |
//! | 500 | `internal`, `injected-fault` (also 503) |
//! | 503 | `fraud-unavailable`, `dependency-unavailable`, `storage-unavailable`, `service-down`, `not-ready` |
//! | 504 | `deadline-exceeded` |

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

pub use finpay_api::problem::PROBLEM_JSON;
use finpay_api::problem::{slug, type_uri};

/// A problem answer. Build one with the constructors; each fixes the status and the `type` slug.
/// Boxed, so `Result<_, ApiError>` stays small on the happy path.
#[derive(Debug, Clone)]
pub struct ApiError(Box<Problem>);

#[derive(Debug, Clone)]
struct Problem {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    field: Option<String>,
    retry_after: Option<Duration>,
    extensions: Map<String, Value>,
    www_authenticate: bool,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self(Box::new(Problem {
            status,
            slug,
            title,
            detail: detail.into(),
            field: None,
            retry_after: None,
            extensions: Map::new(),
            www_authenticate: false,
        }))
    }

    /// Names the offending input (a JSON path such as `amount_minor`, a header or a query parameter).
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.0.field = Some(field.into());
        self
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.0.retry_after = Some(after);
        self
    }

    /// Adds an extension member (RFC 9457 §3.2). The standard members (`type`, `title`, `status`,
    /// `detail`, `field`) win over an extension of the same name.
    pub fn with_extension(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn slug(&self) -> &'static str {
        self.0.slug
    }

    pub fn type_uri(&self) -> String {
        type_uri(self.0.slug)
    }

    pub fn detail(&self) -> &str {
        &self.0.detail
    }

    pub fn field(&self) -> Option<&str> {
        self.0.field.as_deref()
    }

    // --- bad input (4xx) -------------------------------------------------------------------------

    /// A value failed validation (wrong type, out of range, unknown field, ...). 422.
    pub fn invalid_request(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            slug::INVALID_REQUEST,
            "Invalid request",
            detail,
        )
        .with_field(field)
    }

    /// A header, path segment or query parameter is missing or malformed. 400.
    pub fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            slug::INVALID_REQUEST,
            "Invalid request",
            detail,
        )
        .with_field(field)
    }

    /// The body is not JSON at all. 400.
    pub fn malformed_json(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            slug::MALFORMED_JSON,
            "Malformed JSON body",
            detail,
        )
        .with_field("body")
    }

    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            slug::PAYLOAD_TOO_LARGE,
            "Request body too large",
            format!("the request body must be at most {limit_bytes} bytes"),
        )
        .with_field("body")
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            slug::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            "send the body as application/json",
        )
        .with_field("content-type")
    }

    pub fn not_found(slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, slug, title, detail)
    }

    pub fn route_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            slug::NOT_FOUND,
            "Not found",
            "no such route",
        )
    }

    pub fn unauthorized() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            slug::UNAUTHORIZED,
            "Unauthorized",
            "send `Authorization: Bearer <admin token>`",
        )
        .with_field("authorization");
        e.0.www_authenticate = true;
        e
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            slug::FORBIDDEN,
            "Forbidden",
            "the admin token is not valid",
        )
        .with_field("authorization")
    }

    // --- business outcomes -----------------------------------------------------------------------

    pub fn unprocessable(
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, slug, title, detail)
    }

    pub fn conflict(slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, slug, title, detail)
    }

    // --- dependencies and time (5xx) -------------------------------------------------------------

    pub fn deadline_exceeded() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            slug::DEADLINE_EXCEEDED,
            "Deadline exceeded",
            "the request's deadline passed before the work finished",
        )
    }

    pub fn unavailable(slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, slug, title, detail)
            .with_retry_after(Duration::from_secs(1))
    }

    /// Our own storage failed. The cause is logged here; the client sees a 503 it may retry.
    pub fn storage(err: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(err), "storage failed");
        Self::unavailable(
            slug::STORAGE_UNAVAILABLE,
            "Storage unavailable",
            "storage is unavailable, retry later",
        )
    }

    /// An unexpected failure. The cause chain is logged; the client sees no internals.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(err), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            slug::INTERNAL,
            "Internal error",
            "an internal error occurred",
        )
    }

    /// The JSON body of this problem.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), Value::String(self.type_uri()));
        body.insert("title".into(), Value::String(self.0.title.into()));
        body.insert("status".into(), Value::from(self.0.status.as_u16()));
        body.insert("detail".into(), Value::String(self.0.detail.clone()));
        if let Some(field) = &self.0.field {
            body.insert("field".into(), Value::String(field.clone()));
        }
        for (k, v) in &self.0.extensions {
            body.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(body)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.0.status.as_u16(),
            self.0.slug,
            self.0.detail
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut resp = (self.0.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(after) = self.0.retry_after {
            // Whole seconds, at least one: Retry-After has no finer unit.
            let secs = after.as_secs().max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.0.www_authenticate {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// `outer: inner: innermost`, for logs.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    let mut depth = 0;
    while let Some(e) = cur {
        if depth >= 16 {
            break;
        }
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
        depth += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_body_carries_type_status_and_field() {
        let e = ApiError::invalid_request("amount_minor", "must be positive");
        let body = e.body();
        assert_eq!(body["type"], "urn:finpay:problem:invalid-request");
        assert_eq!(body["status"], 422);
        assert_eq!(body["field"], "amount_minor");
    }

    #[test]
    fn unavailable_answers_503_with_retry_after() {
        let resp = ApiError::unavailable("fraud-unavailable", "Fraud unavailable", "x")
            .with_extension("payment_id", "p1")
            .into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
