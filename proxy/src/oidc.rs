//! The OpenID Connect relying party: discovery, the JWKS cache (refreshed on an unknown `kid`,
//! rate-limited), the authorization-code flow with PKCE, ID-token and bearer-JWT validation with
//! one rule set, refresh, userinfo, RP-initiated logout, and back-channel logout tokens
//! (`logout_token.rs`: checked with the same keys, each accepted once). Everything that talks
//! to the provider lives here; the request path only sees [`Identity`] values and typed errors.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone as _, Utc};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenVerifier, IssuerUrl, Nonce,
    OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadataWithLogout,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, SignatureVerificationError,
    TokenResponse as _,
};
use sekisho_config::{Oidc, SigningAlgorithm};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::session::{Identity, unix_now};

mod logout_token;

pub use logout_token::{BACKCHANNEL_EVENT, LogoutToken, LogoutTokenError};

/// Claims beyond the standard ones (groups, `nbf`, anything a policy may read).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraClaims {
    /// Every non-standard claim, as sent.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for ExtraClaims {}

type IdToken = openidconnect::IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Least time between two JWKS refreshes triggered by unknown key ids.
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Least time between two discovery attempts while the provider is unreachable.
const DISCOVERY_RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// Bearer tokens whose verification is remembered (until their `exp`).
const BEARER_CACHE_MAX: usize = 10_000;

/// What went wrong talking to, or believing, the provider.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Discovery failed; the provider is unreachable or its metadata is invalid.
    #[error("provider discovery failed: {0}")]
    Discovery(String),
    /// Discovery is being retried; the provider was unreachable moments ago.
    #[error("provider unavailable")]
    Unavailable,
    /// A token did not parse as a JWT.
    #[error("token is malformed: {0}")]
    Malformed(String),
    /// A token failed validation (signature, algorithm, issuer, audience, time, nonce).
    #[error("token rejected: {0}")]
    Rejected(String),
    /// The token endpoint refused the request (e.g. `invalid_grant`).
    #[error("provider refused the request: {0}")]
    Refused(String),
    /// The token or userinfo endpoint could not be reached or answered nonsense.
    #[error("provider request failed: {0}")]
    Transport(String),
}

/// The outcome of a code exchange or refresh.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Who logged in.
    pub identity: Identity,
    /// The raw ID token (for `id_token_hint`).
    pub id_token: Option<String>,
    /// Refresh token, when issued.
    pub refresh_token: Option<String>,
    /// Unix seconds when the tokens expire.
    pub expires_at: Option<u64>,
}

/// A verified JWT: who, and its `exp` and `iat` (Unix seconds).
#[derive(Debug, Clone)]
pub struct Verified {
    /// Who.
    pub identity: Identity,
    /// `exp`.
    pub expires_at: u64,
    /// `iat`: when the provider issued it (a back-channel logout of the user reaches tokens
    /// issued before it).
    pub issued_at: u64,
}

/// Parameters of a login started by [`OidcProvider::authorization_url`].
#[derive(Debug, Clone)]
pub struct LoginStart {
    /// Where to send the browser.
    pub url: Url,
    /// PKCE verifier to keep (in the flow cookie) for the code exchange.
    pub pkce_verifier: String,
}

struct Discovered {
    client: Client,
    issuer: IssuerUrl,
    end_session: Option<Url>,
    userinfo: Option<Url>,
    jwks_uri: Url,
}

/// How far provider discovery has come ([`OidcProvider::discovery`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// Metadata and JWKS fetched; `keys` signing keys known.
    Done {
        /// Keys in the JWKS.
        keys: usize,
    },
    /// Not attempted yet, or the first attempt still running.
    Pending,
    /// The last attempt failed: why.
    Failed(String),
}

/// The relying party for one configured provider.
pub struct OidcProvider {
    config: Oidc,
    http: reqwest::Client,
    discovered: RwLock<Option<Arc<Discovered>>>,
    jwks: RwLock<Arc<CoreJsonWebKeySet>>,
    last_discovery_attempt: Mutex<Option<Instant>>,
    /// Why the last discovery failed, until one succeeds (for `/readyz`).
    last_discovery_error: Mutex<Option<String>>,
    last_jwks_refresh: Mutex<Option<Instant>>,
    bearer_cache: RwLock<HashMap<String, Verified>>,
    allowed_algs: Vec<CoreJwsSigningAlgorithm>,
    /// Logout tokens accepted, until they expire.
    seen_logout_tokens: logout_token::SeenTokens,
    /// Failed fetches of the metadata and keys (for `/metrics`).
    fetch_errors: crate::metrics::FetchErrors,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.config.issuer.as_str())
            .finish_non_exhaustive()
    }
}

