//! The built-in OpenID provider: the `identity_provider:` section walked into
//! [`IdentityProvider`] — users with their Argon2id hashes and TOTP secrets decoded, clients with
//! their exact redirect URIs — and checked against the `oidc:` section when sekisho is its own
//! provider's client.

use std::path::Path;
use std::time::Duration;

use url::Url;

use super::{Parser, Secrets};
use crate::error::{IdpProblem, Problem};
use crate::model::{IdentityProvider, IdpClient, IdpClientSecret, IdpUser, LoginLimits};
use crate::model::{SecretBytes, SecretString};
use crate::value;
use crate::walk::{Field, Map};

/// Keys of `identity_provider`.
const IDENTITY_PROVIDER: &[&str] = &[
    "issuer",
    "users",
    "clients",
    "token_lifetime",
    "session_lifetime",
    "key_rotation",
    "login_limits",
];
/// Keys of each user.
const USER: &[&str] = &[
    "username",
    "email",
    "name",
    "groups",
    "password_hash",
    "totp_secret",
];
/// Keys of each client.
const CLIENT: &[&str] = &[
    "client_id",
    "client_secret",
    "client_secret_hash",
    "redirect_uris",
    "post_logout_redirect_uris",
    "backchannel_logout_uri",
    "backchannel_logout_session_required",
];
/// Keys of `login_limits`.
const LOGIN_LIMITS: &[&str] = &[
    "account_failures",
    "source_failures",
    "client_failures",
    "lockout",
    "max_lockout",
];
/// Longest `token_lifetime`.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Shortest plain client secret, in characters.
const MIN_CLIENT_SECRET: usize = 16;
/// Shortest TOTP secret, in bytes (RFC 4226 §4: at least 128 bits).
const MIN_TOTP_SECRET: usize = 16;

