//! The configuration file's commands: `check` validates one, `gen-cookie-key` and
//! `gen-signing-key` print the secrets it needs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;

/// `sekisho check`: every error of the file, or its summary; with `systemd` or `kubernetes`
/// files, every finding of the deployment against the configuration it runs.
pub(super) fn check(
    path: Option<&Path>,
    systemd: &[PathBuf],
    kubernetes: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let findings = if !systemd.is_empty() {
        super::deploy::systemd(systemd, path)
    } else if !kubernetes.is_empty() {
        super::deploy::kubernetes(kubernetes, path)
    } else {
        let path = path.context("a configuration file (-c FILE) is needed")?;
        return check_config(path);
    };
    let errors = findings
        .iter()
        .filter(|f| f.level == super::deploy::Level::Error)
        .count();
    for finding in &findings {
        eprintln!("{finding}");
    }
    let files: Vec<String> = systemd
        .iter()
        .chain(kubernetes)
        .map(|f| f.display().to_string())
        .collect();
    if errors > 0 {
        eprintln!(
            "{}: {errors} errors, {} warnings",
            files.join(", "),
            findings.len() - errors
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("{}: ok ({} warnings)", files.join(", "), findings.len());
    Ok(ExitCode::SUCCESS)
}

/// The configuration file alone.
fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    match sekisho_config::load(path) {
        Ok(config) => {
            println!("{}", config.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{errors}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `sekisho gen-cookie-key`: 32 random bytes, base64.
pub(super) fn gen_cookie_key() -> anyhow::Result<ExitCode> {
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
    Ok(ExitCode::SUCCESS)
}

/// `sekisho gen-signing-key`: an ECDSA P-256 key, PKCS#8 PEM.
pub(super) fn gen_signing_key() -> anyhow::Result<ExitCode> {
    let pem = sekisho::assertion::generate_pem().context("key generation failed")?;
    print!("{pem}");
    Ok(ExitCode::SUCCESS)
}
