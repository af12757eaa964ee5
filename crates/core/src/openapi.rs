//! The JSON Schema of each value type, for the OpenAPI documents finpay-api derives.
//!
//! Written by hand, next to the parsers, because the parsers are hand-written too: a schema says
//! exactly what the type's `Deserialize` accepts (its pattern, bounds or closed list), so a client
//! that follows the document never meets a refusal the document did not announce, and a fuzzer
//! that breaks the schema always meets one. The constants each schema reads ([`Amount::MAX_MINOR`],
//! [`Currency::ALL`], [`ID_PATTERN`], ...) are the ones the parsers read.
//!
//! Behind the `openapi` feature, so the domain types carry no schema code where none is wanted.

use std::borrow::Cow;

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::ids::{ID_MAX_LEN, ID_PATTERN, PAYMENT_ID_PATTERN};
use crate::{
    AccountId, Amount, Balance, Currency, IdempotencyKey, NotificationId, PaymentId, PaymentStatus,
    TransferId,
};

/// The pattern of an [`IdempotencyKey`]: 1 to 255 visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

fn minor_units(min: u64, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min as usize))
        .maximum(Some(Amount::MAX_MINOR as usize))
        .description(Some(description))
        .examples([serde_json::json!(1250)])
        .into()
}

fn client_id(description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(ID_MAX_LEN))
        .pattern(Some(ID_PATTERN))
        .description(Some(description))
        .examples([serde_json::json!(example)])
        .into()
}

macro_rules! named {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

named!(
    Amount,
    "Amount",
    minor_units(
        1,
        "A strictly positive number of minor units (cents for USD, yen for JPY). A JSON integer: \
         a float, a string or an exponent is refused."
    )
);

named!(
    Balance,
    "Balance",
    minor_units(0, "What an account holds, in minor units; never negative.")
);

named!(
    Currency,
    "Currency",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(Currency::ALL.map(Currency::code)))
        .description(Some(
            "An ISO 4217 code of the closed list FinPay accepts, in capitals."
        ))
        .into()
);

named!(
    AccountId,
    "AccountId",
    client_id(
        "A wallet account: 1 to 64 letters, digits, '-', '_', ':' or '.'.",
        "cust-0001"
    )
);

named!(
    TransferId,
    "TransferId",
    client_id(
        "A ledger transfer, chosen by the caller; also its idempotency key at the wallet.",
        "pay-019ac3a45b1e7f1c8a2d3c4b5a697f1c"
    )
);

named!(
    NotificationId,
    "NotificationId",
    client_id(
        "A notification, chosen by the caller; also its deduplication key in the inbox.",
        "ntf-019ac3a45b1e7f1c8a2d3c4b5a697f1c"
    )
);

named!(
    PaymentId,
    "PaymentId",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("uuid".into())))
        .pattern(Some(PAYMENT_ID_PATTERN))
        .description(Some(
            "A payment, named by FinPay (UUIDv7), in the hyphenated form."
        ))
        .examples([serde_json::json!("019ac3a4-5b1e-7f1c-8a2d-3c4b5a697f1c")])
        .into()
);

named!(
    PaymentStatus,
    "PaymentStatus",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(PaymentStatus::ALL.map(PaymentStatus::as_str)))
        .description(Some(
            "Where the payment is: `succeeded`, `declined` and `failed` are terminal."
        ))
        .into()
);

named!(
    IdempotencyKey,
    "IdempotencyKey",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(IdempotencyKey::MAX_LEN))
        .pattern(Some(IDEMPOTENCY_KEY_PATTERN))
        .description(Some(
            "1 to 255 visible ASCII characters (no spaces, no control characters)."
        ))
        .examples([serde_json::json!("order-1234")])
        .into()
);

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: ToSchema>() -> serde_json::Value {
        serde_json::to_value(T::schema()).expect("serializes")
    }

    #[test]
    fn bounds_and_lists_are_the_parsers_own() {
        assert_eq!(json::<Amount>()["minimum"], 1);
        assert_eq!(json::<Amount>()["maximum"], Amount::MAX_MINOR);
        assert_eq!(json::<Balance>()["minimum"], 0);
        let codes = json::<Currency>()["enum"].clone();
        for c in Currency::ALL {
            assert!(codes.as_array().expect("a list").contains(&c.code().into()));
            assert_eq!(c.code().parse::<Currency>(), Ok(c));
        }
        let statuses = json::<PaymentStatus>()["enum"].clone();
        assert_eq!(
            statuses.as_array().map(Vec::len),
            Some(PaymentStatus::ALL.len())
        );
        assert_eq!(json::<AccountId>()["maxLength"], ID_MAX_LEN);
        assert_eq!(
            json::<IdempotencyKey>()["maxLength"],
            IdempotencyKey::MAX_LEN
        );
    }

    #[test]
    fn the_examples_parse() {
        type Parses = fn(&str) -> bool;
        let cases: [(serde_json::Value, Parses); 5] = [
            (json::<AccountId>(), |v: &str| {
                AccountId::try_from(v).is_ok()
            }),
            (json::<TransferId>(), |v: &str| {
                TransferId::try_from(v).is_ok()
            }),
            (json::<NotificationId>(), |v: &str| {
                NotificationId::try_from(v).is_ok()
            }),
            (json::<PaymentId>(), |v: &str| {
                v.parse::<PaymentId>().is_ok()
            }),
            (json::<IdempotencyKey>(), |v: &str| {
                IdempotencyKey::try_from(v).is_ok()
            }),
        ];
        for (schema, parse) in cases {
            let example = schema["examples"][0].as_str().expect("an example");
            assert!(parse(example), "{example}");
        }
    }

    #[test]
    fn the_id_pattern_names_exactly_the_characters_the_parser_allows() {
        // The pattern's class, spelled out, against the parser, character by character.
        let class = |c: char| c.is_ascii_alphanumeric() || "._:-".contains(c);
        assert!(ID_PATTERN.contains("A-Za-z0-9._:-") && ID_PATTERN.ends_with("{1,64}$"));
        for c in (0u8..=127).map(char::from) {
            assert_eq!(
                AccountId::try_from(c.to_string()).is_ok(),
                class(c),
                "{c:?}"
            );
            let visible = ('!'..='~').contains(&c);
            assert_eq!(
                IdempotencyKey::try_from(c.to_string()).is_ok(),
                visible,
                "{c:?}"
            );
        }
    }
}