impl Parser<'_> {
    /// `identity_provider`; `state_dir` gives the provider's own state directory.
    pub(super) fn identity_provider(
        &mut self,
        field: &Field<'_>,
        state_dir: Option<&Path>,
    ) -> Option<IdentityProvider> {
        let map = self.walk.mapping(field, IDENTITY_PROVIDER)?;
        let issuer = self
            .walk
            .required(&map, "issuer")
            .and_then(|f| self.walk.value(&f, value::issuer));
        let users = self
            .walk
            .required(&map, "users")
            .and_then(|f| self.idp_users(&f));
        let clients = self
            .walk
            .required(&map, "clients")
            .and_then(|f| self.idp_clients(&f));
        let token_lifetime = self.or_default(&map, "token_lifetime", Self::duration, || {
            Duration::from_secs(600)
        });
        if let (Some(lifetime), Some(lifetime_field)) = (token_lifetime, map.get("token_lifetime"))
            && lifetime > MAX_TOKEN_LIFETIME
        {
            let problem = IdpProblem::TokenLifetime(value::format_duration(lifetime));
            self.walk.report_at(&lifetime_field, Problem::from(problem));
            return None;
        }
        let session_lifetime = self.or_default(&map, "session_lifetime", Self::duration, || {
            Duration::from_secs(12 * 3600)
        });
        let key_rotation = self.or_default(&map, "key_rotation", Self::duration, || {
            Duration::from_secs(30 * 24 * 3600)
        });
        let login_limits = self.or_default(
            &map,
            "login_limits",
            Self::login_limits,
            LoginLimits::default,
        );
        Some(IdentityProvider {
            issuer: issuer?,
            users: users?,
            clients: clients?,
            token_lifetime: token_lifetime?,
            session_lifetime: session_lifetime?,
            key_rotation: key_rotation?,
            login_limits: login_limits?,
            state_dir: state_dir?.join("idp"),
        })
    }

    /// When `oidc.issuer` is the built-in provider's issuer, `oidc.client_id` must be one of its
    /// clients (with the same secret, when that is written in plain).
    pub(super) fn check_own_client(&mut self, root: &Field<'_>, idp: &IdentityProvider) {
        let Some(oidc) = root.peek("oidc") else {
            return;
        };
        let (Some(issuer_field), Some(client_field)) =
            (oidc.peek("issuer"), oidc.peek("client_id"))
        else {
            return;
        };
        let same_issuer = match (
            string_of(&issuer_field).and_then(|text| value::issuer(text).ok()),
            &idp.issuer,
        ) {
            (Some(ours), theirs) => {
                ours.as_str().trim_end_matches('/') == theirs.as_str().trim_end_matches('/')
            }
            (None, _) => false,
        };
        let Some(client_id) = string_of(&client_field).map(str::trim) else {
            return;
        };
        if !same_issuer {
            return;
        }
        let Some(client) = idp.clients.iter().find(|c| c.client_id == client_id) else {
            let problem = IdpProblem::OwnClientMissing(client_id.to_owned());
            self.walk.report_at(&client_field, Problem::from(problem));
            return;
        };
        if self.secrets == Secrets::Placeholders {
            return;
        }
        let Some(secret_field) = oidc.peek("client_secret") else {
            return;
        };
        if let IdpClientSecret::Plain(expected) = &client.secret {
            // Resolving the secret again reports its own problems a second time; only compare
            // when it resolves without any.
            let mut probe = Parser {
                walk: crate::walk::Walker::new(Path::new("")),
                base_dir: self.base_dir.clone(),
                env: self.env,
                mtls: self.mtls,
                secrets: self.secrets,
            };
            if let Some(secret) = probe.secret(&secret_field)
                && secret != expected.expose()
            {
                let problem = IdpProblem::OwnClientSecret(client_id.to_owned());
                self.walk.report_at(&secret_field, Problem::from(problem));
            }
        }
    }

    /// `identity_provider.users`: non-empty, usernames and emails unique across all users.
    fn idp_users(&mut self, field: &Field<'_>) -> Option<Vec<IdpUser>> {
        let items = self.walk.non_empty_list(field)?;
        let mut users: Vec<Option<IdpUser>> = Vec::with_capacity(items.len());
        // Every login name (usernames and emails, lowercase) with the index of its user.
        let mut names: Vec<(String, usize)> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let mut user = self.idp_user(item);
            let mut unique = true;
            if let Some(user) = &user {
                for (key, name) in [("username", &user.username), ("email", &user.email)] {
                    let lower = name.to_lowercase();
                    if let Some((_, first)) = names.iter().find(|(other, _)| *other == lower) {
                        let problem = IdpProblem::DuplicateUser {
                            name: name.clone(),
                            first: *first,
                        };
                        let at = item.peek(key).unwrap_or_else(|| item.clone());
                        self.walk.report_at(&at, Problem::from(problem));
                        unique = false;
                    } else {
                        names.push((lower, index));
                    }
                }
            }
            if !unique {
                user = None;
            }
            users.push(user);
        }
        users.into_iter().collect()
    }

    /// One user.
    fn idp_user(&mut self, field: &Field<'_>) -> Option<IdpUser> {
        let map = self.walk.mapping(field, USER)?;
        let username = self
            .walk
            .required(&map, "username")
            .and_then(|f| self.walk.value(&f, username));
        let email = self
            .walk
            .required(&map, "email")
            .and_then(|f| self.walk.value(&f, value::email_address));
        let name = self.optional(&map, "name", |p, f| p.walk.value(f, value::non_empty));
        let groups = self.or_default(
            &map,
            "groups",
            |p, f| p.distinct_items(f, |p, item| p.walk.value(item, value::non_empty)),
            Vec::new,
        );
        let password_hash = self
            .walk
            .required(&map, "password_hash")
            .and_then(|f| self.password_hash(&f));
        let totp_secret = self.optional(&map, "totp_secret", Self::totp_secret);
        let username = username?;
        Some(IdpUser {
            email: email?.to_string(),
            name: name?.unwrap_or_else(|| username.clone()),
            username,
            groups: groups?,
            password_hash: password_hash?,
            totp_secret: totp_secret?,
        })
    }

    /// A secret holding an Argon2id PHC string.
    fn password_hash(&mut self, field: &Field<'_>) -> Option<SecretString> {
        let phc = self.secret(field)?;
        if self.secrets == Secrets::Placeholders {
            return Some(SecretString::new(phc));
        }
        match argon2id_phc(&phc) {
            Ok(()) => Some(SecretString::new(phc.trim().to_owned())),
            Err(problem) => {
                self.walk.report_at(field, Problem::from(problem));
                None
            }
        }
    }

    /// A secret holding a base32 TOTP secret.
    fn totp_secret(&mut self, field: &Field<'_>) -> Option<SecretBytes> {
        let text = self.secret(field)?;
        if self.secrets == Secrets::Placeholders {
            return Some(SecretBytes::new(vec![0; MIN_TOTP_SECRET]));
        }
        match totp_secret(&text) {
            Ok(bytes) => Some(SecretBytes::new(bytes)),
            Err(problem) => {
                self.walk.report_at(field, Problem::from(problem));
                None
            }
        }
    }

    /// `identity_provider.clients`: non-empty, ids unique.
    fn idp_clients(&mut self, field: &Field<'_>) -> Option<Vec<IdpClient>> {
        let items = self.walk.non_empty_list(field)?;
        let mut clients: Vec<Option<IdpClient>> = Vec::with_capacity(items.len());
        let mut ids: Vec<(String, usize)> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let client = self.idp_client(item);
            if let Some(client) = &client {
                if let Some((_, first)) = ids.iter().find(|(id, _)| *id == client.client_id) {
                    let problem = IdpProblem::DuplicateClient {
                        id: client.client_id.clone(),
                        first: *first,
                    };
                    let at = item.peek("client_id").unwrap_or_else(|| item.clone());
                    self.walk.report_at(&at, Problem::from(problem));
                    clients.push(None);
                    continue;
                }
                ids.push((client.client_id.clone(), index));
            }
            clients.push(client);
        }
        clients.into_iter().collect()
    }

    /// One client.
    fn idp_client(&mut self, field: &Field<'_>) -> Option<IdpClient> {
        let map = self.walk.mapping(field, CLIENT)?;
        let client_id = self
            .walk
            .required(&map, "client_id")
            .and_then(|f| self.walk.value(&f, client_id));
        let secret = self.client_secret(&map, &field.path);
        let redirect_uris = self
            .walk
            .required(&map, "redirect_uris")
            .and_then(|f| self.distinct_items(&f, |p, item| p.walk.value(item, redirect_uri)));
        let post_logout_redirect_uris = self.or_default(
            &map,
            "post_logout_redirect_uris",
            |p, f| p.distinct_items(f, |p, item| p.walk.value(item, redirect_uri)),
            Vec::new,
        );
        let backchannel_logout_uri = self.optional(&map, "backchannel_logout_uri", |p, f| {
            p.walk.value(f, backchannel_logout_uri)
        });
        let backchannel_logout_session_required =
            self.flag(&map, "backchannel_logout_session_required", true);
        Some(IdpClient {
            client_id: client_id?,
            secret: secret?,
            redirect_uris: redirect_uris?,
            post_logout_redirect_uris: post_logout_redirect_uris?,
            backchannel_logout_uri: backchannel_logout_uri?,
            backchannel_logout_session_required: backchannel_logout_session_required?,
        })
    }

    /// Exactly one of `client_secret` (plain, long enough) and `client_secret_hash` (Argon2id).
    fn client_secret(&mut self, map: &Map<'_>, path: &str) -> Option<IdpClientSecret> {
        match (map.get("client_secret"), map.get("client_secret_hash")) {
            (Some(field), None) => {
                let secret = self.secret(&field)?;
                if self.secrets == Secrets::Resolve && secret.chars().count() < MIN_CLIENT_SECRET {
                    let problem = IdpProblem::ClientSecretShort(secret.chars().count());
                    self.walk.report_at(&field, Problem::from(problem));
                    return None;
                }
                Some(IdpClientSecret::Plain(SecretString::new(secret)))
            }
            (None, Some(field)) => self.password_hash(&field).map(IdpClientSecret::Argon2id),
            (Some(_), Some(field)) => {
                self.walk
                    .report_at(&field, Problem::from(IdpProblem::ClientSecretForm));
                None
            }
            (None, None) => {
                self.walk.report(
                    map.pos(),
                    &format!("{path}.client_secret"),
                    Problem::from(IdpProblem::ClientSecretForm),
                );
                None
            }
        }
    }

    /// `identity_provider.login_limits`.
    fn login_limits(&mut self, field: &Field<'_>) -> Option<LoginLimits> {
        let map = self.walk.mapping(field, LOGIN_LIMITS)?;
        let defaults = LoginLimits::default();
        let account_failures = self.or_default(
            &map,
            "account_failures",
            |p, f| p.walk.value(f, count),
            || defaults.account_failures,
        );
        let source_failures = self.or_default(
            &map,
            "source_failures",
            |p, f| p.walk.value(f, count),
            || defaults.source_failures,
        );
        let client_failures = self.or_default(
            &map,
            "client_failures",
            |p, f| p.walk.value(f, count),
            || defaults.client_failures,
        );
        let lockout = self.or_default(&map, "lockout", Self::duration, || defaults.lockout);
        let max_lockout =
            self.or_default(&map, "max_lockout", Self::duration, || defaults.max_lockout);
        if let (Some(lockout), Some(max), Some(lockout_field)) =
            (lockout, max_lockout, map.get("lockout"))
            && lockout > max
        {
            let problem = IdpProblem::LockoutAboveMax {
                lockout: value::format_duration(lockout),
                max: value::format_duration(max),
            };
            self.walk.report_at(&lockout_field, Problem::from(problem));
            return None;
        }
        Some(LoginLimits {
            account_failures: account_failures?,
            source_failures: source_failures?,
            client_failures: client_failures?,
            lockout: lockout?,
            max_lockout: max_lockout?,
        })
    }
}

