//! The configuration file's commands: `check` validates one, `gen-cookie-key` and
//! `gen-signing-key` print the secrets it needs.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;

/// `sekisho check`: every error of the file, or its summary.
pub(super) fn check(path: &Path) -> anyhow::Result<ExitCode> {
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
