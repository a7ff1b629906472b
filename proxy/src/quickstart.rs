//! `sekisho quickstart`: a state directory with generated secrets (kept across runs) and the
//! configuration `examples/quickstart.yaml` written into it, plus the demo upstream
//! ([`whoami`]). The binary then runs that configuration like `sekisho run` would.

pub mod whoami;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::idp::{KeyError, hash_password};

/// The configuration the quickstart runs.
pub const CONFIG: &str = include_str!("../../examples/quickstart.yaml");
/// Where the demo upstream listens (the routes of [`CONFIG`] point there).
pub const WHOAMI_LISTEN: &str = "127.0.0.1:8081";
/// The address to open.
pub const URL: &str = "http://127.0.0.1:8080/";
/// The demo users: username and groups (their passwords are generated).
pub const USERS: &[(&str, &[&str])] = &[("alice", &["eng", "admins"]), ("bob", &["sales"])];

/// Why the state directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum QuickstartError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A key or hash could not be made.
    #[error("{0}")]
    Generate(String),
}

impl From<KeyError> for QuickstartError {
    fn from(e: KeyError) -> Self {
        Self::Generate(e.to_string())
    }
}

/// A prepared state directory.
#[derive(Debug)]
pub struct Prepared {
    /// The configuration file to run.
    pub config: PathBuf,
    /// Each demo user's username, password and groups.
    pub users: Vec<(String, String, Vec<String>)>,
}

/// The default state directory: `$XDG_STATE_HOME/sekisho/quickstart`, else
/// `~/.local/state/sekisho/quickstart`, else `.sekisho-quickstart`.
pub fn default_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(state).join("sekisho/quickstart");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/sekisho/quickstart"),
        None => PathBuf::from(".sekisho-quickstart"),
    }
}

/// Fills `dir`: keys and passwords are made when missing and kept otherwise; the configuration
/// is written every time (so it matches this binary).
pub fn prepare(dir: &Path) -> Result<Prepared, QuickstartError> {
    crate::idp::create_private_dir(dir)?;
    keep(dir, "cookie.key", || Ok(STANDARD.encode(random(32)?)))?;
    keep(dir, "signing.pem", || {
        crate::assertion::generate_pem()
            .ok_or_else(|| QuickstartError::Generate("key generation failed".into()))
    })?;
    keep(dir, "client-secret", || {
        Ok(URL_SAFE_NO_PAD.encode(random(32)?))
    })?;
    let mut users = Vec::new();
    for (name, groups) in USERS {
        let password = keep(dir, &format!("{name}.password"), || {
            // 72 bits, in a form that is easy to type.
            Ok(URL_SAFE_NO_PAD.encode(random(9)?))
        })?;
        let hash_file = dir.join(format!("{name}.hash"));
        let current = std::fs::read_to_string(&hash_file).unwrap_or_default();
        if !crate::idp::verify_password_blocking(current.trim(), &password) {
            let hash =
                hash_password(&password).map_err(|e| QuickstartError::Generate(e.to_string()))?;
            crate::idp::write_private_file(&hash_file, hash.as_bytes())?;
        }
        users.push((
            (*name).to_owned(),
            password,
            groups.iter().map(|g| (*g).to_owned()).collect(),
        ));
    }
    let config = dir.join("quickstart.yaml");
    std::fs::write(&config, CONFIG).map_err(|source| QuickstartError::Io {
        path: config.display().to_string(),
        source,
    })?;
    Ok(Prepared { config, users })
}

/// The text of `dir/name`, made by `make` (and written, owner-only) when missing or empty.
fn keep(
    dir: &Path,
    name: &str,
    make: impl FnOnce() -> Result<String, QuickstartError>,
) -> Result<String, QuickstartError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => write_new(&path, make),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_new(&path, make),
        Err(source) => Err(QuickstartError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn write_new(
    path: &Path,
    make: impl FnOnce() -> Result<String, QuickstartError>,
) -> Result<String, QuickstartError> {
    let value = make()?;
    crate::idp::write_private_file(path, value.as_bytes())?;
    Ok(value.trim().to_owned())
}

fn random(len: usize) -> Result<Vec<u8>, QuickstartError> {
    let mut bytes = vec![0u8; len];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| QuickstartError::Generate("the system random source failed".into()))?;
    Ok(bytes)
}

/// The lines printed once sekisho listens.
pub fn banner(prepared: &Prepared, dir: &Path) -> String {
    let mut out = String::new();
    out.push_str("\n  sekisho quickstart\n  ------------------\n");
    out.push_str(&format!(
        "  Open {URL} and sign in as one of the demo users:\n"
    ));
    for (name, password, groups) in &prepared.users {
        let admin = if groups.iter().any(|g| g == "admins") {
            "may open /admin"
        } else {
            "is denied /admin"
        };
        out.push_str(&format!(
            "    {name:<6} password: {password}   (groups: {}; {admin})\n",
            groups.join(", ")
        ));
    }
    out.push_str(&format!("  Admin page:  {URL}admin\n"));
    out.push_str(&format!("  Sign out:    {URL}.sekisho/logout\n"));
    out.push_str(
        "  Audit log:   http://127.0.0.1:8082/ (review page, for admins; metrics at /metrics)\n",
    );
    out.push_str(&format!(
        "  Provider:    {URL}.sekisho/idp/.well-known/openid-configuration\n"
    ));
    out.push_str(&format!(
        "  State (config, keys, passwords): {}\n  Ctrl-C stops it.\n",
        dir.display()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_generated_once_and_kept() {
        let dir = std::env::temp_dir().join(format!(
            "sekisho-quickstart-{}",
            URL_SAFE_NO_PAD.encode(random(6).unwrap_or_default())
        ));
        let first = prepare(&dir).unwrap_or_else(|e| panic!("{e}"));
        let second = prepare(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.users, second.users);
        assert_eq!(first.users.len(), 2);
        let config = sekisho_config::load(&first.config).unwrap_or_else(|e| panic!("{e}"));
        let idp = config
            .identity_provider
            .unwrap_or_else(|| panic!("no provider"));
        assert_eq!(idp.users.len(), 2);
        for (name, password, _) in &first.users {
            let user = idp.users.iter().find(|u| &u.username == name);
            let hash = user
                .map(|u| u.password_hash.expose().to_owned())
                .unwrap_or_default();
            assert!(
                crate::idp::verify_password_blocking(&hash, password),
                "{name}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
