//! Money in integer minor units.
//!
//! An [`Amount`] is what moves in a transfer: strictly positive and unsigned, because the ledger entry,
//! not the sign, says whether it is a debit or a credit. A [`Balance`] is what an account holds: zero or
//! more, and it can only change through checked arithmetic that refuses to go below zero or to overflow.
//! Both are capped at [`Amount::MAX_MINOR`] so that every value fits a signed 64-bit database column
//! with room for sums.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a money value or operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must be greater than zero")]
    Zero,
    #[error("amount must not exceed {max} minor units", max = Amount::MAX_MINOR)]
    TooLarge,
    #[error("insufficient funds: balance {balance} is less than {amount}")]
    InsufficientFunds { balance: u64, amount: u64 },
    #[error("balance would exceed {max} minor units", max = Amount::MAX_MINOR)]
    Overflow,
    #[error("unknown currency {0:?}: expected an ISO 4217 code such as USD or EUR")]
    UnknownCurrency(String),
}

/// A strictly positive number of minor units (cents for USD, yen for JPY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Amount(u64);

impl Amount {
    /// The largest amount or balance FinPay holds: 10^15 minor units (ten trillion dollars), so that
    /// a sum of a million balances still fits an `i64`.
    pub const MAX_MINOR: u64 = 1_000_000_000_000_000;

    pub fn try_new(minor: u64) -> Result<Self, MoneyError> {
        match minor {
            0 => Err(MoneyError::Zero),
            m if m > Self::MAX_MINOR => Err(MoneyError::TooLarge),
            m => Ok(Self(m)),
        }
    }

    /// Parses a signed value, as read from JSON or a database column.
    pub fn try_from_i64(minor: i64) -> Result<Self, MoneyError> {
        u64::try_from(minor)
            .map_err(|_| MoneyError::Zero)
            .and_then(Self::try_new)
    }

    pub fn minor(self) -> u64 {
        self.0
    }

    /// The value as stored in a signed 64-bit column; lossless because of [`Self::MAX_MINOR`].
    pub fn as_i64(self) -> i64 {
        // MAX_MINOR < i64::MAX, so the cast cannot wrap.
        self.0 as i64
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only JSON integers reach `u64`: floats, strings and negatives fail in serde itself.
        let minor = u64::deserialize(d)?;
        Amount::try_new(minor).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What an account holds, in minor units. Never negative, never above [`Amount::MAX_MINOR`].
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Balance(u64);

impl Balance {
    pub const ZERO: Balance = Balance(0);

    pub fn try_new(minor: u64) -> Result<Self, MoneyError> {
        if minor > Amount::MAX_MINOR {
            return Err(MoneyError::Overflow);
        }
        Ok(Self(minor))
    }

    /// Reads a stored balance; a negative value is a corrupt store and is refused.
    pub fn try_from_i64(minor: i64) -> Result<Self, MoneyError> {
        let minor = u64::try_from(minor).map_err(|_| MoneyError::InsufficientFunds {
            balance: 0,
            amount: minor.unsigned_abs(),
        })?;
        Self::try_new(minor)
    }

    pub fn minor(self) -> u64 {
        self.0
    }

    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }

    /// The balance after a debit of `amount`, or why it is refused.
    pub fn debit(self, amount: Amount) -> Result<Balance, MoneyError> {
        self.0
            .checked_sub(amount.0)
            .map(Balance)
            .ok_or(MoneyError::InsufficientFunds {
                balance: self.0,
                amount: amount.0,
            })
    }

    /// The balance after a credit of `amount`, or why it is refused.
    pub fn credit(self, amount: Amount) -> Result<Balance, MoneyError> {
        match self.0.checked_add(amount.0) {
            Some(sum) if sum <= Amount::MAX_MINOR => Ok(Balance(sum)),
            _ => Err(MoneyError::Overflow),
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The ISO 4217 currencies FinPay accepts. A closed list on purpose: an unknown code is bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Currency {
    Usd,
    Eur,
    Gbp,
    Jpy,
    Chf,
    Cad,
    Aud,
    Sgd,
}

impl Currency {
    pub const ALL: [Currency; 8] = [
        Currency::Usd,
        Currency::Eur,
        Currency::Gbp,
        Currency::Jpy,
        Currency::Chf,
        Currency::Cad,
        Currency::Aud,
        Currency::Sgd,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Currency::Usd => "USD",
            Currency::Eur => "EUR",
            Currency::Gbp => "GBP",
            Currency::Jpy => "JPY",
            Currency::Chf => "CHF",
            Currency::Cad => "CAD",
            Currency::Aud => "AUD",
            Currency::Sgd => "SGD",
        }
    }

    /// Digits after the decimal point: 2 for most, 0 for JPY.
    pub fn minor_unit_exponent(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            _ => 2,
        }
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code() == s)
            .ok_or_else(|| MoneyError::UnknownCurrency(s.to_owned()))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amount_rejects_zero_and_values_past_the_cap() {
        assert_eq!(Amount::try_new(0), Err(MoneyError::Zero));
        assert_eq!(
            Amount::try_new(Amount::MAX_MINOR + 1),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(Amount::try_from_i64(-5), Err(MoneyError::Zero));
        assert_eq!(Amount::try_new(1).map(Amount::minor), Ok(1));
    }

    #[test]
    fn amount_deserializes_only_from_positive_json_integers() {
        let ok: Amount = serde_json::from_str("1250").expect("integer parses");
        assert_eq!(ok.minor(), 1250);
        for bad in [
            "0",
            "-1",
            "12.5",
            "\"100\"",
            "1e3",
            "100000000000000000000",
            "null",
        ] {
            assert!(
                serde_json::from_str::<Amount>(bad).is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn debit_refuses_to_go_below_zero() {
        let balance = Balance::try_new(100).expect("valid");
        let amount = Amount::try_new(101).expect("valid");
        assert_eq!(
            balance.debit(amount),
            Err(MoneyError::InsufficientFunds {
                balance: 100,
                amount: 101
            })
        );
        let exact = Amount::try_new(100).expect("valid");
        assert_eq!(balance.debit(exact), Ok(Balance::ZERO));
    }

    #[test]
    fn credit_refuses_to_pass_the_cap() {
        let full = Balance::try_new(Amount::MAX_MINOR).expect("valid");
        assert_eq!(
            full.credit(Amount::try_new(1).expect("valid")),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn currency_round_trips_through_its_code_and_refuses_unknown_codes() {
        for c in Currency::ALL {
            assert_eq!(c.code().parse::<Currency>(), Ok(c));
            let json = serde_json::to_string(&c).expect("serializes");
            assert_eq!(serde_json::from_str::<Currency>(&json).expect("parses"), c);
        }
        assert!("usd".parse::<Currency>().is_err());
        assert!("XXX".parse::<Currency>().is_err());
    }

    proptest! {
        #[test]
        fn a_debit_then_credit_of_the_same_amount_restores_the_balance(
            start in 0u64..=Amount::MAX_MINOR,
            amount in 1u64..=Amount::MAX_MINOR,
        ) {
            let balance = Balance::try_new(start).expect("in range");
            let amount = Amount::try_new(amount).expect("in range");
            match balance.debit(amount) {
                Ok(after) => {
                    prop_assert_eq!(after.minor() + amount.minor(), start);
                    prop_assert_eq!(after.credit(amount), Ok(balance));
                }
                Err(MoneyError::InsufficientFunds { .. }) => prop_assert!(amount.minor() > start),
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }
}
