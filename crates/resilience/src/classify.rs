//! How the layers tell a good answer from a bad one, and which requests may be sent twice.
//!
//! Every layer that reacts to outcomes (retry, hedge, breaker, outlier ejection, adaptive bulkhead) takes
//! a [`Classify`] so it works for any request and response type. [`HttpClassify`] is the HTTP rule set
//! FinPay uses: connect errors (nothing was sent) may be retried even for non-idempotent requests;
//! per-try timeouts, 5xx except 501, and 429 are retried when the request is idempotent; 4xx and 501
//! are answers, not failures: retrying them cannot help.

use std::time::Duration;

use crate::deadline::error::{DeadlineExceeded, PerTryTimeout};
use crate::deadline::Deadline;

/// A type-erased error, as tower uses between layers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a result means for retries and health accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A usable answer (including a 4xx: the dependency worked).
    Success,
    /// A failure that another try cannot fix, or must not attempt (e.g. a spent deadline).
    Failure,
    /// A failure worth another try, if the request may be repeated.
    Retry,
    /// A failure where nothing reached the callee (connect refused): safe to retry any request.
    RetrySafe,
}

impl Class {
    /// Whether this counts against the dependency's health.
    pub fn is_failure(self) -> bool {
        !matches!(self, Class::Success)
    }
}

/// Classification and request-copy rules for one request/response type.
pub trait Classify<Req, Res>: Clone + Send + Sync + 'static {
    /// Judges one result.
    fn classify(&self, result: &Result<Res, BoxError>) -> Class;

    /// Whether the request may be sent more than once (retried after a [`Class::Retry`], or hedged).
    fn is_idempotent(&self, req: &Req) -> bool;

    /// A copy to send again; `None` if the request cannot be copied.
    fn clone_request(&self, req: &Req) -> Option<Req>;

    /// How long the callee asked us to wait (`Retry-After`), if it did.
    fn retry_after(&self, _result: &Result<Res, BoxError>) -> Option<Duration> {
        None
    }

    /// The request's absolute deadline, if it carries one.
    fn deadline(&self, _req: &Req) -> Option<Deadline> {
        None
    }
}

/// Request extension marking a request safe to retry and hedge even though its method is not
/// idempotent (for example a POST whose handler deduplicates by a key in the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Idempotent;

/// The header that marks a non-idempotent request as safe to repeat.
static IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// Whether a request may be sent more than once: its method is idempotent, or it carries the
/// [`Idempotent`] extension or an `Idempotency-Key` header.
pub fn is_idempotent<B>(req: &http::Request<B>) -> bool {
    use http::Method;
    match *req.method() {
        Method::GET
        | Method::HEAD
        | Method::OPTIONS
        | Method::TRACE
        | Method::PUT
        | Method::DELETE => true,
        _ => {
            req.extensions().get::<Idempotent>().is_some()
                || req.headers().contains_key(&IDEMPOTENCY_KEY)
        }
    }
}

/// The HTTP rules; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassify;

/// Whether an HTTP status is worth another try: 5xx except 501, and 429.
pub fn retryable_status(s: http::StatusCode) -> bool {
    (s.is_server_error() && s != http::StatusCode::NOT_IMPLEMENTED)
        || s == http::StatusCode::TOO_MANY_REQUESTS
}

/// Whether the error chain shows nothing was sent (a connect failure).
pub fn is_connect_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
            if h.is_connect() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        if err.downcast_ref::<ConnectRefused>().is_some() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A marker error for endpoints that refuse before sending (used by simulations and tests).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("connection refused")]
pub struct ConnectRefused;

/// The HTTP rules for one result, whatever the request type (see the module docs).
pub fn classify_http<RB>(result: &Result<http::Response<RB>, BoxError>) -> Class {
    match result {
        Ok(r) if retryable_status(r.status()) => Class::Retry,
        Ok(_) => Class::Success,
        Err(e) if e.is::<DeadlineExceeded>() => Class::Failure,
        Err(e) if e.is::<crate::balance::NoEndpoint>() => Class::Failure,
        // Nothing was sent: an endpoint's breaker or a bulkhead turned the try away.
        Err(e)
            if e.is::<crate::breaker::BreakerOpen>() || e.is::<crate::bulkhead::BulkheadFull>() =>
        {
            Class::RetrySafe
        }
        Err(e) if is_connect_error(e.as_ref()) => Class::RetrySafe,
        Err(e) if e.is::<PerTryTimeout>() => Class::Retry,
        Err(_) => Class::Retry,
    }
}

