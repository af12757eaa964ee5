//! Header names of the contract. HTTP header names are case-insensitive; these are the spellings
//! FinPay sends.

/// The client's idempotency key (draft-ietf-httpapi-idempotency-key-header). Payment requires it;
/// the wallet and notification services accept it equal to the transfer or notification id.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Set to `true` on an answer replayed from a stored outcome instead of made now.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

/// The caller's deadline, absolute Unix epoch milliseconds; the callee bounds its work by it.
/// finpay-resilience sets and reads it (its `DEADLINE_HEADER`, checked equal in finpay-services).
pub const DEADLINE: &str = "finpay-deadline-ms";

/// The request id every service sets, echoes and passes on, so one payment can be followed through
/// every service's log.
pub const REQUEST_ID: &str = "x-request-id";