/// The text of a scalar field, without reporting anything.
fn string_of<'n>(field: &Field<'n>) -> Option<&'n str> {
    match field.node {
        marked_yaml::Node::Scalar(scalar) => Some(scalar.as_str()),
        _ => None,
    }
}

/// Checks a username: `[a-z0-9][a-z0-9._-]*`.
fn username(input: &str) -> Result<String, IdpProblem> {
    let name = input.trim();
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if first_ok && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
    {
        Ok(name.to_owned())
    } else {
        Err(IdpProblem::Username(name.to_owned()))
    }
}

/// Checks a client id: `[A-Za-z0-9._~-]+` (RFC 3986 unreserved characters).
fn client_id(input: &str) -> Result<String, IdpProblem> {
    let id = input.trim();
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c))
    {
        Ok(id.to_owned())
    } else {
        Err(IdpProblem::ClientId(id.to_owned()))
    }
}

/// Checks a redirect URI: an absolute http(s) URL without user info, query or fragment; http
/// only on a loopback host (RFC 8252 §8.3, OAuth 2.1).
fn redirect_uri(input: &str) -> Result<Url, IdpProblem> {
    let text = input.trim();
    let invalid = || IdpProblem::RedirectUri(text.to_owned());
    let url = value::http_url(text).map_err(|_| invalid())?;
    if url.scheme() == "http" && !value::has_loopback_host(&url) {
        return Err(invalid());
    }
    Ok(url)
}

