//! Telling sessions that the server is going down.

use tokio::sync::watch;

/// Resolves when the server should shut down; every session holds a copy.
///
/// A session selects on [`ShutdownSignal::wait`] next to its read, finishes
/// the command it is in, says goodbye in its protocol (SMTP `421`, IMAP
/// `* BYE`) and returns. The server waits for that up to its grace period.
#[derive(Clone, Debug)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
}

impl ShutdownSignal {
    /// A trigger and the signal it fires.
    pub(crate) fn channel() -> (watch::Sender<bool>, ShutdownSignal) {
        let (tx, rx) = watch::channel(false);
        (tx, ShutdownSignal { rx })
    }

    /// Waits until shutdown starts; returns at once if it already has.
    /// Cancel-safe, so it can sit in a `select!` loop.
    pub async fn wait(&mut self) {
        // An error means the server is gone, which is a shutdown too.
        let _ = self.rx.wait_for(|down| *down).await;
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or, on Unix, SIGTERM: the usual
/// `shutdown` future to pass to [`crate::Server::run`]. If the signal
/// handlers cannot be installed it logs an error and never resolves.
pub async fn termination_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