/// Whose rules a JWT is checked by.
#[derive(Debug, Clone, Copy)]
enum TokenKind<'a> {
    /// An ID token from our own login: `aud` must hold our client id, `nonce` must match.
    IdToken { nonce: Option<&'a str> },
    /// An ID token from a refresh: no nonce is required.
    RefreshedIdToken,
    /// A bearer JWT: `aud` must hold one of the configured bearer audiences.
    Bearer,
}

impl OidcProvider {
    /// A provider for `config`; discovery happens on first use (and is retried while failing).
    pub fn new(config: Oidc) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            // Never follow redirects from the provider: SSRF and token leaks (openidconnect docs).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Discovery(e.to_string()))?;
        let allowed_algs = config
            .allowed_algorithms
            .iter()
            .map(|a| core_alg(*a))
            .collect();
        Ok(OidcProvider {
            config,
            http,
            discovered: RwLock::new(None),
            jwks: RwLock::new(Arc::new(CoreJsonWebKeySet::new(Vec::new()))),
            last_discovery_attempt: Mutex::new(None),
            last_discovery_error: Mutex::new(None),
            last_jwks_refresh: Mutex::new(None),
            bearer_cache: RwLock::new(HashMap::new()),
            allowed_algs,
            seen_logout_tokens: logout_token::SeenTokens::default(),
            fetch_errors: crate::metrics::FetchErrors::default(),
        })
    }

    /// Failed fetches of the provider's metadata and keys, by kind.
    pub fn fetch_errors(&self) -> &crate::metrics::FetchErrors {
        &self.fetch_errors
    }

    /// Runs discovery now (at startup), so the first login does not wait for it.
    pub async fn discover(&self) -> Result<(), OidcError> {
        self.discovered().await.map(|_| ())
    }

    /// Whether the provider's metadata and JWKS have been fetched (discovery fetches both),
    /// for the readiness check.
    pub fn discovery(&self) -> Discovery {
        if self.discovered.read().ok().is_some_and(|d| d.is_some()) {
            let keys = self.jwks.read().map(|k| k.keys().len()).unwrap_or(0);
            return Discovery::Done { keys };
        }
        match self
            .last_discovery_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
        {
            Some(error) => Discovery::Failed(error),
            None => Discovery::Pending,
        }
    }

    async fn discovered(&self) -> Result<Arc<Discovered>, OidcError> {
        if let Some(d) = self.discovered.read().ok().and_then(|d| d.clone()) {
            return Ok(d);
        }
        {
            let mut last = self
                .last_discovery_attempt
                .lock()
                .map_err(|_| OidcError::Unavailable)?;
            if last.is_some_and(|t| t.elapsed() < DISCOVERY_RETRY_INTERVAL) {
                return Err(OidcError::Unavailable);
            }
            *last = Some(Instant::now());
        }
        let trimmed = self.config.issuer.as_str().trim_end_matches('/').to_owned();
        let mut candidates = vec![trimmed.clone()];
        if self.config.issuer.as_str() != trimmed {
            candidates.push(self.config.issuer.as_str().to_owned());
        }
        let mut last_error = String::new();
        for candidate in candidates {
            let issuer =
                IssuerUrl::new(candidate).map_err(|e| OidcError::Discovery(e.to_string()))?;
            match ProviderMetadataWithLogout::discover_async(issuer.clone(), &self.http).await {
                Ok(metadata) => {
                    let end_session = metadata
                        .additional_metadata()
                        .end_session_endpoint
                        .as_ref()
                        .map(|u| u.url().clone());
                    let userinfo = metadata.userinfo_endpoint().map(|u| u.url().clone());
                    let jwks_uri = metadata.jwks_uri().url().clone();
                    let jwks = metadata.jwks().clone();
                    let client = CoreClient::from_provider_metadata(
                        metadata,
                        ClientId::new(self.config.client_id.clone()),
                        Some(ClientSecret::new(
                            self.config.client_secret.expose().to_owned(),
                        )),
                    );
                    if let Ok(mut slot) = self.jwks.write() {
                        *slot = Arc::new(jwks);
                    }
                    let d = Arc::new(Discovered {
                        client,
                        issuer,
                        end_session,
                        userinfo,
                        jwks_uri,
                    });
                    if let Ok(mut slot) = self.discovered.write() {
                        *slot = Some(d.clone());
                    }
                    if let Ok(mut error) = self.last_discovery_error.lock() {
                        *error = None;
                    }
                    tracing::info!(issuer = %d.issuer.as_str(), "provider discovered");
                    return Ok(d);
                }
                Err(e) => last_error = error_chain(&e),
            }
        }
        tracing::warn!(error = %last_error, "provider discovery failed");
        self.fetch_errors
            .discovery
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut error) = self.last_discovery_error.lock() {
            *error = Some(last_error.clone());
        }
        Err(OidcError::Discovery(last_error))
    }

    /// Starts a login: the authorization URL carrying `state`, `nonce` and a fresh PKCE (S256)
    /// challenge, returning to `redirect_uri`.
    pub async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
    ) -> Result<LoginStart, OidcError> {
        let d = self.discovered().await?;
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| OidcError::Discovery(e.to_string()))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = state.to_owned();
        let nonce = nonce.to_owned();
        let mut request = d
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_redirect_uri(std::borrow::Cow::Owned(redirect))
            .set_pkce_challenge(challenge);
        for scope in self.config.scopes.iter().filter(|s| s.as_str() != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, _, _) = request.url();
        Ok(LoginStart {
            url,
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Completes a login: exchanges `code` (with the PKCE verifier) and validates the ID token
    /// against `nonce`.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Tokens, OidcError> {
        let d = self.discovered().await?;
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| OidcError::Discovery(e.to_string()))?;
        let response = d
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Discovery(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .set_redirect_uri(std::borrow::Cow::Owned(redirect))
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let raw_id_token = response
            .id_token()
            .map(ToString::to_string)
            .ok_or_else(|| OidcError::Rejected("token response has no id_token".into()))?;
        let Verified {
            mut identity,
            expires_at: id_exp,
            ..
        } = self
            .verify_jwt(&raw_id_token, TokenKind::IdToken { nonce: Some(nonce) })
            .await?;
        if identity.email.is_none() || identity.groups.is_empty() {
            self.merge_userinfo(&d, response.access_token().secret(), &mut identity)
                .await?;
        }
        let expires_at = response
            .expires_in()
            .map(|e| unix_now().saturating_add(e.as_secs()))
            .or(Some(id_exp));
        Ok(Tokens {
            identity,
            id_token: Some(raw_id_token),
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
            expires_at,
        })
    }

    /// Refreshes a session's tokens. `Refused` means the provider ended the session.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        current: &Identity,
    ) -> Result<Tokens, OidcError> {
        let d = self.discovered().await?;
        let token = RefreshToken::new(refresh_token.to_owned());
        let response = d
            .client
            .exchange_refresh_token(&token)
            .map_err(|e| OidcError::Discovery(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let mut identity = current.clone();
        let mut id_token = None;
        let mut id_exp = None;
        if let Some(raw) = response.id_token().map(ToString::to_string) {
            let Verified {
                identity: fresh,
                expires_at: exp,
                ..
            } = self.verify_jwt(&raw, TokenKind::RefreshedIdToken).await?;
            if fresh.sub != current.sub {
                return Err(OidcError::Rejected(
                    "refreshed ID token names another subject".into(),
                ));
            }
            identity = fresh;
            id_token = Some(raw);
            id_exp = Some(exp);
        }
        if identity.email.is_none() || identity.groups.is_empty() {
            self.merge_userinfo(&d, response.access_token().secret(), &mut identity)
                .await?;
        }
        Ok(Tokens {
            identity,
            id_token,
            refresh_token: Some(
                response
                    .refresh_token()
                    .map_or_else(|| refresh_token.to_owned(), |t| t.secret().clone()),
            ),
            expires_at: response
                .expires_in()
                .map(|e| unix_now().saturating_add(e.as_secs()))
                .or(id_exp),
        })
    }

    /// Validates an `Authorization: Bearer` JWT: its identity, expiry and issue time. Verified
    /// tokens are remembered until they expire, so a program's repeated requests cost one
    /// signature check.
    pub async fn verify_bearer(&self, token: &str) -> Result<Verified, OidcError> {
        let now = unix_now();
        if let Some(verified) = self
            .bearer_cache
            .read()
            .ok()
            .and_then(|c| c.get(token).cloned())
            && now < verified.expires_at
        {
            return Ok(verified);
        }
        let verified = self.verify_jwt(token, TokenKind::Bearer).await?;
        if let Ok(mut cache) = self.bearer_cache.write() {
            if cache.len() >= BEARER_CACHE_MAX {
                cache.retain(|_, v| now < v.expires_at);
            }
            if cache.len() < BEARER_CACHE_MAX {
                cache.insert(token.to_owned(), verified.clone());
            }
        }
        Ok(verified)
    }

    /// Verifies a back-channel logout token (Back-Channel Logout 1.0 §2.6) with the provider's
    /// keys (refetched once, rate-limited, when no key matches) and accepts it once: a token
    /// presented again before it expires is [`LogoutTokenError::Replayed`]. A logout that then
    /// cannot be carried out gives the token back with [`Self::release_logout_token`].
    pub async fn accept_logout_token(&self, raw: &str) -> Result<LogoutToken, LogoutTokenError> {
        let d = self
            .discovered()
            .await
            .map_err(|e| LogoutTokenError::ProviderUnavailable(e.to_string()))?;
        let now = unix_now();
        let skew = self.config.clock_skew.as_secs();
        let expected = logout_token::Expected {
            issuer: d.issuer.as_str(),
            client_id: &self.config.client_id,
            algorithms: &self.allowed_algs,
            now,
            skew,
        };
        let keys = || {
            self.jwks
                .read()
                .map(|k| k.clone())
                .unwrap_or_else(|_| Arc::new(CoreJsonWebKeySet::new(Vec::new())))
        };
        let token = match logout_token::verify(raw, &keys(), &expected) {
            Err(LogoutTokenError::NoMatchingKey) if self.refresh_jwks(&d).await => {
                logout_token::verify(raw, &keys(), &expected)?
            }
            other => other?,
        };
        self.seen_logout_tokens.claim(&token, skew, now)?;
        Ok(token)
    }

    /// Forgets an accepted logout token whose logout could not be carried out, so that the
    /// provider may send it again.
    pub fn release_logout_token(&self, token: &LogoutToken) {
        self.seen_logout_tokens.release(token);
    }

    /// The RP-initiated logout URL, when the provider has an `end_session_endpoint`.
    pub async fn end_session_url(
        &self,
        id_token_hint: Option<&str>,
        post_logout_redirect: &str,
    ) -> Option<Url> {
        let d = self.discovered().await.ok()?;
        let mut url = d.end_session.clone()?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(hint) = id_token_hint {
                query.append_pair("id_token_hint", hint);
            }
            query.append_pair("client_id", &self.config.client_id);
            query.append_pair("post_logout_redirect_uri", post_logout_redirect);
        }
        Some(url)
    }

    /// Verifies a JWT, refreshing the JWKS once (rate-limited) when its key id is unknown.
    /// Returns the identity and the token's `exp` and `iat`.
    async fn verify_jwt(&self, raw: &str, kind: TokenKind<'_>) -> Result<Verified, OidcError> {
        let d = self.discovered().await?;
        let token = IdToken::from_str(raw).map_err(|e| OidcError::Malformed(e.to_string()))?;
        match self.check(&d, &token, kind) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                if self.refresh_jwks(&d).await {
                    self.check(&d, &token, kind)
                        .map_err(|e| OidcError::Rejected(e.to_string()))?
                } else {
                    return Err(OidcError::Rejected(
                        "no key matches the token's key id".into(),
                    ));
                }
            }
            other => other.map_err(|e| OidcError::Rejected(e.to_string()))?,
        };
        // `check` succeeded: read the (now verified) claims once more for extraction.
        let claims = token
            .claims(&self.verifier(&d, kind), |_: Option<&Nonce>| Ok(()))
            .map_err(|e| OidcError::Rejected(e.to_string()))?;
        let now = unix_now();
        let skew = self.config.clock_skew.as_secs();
        match claims.additional_claims().rest.get("nbf") {
            None => {}
            Some(serde_json::Value::Number(n)) => {
                let nbf = n
                    .as_u64()
                    .ok_or_else(|| OidcError::Rejected("nbf is not a valid time".into()))?;
                if nbf > now.saturating_add(skew) {
                    return Err(OidcError::Rejected("token is not valid yet (nbf)".into()));
                }
            }
            Some(_) => return Err(OidcError::Rejected("nbf is not a number".into())),
        }
        let audiences: Vec<&str> = claims.audiences().iter().map(|a| a.as_str()).collect();
        match kind {
            TokenKind::IdToken { .. } | TokenKind::RefreshedIdToken => {
                match claims.authorized_party() {
                    Some(azp) if azp.as_str() != self.config.client_id => {
                        return Err(OidcError::Rejected("azp is not our client id".into()));
                    }
                    None if audiences.len() > 1 => {
                        return Err(OidcError::Rejected("several audiences but no azp".into()));
                    }
                    _ => {}
                }
            }
            TokenKind::Bearer => {
                let id_token_claims = claims.nonce().is_some()
                    || claims.access_token_hash().is_some()
                    || claims.code_hash().is_some();
                self.accept_as_access_token(jose_type(raw)?, &audiences, id_token_claims)?;
            }
        }
        let groups = match claims
            .additional_claims()
            .rest
            .get(&self.config.groups_claim)
        {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        let mut identity = Identity {
            sub: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned()),
            groups,
            issuer: d.issuer.as_str().to_owned(),
            email_verified: claims.email_verified(),
            claims: policy_claims(&claims.additional_claims().rest, &self.config.groups_claim),
            provider_sid: match claims.additional_claims().rest.get("sid") {
                None => None,
                Some(serde_json::Value::String(sid)) if !sid.is_empty() && sid.len() <= 256 => {
                    Some(sid.clone())
                }
                Some(_) => return Err(OidcError::Rejected("sid is not a session id".into())),
            },
        };
        self.settle_email_verified(&mut identity);
        let exp = u64::try_from(claims.expiration().timestamp()).unwrap_or(0);
        let iat = u64::try_from(claims.issue_time().timestamp()).unwrap_or(0);
        Ok(Verified {
            identity,
            expires_at: exp,
            issued_at: iat,
        })
    }

    fn check(
        &self,
        d: &Discovered,
        token: &IdToken,
        kind: TokenKind<'_>,
    ) -> Result<(), ClaimsVerificationError> {
        let verifier = self.verifier(d, kind);
        match kind {
            TokenKind::IdToken {
                nonce: Some(expected),
            } => {
                let expected = Nonce::new(expected.to_owned());
                token.claims(&verifier, &expected).map(|_| ())
            }
            TokenKind::IdToken { nonce: None }
            | TokenKind::RefreshedIdToken
            | TokenKind::Bearer => token
                .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                .map(|_| ()),
        }
    }

    fn verifier(
        &self,
        d: &Discovered,
        kind: TokenKind<'_>,
    ) -> IdTokenVerifier<'static, CoreJsonWebKey> {
        let jwks = self
            .jwks
            .read()
            .map(|k| (**k).clone())
            .unwrap_or_else(|_| CoreJsonWebKeySet::new(Vec::new()));
        let skew = chrono::Duration::from_std(self.config.clock_skew)
            .unwrap_or_else(|_| chrono::Duration::seconds(60));
        // A public-client verifier holds no secret, so no HMAC path exists at all.
        let verifier = IdTokenVerifier::new_public_client(
            ClientId::new(self.config.client_id.clone()),
            d.issuer.clone(),
            jwks,
        )
        .set_allowed_algs(self.allowed_algs.clone())
        .set_time_fn(move || Utc::now() - skew)
        .set_issue_time_verifier_fn(move |iat: DateTime<Utc>| {
            if iat > Utc::now() + skew {
                Err("issued in the future".to_owned())
            } else {
                Ok(())
            }
        });
        match kind {
            // Audience and `typ` checked by the caller (`accept_as_access_token`): an access
            // token may say `at+jwt`, which the ID-token rules refuse.
            TokenKind::Bearer => verifier
                .require_audience_match(false)
                .allow_all_jose_types(),
            // Extra audiences on an ID token are not trusted.
            _ => verifier.set_other_audience_verifier_fn(|_| false),
        }
    }

    /// Refetches the JWKS unless that happened within [`JWKS_REFRESH_INTERVAL`]. Returns true
    /// when fresh keys were loaded.
    async fn refresh_jwks(&self, d: &Discovered) -> bool {
        {
            let Ok(mut last) = self.last_jwks_refresh.lock() else {
                return false;
            };
            if last.is_some_and(|t| t.elapsed() < JWKS_REFRESH_INTERVAL) {
                tracing::debug!("unknown key id; JWKS refresh rate-limited");
                return false;
            }
            *last = Some(Instant::now());
        }
        match CoreJsonWebKeySet::fetch_async(
            &openidconnect::JsonWebKeySetUrl::from_url(d.jwks_uri.clone()),
            &self.http,
        )
        .await
        {
            Ok(jwks) => {
                if let Ok(mut slot) = self.jwks.write() {
                    *slot = Arc::new(jwks);
                }
                tracing::info!("JWKS refreshed after an unknown key id");
                true
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "JWKS refresh failed");
                self.fetch_errors
                    .jwks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }

    /// Whether a verified bearer JWT is an access credential for sekisho, not an ID token (which
    /// is issued to a client as proof of a login, is handed around in logout URLs, and is no
    /// access credential). Accepted: a JWT access token (RFC 9068, `typ: at+jwt`) whose audience
    /// is a bearer audience, or a JWT whose audience is a bearer audience other than sekisho's
    /// own client id (an audience the provider gives tokens for programs). Refused whatever
    /// its audience: a token carrying ID-token claims (`nonce`, `at_hash`, `c_hash`) or typed as
    /// something other than a JWT or an access token (`logout+jwt`, `secevent+jwt`, ...).
    fn accept_as_access_token(
        &self,
        typ: JoseType,
        audiences: &[&str],
        id_token_claims: bool,
    ) -> Result<(), OidcError> {
        if typ == JoseType::Other {
            return Err(OidcError::Rejected(
                "the token's typ is neither JWT nor at+jwt".into(),
            ));
        }
        if id_token_claims {
            return Err(OidcError::Rejected(
                "an ID token (nonce, at_hash or c_hash) is not an access token".into(),
            ));
        }
        let accepted = |a: &&str| self.config.bearer_audiences.iter().any(|b| b == a);
        let client_id = self.config.client_id.as_str();
        let for_programs = audiences.iter().any(|a| *a != client_id && accepted(a));
        let access_token = typ == JoseType::AccessToken && audiences.iter().any(accepted);
        if for_programs || access_token {
            return Ok(());
        }
        if audiences.contains(&client_id) && accepted(&client_id) {
            return Err(OidcError::Rejected(format!(
                "a token for sekisho's client id {client_id:?} must be an access token (typ \
                 at+jwt); ID tokens are not bearer credentials"
            )));
        }
        let named: Vec<String> = audiences
            .iter()
            .map(|a| format!("\"{}\"", a.escape_default()))
            .collect();
        Err(OidcError::Rejected(format!(
            "audience {} is not accepted",
            named.join(", ")
        )))
    }

    /// `assume_email_verified`: an address sent with no `email_verified` at all counts as
    /// verified; an explicit `false` stays false.
    fn settle_email_verified(&self, identity: &mut Identity) {
        if self.config.assume_email_verified
            && identity.email.is_some()
            && identity.email_verified.is_none()
        {
            identity.email_verified = Some(true);
        }
    }

    /// Fills email and groups from the userinfo endpoint when the ID token lacked them.
    async fn merge_userinfo(
        &self,
        d: &Discovered,
        access_token: &str,
        identity: &mut Identity,
    ) -> Result<(), OidcError> {
        let Some(url) = d.userinfo.clone() else {
            return Ok(());
        };
        let response = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(|e| OidcError::Transport(error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(OidcError::Transport(format!(
                "userinfo answered {}",
                response.status()
            )));
        }
        let body: serde_json::Map<String, serde_json::Value> = response
            .json()
            .await
            .map_err(|e| OidcError::Transport(error_chain(&e)))?;
        if body.get("sub").and_then(|s| s.as_str()) != Some(identity.sub.as_str()) {
            return Err(OidcError::Rejected("userinfo names another subject".into()));
        }
        if identity.email.is_none() {
            identity.email = body
                .get("email")
                .and_then(|e| e.as_str())
                .map(str::to_owned);
            identity.email_verified = body
                .get("email_verified")
                .and_then(serde_json::Value::as_bool);
            self.settle_email_verified(identity);
        }
        for (name, value) in policy_claims(&body, &self.config.groups_claim) {
            identity.claims.entry(name).or_insert(value);
        }
        if identity.name.is_none() {
            identity.name = body.get("name").and_then(|e| e.as_str()).map(str::to_owned);
        }
        if identity.groups.is_empty() {
            identity.groups = match body.get(&self.config.groups_claim) {
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                Some(serde_json::Value::String(one)) => vec![one.clone()],
                _ => Vec::new(),
            };
        }
        Ok(())
    }
}

/// What a JWT's `typ` header says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoseType {
    /// No `typ`, or `JWT` / `application/jwt` / `application/jose`: a plain JWT.
    Plain,
    /// `at+jwt` or `application/at+jwt` (RFC 9068).
    AccessToken,
    /// Anything else: a logout token, a security event, ... — never a bearer credential.
    Other,
}

