//! The shutdown signal: SIGTERM or SIGINT (Ctrl-C elsewhere), listened for from the moment it
//! is asked for.

use super::AppError;

/// SIGTERM or SIGINT, registered now: a signal that arrives after this returns (say, right
/// after the readiness line) stops the proxy gracefully instead of killing it by default.
#[cfg(unix)]
pub(super) fn signal() -> Result<impl Future<Output = ()>, AppError> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| AppError::Signal {
            signal: name,
            source,
        })
    };
    let mut term = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut int = listen(SignalKind::interrupt(), "SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Ctrl-C.
#[cfg(not(unix))]
pub(super) fn signal() -> Result<impl Future<Output = ()>, AppError> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
