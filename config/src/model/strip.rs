//! Request headers the configuration adds to those sekisho always strips before forwarding.

/// A request-header name, or a name prefix (written `X-Corp-*`), that never reaches an upstream.
/// Stored folded: lower-case with `_` written as `-`, because CGI, nginx and many frameworks read
/// `X_Corp_User` as `X-Corp-User`; the proxy compares every spelling of a name with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderPattern {
    /// Exactly this name.
    Name(String),
    /// Every name that starts with this (non-empty) prefix.
    Prefix(String),
}

/// Request headers sekisho always strips (folded: lower-case, `-`): client-address and
/// original-URL headers that some upstream or framework believes, and identity headers of the
/// products sekisho replaces.
pub const STRIPPED_NAMES: &[&str] = &[
    // Forwarding facts sekisho rebuilds or that name the client.
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-request-id",
    // Original URL (IIS URL Rewrite, Symfony, nginx auth_request, Envoy).
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-envoy-original-path",
    // Generic identity headers.
    "x-user",
    "x-email",
    // Google IAP.
    "x-goog-iap-jwt-assertion",
];

/// Prefixes of the request headers sekisho always strips (folded, like [`STRIPPED_NAMES`]).
pub const STRIPPED_PREFIXES: &[&str] = &[
    "x-forwarded-",
    "x-sekisho-",
    // oauth2-proxy.
    "x-auth-request-",
    // Apache, Authelia and similar: REMOTE_USER and friends.
    "x-remote-",
    "remote-",
    // mod_auth_openidc: OIDC_CLAIM_*, OIDC_access_token, OIDC_id_token...
    "oidc-",
    // Pomerium: X-Pomerium-Claim-*, X-Pomerium-Jwt-Assertion.
    "x-pomerium-",
    // Google IAP.
    "x-goog-authenticated-user-",
    // Vouch Proxy.
    "x-vouch-",
    // Cloudflare Access.
    "cf-access-",
    // AWS ALB OIDC.
    "x-amzn-oidc-",
    // Azure App Service authentication (Easy Auth).
    "x-ms-client-principal",
    "x-ms-token-",
    // authentik, Grafana's auth proxy default.
    "x-authentik-",
    "x-webauth-",
];
