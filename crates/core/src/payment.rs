//! The payment state machine.
//!
//! ```text
//! received ──SAFE──▶ fraud_checked ──debit ok──▶ debited ──▶ succeeded
//!    │                    │
//!    ├──DENY────────▶ declined ◀── insufficient funds
//!    └──fraud unavailable──▶ failed      (fail closed: never debit without SAFE)
//! ```
//!
//! A payment is persisted in `received` before anything is called, and every step after it is a
//! compare-and-set from the state before. A process that dies between two steps leaves the payment in a
//! non-terminal state, which the resumer drives forward from exactly where it stopped.
//!
//! `debited -> succeeded` needs no call of its own, so the payment service records `fraud_checked ->
//! debited -> succeeded` in one write once the wallet confirmed the debit ([`PaymentStatus::move_via`]);
//! the wallet's transfer, whose id is derived from the payment id, is the durable record of the debit.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Received,
    FraudChecked,
    Debited,
    Succeeded,
    Declined,
    Failed,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payment cannot move from {from} to {to}")]
pub struct TransitionError {
    pub from: PaymentStatus,
    pub to: PaymentStatus,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 6] = [
        PaymentStatus::Received,
        PaymentStatus::FraudChecked,
        PaymentStatus::Debited,
        PaymentStatus::Succeeded,
        PaymentStatus::Declined,
        PaymentStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Received => "received",
            PaymentStatus::FraudChecked => "fraud_checked",
            PaymentStatus::Debited => "debited",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Declined => "declined",
            PaymentStatus::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            PaymentStatus::Succeeded | PaymentStatus::Declined | PaymentStatus::Failed
        )
    }

    /// The states a payment can still leave, in [`PaymentStatus::ALL`] order: the resumer's work.
    pub fn non_terminal() -> impl Iterator<Item = PaymentStatus> {
        PaymentStatus::ALL.into_iter().filter(|s| !s.is_terminal())
    }

    /// `statuses` as the inside of an SQL `IN (...)` list, each name quoted:
    /// `'received', 'fraud_checked', 'debited'`. The stores build every status list of their SQL
    /// from this, so a new state cannot be forgotten in one query. The names are lowercase words and
    /// underscores (a unit test holds them to that), so quoting needs no escaping.
    pub fn sql_list(statuses: impl IntoIterator<Item = PaymentStatus>) -> String {
        statuses
            .into_iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether the wallet may hold a debit for a payment in this state. Only `debited` and
    /// `succeeded` may; `fraud_checked` may too transiently, while the debit is in flight.
    pub fn may_have_debit(self) -> bool {
        matches!(
            self,
            PaymentStatus::FraudChecked | PaymentStatus::Debited | PaymentStatus::Succeeded
        )
    }

    /// The one place that says which moves are legal.
    pub fn can_move_to(self, next: PaymentStatus) -> bool {
        use PaymentStatus::*;
        matches!(
            (self, next),
            (Received, FraudChecked)
                | (Received, Declined)
                | (Received, Failed)
                | (FraudChecked, Debited)
                | (FraudChecked, Declined)
                | (Debited, Succeeded)
        )
    }

    /// Whether `self -> via -> next` is a path of two legal moves. A store may record such a path in
    /// one write when the state in between needs no step of its own: `fraud_checked -> debited ->
    /// succeeded` right after the wallet confirmed the debit. A crash before that write leaves the
    /// payment in `self`, from which the same step is repeated (the wallet replays the transfer).
    pub fn can_move_via(self, via: PaymentStatus, next: PaymentStatus) -> bool {
        self.can_move_to(via) && via.can_move_to(next)
    }

    /// [`PaymentStatus::move_to`] for a path of two moves through `via`.
    pub fn move_via(
        self,
        via: PaymentStatus,
        next: PaymentStatus,
    ) -> Result<PaymentStatus, TransitionError> {
        self.move_to(via)?.move_to(next)
    }

    pub fn move_to(self, next: PaymentStatus) -> Result<PaymentStatus, TransitionError> {
        if self.can_move_to(next) {
            Ok(next)
        } else {
            Err(TransitionError {
                from: self,
                to: next,
            })
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PaymentStatus::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown payment status {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::PaymentStatus::*;
    use super::*;

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in PaymentStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in PaymentStatus::ALL {
                assert!(!from.can_move_to(to), "{from} -> {to} must be refused");
            }
        }
    }

    #[test]
    fn a_debit_is_only_reachable_through_a_safe_verdict() {
        assert!(!Received.can_move_to(Debited));
        assert!(!Received.can_move_to(Succeeded));
        assert!(Received.can_move_to(FraudChecked));
        assert!(FraudChecked.can_move_to(Debited));
        assert!(!Failed.can_move_to(Debited));
    }

    #[test]
    fn every_non_terminal_state_can_reach_a_terminal_one() {
        for start in PaymentStatus::ALL {
            // Follow any legal path; the graph is acyclic so this terminates.
            let mut state = start;
            let mut steps = 0;
            while !state.is_terminal() {
                state = PaymentStatus::ALL
                    .into_iter()
                    .find(|n| state.can_move_to(*n))
                    .expect("a non-terminal state has a successor");
                steps += 1;
                assert!(steps <= PaymentStatus::ALL.len());
            }
        }
    }

    #[test]
    fn a_two_move_path_is_legal_only_when_both_moves_are() {
        assert!(FraudChecked.can_move_via(Debited, Succeeded));
        assert_eq!(FraudChecked.move_via(Debited, Succeeded), Ok(Succeeded));
        // Never past fraud without a SAFE verdict, and never out of a terminal state.
        assert!(!Received.can_move_via(Debited, Succeeded));
        assert_eq!(
            Received.move_via(Debited, Succeeded),
            Err(TransitionError {
                from: Received,
                to: Debited
            })
        );
        assert!(!Declined.can_move_via(Debited, Succeeded));
        assert!(!FraudChecked.can_move_via(Declined, Succeeded));
        for (from, via, to) in all_triples() {
            assert_eq!(
                from.can_move_via(via, to),
                from.can_move_to(via) && via.can_move_to(to)
            );
        }
    }

    fn all_triples() -> impl Iterator<Item = (PaymentStatus, PaymentStatus, PaymentStatus)> {
        PaymentStatus::ALL.into_iter().flat_map(|a| {
            PaymentStatus::ALL
                .into_iter()
                .flat_map(move |b| PaymentStatus::ALL.into_iter().map(move |c| (a, b, c)))
        })
    }

    #[test]
    fn sql_lists_quote_each_name_in_state_machine_order() {
        assert_eq!(
            PaymentStatus::sql_list(PaymentStatus::non_terminal()),
            "'received', 'fraud_checked', 'debited'"
        );
        assert_eq!(
            PaymentStatus::sql_list(PaymentStatus::ALL),
            "'received', 'fraud_checked', 'debited', 'succeeded', 'declined', 'failed'"
        );
        assert_eq!(PaymentStatus::sql_list([Succeeded]), "'succeeded'");
        assert_eq!(PaymentStatus::sql_list([]), "");
        for s in PaymentStatus::ALL {
            assert!(
                s.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s} needs no SQL escaping"
            );
        }
        // Non-terminal means exactly: some legal move leads out.
        let movable: Vec<_> = PaymentStatus::ALL
            .into_iter()
            .filter(|s| PaymentStatus::ALL.into_iter().any(|n| s.can_move_to(n)))
            .collect();
        assert_eq!(PaymentStatus::non_terminal().collect::<Vec<_>>(), movable);
    }

    #[test]
    fn status_round_trips_through_its_name() {
        for s in PaymentStatus::ALL {
            assert_eq!(s.as_str().parse::<PaymentStatus>(), Ok(s));
            assert_eq!(
                serde_json::to_string(&s).expect("serializes"),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(
            Received.move_to(Succeeded),
            Err(TransitionError {
                from: Received,
                to: Succeeded
            })
        );
    }
}
