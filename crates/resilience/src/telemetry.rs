//! Counter handles resolved once, not looked up per call.
//!
//! `metrics::counter!(name, "dependency" => label)` builds a key (a label vector on the heap) and
//! asks the recorder for a handle each time it runs; with a Prometheus recorder that is a hash and
//! a registry lookup per increment. The layers run it several times per call, so they keep a
//! [`LazyCounter`] instead: resolved at its first increment and reused after. Resolution waits for
//! the first increment (not construction) because services build their clients before they install
//! the recorder; a recorder must therefore be installed before the first call is made.

use std::sync::OnceLock;

use metrics::Counter;

/// A `dependency`-labelled counter, resolved at its first use. Layers keep theirs behind the `Arc`
/// they already share, so a clone of a layer costs no extra reference count.
pub(crate) struct LazyCounter {
    name: &'static str,
    label: &'static str,
    handle: OnceLock<Counter>,
}

impl std::fmt::Debug for LazyCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyCounter")
            .field("name", &self.name)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl LazyCounter {
    /// `name{dependency=label}`.
    pub(crate) fn new(name: &'static str, label: &'static str) -> Self {
        Self {
            name,
            label,
            handle: OnceLock::new(),
        }
    }

    /// Adds `n`.
    pub(crate) fn increment(&self, n: u64) {
        self.handle
            .get_or_init(|| metrics::counter!(self.name, "dependency" => self.label))
            .increment(n);
    }
}
