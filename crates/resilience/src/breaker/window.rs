//! Sliding windows of call outcomes: the last N calls, or the calls of the last T.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Which window to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// The last N calls.
    Count(u32),
    /// Calls within the last span, kept in 10 buckets.
    Time(Duration),
}

/// Totals over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Calls recorded.
    pub calls: u64,
    /// Of which failed.
    pub failures: u64,
    /// Of which were slow.
    pub slow: u64,
}

#[derive(Debug)]
pub(crate) struct Bucket {
    start: Instant,
    totals: Totals,
}

#[derive(Debug)]
pub(crate) enum Window {
    Count {
        size: usize,
        ring: VecDeque<(bool, bool)>,
        totals: Totals,
    },
    Time {
        span: Duration,
        buckets: VecDeque<Bucket>,
    },
}

const BUCKETS: u32 = 10;

impl Window {
    pub(crate) fn new(spec: WindowSpec) -> Self {
        match spec {
            WindowSpec::Count(n) => Window::Count {
                size: n as usize,
                ring: VecDeque::with_capacity(n as usize),
                totals: Totals::default(),
            },
            WindowSpec::Time(span) => Window::Time {
                span,
                buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
            },
        }
    }

    pub(crate) fn record(&mut self, failed: bool, slow: bool, now: Instant) {
        match self {
            Window::Count { size, ring, totals } => {
                if ring.len() == *size {
                    if let Some((f, s)) = ring.pop_front() {
                        totals.calls -= 1;
                        totals.failures -= u64::from(f);
                        totals.slow -= u64::from(s);
                    }
                }
                ring.push_back((failed, slow));
                totals.calls += 1;
                totals.failures += u64::from(failed);
                totals.slow += u64::from(slow);
            }
            Window::Time { span, buckets } => {
                expire(buckets, *span, now);
                let width = *span / BUCKETS;
                let fresh = buckets
                    .back()
                    .is_none_or(|b| now.duration_since(b.start) >= width);
                if fresh {
                    buckets.push_back(Bucket {
                        start: now,
                        totals: Totals::default(),
                    });
                }
                if let Some(b) = buckets.back_mut() {
                    b.totals.calls += 1;
                    b.totals.failures += u64::from(failed);
                    b.totals.slow += u64::from(slow);
                }
            }
        }
    }

    pub(crate) fn totals(&mut self, now: Instant) -> Totals {
        match self {
            Window::Count { totals, .. } => *totals,
            Window::Time { span, buckets } => {
                expire(buckets, *span, now);
                buckets.iter().fold(Totals::default(), |a, b| Totals {
                    calls: a.calls + b.totals.calls,
                    failures: a.failures + b.totals.failures,
                    slow: a.slow + b.totals.slow,
                })
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Window::Count { ring, totals, .. } => {
                ring.clear();
                *totals = Totals::default();
            }
            Window::Time { buckets, .. } => buckets.clear(),
        }
    }
}

fn expire(buckets: &mut VecDeque<Bucket>, span: Duration, now: Instant) {
    while buckets
        .front()
        .is_some_and(|b| now.duration_since(b.start) >= span)
    {
        buckets.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn count_window_forgets_the_oldest_call() {
        let mut w = Window::new(WindowSpec::Count(3));
        let now = Instant::now();
        w.record(true, false, now);
        w.record(false, false, now);
        w.record(false, false, now);
        w.record(false, true, now);
        assert_eq!(
            w.totals(now),
            Totals {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_forgets_calls_older_than_the_span() {
        let mut w = Window::new(WindowSpec::Time(Duration::from_secs(10)));
        w.record(true, false, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        w.record(false, false, Instant::now());
        assert_eq!(w.totals(Instant::now()).calls, 2);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            w.totals(Instant::now()),
            Totals {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
    }
}
