//! The `sekisho` command: `run` the proxy, `check` a configuration, generate keys.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Parser, Subcommand};
use sekisho::proxy::Proxy;
use sekisho::server::Listeners;

#[derive(Parser)]
#[command(name = "sekisho", version, about = "Zero-trust, identity-aware access proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration file and print its routes.
    Check {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print a new random session-cookie key (base64, 32 bytes).
    GenCookieKey,
    /// Print a new ECDSA P-256 assertion signing key (PKCS#8 PEM).
    GenSigningKey,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match sekisho_config::load(&config) {
            Ok(config) => {
                println!("{}", config.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::GenCookieKey => {
            let mut key = [0u8; 32];
            if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).is_err() {
                eprintln!("error: the system random source failed");
                return ExitCode::FAILURE;
            }
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        Command::GenSigningKey => match sekisho::assertion::generate_pem() {
            Some(pem) => {
                print!("{pem}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("error: key generation failed");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SEKISHO_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let config = match sekisho_config::load(&path) {
        Ok(c) => c,
        Err(errors) => anyhow::bail!("invalid configuration:\n{errors}"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        let timeouts = config.server.timeouts;
        let listeners = Listeners::bind(&config).await?;
        let proxy = Arc::new(Proxy::new(config)?);
        if let Err(e) = proxy.oidc().discover().await {
            tracing::warn!(error = %e, "provider discovery failed at startup; retrying on demand");
        }
        let (http, https) = listeners.addresses();
        // One machine-readable line on stdout: tests and scripts read the bound ports from it.
        println!(
            "{}",
            serde_json::json!({ "event": "listening", "http": http.map(|a| a.to_string()), "https": https.map(|a| a.to_string()) })
        );
        tracing::info!(?http, ?https, "sekisho listening");
        listeners.serve(proxy, timeouts, shutdown_signal()).await;
        tracing::info!("sekisho stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
