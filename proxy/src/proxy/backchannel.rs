//! `POST /.sekisho/backchannel-logout` (OpenID Connect Back-Channel Logout 1.0, §2.5 and §2.8):
//! the provider posts a logout token (a form field `logout_token`) when a provider session
//! ends. Route policy does not apply: the token authenticates itself (`oidc.rs` checks its
//! signature, claims and replay). The session layer then ends what it names — the sessions of
//! that provider session, or of that user before the token was issued — durably, and announces
//! their end to every door (tunnels, the NIC guard).
//!
//! Answers: 200 with `Cache-Control: no-store` once the sessions are ended; 400 with
//! `{"error":"invalid_request","error_description":…}` naming the check that failed; 405 for
//! another method; 503 when the provider's keys cannot be fetched (the provider may send the
//! token again). Every request leaves an Authentication record (`backchannel_logout`: success,
//! or the reason it was refused) beside its HTTP record.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt as _;

use super::Proxy;
use crate::audit::{AuthActivity, Decision, Event};
use crate::error::{BoxError, ProxyBody, ProxyError, full};
use crate::facts::Facts;
use crate::oidc::{LogoutToken, LogoutTokenError};
use crate::session::Identity;
use crate::sessions::{ProviderLogout, ProviderLogoutOutcome};

/// Where the provider posts logout tokens.
pub const BACKCHANNEL_LOGOUT_PATH: &str = "/.sekisho/backchannel-logout";
/// Largest body read: a logout token (at most 16 KiB) and its field name, form-encoded.
const MAX_BODY: usize = 24 * 1024;

/// Why a back-channel logout request was not carried out.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// Not a POST.
    #[error("back-channel logout takes POST, not {0}")]
    Method(Method),
    /// The request is not a form with one `logout_token`.
    #[error("{0}")]
    Request(&'static str),
    /// The token failed a check (or could not be checked).
    #[error(transparent)]
    Token(#[from] LogoutTokenError),
    /// The sessions could not be ended (the revocation could not be written).
    #[error("the logout could not be carried out: {0}")]
    Failed(#[source] ProxyError),
}

impl Proxy {
    /// `/.sekisho/backchannel-logout`.
    pub(super) async fn backchannel_logout<B>(
        &self,
        request: Request<B>,
        facts: &mut Facts,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let outcome = self.receive_logout(request, facts).await;
        let counters = &self.counters;
        let count = |c: &std::sync::atomic::AtomicU64| {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        match outcome {
            Ok((token, done)) => {
                count(&counters.backchannel_accepted);
                facts.record.decision = Decision::Allow;
                let ended = match (&token.sid, &token.sub) {
                    (Some(_), _) => "its provider session (sid) ended".to_owned(),
                    (None, _) => format!(
                        "every session of the user that began by {} ended",
                        crate::oidc::utc(token.issued_at.min(crate::session::unix_now()))
                            .map_or_else(|| token.issued_at.to_string(), |t| t.to_rfc3339())
                    ),
                };
                let detail = format!(
                    "logout token {:?} accepted: {ended}; {} live sessions announced as ended{}",
                    token.jti,
                    done.ended,
                    if done.revoked {
                        ""
                    } else {
                        " (the revocation was already in force)"
                    }
                );
                tracing::info!(issuer = %token.issuer, jti = ?token.jti, ended = done.ended, "back-channel logout accepted");
                self.record(logout_record(facts, Some(&token), true, detail));
                let mut response = Response::new(full(Bytes::new()));
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                Ok(response)
            }
            Err(refusal) => {
                let reason = refusal.to_string();
                tracing::info!(reason = %reason, "back-channel logout refused");
                self.record(logout_record(facts, None, false, reason.clone()));
                match refusal {
                    Refusal::Method(_) => {
                        count(&counters.backchannel_refused);
                        Err(ProxyError::MethodNotAllowed)
                    }
                    Refusal::Token(e) if e.is_transient() => {
                        count(&counters.backchannel_failed);
                        Err(ProxyError::Unavailable { detail: reason })
                    }
                    Refusal::Failed(e) => {
                        count(&counters.backchannel_failed);
                        Err(e)
                    }
                    Refusal::Request(_) | Refusal::Token(_) => {
                        count(&counters.backchannel_refused);
                        facts.record.decision = if matches!(refusal, Refusal::Token(_)) {
                            Decision::Unauthenticated
                        } else {
                            Decision::Error
                        };
                        facts.record.detail = Some(reason.clone());
                        Ok(invalid_request(&reason))
                    }
                }
            }
        }
    }

    /// Reads the form, checks the token, ends what it names.
    async fn receive_logout<B>(
        &self,
        request: Request<B>,
        facts: &Facts,
    ) -> Result<(LogoutToken, ProviderLogoutOutcome), Refusal>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        if request.method() != Method::POST {
            return Err(Refusal::Method(request.method().clone()));
        }
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(Refusal::Request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let body = http_body_util::Limited::new(request.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| Refusal::Request("the body is larger than 24 KiB or unreadable"))?
            .to_bytes();
        let mut tokens = url::form_urlencoded::parse(&body)
            .filter(|(name, _)| name == "logout_token")
            .map(|(_, value)| value);
        let raw = match (tokens.next(), tokens.next()) {
            (Some(token), None) if !token.is_empty() => token,
            (Some(_), Some(_)) => return Err(Refusal::Request("logout_token is repeated")),
            _ => return Err(Refusal::Request("logout_token is missing")),
        };
        let oidc = self.gate.oidc();
        let token = oidc.accept_logout_token(&raw).await?;
        let logout = ProviderLogout {
            issuer: token.issuer.clone(),
            sid: token.sid.clone(),
            sub: token.sub.clone(),
            issued_at: token.issued_at,
        };
        match self
            .gate
            .sessions()
            .end_provider_session(&logout, facts.source())
            .await
        {
            Ok(done) => Ok((token, done)),
            Err(e) => {
                // Not carried out: the provider's retry of this token is no replay.
                oidc.release_logout_token(&token);
                Err(Refusal::Failed(e))
            }
        }
    }
}

/// The Authentication record of a back-channel logout request: who (the user, when the token
/// named one), which provider session (its revocation key), and what happened.
fn logout_record(
    facts: &Facts,
    token: Option<&LogoutToken>,
    success: bool,
    detail: String,
) -> Event {
    let identity = token.and_then(|t| {
        let sub = t.sub.clone()?;
        Some(std::sync::Arc::new(Identity {
            sub,
            email: None,
            name: None,
            groups: Vec::new(),
            issuer: t.issuer.clone(),
            email_verified: None,
            claims: serde_json::Map::new(),
            provider_sid: None,
        }))
    });
    let session = token.and_then(|t| {
        t.sid
            .as_deref()
            .map(|sid| crate::session::provider_logout_hash(&t.issuer, sid))
    });
    let mut event = facts.source().auth(
        AuthActivity::BackchannelLogout,
        success,
        Some(detail),
        identity,
        session,
    );
    if let (Event::Auth(record), Some(token)) = (&mut event, token) {
        record.provider = Some(token.issuer.clone());
    }
    event
}

/// 400 with an OAuth error body (Back-Channel Logout 1.0 §2.8).
fn invalid_request(description: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": "invalid_request",
        "error_description": description,
    });
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