/// Reads the `typ` of a compact JWS's protected header (already parsed once by the verifier, so
/// a failure here is a malformed token).
fn jose_type(raw: &str) -> Result<JoseType, OidcError> {
    use base64::Engine as _;
    let malformed = || OidcError::Malformed("unreadable JOSE header".into());
    let head = raw.split('.').next().ok_or_else(malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| malformed())?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    let typ = match header.get("typ") {
        None => return Ok(JoseType::Plain),
        Some(serde_json::Value::String(typ)) => typ.to_ascii_lowercase(),
        Some(_) => return Ok(JoseType::Other),
    };
    let typ = typ.strip_prefix("application/").unwrap_or(&typ);
    Ok(match typ {
        "jwt" | "jose" => JoseType::Plain,
        "at+jwt" => JoseType::AccessToken,
        _ => JoseType::Other,
    })
}

/// Claims kept in the session for `claim/NAME` policy criteria: scalars and arrays of scalars,
/// except the registered JWT/OIDC ones and the groups claim (kept separately), up to
/// [`MAX_POLICY_CLAIMS_BYTES`] in total so a verbose provider cannot overflow the cookie.
fn policy_claims(
    all: &serde_json::Map<String, serde_json::Value>,
    groups_claim: &str,
) -> serde_json::Map<String, serde_json::Value> {
    const REGISTERED: [&str; 16] = [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "nonce",
        "at_hash",
        "c_hash",
        "azp",
        "auth_time",
        "sid",
        "acr",
        "amr",
        "s_hash",
    ];
    let mut kept = serde_json::Map::new();
    let mut budget = MAX_POLICY_CLAIMS_BYTES;
    for (name, value) in all {
        if REGISTERED.contains(&name.as_str())
            || name == groups_claim
            || name == "email"
            || name == "email_verified"
            || name == "name"
        {
            continue;
        }
        let scalar = |v: &serde_json::Value| v.is_string() || v.is_number() || v.is_boolean();
        let keep = scalar(value)
            || value
                .as_array()
                .is_some_and(|items| items.iter().all(scalar));
        let size = name.len() + value.to_string().len();
        if keep && size <= budget {
            budget -= size;
            kept.insert(name.clone(), value.clone());
        } else if keep {
            tracing::warn!(claim = %name, "claim dropped from the session: claims exceed the size budget");
        }
    }
    kept
}

/// Bytes of extra claims a session keeps.
const MAX_POLICY_CLAIMS_BYTES: usize = 2048;

fn core_alg(alg: SigningAlgorithm) -> CoreJwsSigningAlgorithm {
    match alg {
        SigningAlgorithm::Rs256 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        SigningAlgorithm::Rs384 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
        SigningAlgorithm::Rs512 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
        SigningAlgorithm::Ps256 => CoreJwsSigningAlgorithm::RsaSsaPssSha256,
        SigningAlgorithm::Es256 => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        SigningAlgorithm::Es384 => CoreJwsSigningAlgorithm::EcdsaP384Sha384,
        SigningAlgorithm::EdDsa => CoreJwsSigningAlgorithm::EdDsa,
    }
}

fn token_error<RE: std::error::Error + 'static, T: openidconnect::ErrorResponse + 'static>(
    e: RequestTokenError<RE, T>,
) -> OidcError {
    match e {
        RequestTokenError::ServerResponse(response) => OidcError::Refused(response.to_string()),
        other => OidcError::Transport(error_chain(&other)),
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Unix seconds as a UTC time (for tests and logs).
pub fn utc(secs: u64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(i64::try_from(secs).ok()?, 0).single()
}
