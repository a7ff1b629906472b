//! `sekisho quickstart`: the demo upstream beside the service, on the quickstart configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use sekisho::quickstart;

/// `sekisho quickstart`: prepares the state directory, starts the demo upstream and runs the
/// quickstart configuration.
pub(super) fn run(dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let dir = dir.unwrap_or_else(quickstart::default_dir);
    let prepared = quickstart::prepare(&dir)
        .with_context(|| format!("preparing the quickstart state in {}", dir.display()))?;
    let config = super::load_config(&prepared.config)?;
    let verifier = quickstart::whoami::Verifier {
        jwks_url: format!("{}.well-known/sekisho/jwks.json", quickstart::URL),
        issuer: config.signing.issuer.clone(),
        audiences: config.routes.iter().map(|r| r.id.clone()).collect(),
    };
    let banner = quickstart::banner(&prepared, &dir);
    super::runtime()?.block_on(async move {
        let whoami = tokio::net::TcpListener::bind(quickstart::WHOAMI_LISTEN)
            .await
            .with_context(|| {
                format!(
                    "the demo upstream cannot listen on {}",
                    quickstart::WHOAMI_LISTEN
                )
            })?;
        tokio::spawn(quickstart::whoami::serve(whoami, verifier));
        super::serve::serve(config, prepared.config, || {
            use std::io::Write as _;
            println!("{banner}");
            let _ = std::io::stdout().flush();
        })
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}
