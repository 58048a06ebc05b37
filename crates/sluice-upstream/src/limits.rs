//! Circuit breaking: per-group limits on open connections, requests waiting for a
//! connection, and requests in flight. Past a limit a request fails at once with
//! [`ErrorKind::UpstreamOverloaded`] (503) and is counted, instead of queueing without
//! bound behind an origin that is already saturated.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_error::{Error, ErrorKind, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A group's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections to the group's servers, pooled or in use.
    pub max_connections: Option<usize>,
    /// Requests waiting for a connection when `max_connections` are all open.
    pub max_pending: usize,
    /// Requests sent and not finished.
    pub max_in_flight: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_connections: None, max_pending: 1024, max_in_flight: None }
    }
}

/// A group's limits and counters, shared by its backends.
#[derive(Debug)]
pub struct GroupLimits {
    limits: Limits,
    connections: Option<Arc<Semaphore>>,
    pending: AtomicUsize,
    in_flight: AtomicUsize,
    rejected: AtomicU64,
    name: String,
}

impl GroupLimits {
    /// Limits for the group `name`.
    pub fn new(name: &str, limits: Limits) -> Self {
        Self {
            limits,
            connections: limits.max_connections.map(|n| Arc::new(Semaphore::new(n))),
            pending: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            name: name.to_owned(),
        }
    }

    /// Requests refused by a limit so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Requests in flight to the group.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn reject(&self, why: String) -> Box<Error> {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(upstream = %self.name, reason = %why, "request refused by a circuit breaker");
        Error::explain(ErrorKind::UpstreamOverloaded, format!("upstream `{}`: {why}", self.name))
    }

    /// Counts a request in flight, unless the group is at its limit.
    pub(crate) fn start_request(&self) -> Result<()> {
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(max) = self.limits.max_in_flight {
            if n > max {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                return Err(self.reject(format!("{max} requests in flight (max-in-flight)")));
            }
        }
        Ok(())
    }

    pub(crate) fn finish_request(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A permit to open one more connection: at once when below `max_connections`,
    /// else after waiting (at most `wait`) as one of at most `max_pending` waiters.
    pub(crate) async fn connection_permit(&self, wait: Duration) -> Result<Option<OwnedSemaphorePermit>> {
        let Some(sem) = &self.connections else { return Ok(None) };
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        let waiting = self.pending.fetch_add(1, Ordering::Relaxed) + 1;
        let result = if waiting > self.limits.max_pending {
            Err(self
                .reject(format!("{} requests already wait for a connection (max-pending)", self.limits.max_pending)))
        } else {
            match tokio::time::timeout(wait, sem.clone().acquire_owned()).await {
                Ok(Ok(p)) => Ok(Some(p)),
                _ => Err(self.reject(format!(
                    "no connection freed within {wait:?} ({} open, max-connections)",
                    self.limits.max_connections.unwrap_or(0)
                ))),
            }
        };
        self.pending.fetch_sub(1, Ordering::Relaxed);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused clock: the waiter's timeout passes without waiting for real.
    #[tokio::test(start_paused = true)]
    async fn in_flight_and_connection_limits_refuse_and_count() {
        let g = GroupLimits::new("g", Limits { max_connections: Some(1), max_pending: 1, max_in_flight: Some(2) });
        g.start_request().unwrap();
        g.start_request().unwrap();
        assert_eq!(g.start_request().unwrap_err().kind(), ErrorKind::UpstreamOverloaded);
        g.finish_request();
        g.start_request().unwrap();

        let held = g.connection_permit(Duration::from_millis(10)).await.unwrap();
        assert!(held.is_some());
        // One waiter is allowed; it times out because the permit is held.
        let err = g.connection_permit(Duration::from_secs(30)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UpstreamOverloaded);
        drop(held);
        assert!(g.connection_permit(Duration::from_millis(10)).await.unwrap().is_some());
        assert_eq!(g.rejected(), 2);
    }

    #[tokio::test]
    async fn unlimited_groups_never_wait() {
        let g = GroupLimits::new("g", Limits::default());
        assert!(g.connection_permit(Duration::ZERO).await.unwrap().is_none());
        for _ in 0..10_000 {
            g.start_request().unwrap();
        }
    }
}
