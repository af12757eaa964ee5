//! FinPay's wire contract, written once.
//!
//! Every shape that crosses a service boundary lives here: the public payment API, the three internal
//! APIs payment calls (fraud, wallet, notification), the RFC 9457 problem document with its stable
//! `type` slugs, the header names and the routes. The handler of an endpoint and every caller of it
//! (the payment engine, the outbox dispatcher, `finpay load`, the chaos harness) use the same type, so
//! a renamed field or a new slug is one change that the compiler carries to both sides — mini-redis
//! keeps one `Frame` for its server and its client for the same reason.
//!
//! - [`payment`]: `POST /v1/payments`, `GET /v1/payments/{id}`.
//! - [`fraud`]: `POST /v1/checks`.
//! - [`wallet`]: `POST /v1/transfers`, `GET /v1/transfers/{id}`, `GET /v1/accounts/{id}`.
//! - [`notification`]: `POST /v1/notifications`, `GET /v1/notifications?account_id=`.
//! - [`problem`]: the problem document and [`problem::slug`], the list of every `type` slug.
//! - [`headers`]: header names.
//! - [`admin`]: the admin listener's routes and bodies (fault switches, dependency endpoints).
//! - [`ops`]: the probes, `/metrics` and `/openapi.json`.
//! - [`openapi`]: each service's OpenAPI 3.1 document, derived from the types above.
//!
//! Values are finpay-core's parsing types ([`finpay_core::Amount`], [`finpay_core::AccountId`], ...),
//! so a body that deserialises holds only valid values.
//!
//! Not for: validation beyond what the types enforce (the handlers own their rules), HTTP plumbing, or
//! storage rows (finpay-ledger has its own; each service maps its rows to these views).

pub mod admin;
pub mod fraud;
pub mod headers;
pub mod notification;
pub mod openapi;
pub mod ops;
pub mod payment;
pub mod problem;
pub mod wallet;
