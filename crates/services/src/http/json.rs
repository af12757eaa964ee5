//! JSON bodies in and out.
//!
//! [`ApiJson`] is the only way a business handler reads a body. Every failure is a 4xx problem that
//! names the field: a content type other than `application/json` (or `application/*+json`), or
//! none (415, field `content-type`), malformed JSON (400), a body over the limit (413), a wrong type, an out-of-range
//! value or an unknown field (422). Request types use `#[serde(deny_unknown_fields)]` and finpay-core's
//! parsing types, so a float or a string where an amount belongs never reaches a handler.

use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::problem::ApiError;

/// A JSON body parsed into `T`, or a problem naming the field.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(ApiError::unsupported_media_type());
        }
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(limit.unwrap_or(0))
            } else {
                ApiError::bad_request("body", rej.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The configured body limit, put in the request extensions so rejections can say it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

fn is_json(req: &Request) -> bool {
    // A body without a content type is refused like any other type: guessing would let a form
    // post or a text body reach the parser, and the contract says `application/json`.
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(ct) = ct.to_str() else { return false };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Parses `bytes` as `T`, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        json_error(&path, &inner)
    })?;
    // Trailing garbage after the value is malformed JSON too.
    de.end()
        .map_err(|e| ApiError::malformed_json(e.to_string()))?;
    Ok(value)
}

fn json_error(path: &str, err: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let msg = err.to_string();
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::malformed_json(msg),
        Category::Data => {
            let field = field_name(path, &msg);
            ApiError::invalid_request(field.clone(), format!("{field}: {}", strip_position(&msg)))
        }
    }
}

/// The field a data error is about: the path, completed by the name serde puts in backticks for
/// "missing field `x`" and "unknown field `x`" (those are reported at the parent's path).
fn field_name(path: &str, msg: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| msg.find(prefix).map(|at| &msg[at + prefix.len()..]))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_owned);
    match (path, named) {
        (".", Some(name)) => name,
        (".", None) => "body".to_owned(),
        (p, Some(name)) if p == name || p.ends_with(&format!(".{name}")) => p.to_owned(),
        (p, Some(name)) => format!("{p}.{name}"),
        (p, None) => p.to_owned(),
    }
}

/// serde_json appends " at line 1 column 42"; the field already says where.
fn strip_position(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(at) => &msg[..at],
        None => msg,
    }
}

/// A JSON response with a status.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use finpay_core::Amount;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        amount_minor: Amount,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        x: u32,
    }

    fn err(json: &str) -> ApiError {
        match parse_json::<Body>(json.as_bytes()) {
            Ok(b) => panic!("{json} parsed as {b:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn wrong_amounts_name_the_amount_field() {
        for bad in ["0", "-1", "1.5", "\"100\"", "100000000000000000000", "null"] {
            let e = err(&format!("{{\"amount_minor\": {bad}}}"));
            assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert_eq!(e.field(), Some("amount_minor"), "{bad}");
        }
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let e = err(r#"{"amount_minor": 5, "extra": 1}"#);
        assert_eq!(e.field(), Some("extra"));
        let e = err(r#"{}"#);
        assert_eq!(e.field(), Some("amount_minor"));
        let e = err(r#"{"amount_minor": 5, "inner": {"x": 1, "y": 2}}"#);
        assert_eq!(e.field(), Some("inner.y"));
    }

    #[test]
    fn malformed_json_is_a_400_about_the_body() {
        for bad in ["{", "not json", r#"{"amount_minor": 5} trailing"#, ""] {
            let e = err(bad);
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(e.slug(), "malformed-json");
        }
    }
}
