//! The built-in OpenID provider's commands: `idp rotate-key`, and the account secrets
//! `hash-password` and `gen-totp-secret` print for `identity_provider.users[]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

// The doc comments of the variants are the commands' help texts.
#[derive(Subcommand)]
pub(super) enum IdpCommand {
    /// Add a new signing key: it signs from the provider's next reload (SIGHUP) or restart;
    /// the previous key stays published until the tokens it signed have expired.
    RotateKey {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
}

/// Runs an `idp` subcommand.
pub(super) fn run(command: IdpCommand) -> anyhow::Result<ExitCode> {
    match command {
        IdpCommand::RotateKey { config } => {
            let kid = rotate_key(&config)?;
            println!("{kid}");
            eprintln!(
                "new signing key {kid}; it signs once the provider reloads (SIGHUP) or restarts"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `sekisho idp rotate-key`: the new key's id.
fn rotate_key(path: &Path) -> anyhow::Result<String> {
    let config = super::load_config(path)?;
    let idp = config
        .identity_provider
        .context("the configuration has no identity_provider section")?;
    let now = sekisho::session::unix_now();
    Ok(sekisho::idp::add_key(&idp.state_dir.join("keys"), now)?)
}

/// `sekisho hash-password`: the password from the terminal (no echo, twice) or standard input.
pub(super) fn hash_password() -> anyhow::Result<ExitCode> {
    use std::io::{BufRead as _, Read as _, Write as _};
    let stdin = std::io::stdin();
    let password = if rustix::termios::isatty(&stdin) {
        let ask = |prompt: &str| -> anyhow::Result<String> {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
            let saved = rustix::termios::tcgetattr(&stdin).context("reading terminal settings")?;
            let mut quiet = saved.clone();
            quiet.local_modes -= rustix::termios::LocalModes::ECHO;
            rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)
                .context("turning echo off")?;
            let mut line = String::new();
            let read = stdin.lock().read_line(&mut line);
            let restored =
                rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &saved);
            eprintln!();
            read.context("reading the password")?;
            restored.context("restoring terminal settings")?;
            Ok(line.trim_end_matches(['\n', '\r']).to_owned())
        };
        let first = ask("Password: ")?;
        let second = ask("Again: ")?;
        anyhow::ensure!(first == second, "the passwords differ");
        first
    } else {
        let mut text = String::new();
        stdin
            .lock()
            .take(sekisho::idp::MAX_PASSWORD as u64 + 2)
            .read_to_string(&mut text)
            .context("reading the password from standard input")?;
        text.strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text)
            .to_owned()
    };
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    anyhow::ensure!(
        password.len() <= sekisho::idp::MAX_PASSWORD,
        "the password is longer than {} bytes",
        sekisho::idp::MAX_PASSWORD
    );
    println!("{}", sekisho::idp::hash_password(&password)?);
    Ok(ExitCode::SUCCESS)
}

/// `sekisho gen-totp-secret`: a new secret (base32) and the otpauth:// URI of the account.
pub(super) fn gen_totp_secret(account: &str, issuer: &str) -> anyhow::Result<ExitCode> {
    let secret =
        sekisho::idp::totp::generate_secret().context("the system random source failed")?;
    let label_text = format!("{issuer}:{account}");
    let label =
        percent_encoding::utf8_percent_encode(&label_text, percent_encoding::NON_ALPHANUMERIC);
    let issuer_param =
        percent_encoding::utf8_percent_encode(issuer, percent_encoding::NON_ALPHANUMERIC);
    println!("{secret}");
    println!(
        "otpauth://totp/{label}?secret={secret}&issuer={issuer_param}&algorithm=SHA1&digits=6&period=30"
    );
    Ok(ExitCode::SUCCESS)
}
