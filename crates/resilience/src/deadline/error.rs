//! Errors of the deadline layers.

/// The call's deadline was spent: before sending (nothing was sent) or while waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("deadline exceeded")]
pub struct DeadlineExceeded;

/// One try took longer than `min(per_try, deadline remaining)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("per-try timeout")]
pub struct PerTryTimeout;
