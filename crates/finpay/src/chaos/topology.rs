//! The cluster every scenario runs against, named once: how many replicas of each service it has,
//! what they are called, and the [`ClusterSpec`] that makes it. The schedules are pure functions
//! and never see a running cluster, so they draw replicas from here; a test checks that the plan
//! of `finpay up` lays out exactly these replicas.

use finpay_services::ServiceKind;

use super::scenario::RunShape;
use crate::plan::{ClusterSpec, FraudFault, Replicas, WalletFault};
use crate::storage::{Backend, Storage};

/// The replicas of a chaos cluster on `backend`: the shape `finpay up` starts there (3 fraud,
/// 2 wallet, and on PostgreSQL 2 notification and 2 payment replicas), raised to what the
/// scenario needs.
pub fn replicas_for(backend: Backend, shape: &RunShape) -> Replicas {
    let mut r = Replicas::default_for(backend);
    for &(kind, n) in shape.min_replicas {
        r.raise(kind, n);
    }
    r
}

pub use crate::plan::replica_name;

/// Every replica of `services` in `topology`, service by service in the given order, each by
/// index.
pub fn replicas(topology: &Replicas, services: &[ServiceKind]) -> Vec<String> {
    services
        .iter()
        .flat_map(|&s| (0..topology.get(s)).map(move |i| replica_name(s, i)))
        .collect()
}

/// The spec of a chaos cluster: no faults from the start (the schedule injects them), payment on
/// a free port.
pub fn cluster_spec(seed: u64, storage: Storage, replicas: Replicas) -> ClusterSpec {
    ClusterSpec {
        replicas,
        storage,
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
        let topology = replicas_for(Backend::Sqlite, &RunShape::STANDARD);
        let plans = crate::plan::build(&cluster_spec(1, Storage::Sqlite, topology), dir.path())
            .expect("plan")
            .replicas;
        let planned: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(planned, replicas(&topology, &ServiceKind::ALL));
        for p in &plans {
            assert_eq!(p.name, replica_name(p.service, p.index));
        }
    }

    #[test]
    fn dependency_replicas_are_listed_service_by_service() {
        let sqlite = replicas_for(Backend::Sqlite, &RunShape::STANDARD);
        assert_eq!(
            replicas(&sqlite, &ServiceKind::DEPENDENCIES),
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

#[cfg(test)]
mod shape_tests {
    use super::*;

    #[test]
    fn a_scenario_raises_the_replicas_it_needs_and_postgres_runs_two_payments() {
        let pg = replicas_for(Backend::Postgres, &RunShape::STANDARD);
        assert_eq!((pg.payment, pg.notification), (2, 2));
        let shape = RunShape {
            min_replicas: &[(ServiceKind::Payment, 2)],
            ..RunShape::STANDARD
        };
        assert_eq!(replicas_for(Backend::Sqlite, &shape).payment, 2);
        assert_eq!(
            replicas_for(Backend::Sqlite, &RunShape::STANDARD).payment,
            1
        );
    }
}
