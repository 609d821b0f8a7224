//! Graceful shutdown: one signal, then stop accepting, drain with a deadline,
//! stop background tasks, close pools.

use std::future::Future;
use std::time::Duration;

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "listening for ctrl-c failed");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "listening for SIGTERM failed");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received ctrl-c, shutting down"),
        () = term => tracing::info!("received SIGTERM, shutting down"),
    }
}

/// Runs `serving` (which must stop accepting and drain once `stop` fires) and,
/// once `stop` has fired, gives it at most `grace` to finish.
pub async fn drain_with_deadline<S, F>(serving: S, stop: F, grace: Duration)
where
    S: Future<Output = ()>,
    F: Future<Output = ()>,
{
    tokio::pin!(serving);
    tokio::select! {
        () = &mut serving => return,
        () = stop => {}
    }
    if tokio::time::timeout(grace, serving).await.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "drain deadline passed, closing remaining requests"
        );
    }
}
