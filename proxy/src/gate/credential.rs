//! The credential a request presents: `Authorization: Bearer` (a JWT access token of the
//! provider, never an ID token; its provider session not signed out, here or by the provider's
//! back-channel logout, nor its user signed out by the provider since it was issued) or the
//! session cookie (through the session layer). A rejected credential is counted and recorded.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::{self, HeaderMap, HeaderValue};

use super::{Authenticated, Gate};
use crate::audit::AuthActivity;
use crate::error::ProxyError;
use crate::facts::Facts;
use crate::metrics::AuthFailure;
use crate::oidc::OidcError;
use crate::session::{CookieCodec, IdentityValues};
use crate::sessions::{Over, Presented};

impl Gate {
    /// Authenticates by bearer token (when an `Authorization: Bearer` header is present) or by
    /// session cookie. `Ok(None)` is "no valid credential". A session refreshed or touched here
    /// is re-issued, and a dead one cleared, through `set_cookies`, which every response of the
    /// request carries.
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
        codec: &CookieCodec,
        set_cookies: &mut Vec<HeaderValue>,
        facts: &Facts,
    ) -> Result<Option<Authenticated>, ProxyError> {
        let mut authorizations = headers.get_all(header::AUTHORIZATION).iter();
        let authorization = authorizations.next();
        if authorizations.next().is_some() {
            return Err(ProxyError::BadRequest {
                reason: "more than one Authorization header",
            });
        }
        if let Some(value) = authorization {
            let text = value.to_str().map_err(|_| ProxyError::BadRequest {
                reason: "Authorization header is not text",
            })?;
            if let Some((scheme, token)) = text.split_once(' ')
                && scheme.eq_ignore_ascii_case("bearer")
            {
                return self.bearer(token.trim(), facts).await.map(Some);
            }
        }
        let source = || facts.source();
        match self
            .sessions
            .present(headers, codec, set_cookies, facts.record.client_ip, &source)
            .await?
        {
            Presented::Live(session) => Ok(Some(Authenticated::Session { session })),
            Presented::Absent => Ok(None),
            Presented::Over(over) => {
                self.counters.auth_failures.count(match over {
                    Over::Expired => AuthFailure::SessionExpired,
                    Over::Idle => AuthFailure::SessionIdle,
                    Over::Revoked => AuthFailure::SessionRevoked,
                    Over::ProviderLogout => AuthFailure::ProviderLogout,
                    Over::RefreshRefused => AuthFailure::RefreshRefused,
                });
                Ok(None)
            }
            Presented::Rejected(rejection) => {
                self.counters
                    .auth_failures
                    .count(AuthFailure::CookieInvalid);
                self.counters
                    .invalid_cookies
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%rejection, "session cookie refused");
                self.sessions.failure(facts.record.client_ip);
                self.audit.keep(facts.source().auth(
                    AuthActivity::CredentialRejected,
                    false,
                    Some(format!("session cookie rejected: {rejection}")),
                    None,
                    None,
                ));
                Ok(None)
            }
        }
    }

    /// A bearer token: verified as an access token of the provider, refused when its provider
    /// session was signed out (here, or at the provider: back-channel logout) or its user was
    /// signed out by the provider after it was issued.
    async fn bearer(&self, token: &str, facts: &Facts) -> Result<Authenticated, ProxyError> {
        let mut revoked = false;
        let verified = self.oidc.verify_bearer(token).await.and_then(|verified| {
            match self
                .sessions
                .provider_session_revoked(&verified.identity, verified.issued_at)
            {
                Some(why) => {
                    revoked = true;
                    Err(OidcError::Rejected(why.to_owned()))
                }
                None => Ok(verified),
            }
        });
        match verified {
            Ok(crate::oidc::Verified {
                identity,
                expires_at,
                issued_at,
            }) => {
                self.sessions
                    .bearer_used(facts.record.client_ip, expires_at);
                Ok(Authenticated::Bearer {
                    values: IdentityValues::new(&identity),
                    identity: Arc::new(identity),
                    token_hash: crate::session::sid_hash(token),
                    issued_at,
                    expires_at,
                })
            }
            Err(OidcError::Unavailable | OidcError::Discovery(_)) => Err(ProxyError::Unavailable {
                detail: "provider unavailable for bearer validation".into(),
            }),
            Err(e) => {
                self.counters
                    .rejected_tokens
                    .fetch_add(1, Ordering::Relaxed);
                self.counters.auth_failures.count(if revoked {
                    AuthFailure::BearerRevoked
                } else {
                    AuthFailure::BearerInvalid
                });
                self.sessions.failure(facts.record.client_ip);
                self.audit.keep(facts.source().auth(
                    AuthActivity::CredentialRejected,
                    false,
                    Some(format!("bearer token rejected: {e}")),
                    None,
                    Some(crate::session::sid_hash(token)),
                ));
                Err(ProxyError::Unauthenticated {
                    detail: e.to_string(),
                    invalid_token: true,
                })
            }
        }
    }
}
