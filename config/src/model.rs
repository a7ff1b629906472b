//! The validated configuration types. Every value here has already been checked: code that
//! receives a [`Config`] never re-validates it.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

mod audit;
pub use audit::{Admin, Audit, Durability, OnFailure, Otlp};
mod strip;
mod tracing;
pub use strip::{HeaderPattern, STRIPPED_NAMES, STRIPPED_PREFIXES};
pub use tracing::Tracing;
mod attribution;
mod shared_state;
mod upstream_health;
mod upstream_tls;
mod xdp;
pub use attribution::{Attribution, BypassMode};
pub use shared_state::{Redis, RedisAddress, RedisTls, SharedState};
pub use upstream_health::{HealthCheck, UpstreamHealth};
pub use upstream_tls::{CaBundle, TlsPrivateKey, UpstreamClientAuth, UpstreamTls, UpstreamVerify};
pub use xdp::{AutoBan, PortProtocol, ProtectedPort, SynRateLimit, Xdp, XdpInterface, XdpMode};

/// The whole, validated configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory for sekisho's own state (default `.sekisho` next to the config file), resolved
    /// against the config file's directory when relative.
    pub state_dir: PathBuf,
    /// Listeners, TLS and trusted peers.
    pub server: Server,
    /// The OpenID provider sekisho logs users in with.
    pub oidc: Oidc,
    /// Session cookies.
    pub session: Session,
    /// The key that signs identity assertions for upstreams.
    pub signing: Signing,
    /// Names of the identity headers sent to upstreams.
    pub identity_headers: IdentityHeaders,
    /// Origins (besides each route's own) a user may be sent back to after login or logout.
    pub allowed_redirect_origins: Vec<Origin>,
    /// Routes, in file order. Ids are unique.
    pub routes: Vec<Route>,
    /// Shared policies (`policies:`), by name, in file order.
    pub policies: Vec<std::sync::Arc<crate::policy::Policy>>,
    /// The audit log (always on; defaults under `state_dir`).
    pub audit: Audit,
    /// The admin listener, when configured.
    pub admin: Option<Admin>,
    /// The built-in OpenID provider (`identity_provider:`); absent: off.
    pub identity_provider: Option<IdentityProvider>,
    /// Request headers stripped on every route besides the built-in list
    /// (`strip_request_headers:`); each route's own list already includes these.
    pub strip_request_headers: Vec<HeaderPattern>,
    /// The NIC guard (`xdp:`), when configured.
    pub xdp: Option<Xdp>,
    /// The socket hooks (`attribution:`), when configured.
    pub attribution: Option<Attribution>,
    /// The store several instances share state through (`shared_state:`); absent: this
    /// instance keeps everything to itself.
    pub shared_state: Option<SharedState>,
    /// Request traces exported over OTLP (`tracing:`), when configured.
    pub tracing: Option<Tracing>,
}

/// The built-in OpenID provider, served on sekisho's own listeners for requests to the issuer's
/// host (and port) under the issuer's path.
#[derive(Debug, Clone)]
pub struct IdentityProvider {
    /// Issuer URL (https, or http on a loopback host), without a trailing `/`'s meaning: the
    /// provider serves `{issuer}/.well-known/openid-configuration` and its endpoints below it.
    pub issuer: Url,
    /// People who can sign in. Non-empty; usernames and emails unique.
    pub users: Vec<IdpUser>,
    /// Relying parties allowed to use the provider. Non-empty; ids unique.
    pub clients: Vec<IdpClient>,
    /// Lifetime of access tokens and ID tokens (default 10m, at most 1h).
    pub token_lifetime: Duration,
    /// Lifetime of a sign-in at the provider and of the refresh tokens issued under it
    /// (default 12h).
    pub session_lifetime: Duration,
    /// A new signing key is made when the newest one is this old (default 720h, 30 days); older
    /// keys stay published until every token they signed has expired.
    pub key_rotation: Duration,
    /// Failed-login limits.
    pub login_limits: LoginLimits,
    /// Where the provider keeps its keys and refresh grants (`{state_dir}/idp`).
    pub state_dir: PathBuf,
}

