//! The shutdown signal that reaches upgraded WebSocket tasks, which warp's graceful
//! shutdown does not. Every socket task holds a clone of `Shutdown`: it learns from it
//! when to close, and the last clone dropped tells the server that every socket closed
//! (the pattern of mini-redis).

use tokio::sync::{mpsc, watch};

/// Held by every socket task.
#[derive(Debug, Clone)]
pub struct Shutdown {
    notify: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

impl Shutdown {
    /// Resolves once shutdown has begun.
    pub async fn recv(&mut self) {
        // An error means the trigger is gone, which is a shutdown too.
        let _ = self.notify.wait_for(|down| *down).await;
    }
}

/// Starts the shutdown.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// Resolves when every `Shutdown` clone is gone.
#[derive(Debug)]
pub struct AllClosed(mpsc::Receiver<()>);

impl AllClosed {
    pub async fn wait(mut self) {
        let _ = self.0.recv().await;
    }
}

pub fn channel() -> (Trigger, Shutdown, AllClosed) {
    let (notify_tx, notify) = watch::channel(false);
    let (alive, all_closed) = mpsc::channel(1);
    (
        Trigger(notify_tx),
        Shutdown {
            notify,
            _alive: alive,
        },
        AllClosed(all_closed),
    )
}
