//! The services payment calls, each behind its own resilient client, named rather than positional.

use finpay_resilience::{ClientPolicy, ResilientClient};

use super::settings::{parse_urls, Settings};
use crate::http::config::config_err;
use crate::{ServeError, ServiceKind};

/// One resilient client per dependency. The fields are named so that two clients of the same type
/// cannot be swapped by accident.
#[derive(Clone)]
pub struct Dependencies {
    pub fraud: ResilientClient,
    pub wallet: ResilientClient,
    pub notification: ResilientClient,
}

impl Dependencies {
    /// Builds the three clients from their `[<dependency>]` tables; errors name the field.
    pub fn from_settings(s: &Settings) -> Result<Self, ServeError> {
        Ok(Self {
            fraud: client(ServiceKind::Fraud, &s.fraud.urls, &s.fraud.client)?,
            wallet: client(ServiceKind::Wallet, &s.wallet.urls, &s.wallet.client)?,
            notification: client(
                ServiceKind::Notification,
                &s.notification.urls,
                &s.notification.client,
            )?,
        })
    }

    /// The client of `kind`; `None` for payment itself.
    pub fn get(&self, kind: ServiceKind) -> Option<&ResilientClient> {
        match kind {
            ServiceKind::Fraud => Some(&self.fraud),
            ServiceKind::Wallet => Some(&self.wallet),
            ServiceKind::Notification => Some(&self.notification),
            ServiceKind::Payment => None,
        }
    }
}

fn client(
    kind: ServiceKind,
    urls: &[String],
    policy: &ClientPolicy,
) -> Result<ResilientClient, ServeError> {
    let name = kind.as_str();
    let uris = parse_urls(name, urls)?;
    ResilientClient::new(name, uris, policy.clone()).map_err(|e| {
        let field = if e.field == "urls" {
            format!("{name}.urls")
        } else {
            format!("{name}.client.{}", e.field)
        };
        config_err(&field, e.reason)
    })
}
