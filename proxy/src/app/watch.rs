//! Reloads: the configuration on SIGHUP and whenever the file's contents change; the TLS
//! listener's certificates and keys then too, and whenever their files change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audit::{Event, Lifecycle};
use crate::proxy::Proxy;
use crate::server::{Certificates, FilesState};

/// Reloads routes and policies on SIGHUP and whenever the configuration file changes (checked
/// every second). An invalid file is reported in full and the running set is kept; the refusal
/// is an unsuccessful reload record (a successful reload is recorded by [`Proxy::reload`]).
/// `certificates` are read again at each of those, and when their files change
/// ([`CertificateWatch`]).
pub(super) async fn watch_config(
    path: PathBuf,
    proxy: Arc<Proxy>,
    certificates: Option<Arc<Certificates>>,
) {
    let mut certificates = certificates.map(CertificateWatch::new);
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
        let changed = current != last;
        if let Some(certificates) = &mut certificates {
            certificates.poll(&proxy, signalled || changed);
        }
        if !signalled && !changed {
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

/// The TLS certificates and the state of their files, polled every second.
///
/// A change is acted on once the files have stayed the same for one poll, so that replacing a
/// certificate and then its key is read as one change, not as a mismatched pair in between.
/// A reload is recorded (success or refusal) in the audit log; a refused set leaves the running
/// one in place and is not retried until the files change again (or the next SIGHUP).
struct CertificateWatch {
    certificates: Arc<Certificates>,
    /// The files as they were when last read.
    loaded: FilesState,
    /// The files as they were at the previous poll.
    seen: FilesState,
}

impl CertificateWatch {
    fn new(certificates: Arc<Certificates>) -> Self {
        let state = certificates.files_state();
        CertificateWatch {
            certificates,
            loaded: state.clone(),
            seen: state,
        }
    }

    /// Reloads when `forced` (SIGHUP, a configuration change) or when the files changed and
    /// have settled.
    fn poll(&mut self, proxy: &Proxy, forced: bool) {
        let now = self.certificates.files_state();
        let settled = now == self.seen;
        self.seen = now.clone();
        let changed = settled && now != self.loaded;
        if !forced && !changed {
            return;
        }
        self.loaded = now;
        match self.certificates.reload() {
            Ok(names) => {
                tracing::info!(names = ?names, "TLS certificates reloaded; new handshakes use them");
                proxy.record(Event::lifecycle(
                    Lifecycle::Reload,
                    true,
                    format!("TLS certificates reloaded (names: {})", names.join(", ")),
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificates not reloaded; the running ones stay in use");
                proxy.record(Event::lifecycle(
                    Lifecycle::Reload,
                    false,
                    format!("TLS certificates not reloaded, the running ones stay in use: {e}"),
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