/// One person who can sign in at the built-in provider.
#[derive(Debug, Clone)]
pub struct IdpUser {
    /// Login name and `sub` claim: `[a-z0-9][a-z0-9._-]*`.
    pub username: String,
    /// Email address (also accepted as login name, case-insensitively).
    pub email: String,
    /// Display name (default: the username).
    pub name: String,
    /// Groups, in file order, without repeats.
    pub groups: Vec<String>,
    /// Argon2id PHC string (`$argon2id$v=19$m=...`), as printed by `sekisho hash-password`.
    pub password_hash: SecretString,
    /// RFC 6238 TOTP secret (decoded from base32), when the user has a second factor.
    pub totp_secret: Option<SecretBytes>,
}

/// A relying party of the built-in provider.
#[derive(Debug, Clone)]
pub struct IdpClient {
    /// `client_id`: `[A-Za-z0-9._~-]+`.
    pub client_id: String,
    /// How the client authenticates at the token endpoint.
    pub secret: IdpClientSecret,
    /// Redirect URIs, compared exactly. Non-empty.
    pub redirect_uris: Vec<Url>,
    /// Where the provider may send the browser after logout, compared exactly.
    pub post_logout_redirect_uris: Vec<Url>,
    /// Where the provider POSTs a logout token (OpenID Connect Back-Channel Logout 1.0) when a
    /// sign-in during which this client received tokens ends: https, or http on a loopback
    /// host; no fragment.
    pub backchannel_logout_uri: Option<Url>,
    /// Whether the client needs the sign-in's `sid` in its logout tokens (default true); when
    /// false the token names the user (`sub`) only, and the client ends all of that user's
    /// sessions that started before it.
    pub backchannel_logout_session_required: bool,
}

/// A client's credential at the token endpoint (`client_secret_basic` or `client_secret_post`).
#[derive(Debug, Clone)]
pub enum IdpClientSecret {
    /// The secret itself (at least 16 characters), compared in constant time.
    Plain(SecretString),
    /// An Argon2id PHC string of the secret.
    Argon2id(SecretString),
}

/// Limits on failed logins at the built-in provider. Past `account_failures` failures for one
/// account (or `source_failures` from one source address, or `client_failures` failed client
/// authentications at the token endpoint by one client from one source), further attempts are
/// refused with 429 for `lockout`, doubling with every further failure up to `max_lockout`.
/// Failures older than `max_lockout` are forgotten.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Failures per account before lockouts start (default 5).
    pub account_failures: u32,
    /// Failures per source address (IPv6: per /64) before lockouts start (default 20).
    pub source_failures: u32,
    /// Failed client authentications per client and source address before lockouts start
    /// (default 10).
    pub client_failures: u32,
    /// First lockout (default 30s).
    pub lockout: Duration,
    /// Longest lockout (default 15m).
    pub max_lockout: Duration,
}

impl Default for LoginLimits {
    /// 5 per account, 20 per source, 10 per client and source, 30s doubling up to 15m.
    fn default() -> Self {
        Self {
            account_failures: 5,
            source_failures: 20,
            client_failures: 10,
            lockout: Duration::from_secs(30),
            max_lockout: Duration::from_secs(900),
        }
    }
}

