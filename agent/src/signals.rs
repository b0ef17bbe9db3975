//! The binary's signal handlers (the library installs none: a test or an embedding program
//! keeps its own): SIGTERM and Ctrl-C stop the agent, SIGHUP reloads its rules.

use tokio_util::sync::CancellationToken;

/// Cancelled on Ctrl-C or SIGTERM (what systemd sends). Needs a running runtime.
pub(crate) fn shutdown() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        terminated().await;
        cancel.cancel();
    });
    token
}

/// A reload request per SIGHUP. Installed here, by the binary: the library catches no signal
/// (a test or an embedding program keeps its own).
pub(crate) fn reloads() -> tokio::sync::mpsc::Receiver<edgewatch::reload::Trigger> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    // A reload already waiting covers this one too.
                    let _ = tx.try_send(edgewatch::reload::Trigger::Signal);
                }
            });
        }
        Err(error) => tracing::error!(%error, "Cannot listen for SIGHUP; reload by saving a rule file."),
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// Completes on Ctrl-C or SIGTERM (what systemd sends).
async fn terminated() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "Cannot listen for Ctrl-C.");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down."),
        _ = term => tracing::info!("SIGTERM: shutting down."),
    }
}
