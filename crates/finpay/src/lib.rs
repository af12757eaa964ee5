//! The `finpay` command's machinery, as a library so the chaos harness and the tests reuse it
//! in-process: the local cluster and its supervisor ([`up`], [`supervisor`], [`plan`], [`cluster`]),
//! the load engine ([`load`]), the chaos harness ([`chaos`]), the offline audit command ([`check`])
//! and `finpay serve` ([`serve`]).
//!
//! Not for: the services themselves (`finpay-services`) or storage (`finpay-ledger`). This crate starts
//! them as processes and talks to them over HTTP; it opens the wallet only to seed demo accounts.

pub mod backoff;
pub mod chaos;
mod chart;
pub mod check;
pub mod cluster;
pub mod load;
pub mod plan;
pub mod probe;
pub mod scale;
pub mod seed;
pub mod serve;
pub mod status;
pub mod storage;
pub mod supervisor;
pub mod up;

/// Bad flags or config: the binary prints it and exits 64 (EX_USAGE), without a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The exit status for a bad configuration (sysexits' EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