/// Listeners and the network facts sekisho trusts.
#[derive(Debug, Clone)]
pub struct Server {
    /// Plain HTTP listener (local use, or behind a TLS-terminating load balancer).
    pub http_listen: Option<SocketAddr>,
    /// TLS listener; present exactly when `tls` is non-empty.
    pub https_listen: Option<SocketAddr>,
    /// Certificates served by SNI; the first is the default. Non-empty when `https_listen` is set.
    pub tls: Vec<TlsCertificate>,
    /// CA bundle (PEM) for client certificates (mTLS) on the TLS listener; absent: no mTLS.
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: refuse TLS clients without a valid certificate (default false:
    /// certificates are optional, and policies test them with `client_certificate`).
    pub require_client_certificate: bool,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Phase timeouts applied to downstream connections.
    pub timeouts: ServerTimeouts,
}

/// A certificate chain and its private key, both PEM files (paths as written, resolved against
/// the config file's directory when relative).
#[derive(Debug, Clone)]
pub struct TlsCertificate {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Downstream timeouts.
#[derive(Debug, Clone, Copy)]
pub struct ServerTimeouts {
    /// Time allowed for a client to send the request head (default 10s).
    pub read_header: Duration,
    /// Idle keep-alive connection lifetime (default 60s): an HTTP/1.1 connection with no request,
    /// an HTTP/2 connection with no request open (then a GOAWAY).
    pub idle: Duration,
    /// TLS handshake limit (default 10s).
    pub tls_handshake: Duration,
    /// How often open TCP tunnels are checked against their credential: a tunnel whose session
    /// expired or was revoked elsewhere, or whose token expired, closes within this (default 2s,
    /// at most 10s; a sign-out closes its tunnels at once).
    pub tunnel_session_check: Duration,
}

/// The OpenID provider.
#[derive(Debug, Clone)]
pub struct Oidc {
    /// Issuer URL; discovery is `{issuer}/.well-known/openid-configuration`.
    pub issuer: Url,
    /// OAuth client id registered at the provider.
    pub client_id: String,
    /// OAuth client secret (resolved from literal, file or environment).
    pub client_secret: SecretString,
    /// Scopes requested at login; always contains `openid`.
    pub scopes: Vec<String>,
    /// ID-token (or userinfo) claim that holds the user's groups (default `groups`).
    pub groups_claim: String,
    /// Audiences accepted on `Authorization: Bearer` JWTs (default: just `client_id`).
    pub bearer_audiences: Vec<String>,
    /// Signature algorithms accepted on ID tokens and bearer JWTs (default RS256, ES256, EdDSA).
    pub allowed_algorithms: Vec<SigningAlgorithm>,
    /// Where the provider sends the user after RP-initiated logout; default: `/` of the route.
    pub post_logout_redirect_uri: Option<Url>,
    /// Allowed clock skew when checking `exp`, `iat`, `nbf` (default 60s).
    pub clock_skew: Duration,
    /// Treat an email the provider sends without any `email_verified` claim as verified (default
    /// false: only `email_verified: true` makes an address the user's email). For providers that
    /// verify every address and never send the claim; an explicit `false` is never overridden.
    pub assume_email_verified: bool,
}

/// An asymmetric JWS algorithm. HMAC and `none` are not representable on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
}

/// Session cookie settings.
#[derive(Debug, Clone)]
pub struct Session {
    /// Base cookie name (default `_sekisho`). Over TLS the cookie is sent as `__Host-{name}`.
    pub cookie_name: String,
    /// AEAD keys, each exactly 32 bytes after base64 decoding. The first encrypts; all decrypt.
    /// Non-empty.
    pub keys: Vec<SecretBytes>,
    /// A session ends this long after login whatever happens (default 12h).
    pub absolute_lifetime: Duration,
    /// A session ends after this long without a request (default 1h, or `absolute_lifetime` if
    /// that is shorter). Not above `absolute_lifetime`.
    pub idle_lifetime: Duration,
    /// File where revoked session ids are persisted (default `{state_dir}/revoked-sessions`).
    pub revocation_file: PathBuf,
}

/// The key that signs the `X-Sekisho-Jwt-Assertion` header.
#[derive(Debug, Clone)]
pub struct Signing {
    /// PKCS#8 PEM of an ECDSA P-256 private key.
    pub key: SecretString,
    /// Assertion lifetime (default 5m, at most 1h).
    pub assertion_lifetime: Duration,
    /// `iss` of the assertions (default `sekisho`).
    pub issuer: String,
}

/// Names of the identity headers sent to upstreams. Validated as HTTP header names, stored
/// lowercase.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// Default `x-sekisho-user` (the subject).
    pub user: String,
    /// Default `x-sekisho-email`.
    pub email: String,
    /// Default `x-sekisho-groups` (comma-separated).
    pub groups: String,
    /// Default `x-sekisho-jwt-assertion`.
    pub jwt_assertion: String,
}

