//! FinPay's domain types, with no IO and no async runtime.
//!
//! Everything that crosses a trust boundary is parsed into one of these types first ("parse, don't
//! validate"): once a value is an [`Amount`], an [`AccountId`] or an [`IdempotencyKey`], the code that
//! holds it never checks it again.
//!
//! - [`money`]: [`Amount`] (a positive number of minor units), [`Balance`] (never negative), [`Currency`].
//! - [`ids`]: account, payment, transfer and notification identifiers, and the idempotency key.
//! - [`payment`]: the payment state machine.
//! - [`fingerprint`]: the stable hash of a request body that idempotency compares.
//! - `openapi` (feature `openapi`): the JSON Schema of each value type, written beside its parser.
//!
//! Not for: storage, HTTP or time. Those live in `finpay-ledger` and `finpay-services`.

pub mod fingerprint;
pub mod ids;
pub mod money;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod payment;

pub use fingerprint::Fingerprint;
pub use ids::{
    AccountId, IdempotencyKey, InvalidId, InvalidPaymentId, NotificationId, PaymentId, TransferId,
};
pub use money::{Amount, Balance, Currency, MoneyError};
pub use payment::{PaymentStatus, TransitionError};
