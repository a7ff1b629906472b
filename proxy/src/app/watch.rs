//! Configuration reloads: on SIGHUP and whenever the file's contents change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audit::{Event, Lifecycle};
use crate::proxy::Proxy;

/// Reloads routes and policies on SIGHUP and whenever the configuration file changes (checked
/// every second). An invalid file is reported in full and the running set is kept; the refusal
/// is an unsuccessful reload record (a successful reload is recorded by [`Proxy::reload`]).
pub(super) async fn watch_config(path: PathBuf, proxy: Arc<Proxy>) {
    let mut last = fingerprint(&path);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        #[cfg(unix)]
        let signalled = match hangup.as_mut() {
            Some(h) => tokio::select! {
                _ = h.recv() => true,
                _ = tick.tick() => false,
            },
            None => {
                tick.tick().await;
                false
            }
        };
        #[cfg(not(unix))]
        let signalled = {
            tick.tick().await;
            false
        };
        let current = fingerprint(&path);
        if !signalled && current == last {
            continue;
        }
        last = current;
        match sekisho_config::load(&path) {
            Ok(config) => match proxy.reload(&config) {
                Ok(routes) => {
                    tracing::info!(routes, file = %path.display(), "configuration reloaded")
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration not reloaded; keeping the running routes");
                    proxy.record(Event::lifecycle(
                        Lifecycle::Reload,
                        false,
                        format!("configuration not reloaded: {e}"),
                    ));
                }
            },
            Err(errors) => {
                for error in &errors.errors {
                    tracing::error!(%error, "configuration not reloaded; keeping the running routes");
                }
                let first = errors
                    .errors
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                proxy.record(Event::lifecycle(
                    Lifecycle::Reload,
                    false,
                    format!(
                        "configuration not reloaded ({} errors; first: {first})",
                        errors.errors.len()
                    ),
                ));
            }
        }
    }
}

/// The SHA-256 of the file's contents, or `None` while it cannot be read.
fn fingerprint(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok().map(|bytes| {
        ring::digest::digest(&ring::digest::SHA256, &bytes)
            .as_ref()
            .to_vec()
    })
}
