//! Header names of the contract. HTTP header names are case-insensitive; these are the spellings
//! FinPay sends.

/// The client's idempotency key (draft-ietf-httpapi-idempotency-key-header). Payment requires it;
/// the wallet and notification services accept it equal to the transfer or notification id.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Set to `true` on an answer replayed from a stored outcome instead of made now.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

/// The request id every service sets, echoes and passes on, so one payment can be followed through
/// every service's log.
pub const REQUEST_ID: &str = "x-request-id";
