//! Identifiers and the idempotency key.
//!
//! Client-chosen identifiers ([`AccountId`], [`TransferId`], [`NotificationId`]) are short, printable
//! and safe to put in a URL path or a log line. FinPay-chosen ones ([`PaymentId`]) are UUIDv7, so they
//! sort by creation time. A wallet [`TransferId`] for a payment is *derived* from the payment id, never
//! drawn at random: every retry and every resumption after a crash names the same transfer, which is
//! what makes the debit idempotent end to end.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an identifier or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters, got {len}")]
    TooLong { max: usize, len: usize },
    #[error("character {ch:?} at position {at} is not allowed: {allowed}")]
    BadChar {
        ch: char,
        at: usize,
        allowed: &'static str,
    },
}

/// The longest client-chosen identifier, in characters (all of them ASCII).
pub const ID_MAX_LEN: usize = 64;
const ID_ALLOWED: &str = "use letters, digits, '-', '_', ':' or '.'";
/// What a client-chosen identifier may hold, as a JSON Schema pattern; [`check_id`]'s rule.
pub const ID_PATTERN: &str = "^[A-Za-z0-9._:-]{1,64}$";

fn check_id(s: &str) -> Result<(), InvalidId> {
    if s.is_empty() {
        return Err(InvalidId::Empty);
    }
    if s.len() > ID_MAX_LEN {
        return Err(InvalidId::TooLong {
            max: ID_MAX_LEN,
            len: s.len(),
        });
    }
    match s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.')))
    {
        Some((at, ch)) => Err(InvalidId::BadChar {
            ch,
            at,
            allowed: ID_ALLOWED,
        }),
        None => Ok(()),
    }
}

macro_rules! client_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                check_id(&s)?;
                Ok(Self(s))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidId;
            fn try_from(s: &str) -> Result<Self, InvalidId> {
                Self::try_from(s.to_owned())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::try_from(s).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

client_id!(
    /// A wallet account, e.g. `cust-0001` or `merchant-0`.
    AccountId
);
client_id!(
    /// A ledger transfer; also its idempotency key at the wallet.
    TransferId
);
client_id!(
    /// A notification; also its deduplication key in the notification inbox.
    NotificationId
);

/// A payment, named by FinPay (UUIDv7) when the payment is first received. On the wire it is the
/// hyphenated form FinPay writes (`019ac3a4-5b1e-7f1c-8a2d-3c4b5a697f1c`, either case), in a
/// path and in a body alike; the other spellings the `uuid` crate knows (simple, braced, URN, an
/// array of 16 bytes) are refused, so one payment has one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PaymentId(Uuid);

/// The hyphenated UUID [`PaymentId`] accepts, as a JSON Schema pattern.
pub const PAYMENT_ID_PATTERN: &str =
    "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$";

/// Why a payment id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a hyphenated UUID such as 019ac3a4-5b1e-7f1c-8a2d-3c4b5a697f1c")]
pub struct InvalidPaymentId;

impl PaymentId {
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The wallet transfer that debits this payment. Deterministic, so retries and crash recovery
    /// always name the same transfer and the wallet applies it at most once.
    pub fn debit_transfer_id(&self) -> TransferId {
        TransferId(format!("pay-{}", self.0.simple()))
    }

    /// The notification that tells the customer about this payment, deduplicated by the inbox.
    pub fn notification_id(&self) -> NotificationId {
        NotificationId(format!("ntf-{}", self.0.simple()))
    }
}

impl std::str::FromStr for PaymentId {
    type Err = InvalidPaymentId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // 36 characters is the hyphenated form only: simple is 32, braced 38, URN 45.
        if s.len() != 36 {
            return Err(InvalidPaymentId);
        }
        Uuid::parse_str(s).map(Self).map_err(|_| InvalidPaymentId)
    }
}

impl<'de> Deserialize<'de> for PaymentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The `Idempotency-Key` a client sends with a payment: 1 to 255 visible ASCII characters
/// (draft-ietf-httpapi-idempotency-key-header; Stripe allows 255).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = InvalidId;

    fn try_from(s: String) -> Result<Self, InvalidId> {
        if s.is_empty() {
            return Err(InvalidId::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(InvalidId::TooLong {
                max: Self::MAX_LEN,
                len: s.len(),
            });
        }
        if let Some((at, ch)) = s.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
            return Err(InvalidId::BadChar {
                ch,
                at,
                allowed: "use visible ASCII characters only (no spaces or control characters)",
            });
        }
        Ok(Self(s))
    }
}

impl TryFrom<&str> for IdempotencyKey {
    type Error = InvalidId;
    fn try_from(s: &str) -> Result<Self, InvalidId> {
        Self::try_from(s.to_owned())
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_accepts_one_to_255_visible_characters() {
        assert!(IdempotencyKey::try_from("a").is_ok());
        assert!(IdempotencyKey::try_from("x".repeat(255)).is_ok());
        assert_eq!(
            IdempotencyKey::try_from("x".repeat(256)),
            Err(InvalidId::TooLong { max: 255, len: 256 })
        );
        assert_eq!(IdempotencyKey::try_from(""), Err(InvalidId::Empty));
        assert!(IdempotencyKey::try_from("has space").is_err());
        assert!(IdempotencyKey::try_from("tab\t").is_err());
        assert!(IdempotencyKey::try_from("caf\u{e9}").is_err());
    }

    #[test]
    fn account_id_refuses_path_and_control_characters() {
        assert!(AccountId::try_from("cust-0001").is_ok());
        assert!(AccountId::try_from("../etc").is_err());
        assert!(AccountId::try_from("a b").is_err());
        assert!(AccountId::try_from("").is_err());
        assert!(AccountId::try_from("a".repeat(65)).is_err());
    }

    #[test]
    fn payment_id_is_the_hyphenated_uuid_only() {
        let id = PaymentId::new_v7();
        let text = id.to_string();
        assert_eq!(text.parse::<PaymentId>(), Ok(id));
        assert_eq!(text.to_uppercase().parse::<PaymentId>(), Ok(id));
        let json = serde_json::to_string(&id).expect("serializes");
        assert_eq!(
            serde_json::from_str::<PaymentId>(&json).expect("parses"),
            id
        );
        let simple = id.as_uuid().simple().to_string();
        let braced = format!("{{{text}}}");
        let urn = format!("urn:uuid:{text}");
        for bad in [simple.as_str(), &braced, &urn, "", "not-a-uuid"] {
            assert_eq!(bad.parse::<PaymentId>(), Err(InvalidPaymentId), "{bad}");
        }
        let bytes = serde_json::to_string(id.as_uuid().as_bytes()).expect("serializes");
        assert!(
            serde_json::from_str::<PaymentId>(&bytes).is_err(),
            "{bytes}"
        );
    }

    #[test]
    fn transfer_id_is_derived_deterministically_from_the_payment() {
        let p = PaymentId::new_v7();
        assert_eq!(p.debit_transfer_id(), p.debit_transfer_id());
        assert_ne!(
            p.debit_transfer_id(),
            PaymentId::new_v7().debit_transfer_id()
        );
        // The derived ids are themselves valid client ids.
        assert!(TransferId::try_from(p.debit_transfer_id().as_str()).is_ok());
        assert!(NotificationId::try_from(p.notification_id().as_str()).is_ok());
    }
}
