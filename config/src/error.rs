//! Configuration errors: each one located by file, line, column and field ([`ConfigError`]),
//! and all of a file's errors reported together ([`ConfigErrors`]).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::value::ValueError;

mod attribution;
mod idp;
mod route;
mod upstream_health;
mod upstream_tls;
mod xdp;
pub(crate) use attribution::AttributionProblem;
pub(crate) use idp::IdpProblem;
pub(crate) use route::RouteProblem;
pub(crate) use upstream_health::UpstreamHealthProblem;
pub(crate) use upstream_tls::UpstreamTlsProblem;
pub(crate) use xdp::XdpProblem;

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
    /// A route matches exactly the requests of an earlier one (same `from`, path and methods).
    #[error("routes[{first}] already matches the same requests ({what})")]
    DuplicateRouteMatch {
        /// The match, formatted.
        what: String,
        /// Index of the route that has it first.
        first: usize,
    },
    /// `client_ca_file` without the TLS listener.
    #[error(
        "client certificates are only requested on `https_listen`; set it (with `tls`) or remove `client_ca_file`"
    )]
    ClientCaWithoutTls,
    /// `require_client_certificate: true` without `client_ca_file`.
    #[error(
        "`require_client_certificate` needs `client_ca_file`, the CA that client certificates are verified against"
    )]
    RequireWithoutClientCa,
    /// The client CA file could not be read.
    #[error("cannot read client CA file `{path}`: {source}")]
    ClientCaFile {
        /// The resolved path.
        path: String,
        /// Why reading failed.
        #[source]
        source: io::Error,
    },
    /// The client CA file is not a PEM certificate bundle.
    #[error("client CA file `{path}` {source}")]
    ClientCaPem {
        /// The resolved path.
        path: String,
        /// What is wrong with its contents.
        #[source]
        source: ValueError,
    },
    /// A route's `path` while its `from` has a path prefix too.
    #[error(
        "`from` already has the path prefix `{0}`; write `from` without a path and put the whole path test in `path`"
    )]
    PathWithFromPath(String),
    /// A value listed twice.
    #[error("`{0}` is listed twice")]
    Repeated(String),
    /// A policy with neither `allow` nor `deny`.
    #[error(
        "a policy needs `allow`, `deny` or both (a policy that allows nothing denies everything)"
    )]
    PolicyEmpty,
    /// A route names a policy that `policies:` does not define.
    #[error("no policy named `{name}`; {defined}")]
    UnknownPolicy {
        /// The name as written.
        name: String,
        /// The names defined, as a sentence.
        defined: String,
    },
    /// A block with a key that is not a combinator.
    #[error(
        "`{key}` is a criterion, not a combinator; a block holds one of and, or, not, nor with a list of rules, like `{{and: [{{{key}: ...}}]}}`"
    )]
    BlockCriterion {
        /// The criterion written directly in the block.
        key: String,
    },
    /// A block with no combinator.
    #[error("a block holds one of and, or, not, nor with a list of rules, like `{{and: [...]}}`")]
    BlockEmpty,
    /// A block with several keys.
    #[error(
        "a block holds exactly one combinator, found {keys}; nest them instead, like `{{and: [{{or: [...]}}, ...]}}`"
    )]
    BlockSeveral {
        /// The keys written, comma-separated.
        keys: String,
    },
    /// A rule mapping with no key.
    #[error("a rule is a mapping with one key: a combinator (and, or, not, nor) or a criterion")]
    RuleEmpty,
    /// A rule mapping with several keys.
    #[error(
        "a rule has exactly one key, found {keys}; write each as its own list entry (under `and` to require all)"
    )]
    RuleSeveral {
        /// The keys written, comma-separated.
        keys: String,
    },
    /// A rule key that is neither a combinator nor a criterion.
    #[error(
        "unknown criterion `{key}`; expected a combinator ({combinators}) or a criterion ({criteria})"
    )]
    UnknownCriterion {
        /// The key as written.
        key: String,
        /// The combinators, comma-separated.
        combinators: String,
        /// The criteria, comma-separated.
        criteria: String,
    },
    /// A matcher mapping with none of its keys.
    #[error("write exactly one of: {0}")]
    OneOfMissing(String),
    /// A matcher mapping with several of its keys.
    #[error("write exactly one of: {0} (not several)")]
    OneOfSeveral(String),
    /// `authenticated_user: false` or `present: false`.
    #[error("only `true` is accepted; to negate a criterion, wrap it: `not: [{{{0}: ...}}]`")]
    OnlyTrue(String),
    /// `claim/` or `header/` without a name.
    #[error("write the name after the slash, like `{0}`")]
    MissingName(&'static str),
    /// A `client_certificate` criterion without mTLS.
    #[error(
        "`client_certificate` needs mTLS: set `server.client_ca_file` so that clients can present certificates"
    )]
    ClientCertificateWithoutCa,
    /// A `client_certificate` criterion with no hashes.
    #[error("write `fingerprint`, `spki_hash` or both")]
    ClientCertificateEmpty,
    /// A time window with neither days nor hours.
    #[error("write `days`, `hours` or both (a window of all days and all hours always matches)")]
    TimeWindowEmpty,
    /// A time window whose start is `24:00`.
    #[error("a window cannot start at 24:00; write 00:00")]
    TimeFromMidnightEnd,
    /// A time window of zero length.
    #[error("`from` and `to` are equal; for the whole day leave `hours` out")]
    TimeWindowZero,
    /// A Rego module that does not parse or compile.
    #[error("Rego: {0}")]
    Rego(String),
    /// A Rego query that names no rule of the module.
    #[error("`{query}` names no rule of the module (whose package is `{package}`)")]
    RegoQuery {
        /// The query.
        query: String,
        /// The module's package, as `data.…`.
        package: String,
    },
    /// A problem in the `identity_provider` section.
    #[error(transparent)]
    Idp(#[from] IdpProblem),
    /// A problem in a route's options.
    #[error(transparent)]
    Route(#[from] RouteProblem),
    /// A problem in a route's target health settings (`upstream_health`, `health_check`).
    #[error(transparent)]
    UpstreamHealth(#[from] UpstreamHealthProblem),
    /// A problem in upstream TLS settings (`upstream_tls`, a route's `tls_*` keys).
    #[error(transparent)]
    UpstreamTls(#[from] UpstreamTlsProblem),
    /// A problem in the `xdp` section.
    #[error(transparent)]
    Xdp(#[from] XdpProblem),
    /// A problem in the `attribution` section.
    #[error(transparent)]
    Attribution(#[from] AttributionProblem),
    /// A tunnel session check interval above the bound.
    #[error("at most 10s: a tunnel must not outlive its session by more than that")]
    TunnelSessionCheck,
    /// `tunnel:` on a route that is not a tunnel.
    #[error("`tunnel` applies to tunnel routes only (from: tcp+https://HOST:PORT)")]
    TunnelOnHttpRoute,
    /// Two identity headers share a name.
    #[error("header `{name}` is already used by identity_headers.{first}")]
    DuplicateHeader {
        /// The lowercase header name.
        name: String,
        /// The field that has it first.
        first: &'static str,
    },
}
