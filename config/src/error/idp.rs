//! What can be wrong in the `identity_provider` section ([`IdpProblem`]); becomes a
//! [`super::Problem`] like every other configuration error.

/// What is wrong in the `identity_provider` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdpProblem {
    /// A username outside `[a-z0-9][a-z0-9._-]*`.
    #[error(
        "`{0}` is not a valid username; start with a-z or 0-9 and continue with a-z, 0-9, `.`, `_` or `-`"
    )]
    Username(String),
    /// A username or email used by two users.
    #[error("`{name}` is already used by identity_provider.users[{first}]")]
    DuplicateUser {
        /// The name or email.
        name: String,
        /// Index of the user that has it first.
        first: usize,
    },
    /// A client id with characters outside `[A-Za-z0-9._~-]`.
    #[error("`{0}` is not a valid client id; use A-Z, a-z, 0-9, `.`, `_`, `~` and `-`")]
    ClientId(String),
    /// A client id used twice.
    #[error("client id `{id}` is already used by identity_provider.clients[{first}]")]
    DuplicateClient {
        /// The id.
        id: String,
        /// Index of the client that has it first.
        first: usize,
    },
    /// Neither or both of `client_secret` and `client_secret_hash`.
    #[error("write exactly one of `client_secret` or `client_secret_hash`")]
    ClientSecretForm,
    /// A plain client secret that is too short to resist guessing.
    #[error(
        "the client secret has {0} characters; use at least 16 (generate one with `openssl rand -base64 32`)"
    )]
    ClientSecretShort(usize),
    /// Not an Argon2id PHC string.
    #[error(
        "is not an Argon2id hash (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`); make one with `sekisho hash-password`"
    )]
    PasswordHash,
    /// An Argon2id PHC string whose parameters argon2 refuses.
    #[error("the Argon2id parameters are invalid: {0}")]
    PasswordHashParams(String),
    /// A TOTP secret that is not base32.
    #[error("is not base32 (RFC 4648: A-Z and 2-7, `=` padding and spaces allowed)")]
    TotpBase32,
    /// A TOTP secret below 128 bits.
    #[error(
        "decodes to {0} bytes; a TOTP secret needs at least 16 (make one with `sekisho gen-totp-secret`)"
    )]
    TotpShort(usize),
    /// A redirect URI with a fragment, or plain http on a host that is not loopback.
    #[error(
        "`{0}` must be https (http only on 127.0.0.0/8, ::1 or localhost) and have no fragment"
    )]
    RedirectUri(String),
    /// A back-channel logout URI that is not https (or http on a loopback host), or has user
    /// info, a query or a fragment.
    #[error(
        "`{0}` is not a usable backchannel_logout_uri: it must be an absolute https URL (http only on 127.0.0.0/8, ::1 or localhost) without user info, query or fragment"
    )]
    BackchannelLogoutUri(String),
    /// A whole number out of range.
    #[error("`{0}` is not a whole number from 1 to 1000000")]
    Count(String),
    /// A token lifetime above one hour.
    #[error("{0} is longer than the maximum of 1h")]
    TokenLifetime(String),
    /// `lockout` above `max_lockout`.
    #[error("{lockout} is longer than login_limits.max_lockout ({max})")]
    LockoutAboveMax {
        /// `lockout`, formatted.
        lockout: String,
        /// `max_lockout`, formatted.
        max: String,
    },
    /// sekisho's `oidc` names a client the built-in provider does not have.
    #[error(
        "`oidc.issuer` is the built-in provider, which has no client `{0}`; add it to identity_provider.clients"
    )]
    OwnClientMissing(String),
    /// sekisho's `oidc.client_secret` differs from the secret its client has at the provider.
    #[error(
        "differs from the secret of client `{0}` in identity_provider.clients; the provider would refuse sekisho's code exchange"
    )]
    OwnClientSecret(String),
}
