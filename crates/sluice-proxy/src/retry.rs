//! When a failed attempt is tried again: the retry policy of an upstream, and the budget
//! that keeps retries from amplifying an outage.
//!
//! A request is retried on a *different* server (the failed one is passed to
//! [`crate::Proxy::upstream_peer`] as [`crate::Session::failed_peer`]) when:
//! - connecting failed (always safe: nothing was sent), immediately;
//! - the connection broke or the per-try timeout passed before a response head, or the
//!   response status is one of `statuses` — only for requests that can be replayed: no
//!   body, and an idempotent method unless `non_idempotent` is set. These wait an
//!   exponential backoff with full jitter first.
//!
//! No retry starts after the overall `deadline`, nor when the budget is spent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How an upstream's failed attempts are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Retry when the connection broke (or the per-try timeout passed) before a response.
    pub on_reset: bool,
    /// Retry responses with these statuses.
    pub statuses: Vec<u16>,
    /// Also retry requests with non-idempotent methods (when they have no body).
    pub non_idempotent: bool,
    /// Time allowed for one attempt to produce a response head; `None`: the upstream's
    /// first-byte timeout.
    pub per_try_timeout: Option<Duration>,
    /// No retry starts this long after the first attempt; `None`: no deadline.
    pub deadline: Option<Duration>,
    /// First backoff (before the second retry it doubles, and so on), with full jitter.
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Retries allowed as a share of requests; `None`: unlimited. Shared by the routes
    /// that use the policy.
    pub budget: Option<std::sync::Arc<RetryBudget>>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 1,
            on_reset: false,
            statuses: Vec::new(),
            non_idempotent: false,
            per_try_timeout: None,
            deadline: None,
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            budget: None,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `n` (1-based): uniformly random in
    /// `0..=min(max_backoff, backoff × 2^(n-1))`.
    pub fn backoff_for(&self, n: u32) -> Duration {
        let cap = self.backoff.saturating_mul(1u32 << (n.saturating_sub(1)).min(16)).min(self.max_backoff);
        let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(if ms == 0 { 0 } else { fastrand::u64(0..=ms) })
    }

    /// Whether a response status calls for a retry.
    pub fn retries_status(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }
}

/// Retries may be at most `percent` of the requests of the last window (plus a floor of
/// `min_per_second`), counted per upstream: when an upstream is failing, retries stop
/// adding load to it.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u64,
    min_per_window: u64,
    window_ms: u64,
    start: Instant,
    /// Window number and counts, packed for lock-free updates: (window, requests, retries).
    window: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    refused: AtomicU64,
}

impl RetryBudget {
    /// `percent` of requests, at least `min_per_second`, over 10-second windows.
    pub fn new(percent: u32, min_per_second: u32) -> Self {
        let window_ms = 10_000;
        Self {
            percent: u64::from(percent),
            min_per_window: u64::from(min_per_second) * window_ms / 1000,
            window_ms,
            start: Instant::now(),
            window: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn roll(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX) / self.window_ms;
        let seen = self.window.load(Ordering::Relaxed);
        if now != seen && self.window.compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.requests.store(0, Ordering::Relaxed);
            self.retries.store(0, Ordering::Relaxed);
        }
    }

    /// Counts one request.
    pub fn request(&self) {
        self.roll();
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; false (and counted) when it is spent.
    pub fn try_retry(&self) -> bool {
        self.roll();
        let allowed = (self.requests.load(Ordering::Relaxed) * self.percent / 100).max(self.min_per_window);
        if self.retries.fetch_add(1, Ordering::Relaxed) < allowed {
            return true;
        }
        self.retries.fetch_sub(1, Ordering::Relaxed);
        self.refused.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Retries refused because the budget was spent.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            ..RetryPolicy::default()
        };
        for _ in 0..100 {
            assert!(p.backoff_for(1) <= Duration::from_millis(10));
            assert!(p.backoff_for(3) <= Duration::from_millis(40));
            assert!(p.backoff_for(10) <= Duration::from_millis(50));
        }
        assert!((0..200).any(|_| p.backoff_for(10) > Duration::from_millis(40)), "jitter spans the range");
    }

    #[test]
    fn the_budget_allows_a_share_of_requests() {
        let b = RetryBudget::new(20, 0);
        for _ in 0..100 {
            b.request();
        }
        let granted = (0..50).filter(|_| b.try_retry()).count();
        assert_eq!(granted, 20);
        assert_eq!(b.refused(), 30);
        let floor = RetryBudget::new(0, 1);
        assert_eq!((0..20).filter(|_| floor.try_retry()).count(), 10, "1 per second over a 10 s window");
    }
}
