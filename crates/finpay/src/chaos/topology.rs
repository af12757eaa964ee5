//! The cluster every scenario runs against, named once: how many replicas of each service it has,
//! what they are called, and the [`ClusterSpec`] that makes it. The schedules are pure functions
//! and never see a running cluster, so they draw replicas from here; a test checks that the plan
//! of `finpay up` lays out exactly these replicas.

use finpay_services::ServiceKind;

use crate::plan::{ClusterSpec, FraudFault, Replicas, WalletFault};
use crate::storage::Storage;

/// Fraud replicas of a chaos cluster.
pub const FRAUD_REPLICAS: u16 = 3;
/// Wallet replicas of a chaos cluster.
pub const WALLET_REPLICAS: u16 = 2;

/// How many replicas of `service` a chaos cluster runs (the plan starts one notification and one
/// payment whatever the spec says).
pub fn replica_count(service: ServiceKind) -> u16 {
    match service {
        ServiceKind::Fraud => FRAUD_REPLICAS,
        ServiceKind::Wallet => WALLET_REPLICAS,
        ServiceKind::Notification | ServiceKind::Payment => 1,
    }
}

pub use crate::plan::replica_name;

/// Every replica of `services`, service by service in the given order, each by index.
pub fn replicas(services: &[ServiceKind]) -> Vec<String> {
    services
        .iter()
        .flat_map(|&s| (0..replica_count(s)).map(move |i| replica_name(s, i)))
        .collect()
}

/// The spec of a chaos cluster: no faults from the start (the schedule injects them), payment on
/// a free port.
pub fn cluster_spec(seed: u64) -> ClusterSpec {
    ClusterSpec {
        replicas: Replicas {
            fraud: FRAUD_REPLICAS,
            wallet: WALLET_REPLICAS,
            notification: replica_count(ServiceKind::Notification),
            payment: replica_count(ServiceKind::Payment),
        },
        storage: Storage::Sqlite,
        fraud_fault: FraudFault::None,
        fraud_fault_rate: 0.0,
        wallet_fault: WalletFault::None,
        wallet_fault_rate: 0.0,
        notification_down: false,
        seed,
        payment_port: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_of_a_chaos_cluster_has_exactly_the_named_replicas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plans = crate::plan::build(&cluster_spec(1), dir.path())
            .expect("plan")
            .replicas;
        let planned: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(planned, replicas(&ServiceKind::ALL));
        for p in &plans {
            assert_eq!(p.name, replica_name(p.service, p.index));
        }
    }

    #[test]
    fn dependency_replicas_are_listed_service_by_service() {
        assert_eq!(
            replicas(&ServiceKind::DEPENDENCIES),
            [
                "fraud-0",
                "fraud-1",
                "fraud-2",
                "wallet-0",
                "wallet-1",
                "notification-0"
            ]
        );
    }
}