/// Checks a back-channel logout URI (Back-Channel Logout 1.0 §2.2): an absolute http(s) URL
/// without user info, query or fragment; http only on a loopback host, as for redirect URIs
/// (the logout token it receives ends sessions and must not cross a network in the clear).
fn backchannel_logout_uri(input: &str) -> Result<Url, IdpProblem> {
    let text = input.trim();
    let invalid = || IdpProblem::BackchannelLogoutUri(text.to_owned());
    let url = value::http_url(text).map_err(|_| invalid())?;
    if url.scheme() == "http" && !value::has_loopback_host(&url) {
        return Err(invalid());
    }
    Ok(url)
}

/// Checks a whole number from 1 to 1,000,000.
fn count(input: &str) -> Result<u32, IdpProblem> {
    let text = input.trim();
    match text.parse::<u32>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(IdpProblem::Count(text.to_owned())),
    }
}

/// Checks an Argon2id PHC string and its parameters.
pub(crate) fn argon2id_phc(input: &str) -> Result<(), IdpProblem> {
    let hash = argon2::PasswordHash::new(input.trim()).map_err(|_| IdpProblem::PasswordHash)?;
    if hash.algorithm.as_str() != "argon2id" || hash.salt.is_none() || hash.hash.is_none() {
        return Err(IdpProblem::PasswordHash);
    }
    argon2::Params::try_from(&hash)
        .map(|_| ())
        .map_err(|e| IdpProblem::PasswordHashParams(e.to_string()))
}

