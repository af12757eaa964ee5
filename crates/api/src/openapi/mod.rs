//! The OpenAPI 3.1 document of each service, derived from the contract's own types.
//!
//! The bodies are this crate's request and response types (`#[derive(ToSchema)]`); the values in
//! them are finpay-core's parsing types, whose schemas live beside their parsers
//! (`finpay_core::openapi`), so a pattern or a bound is written once, where it is enforced. The
//! routes are this crate's route constants; the answers each route can give are listed in the
//! service's file here, next to the edge's (`common.rs`: faults, deadlines, body reading, admin
//! token).
//!
//! Each service serves its document at [`crate::ops::OPENAPI`]; `docs/openapi/<service>.json` are
//! the checked-in copies (`crates/api/tests/openapi.rs` keeps them in step).
//!
//! Not for: validating requests. The handlers parse with the types; the document describes them.

pub mod common;
mod fraud;
mod notification;
mod payment;
mod wallet;

pub use utoipa::openapi::OpenApi;

/// The document of the payment service (the public API).
pub fn payment() -> OpenApi {
    payment::document()
}

/// The document of the fraud service.
pub fn fraud() -> OpenApi {
    fraud::document()
}

/// The document of the wallet service.
pub fn wallet() -> OpenApi {
    wallet::document()
}

/// The document of the notification service.
pub fn notification() -> OpenApi {
    notification::document()
}

/// A function that builds one document.
pub type Build = fn() -> OpenApi;

/// Every document by the name of its service, as `docs/openapi/<name>.json` is named. The
/// services' `ServiceKind::openapi` picks from the same four functions, and a test there checks
/// that the names agree.
pub const DOCUMENTS: [(&str, Build); 4] = [
    ("fraud", fraud),
    ("wallet", wallet),
    ("notification", notification),
    ("payment", payment),
];

/// The document as served and checked in: pretty JSON with a final newline.
pub fn to_json(doc: &OpenApi) -> String {
    // Serialising a tree of strings, maps and numbers cannot fail.
    let mut text = doc.to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}
