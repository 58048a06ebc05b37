//! Process-wide graceful shutdown: a signal every task can wait on, and a way to wait
//! until every holder of that signal (each listener and each connection) is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// Creates a shutdown trigger and the first watcher.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    let flag = Arc::new(AtomicBool::new(false));
    (ShutdownTrigger { tx, flag: flag.clone() }, Shutdown { rx, flag })
}

/// Starts a shutdown and waits for it to drain.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
    /// The same state as the channel, readable with one load (checked per request).
    flag: Arc<AtomicBool>,
}

impl ShutdownTrigger {
    /// Tells every watcher to stop accepting work and finish what it has.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::Release);
        self.tx.send_replace(true);
    }

    /// Whether [`trigger`](Self::trigger) has been called.
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Resolves once every [`Shutdown`] clone has been dropped (all connections closed).
    pub async fn drained(&self) {
        self.tx.closed().await;
    }

    /// How many watchers (listeners + connections) are still alive.
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// A new watcher.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown { rx: self.tx.subscribe(), flag: self.flag.clone() }
    }
}

/// A watcher of the shutdown signal; holding one keeps [`ShutdownTrigger::drained`] waiting.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    /// Whether shutdown has started (one atomic load).
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// The flag behind [`is_triggered`](Self::is_triggered), for code that must check it
    /// without holding a watcher (which would keep the drain waiting).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// Resolves when shutdown starts (immediately if it already has).
    pub async fn triggered(&mut self) {
        // An error means the trigger was dropped: treat that as a shutdown too.
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drained_waits_for_every_watcher() {
        let (trigger, shutdown) = channel();
        let mut a = shutdown.clone();
        drop(shutdown);
        let waiter = tokio::spawn(async move {
            a.triggered().await;
            drop(a);
        });
        trigger.trigger();
        trigger.drained().await;
        waiter.await.unwrap();
        assert_eq!(trigger.watchers(), 0);
    }
}