/// Decodes a TOTP secret: base32 (RFC 4648, case-insensitive, spaces and `=` ignored) of at
/// least 16 bytes.
pub(crate) fn totp_secret(input: &str) -> Result<Vec<u8>, IdpProblem> {
    let bytes = crate::base32::decode(input).ok_or(IdpProblem::TotpBase32)?;
    if bytes.len() < MIN_TOTP_SECRET {
        return Err(IdpProblem::TotpShort(bytes.len()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_secrets_need_128_bits() {
        assert_eq!(totp_secret("MZXW6YTBOI"), Err(IdpProblem::TotpShort(6)));
        assert!(totp_secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").is_ok());
        assert_eq!(totp_secret("not base32!"), Err(IdpProblem::TotpBase32));
    }

    #[test]
    fn names_and_uris() {
        assert!(username("alice").is_ok());
        assert!(username("a.b-c_1").is_ok());
        assert!(username("Alice").is_err());
        assert!(username("-a").is_err());
        assert!(client_id("sekisho").is_ok());
        assert!(client_id("a:b").is_err());
        assert!(redirect_uri("https://app.example.com/cb").is_ok());
        assert!(redirect_uri("http://127.0.0.1:8080/.sekisho/callback").is_ok());
        assert!(redirect_uri("http://localhost/cb").is_ok());
        assert!(redirect_uri("http://app.example.com/cb").is_err());
        assert!(redirect_uri("https://app.example.com/cb#x").is_err());
        assert!(redirect_uri("https://app.example.com/cb?x=1").is_err());
        assert!(
            backchannel_logout_uri("https://app.example.com/.sekisho/backchannel-logout").is_ok()
        );
        assert!(
            backchannel_logout_uri("http://127.0.0.1:8080/.sekisho/backchannel-logout").is_ok()
        );
        assert!(backchannel_logout_uri("http://[::1]:8080/bcl").is_ok());
        assert_eq!(
            backchannel_logout_uri("http://app.example.com/bcl"),
            Err(IdpProblem::BackchannelLogoutUri(
                "http://app.example.com/bcl".into()
            ))
        );
        assert!(backchannel_logout_uri("https://app.example.com/bcl#x").is_err());
        assert!(backchannel_logout_uri("https://user@app.example.com/bcl").is_err());
        assert!(backchannel_logout_uri("ftp://app.example.com/bcl").is_err());
        assert!(backchannel_logout_uri("/relative").is_err());
        assert_eq!(count("5"), Ok(5));
        assert!(count("0").is_err());
        assert!(count("-1").is_err());
    }

    #[test]
    fn only_argon2id_hashes_are_accepted() {
        let good = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2Gk5y1C1zQK3qvu8t3cYkq6n1C2Kk1v3bJ2hQmE0a8c";
        assert_eq!(argon2id_phc(good), Ok(()));
        assert_eq!(
            argon2id_phc(&good.replace("argon2id", "argon2i")),
            Err(IdpProblem::PasswordHash)
        );
        assert_eq!(argon2id_phc("hunter2"), Err(IdpProblem::PasswordHash));
        assert!(matches!(
            argon2id_phc(&good.replace("m=19456", "m=1")),
            Err(IdpProblem::PasswordHashParams(_))
        ));
    }
}
