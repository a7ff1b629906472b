//! `sekisho run`: the service ([`App`]) from a configuration file, with its readiness line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sekisho::app::{Addresses, App};

/// `sekisho run`.
pub(super) fn run(path: &Path) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let config = super::load_config(path)?;
    super::runtime()?.block_on(serve(config, path.to_owned(), || {}))?;
    Ok(ExitCode::SUCCESS)
}

/// Starts [`App`] and serves until SIGINT/SIGTERM. Once the signals are listened for, prints
/// the readiness line and calls `ready`.
pub(super) async fn serve(
    config: sekisho_config::Config,
    path: PathBuf,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    // Transparent huge pages off for this process (the allocator asks for them), unless
    // MIMALLOC_ALLOW_THP says otherwise (the allocator reads it too: 0 off, 1 on). With them, the
    // kernel backs the heap 2 MiB at a time, so the untouched part of every connection's buffers
    // is resident: an idle HTTP/2 connection measured 41 KiB of RSS with them, 25 without. The
    // measured costs are in tests/bench/README.md.
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none()
        && let Err(e) = rustix::thread::disable_transparent_huge_pages(true)
    {
        tracing::warn!(error = %e, "could not turn transparent huge pages off; idle connections will hold more memory");
    }
    let app = App::start(config, path).await?;
    app.run(|addresses| {
        println!("{}", readiness_line(addresses));
        ready();
    })
    .await?;
    Ok(())
}

/// One machine-readable line for stdout: tests and scripts read the bound ports from it.
fn readiness_line(addresses: Addresses) -> serde_json::Value {
    let text = |address: Option<std::net::SocketAddr>| address.map(|a| a.to_string());
    serde_json::json!({
        "event": "listening",
        "http": text(addresses.http),
        "https": text(addresses.https),
        "admin": text(addresses.admin),
    })
}