/// One route: requests matching `from` are forwarded to one of `to`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique id (default `route-{index}`), used as assertion audience and in logs.
    pub id: String,
    /// What requests this route matches.
    pub from: RouteMatch,
    /// Upstream base URLs (`http` or `https`, no query or fragment). Empty for a
    /// forward-auth-only route (`to` left out): its requests are only ever authorized, for a
    /// proxy in front that asks `/.sekisho/auth`, never forwarded.
    pub to: Vec<Url>,
    /// No sign-in: anyone may use the route and no identity is passed (`public`, default false).
    /// A public route names no `policy` or `mode` (the default policy it holds is never
    /// evaluated for it) and its `pass_identity_headers` is false.
    pub public: bool,
    /// Let CORS preflight requests (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
    /// through without sign-in (`cors_allow_preflight`, default false).
    pub cors_allow_preflight: bool,
    /// Send the client's `Host` to the upstream instead of the upstream's own (default false).
    pub preserve_host: bool,
    /// Allow WebSocket upgrades (authorized at the upgrade) (default false).
    pub allow_websockets: bool,
    /// Send identity headers and the signed assertion (default true; always false on a public
    /// route).
    pub pass_identity_headers: bool,
    /// Speak HTTP/2 to the upstream (h2c for `http`, ALPN h2 for `https`) (default false).
    pub upstream_http2: bool,
    /// Upstream timeouts.
    pub timeouts: RouteTimeouts,
    /// How the route's targets are judged: passive ejection after connect failures
    /// (`upstream_health`) and the optional active probe (`health_check`).
    pub upstream_health: UpstreamHealth,
    /// Path test replacing `from`'s path prefix when set (`path: {exact|prefix|regex}`).
    pub path: Option<crate::policy::PathMatch>,
    /// Methods this route serves (uppercase); empty means all.
    pub methods: Vec<String>,
    /// The policy deciding each request: a shared one (`policy: NAME`), an inline one, or the
    /// default `allow: {authenticated_user: true}` when the route names none.
    pub policy: std::sync::Arc<crate::policy::Policy>,
    /// Enforce the policy, or only report would-be denials.
    pub mode: crate::policy::PolicyMode,
    /// Show the full policy explanation on this route's denial page (default false).
    pub show_error_details: bool,
    /// Request headers stripped on this route besides the built-in list: the global
    /// `strip_request_headers` followed by the route's own.
    pub strip_request_headers: Vec<HeaderPattern>,
    /// How the upstream may read paths differently from sekisho (`upstream_paths`); by default
    /// it is assumed lenient in every way, and requests it would route or authorize differently
    /// are refused.
    pub upstream_paths: UpstreamPaths,
    /// How sekisho's TLS client meets this route's `https` upstreams: the route's `tls_*` keys
    /// merged with the top-level `upstream_tls` defaults.
    pub tls: UpstreamTls,
    /// Request headers removed before forwarding (`remove_request_headers`), in every case and
    /// `_`/`-` spelling: after the strip lists, before `set_request_headers`. Never `Host`;
    /// distinct once folded.
    pub remove_request_headers: Vec<http::HeaderName>,
    /// Request headers set before forwarding (`set_request_headers`), each replacing every
    /// spelling of it the client sent. None is a header sekisho sets or strips itself
    /// (hop-by-hop, `Host`, `Content-Length`, forwarding and identity headers), so sekisho's own
    /// headers, set after these, are never overridden. Distinct once folded.
    pub set_request_headers: Vec<RequestHeader>,
    /// Replaces the route's path prefix in the forwarded path (`prefix_rewrite`), before the
    /// upstream's base path is put in front: with prefix `/app` and `prefix_rewrite: /`, `/app/x`
    /// reaches the upstream as `/x`. In path normal form; only on a route whose path test is a
    /// prefix ([`Route::path_prefix`]).
    pub prefix_rewrite: Option<String>,
    /// A TCP tunnel route (`from: tcp+https://HOST:PORT`, `to: tcp://HOST:PORT`): clients open
    /// tunnels to it with HTTP CONNECT; `to` is empty then.
    pub tunnel: Option<Tunnel>,
}

/// A TCP tunnel route's upstream and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// `host:port` the tunnel connects to.
    pub upstream: String,
    /// A tunnel with no byte either way for this long is closed (`tunnel.idle_timeout`,
    /// default 1h).
    pub idle_timeout: std::time::Duration,
    /// A tunnel is closed this long after it opened, whatever it does (`tunnel.max_duration`,
    /// default 12h).
    pub max_duration: std::time::Duration,
}

/// One `set_request_headers` entry: a header name (lowercase) and its value (visible ASCII,
/// spaces and tabs; marked sensitive, so it is never logged by `Debug` nor indexed by HPACK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// The header name.
    pub name: http::HeaderName,
    /// The value sent.
    pub value: http::HeaderValue,
}

