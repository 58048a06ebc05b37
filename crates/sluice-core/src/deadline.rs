//! A lazily re-armed deadline for per-request timeouts on long-lived objects.
//!
//! Resetting a tokio timer touches the shared timer wheel. On a keep-alive connection a
//! timeout is armed for every request although it almost never fires, so [`Deadline`]
//! keeps one registered sleep and only *records* a later deadline; when the sleep fires
//! before the recorded deadline it is re-armed then. A connection thus costs one wheel
//! update per timeout period instead of one per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// A deadline that can be moved later cheaply. Allocates its timer on first use.
#[derive(Debug, Default)]
pub struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
    at: Option<Instant>,
}

impl Deadline {
    /// Sets the deadline (earlier or later than the current one).
    pub fn set(&mut self, at: Instant) {
        self.at = Some(at);
        match &mut self.sleep {
            Some(sleep) if sleep.deadline() > at => sleep.as_mut().reset(at),
            Some(_) => {}
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Clears the deadline; the registered sleep is kept for reuse.
    pub fn clear(&mut self) {
        self.at = None;
    }

    /// The deadline, if set.
    pub fn get(&self) -> Option<Instant> {
        self.at
    }

    /// Ready once the deadline has passed; pending (forever) when none is set.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (Some(at), Some(sleep)) = (self.at, self.sleep.as_mut()) else { return Poll::Pending };
        loop {
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if Instant::now() >= at => return Poll::Ready(()),
                Poll::Ready(()) => sleep.as_mut().reset(at),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_is_honoured_without_rearming_early() {
        let start = Instant::now();
        let mut d = Deadline::default();
        d.set(start + Duration::from_secs(10));
        d.set(start + Duration::from_secs(30));
        std::future::poll_fn(|cx| d.poll_expired(cx)).await;
        assert!(start.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_rearms() {
        let start = Instant::now();
        let mut d = Deadline::default();
        d.set(start + Duration::from_secs(30));
        d.set(start + Duration::from_secs(5));
        std::future::poll_fn(|cx| d.poll_expired(cx)).await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(30), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn cleared_deadlines_never_fire() {
        let mut d = Deadline::default();
        d.set(Instant::now() + Duration::from_secs(1));
        d.clear();
        let r = tokio::time::timeout(Duration::from_secs(5), std::future::poll_fn(|cx| d.poll_expired(cx))).await;
        assert!(r.is_err());
    }
}
