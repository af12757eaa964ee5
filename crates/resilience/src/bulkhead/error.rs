//! Errors of the bulkhead.

/// Every slot was taken (and, in waiting mode, none freed up within the wait); nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("bulkhead full")]
pub struct BulkheadFull;