/// The wait an HTTP answer asks for (`Retry-After`), if it does.
pub(crate) fn http_retry_after<RB>(
    result: &Result<http::Response<RB>, BoxError>,
) -> Option<Duration> {
    match result {
        Ok(r) => crate::retry::backoff::retry_after(r.headers()),
        Err(_) => None,
    }
}

impl<B: Clone + Send + Sync + 'static, RB: Send + 'static>
    Classify<http::Request<B>, http::Response<RB>> for HttpClassify
{
    fn classify(&self, result: &Result<http::Response<RB>, BoxError>) -> Class {
        classify_http(result)
    }

    fn is_idempotent(&self, req: &http::Request<B>) -> bool {
        is_idempotent(req)
    }

    fn clone_request(&self, req: &http::Request<B>) -> Option<http::Request<B>> {
        let mut r = http::Request::new(req.body().clone());
        *r.method_mut() = req.method().clone();
        *r.uri_mut() = req.uri().clone();
        *r.version_mut() = req.version();
        *r.headers_mut() = req.headers().clone();
        *r.extensions_mut() = req.extensions().clone();
        Some(r)
    }

    fn retry_after(&self, result: &Result<http::Response<RB>, BoxError>) -> Option<Duration> {
        http_retry_after(result)
    }

    fn deadline(&self, req: &http::Request<B>) -> Option<Deadline> {
        req.extensions().get::<Deadline>().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn resp(s: u16) -> Result<http::Response<Bytes>, BoxError> {
        let mut r = http::Response::new(Bytes::new());
        *r.status_mut() = http::StatusCode::from_u16(s).unwrap();
        Ok(r)
    }

    #[test]
    fn server_errors_and_429_are_retried_but_501_and_4xx_are_answers() {
        let c = HttpClassify;
        let cl = |s| {
            <HttpClassify as Classify<http::Request<Bytes>, http::Response<Bytes>>>::classify(
                &c,
                &resp(s),
            )
        };
        assert_eq!(cl(500), Class::Retry);
        assert_eq!(cl(503), Class::Retry);
        assert_eq!(cl(429), Class::Retry);
        assert_eq!(cl(501), Class::Success);
        assert_eq!(cl(404), Class::Success);
        assert_eq!(cl(200), Class::Success);
    }

    #[test]
    fn refused_connection_is_safe_to_retry_and_spent_deadline_is_not_retried() {
        let c = HttpClassify;
        let cl = |e: BoxError| {
            <HttpClassify as Classify<http::Request<Bytes>, http::Response<Bytes>>>::classify(
                &c,
                &Err(e),
            )
        };
        assert_eq!(cl(Box::new(ConnectRefused)), Class::RetrySafe);
        assert_eq!(cl(Box::new(DeadlineExceeded)), Class::Failure);
        assert_eq!(cl(Box::new(PerTryTimeout)), Class::Retry);
    }

    #[test]
    fn post_is_idempotent_only_with_a_key_or_the_marker() {
        let c = HttpClassify;
        let idem = |r: &http::Request<Bytes>| {
            <HttpClassify as Classify<http::Request<Bytes>, http::Response<Bytes>>>::is_idempotent(
                &c, r,
            )
        };
        let mut r = http::Request::post("/x").body(Bytes::new()).unwrap();
        assert!(!idem(&r));
        r.headers_mut()
            .insert("idempotency-key", http::HeaderValue::from_static("k"));
        assert!(idem(&r));
        let mut r2 = http::Request::post("/x").body(Bytes::new()).unwrap();
        r2.extensions_mut().insert(crate::Idempotent);
        assert!(idem(&r2));
        assert!(idem(&http::Request::get("/x").body(Bytes::new()).unwrap()));
    }
}
