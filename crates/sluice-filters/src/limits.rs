//! Requests in flight per route (or per site, shared by its routes): Envoy's
//! `max_requests` circuit breaker in front of the origin, answering `503` with
//! `Retry-After: 1` beyond the limit instead of queueing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// A limit on requests in flight.
#[derive(Debug)]
pub struct InFlightLimit {
    max: u32,
    now: AtomicU32,
}

impl InFlightLimit {
    /// At most `max` requests at once.
    pub fn new(max: u32) -> Self {
        Self { max, now: AtomicU32::new(0) }
    }

    /// A slot, held until the guard is dropped (when the response is done); `None` at
    /// the limit.
    pub fn try_acquire(self: &Arc<Self>) -> Option<InFlightGuard> {
        let mut current = self.now.load(Ordering::Relaxed);
        loop {
            if current >= self.max {
                return None;
            }
            match self.now.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(InFlightGuard(self.clone())),
                Err(seen) => current = seen,
            }
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.now.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn max(&self) -> u32 {
        self.max
    }
}

/// One request in flight.
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlightLimit>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_and_given_back() {
        let limit = Arc::new(InFlightLimit::new(2));
        let a = limit.try_acquire();
        let b = limit.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(limit.try_acquire().is_none());
        drop(a);
        assert!(limit.try_acquire().is_some());
        assert_eq!(limit.in_flight(), 1);
    }
}
