//! The request [`crate::ResilientClient`]'s stack carries between its layers.
//!
//! Every retry and hedge needs its own copy of the request, and the layers read per-call state
//! from it: the deadline, the endpoints already tried, whether it may be sent twice. On an
//! `http::Request` a copy clones the header map and every extension (six allocations for a small
//! POST) and each piece of state is a boxed extension found by a hash lookup. [`Outbound`] keeps
//! the request's head in one `Arc` and the state in plain fields, so a retry's or a hedge's copy is
//! two reference-count increments. The one real copy of the headers is made per try, at the
//! bottom, when the endpoint builds what hyper sends ([`Outbound::to_http`]).
//!
//! The layers stay generic: [`Outbound`] implements the same traits an `http::Request` does
//! ([`CarryDeadline`], [`TrackTried`], and [`Classify`] with [`HttpClassify`]), so a stack of your
//! own can use either.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::balance::{TrackTried, TriedEndpoints};
use crate::classify::{
    classify_http, http_retry_after, is_idempotent, BoxError, Class, Classify, HttpClassify,
};
use crate::deadline::{CarryDeadline, Deadline, DEADLINE_HEADER};

/// One call as the client stack carries it; cloning it is cheap (see the module docs).
#[derive(Debug, Clone)]
pub struct Outbound {
    head: Arc<http::request::Parts>,
    body: Bytes,
    deadline: Option<Deadline>,
    tried: TriedEndpoints,
    idempotent: bool,
}

impl Outbound {
    /// Takes `req` apart (nothing is copied). The deadline is the earlier of `deadline` and a
    /// [`Deadline`] extension on `req`; idempotency is decided here, once (see
    /// [`crate::classify::is_idempotent`]).
    pub fn new(req: http::Request<Bytes>, deadline: Option<Deadline>) -> Self {
        let idempotent = is_idempotent(&req);
        let (head, body) = req.into_parts();
        let deadline = match (head.extensions.get::<Deadline>().copied(), deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Self {
            head: Arc::new(head),
            body,
            deadline,
            tried: TriedEndpoints::default(),
            idempotent,
        }
    }

    /// Method, URI, version, headers and extensions, as the caller built them.
    pub fn head(&self) -> &http::request::Parts {
        &self.head
    }

    /// The body (shared by every try).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Whether the request may be sent more than once.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// The request one try sends to `uri`: the caller's method, version and headers, plus the
    /// deadline header. Extensions are not copied: they are for the layers, not the wire.
    pub fn to_http<B>(&self, uri: http::Uri, body: B) -> http::Request<B> {
        let mut req = http::Request::new(body);
        *req.method_mut() = self.head.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = self.head.version;
        let headers = req.headers_mut();
        headers.reserve(self.head.headers.len() + 1);
        headers.extend(
            self.head
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        if let Some(d) = self.deadline {
            headers.insert(DEADLINE_HEADER, d.header_value());
        }
        req
    }
}

impl CarryDeadline for Outbound {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    fn set_deadline(&mut self, d: Deadline) {
        self.deadline = Some(d);
    }
}

impl TrackTried for Outbound {
    fn tried(&self) -> Option<TriedEndpoints> {
        Some(self.tried.clone())
    }
}

impl<RB: Send + 'static> Classify<Outbound, http::Response<RB>> for HttpClassify {
    fn classify(&self, result: &Result<http::Response<RB>, BoxError>) -> Class {
        classify_http(result)
    }

    fn is_idempotent(&self, req: &Outbound) -> bool {
        req.idempotent
    }

    fn clone_request(&self, req: &Outbound) -> Option<Outbound> {
        Some(req.clone())
    }

    fn retry_after(&self, result: &Result<http::Response<RB>, BoxError>) -> Option<Duration> {
        http_retry_after(result)
    }

    fn deadline(&self, req: &Outbound) -> Option<Deadline> {
        req.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post() -> http::Request<Bytes> {
        http::Request::post("/v1/checks")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Bytes::from_static(b"{}"))
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_earlier_deadline_wins_and_travels_in_the_header() {
        let mut req = post();
        req.extensions_mut()
            .insert(Deadline::after(Duration::from_millis(300)));
        let out = Outbound::new(req, Some(Deadline::after(Duration::from_secs(2))));
        let d = out.deadline.unwrap();
        assert_eq!(d.remaining(), Duration::from_millis(300));
        let sent = out.to_http("http://a:1/v1/checks".parse().unwrap(), ());
        assert_eq!(sent.method(), http::Method::POST);
        assert_eq!(
            sent.headers()[http::header::CONTENT_TYPE],
            "application/json"
        );
        let ms: u64 = sent.headers()[DEADLINE_HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            ms.abs_diff(d.to_epoch_ms()) <= 1,
            "{ms} vs {}",
            d.to_epoch_ms()
        );
        assert_eq!(sent.uri(), "http://a:1/v1/checks");
    }

    #[test]
    fn copies_share_the_tried_set_and_idempotency_is_decided_once() {
        let mut req = post();
        assert!(!Outbound::new(req.clone(), None).is_idempotent());
        req.extensions_mut().insert(crate::Idempotent);
        let out = Outbound::new(req, None);
        assert!(out.is_idempotent());
        let copy = <HttpClassify as Classify<Outbound, http::Response<Bytes>>>::clone_request(
            &HttpClassify,
            &out,
        )
        .unwrap();
        copy.tried.push(3);
        assert_eq!(
            out.tried.len(),
            1,
            "hedges and retries avoid the same replicas"
        );
        assert!(Arc::ptr_eq(&out.head, &copy.head), "the head is not copied");
    }
}
