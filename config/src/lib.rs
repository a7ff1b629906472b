//! sekisho's configuration: one YAML file parsed into validated types ([`Config`]), with every
//! error reported at once by file, line, column and field.
//!
//! [`load`] reads a file and takes secrets from the process environment; [`parse`] does the
//! same from text and an environment lookup the caller provides (tests, `sekisho check`).
#![forbid(unsafe_code)]

pub mod base32;
mod error;
mod model;
mod parse;
pub mod path;
pub mod policy;
mod summary;
mod value;
mod walk;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

/// Reads and parses the configuration file at `path`. Relative paths in it are resolved against
/// its directory and `{env: VAR}` secrets are read from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let source = read(path)?;
    parse(&source, path, &|name| std::env::var(name).ok())
}

/// Parses `source`, the text of the configuration file `file` (which need not exist: it names
/// the file in errors and its directory anchors relative paths). `env` looks up the
/// environment variables named by `{env: VAR}` secrets.
pub fn parse(
    source: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    parse::document(source, file, env, parse::Secrets::Resolve)
        .map_err(|errors| ConfigErrors { errors })
}

/// Like [`load`], but secrets are neither read nor validated: every secret field holds a
/// placeholder (empty text, zero keys). For tools that only look at routes and policies
/// (`sekisho policy test`, `sekisho policy explain`), so that testing a policy never needs the
/// production secrets. Never run a proxy from the result.
pub fn load_without_secrets(path: &Path) -> Result<Config, ConfigErrors> {
    let source = read(path)?;
    parse::document(&source, path, &|_| None, parse::Secrets::Placeholders)
        .map_err(|errors| ConfigErrors { errors })
}

/// Like [`parse`], but secrets are neither read nor validated (as [`load_without_secrets`]):
/// for a configuration carried elsewhere, such as a Kubernetes ConfigMap.
pub fn parse_without_secrets(source: &str, file: &Path) -> Result<Config, ConfigErrors> {
    parse::document(source, file, &|_| None, parse::Secrets::Placeholders)
        .map_err(|errors| ConfigErrors { errors })
}

/// The text of the configuration file, or the error naming it.
fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|source| ConfigErrors {
        errors: vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: error::Problem::Read(source).to_string(),
        }],
    })
}

/// Parses a duration as the configuration writes them (`500ms`, `30s`, `1h30m`), for command
/// lines that take one; the error says what is wrong.
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    value::duration(text).map_err(|e| e.to_string())
}
