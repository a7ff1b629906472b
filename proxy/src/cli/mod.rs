//! The command line: the clap types of the top-level commands and their dispatch. Each family
//! of commands lives in its own module, with its subcommand types; the running service itself
//! is the library's [`sekisho::app::App`].

mod audit;
mod client;
mod config;
mod deploy;
mod idp;
mod policy;
mod quickstart;
mod serve;
mod xdp;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

// No doc comment: clap would show it as the long help, in place of `about`.
#[derive(Parser)]
#[command(
    name = "sekisho",
    version,
    about = "Zero-trust, identity-aware access proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// The doc comments of the variants are the commands' help texts.
#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration file and print its routes; with --systemd or --kubernetes,
    /// check a deployment against the configuration it runs (exit status 1 on errors).
    Check {
        /// Configuration file (with --systemd: else the one ExecStart names; with
        /// --kubernetes: else the ConfigMap each sekisho container mounts).
        #[arg(short, long, required_unless_present_any = ["systemd", "kubernetes"])]
        config: Option<PathBuf>,
        /// A systemd unit and its drop-ins, in the order systemd applies them.
        #[arg(long, num_args = 1.., conflicts_with = "kubernetes")]
        systemd: Vec<PathBuf>,
        /// Kubernetes manifests (several documents per file are fine).
        #[arg(long, num_args = 1..)]
        kubernetes: Vec<PathBuf>,
    },
    /// Test and explain policies.
    #[command(subcommand)]
    Policy(Box<policy::PolicyCommand>),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Print a new random session-cookie key (base64, 32 bytes).
    GenCookieKey,
    /// Print a new ECDSA P-256 assertion signing key (PKCS#8 PEM).
    GenSigningKey,
    /// Print the Argon2id hash of a password for `identity_provider.users[].password_hash`.
    /// The password is read from the terminal (not echoed, asked twice) or from standard input,
    /// never from the command line.
    HashPassword,
    /// Print a new TOTP secret (base32) for `identity_provider.users[].totp_secret`, and the
    /// otpauth:// URI an authenticator app imports.
    GenTotpSecret {
        /// The account name shown in the authenticator app.
        #[arg(long)]
        account: String,
        /// The issuer name shown in the authenticator app.
        #[arg(long, default_value = "sekisho")]
        issuer: String,
    },
    /// Built-in OpenID provider tools.
    #[command(subcommand)]
    Idp(idp::IdpCommand),
    /// Sign this command line in to a proxy through the browser, for `sekisho tcp`.
    Login(client::login::LoginArgs),
    /// Sign out of a proxy: end the session there and remove its stored credential.
    Logout(client::login::LogoutArgs),
    /// Reach a TCP service behind a proxy through an identity-aware tunnel: on standard
    /// input and output (`--stdio`, for ssh's ProxyCommand) or on a local port (`--listen`).
    Tcp(client::tcp::TcpArgs),
    /// The NIC guard of a running sekisho: its pinned maps, read and changed by hand.
    #[command(subcommand)]
    Xdp(xdp::XdpCommand),
    /// Run the quickstart: the proxy, its built-in OpenID provider with two demo users and a
    /// demo upstream, on http://127.0.0.1:8080, with secrets generated into a state directory
    /// on first run and kept.
    Quickstart {
        /// State directory (default: $XDG_STATE_HOME/sekisho/quickstart, else
        /// ~/.local/state/sekisho/quickstart).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Parses the command line and runs the command. A command that fails prints `error: ` and
/// the cause chain on standard error and exits 1; a check that fails (a policy case, an audit
/// verification) exits 1 after its report.
pub fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Run { config } => serve::run(&config),
        Command::Check {
            config,
            systemd,
            kubernetes,
        } => config::check(config.as_deref(), &systemd, &kubernetes),
        Command::Policy(command) => policy::run(*command),
        Command::Audit(command) => audit::run(command),
        Command::GenCookieKey => config::gen_cookie_key(),
        Command::GenSigningKey => config::gen_signing_key(),
        Command::HashPassword => idp::hash_password(),
        Command::GenTotpSecret { account, issuer } => idp::gen_totp_secret(&account, &issuer),
        Command::Idp(command) => idp::run(command),
        Command::Quickstart { dir } => quickstart::run(dir),
        Command::Xdp(command) => xdp::run(command),
        Command::Login(args) => client::login::login(args),
        Command::Logout(args) => client::login::logout(args),
        Command::Tcp(args) => client::tcp::run(args),
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

/// Loads a configuration to run from (secrets resolved).
fn load_config(path: &Path) -> anyhow::Result<sekisho_config::Config> {
    sekisho_config::load(path).map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))
}

/// Logs to standard error, filtered by `SEKISHO_LOG` (default `info`).
fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEKISHO_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The multi-threaded runtime the service runs on.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Requests are served by the listeners' own worker threads (`server.rs`, one per core);
    // this runtime carries the admin listener and background work, and one thread is plenty.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")
}
