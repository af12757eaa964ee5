//! The four services, named once.
//!
//! [`ServiceKind`] is the one list of services: the `finpay serve <service>` argument, the replica
//! plan of `finpay up`, the state file, the chaos harness and the dispatch in [`crate::serve`] all
//! use it. What differs between the services (which port they take, whether they keep state, which
//! table of payment's settings names their replicas) is a method here, so adding a service is one
//! variant and its answers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the four services.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    Fraud,
    Wallet,
    Notification,
    Payment,
}

/// Who talks to a service's business port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRole {
    /// Clients: the public API (payment).
    Public,
    /// Only payment, from inside the system.
    Internal,
}

impl ServiceKind {
    /// Every service, in the order `finpay up` starts them: payment last, once the others answer.
    pub const ALL: [ServiceKind; 4] = [
        ServiceKind::Fraud,
        ServiceKind::Wallet,
        ServiceKind::Notification,
        ServiceKind::Payment,
    ];

    /// The services payment calls.
    pub const DEPENDENCIES: [ServiceKind; 3] = [
        ServiceKind::Fraud,
        ServiceKind::Wallet,
        ServiceKind::Notification,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Fraud => "fraud",
            ServiceKind::Wallet => "wallet",
            ServiceKind::Notification => "notification",
            ServiceKind::Payment => "payment",
        }
    }

    pub fn port_role(self) -> PortRole {
        match self {
            ServiceKind::Payment => PortRole::Public,
            _ => PortRole::Internal,
        }
    }

    /// Whether the service keeps a store of its own (and so a `[storage]` table that matters).
    pub fn is_stateful(self) -> bool {
        !matches!(self, ServiceKind::Fraud)
    }

    /// The service's OpenAPI 3.1 document (`GET /openapi.json`), as served: pretty JSON.
    pub fn openapi_json(self) -> String {
        use finpay_api::openapi;
        let doc = match self {
            ServiceKind::Fraud => openapi::fraud(),
            ServiceKind::Wallet => openapi::wallet(),
            ServiceKind::Notification => openapi::notification(),
            ServiceKind::Payment => openapi::payment(),
        };
        openapi::to_json(&doc)
    }

    /// The table of payment's settings that lists this dependency's replicas and client policy
    /// (`[fraud] urls = [...]`); `None` for payment itself.
    pub fn config_section(self) -> Option<&'static str> {
        match self {
            ServiceKind::Payment => None,
            other => Some(other.as_str()),
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown service {s:?}: expected fraud, wallet, notification or payment")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_kind_round_trips_through_its_name_serde_and_clap() {
        use clap::ValueEnum as _;
        for k in ServiceKind::ALL {
            assert_eq!(k.as_str().parse::<ServiceKind>(), Ok(k));
            assert_eq!(
                serde_json::to_string(&k).expect("serializes"),
                format!("\"{k}\"")
            );
            let v = k.to_possible_value().expect("every variant is a value");
            assert_eq!(v.get_name(), k.as_str());
        }
        assert!("billing".parse::<ServiceKind>().is_err());
    }

    #[test]
    fn only_payment_is_public_and_only_fraud_keeps_no_state() {
        for k in ServiceKind::ALL {
            assert_eq!(k.port_role() == PortRole::Public, k == ServiceKind::Payment);
            assert_eq!(k.is_stateful(), k != ServiceKind::Fraud);
            assert_eq!(
                k.config_section().is_some(),
                ServiceKind::DEPENDENCIES.contains(&k)
            );
        }
    }
}
