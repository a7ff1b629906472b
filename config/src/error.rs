//! Configuration errors: each one located by file, line, column and field ([`ConfigError`]),
//! and all of a file's errors reported together ([`ConfigErrors`]).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::value::ValueError;

/// Every problem found in one configuration file, sorted by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The problems, at least one.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.errors.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file, as given to [`crate::load`] or [`crate::parse`].
    pub file: PathBuf,
    /// 1-based line; 0 when the problem has no position (the file could not be read).
    pub line: usize,
    /// 1-based column; 0 when the problem has no position.
    pub column: usize,
    /// Path of the offending field, like `routes[2].to[0]`, `session.keys[1]` or
    /// `oidc.client_secret`; empty for problems with the file as a whole.
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `{file}:{line}:{column}: {field}: {message}`; the position is left out when there is
    /// none and the field when the problem is with the whole file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// What can be wrong in a configuration file; becomes a [`ConfigError`]'s message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Problem {
    /// The file could not be read.
    #[error("cannot read the configuration file: {0}")]
    Read(#[source] io::Error),
    /// The text is not YAML sekisho accepts (syntax, tags, anchors, duplicate keys).
    #[error("YAML: {0}")]
    Syntax(String),
    /// A key written twice in one mapping.
    #[error("duplicate key `{key}` (first written on line {first_line})")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Line of its first occurrence.
        first_line: usize,
    },
    /// A key the schema does not define.
    #[error("unknown field `{key}`; expected one of: {expected}")]
    UnknownField {
        /// The key as written.
        key: String,
        /// The keys allowed here, comma-separated.
        expected: String,
    },
    /// A required field is absent.
    #[error("missing required field `{0}`")]
    Missing(String),
    /// A required field is present but has no value.
    #[error("must have a value")]
    Null,
    /// A node of the wrong YAML kind.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What the schema wants here.
        expected: &'static str,
        /// What the file has.
        found: &'static str,
    },
    /// A list that must have at least one entry has none.
    #[error("must have at least one entry")]
    EmptyList,
    /// A scalar that did not parse into its type.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// A secret mapping that is not exactly `{file: PATH}` or `{env: VAR}`.
    #[error("write a secret as a string, as `{{file: PATH}}` or as `{{env: VAR}}`")]
    SecretForm,
    /// A secret's environment variable is not set.
    #[error("environment variable `{0}` is not set")]
    EnvUnset(String),
    /// A secret's file could not be read.
    #[error("cannot read secret file `{path}`: {source}")]
    SecretFile {
        /// The resolved path.
        path: String,
        /// Why reading failed.
        #[source]
        source: io::Error,
    },
    /// A secret resolved to nothing.
    #[error("the secret is empty")]
    SecretEmpty,
    /// Neither listener is configured.
    #[error("at least one of `http_listen` or `https_listen` is required")]
    NoListener,
    /// `https_listen` without certificates.
    #[error("`https_listen` needs at least one certificate in `server.tls`")]
    HttpsWithoutTls,
    /// Certificates without `https_listen`.
    #[error("certificates are only served on `https_listen`; set it or remove `tls`")]
    TlsWithoutHttps,
    /// The idle lifetime exceeds the absolute lifetime.
    #[error("{idle} is longer than session.absolute_lifetime ({absolute})")]
    IdleAboveAbsolute {
        /// `idle_lifetime`, formatted.
        idle: String,
        /// `absolute_lifetime`, formatted.
        absolute: String,
    },
    /// The assertion lifetime is above its maximum.
    #[error("{0} is longer than the maximum of 1h")]
    AssertionTooLong(String),
    /// Two routes share an id.
    #[error("route id `{id}` is already used by routes[{first}]")]
    DuplicateRouteId {
        /// The id.
        id: String,
        /// Index of the route that has it first.
        first: usize,
    },
    /// Two routes match exactly the same requests.
    #[error("`{from}` is already the `from` of routes[{first}]")]
    DuplicateRouteFrom {
        /// The match, formatted.
        from: String,
        /// Index of the route that has it first.
        first: usize,
    },
    /// A parser bug: a section failed without recording why.
    #[error("internal error: the configuration was rejected without a reason; please report this")]
    Unreported,
    /// Two identity headers share a name.
    #[error("header `{name}` is already used by identity_headers.{first}")]
    DuplicateHeader {
        /// The lowercase header name.
        name: String,
        /// The field that has it first.
        first: &'static str,
    },
}
