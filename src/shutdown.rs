//! Graceful shutdown: once triggered, every server stops accepting and lets
//! in-flight checks finish. Kept apart so every server shares one trigger; what
//! triggers it (signals, a test) is the caller's business.

use tokio::sync::watch;

/// A shutdown trigger that any number of servers can wait on.
#[derive(Clone)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { sender: watch::channel(false).0 }
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Resolves once [`Shutdown::trigger`] has been called.
    pub async fn wait(&self) {
        let mut receiver = self.sender.subscribe();
        let _ = receiver.wait_for(|stop| *stop).await;
    }

    /// Triggers once `signal` resolves.
    pub fn when(&self, signal: impl Future<Output = ()> + Send + 'static) {
        let this = self.clone();
        tokio::spawn(async move {
            signal.await;
            this.trigger();
        });
    }
}
