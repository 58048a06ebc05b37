//! Process-wide graceful shutdown: a signal every task can wait on, and a way to wait
//! until every holder of that signal (each listener and each connection) is gone.

use tokio::sync::watch;

/// Creates a shutdown trigger and the first watcher.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

/// Starts a shutdown and waits for it to drain.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl ShutdownTrigger {
    /// Tells every watcher to stop accepting work and finish what it has.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
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
        Shutdown { rx: self.tx.subscribe() }
    }
}

/// A watcher of the shutdown signal; holding one keeps [`ShutdownTrigger::drained`] waiting.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
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