impl Route {
    /// The path prefix this route matches under, when its path test is a prefix: `path:
    /// {prefix}` when set, else `from`'s path prefix; `None` for `path: {exact}` or `{regex}`.
    pub fn path_prefix(&self) -> Option<&str> {
        match &self.path {
            None => Some(&self.from.path_prefix),
            Some(crate::policy::PathMatch::Prefix(prefix)) => Some(prefix),
            Some(crate::policy::PathMatch::Exact(_) | crate::policy::PathMatch::Regex(_)) => None,
        }
    }
}

/// `upstream_paths` of a route: the ways its upstream may read a request path differently from
/// sekisho's normal form. Each one that holds makes sekisho refuse paths whose other reading
/// would reach another route or get another policy decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamPaths {
    /// `case: insensitive` (default): the upstream ignores ASCII letter case.
    pub ignores_case: bool,
    /// `parameters: stripped` (default): the upstream drops `;` parameters from segments.
    pub strips_parameters: bool,
    /// `decoding: twice` (default): the upstream decodes `%25XX` a second time.
    pub decodes_twice: bool,
}

impl Default for UpstreamPaths {
    /// Lenient in every way: the safe assumption about an upstream sekisho knows nothing of.
    fn default() -> Self {
        UpstreamPaths {
            ignores_case: true,
            strips_parameters: true,
            decodes_twice: true,
        }
    }
}

impl UpstreamPaths {
    /// Strict in every way (`case: sensitive, parameters: literal, decoding: once`).
    pub fn strict() -> Self {
        UpstreamPaths {
            ignores_case: false,
            strips_parameters: false,
            decodes_twice: false,
        }
    }
}

/// Route-level timeouts.
#[derive(Debug, Clone, Copy)]
pub struct RouteTimeouts {
    /// TCP/TLS connect to the upstream (default 5s).
    pub connect: Duration,
    /// From sending the request to receiving the response head (default 30s).
    pub response_header: Duration,
    /// Longest pause while streaming a body either way (default 60s).
    pub idle: Duration,
}

/// The `from` of a route: scheme, host, optional port and path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Lowercase host name (IDNA-normalised by `url`), or a wildcard `*.example.com` that
    /// matches any name with at least one more label in front of `example.com`.
    pub host: String,
    /// Explicit port, when the URL had a non-default one.
    pub port: Option<u16>,
    /// Path prefix, normalised, starting with `/`; `/` matches everything.
    pub path_prefix: String,
}

/// URL scheme of a route or origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

/// A web origin: scheme, host, port (explicit or default).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Lowercase host.
    pub host: String,
    /// Port, with the scheme's default filled in.
    pub port: u16,
}

/// A secret text (client secret, PEM key). Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a resolved secret.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// Secret key material (decoded bytes). Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps resolved key bytes.
    pub fn new(value: Vec<u8>) -> Self {
        Self(value)
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

impl Default for ServerTimeouts {
    /// The documented defaults: 10s, 60s, 10s, 2s.
    fn default() -> Self {
        Self {
            read_header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            tls_handshake: Duration::from_secs(10),
            tunnel_session_check: Duration::from_secs(2),
        }
    }
}

impl Default for RouteTimeouts {
    /// The documented defaults: 5s, 30s, 60s.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            response_header: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

impl Default for IdentityHeaders {
    /// `x-sekisho-user`, `x-sekisho-email`, `x-sekisho-groups`, `x-sekisho-jwt-assertion`.
    fn default() -> Self {
        Self {
            user: "x-sekisho-user".to_owned(),
            email: "x-sekisho-email".to_owned(),
            groups: "x-sekisho-groups".to_owned(),
            jwt_assertion: "x-sekisho-jwt-assertion".to_owned(),
        }
    }
}

impl SigningAlgorithm {
    /// The JOSE `alg` name, like `RS256` or `EdDSA`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    /// The JOSE `alg` name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    /// 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

impl fmt::Display for Scheme {
    /// `http` or `https`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RouteMatch {
    /// `scheme://host[:port]/prefix`, as it would be written in the config file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        f.write_str(&self.path_prefix)
    }
}

impl fmt::Display for Origin {
    /// The serialisation browsers send in `Origin`: `scheme://host`, plus `:port` when it is
    /// not the scheme's default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}
