//! The end of a sign-in: `/.sekisho/callback` (the provider's redirect back: state bound to
//! this browser's flow cookie and used once, the code exchanged with PKCE, the ID token and
//! nonce checked, a session started) and `/.sekisho/login?rd=` (an explicit start, the return
//! target validated). The start of a sign-in is the gate's (`gate/login.rs`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use http::header::HeaderValue;
use http::{Request, Response};

use super::Proxy;
use crate::error::{ProxyBody, ProxyError};
use crate::facts::Facts;
use crate::gate::login::{FLOW_LIFETIME, FlowState, flow_cookie_name, redirect};
use crate::oidc::OidcError;
use crate::redirect::validate_return_to;
use crate::seal::{Purpose, constant_time_eq};
use crate::session::{request_cookies, unix_now};
use crate::target::Target;

impl Proxy {
    /// The provider's redirect back: checks state (bound to this browser's flow cookie, single
    /// use), exchanges the code with PKCE, validates the ID token and nonce, starts a session.
    pub(super) async fn callback<B>(
        &self,
        request: &Request<B>,
        target: &Target,
        facts: &Facts,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let refuse = |detail: &str| {
            self.counters
                .rejected_callbacks
                .fetch_add(1, Ordering::Relaxed);
            ProxyError::Unauthenticated {
                detail: detail.to_owned(),
                invalid_token: false,
            }
        };
        let params: HashMap<String, String> =
            url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        if let Some(error) = params.get("error") {
            tracing::info!(error = ?error, description = params.get("error_description").map(String::as_str).unwrap_or(""), "provider returned an error");
            return Err(refuse("provider returned an error"));
        }
        let (Some(state), Some(code)) = (params.get("state"), params.get("code")) else {
            return Err(ProxyError::BadRequest {
                reason: "callback lacks state or code",
            });
        };
        let sessions = self.gate.sessions();
        let codec = sessions.codec(target.scheme);
        let cookie_name = flow_cookie_name(codec, state);
        let sealed = request_cookies(request.headers())
            .find(|(name, _)| *name == cookie_name)
            .map(|(_, v)| v.to_owned())
            .ok_or_else(|| refuse("no login flow for this state in this browser"))?;
        let flow: FlowState = sessions
            .sealer()
            .open(Purpose::LoginFlow, &sealed)
            .ok()
            .and_then(|plain| serde_json::from_slice(&plain).ok())
            .ok_or_else(|| refuse("login flow cookie invalid"))?;
        if !constant_time_eq(flow.state.as_bytes(), state.as_bytes()) {
            return Err(refuse("state mismatch"));
        }
        let now = unix_now();
        if now >= flow.created_at.saturating_add(FLOW_LIFETIME.as_secs()) {
            return Err(refuse("login flow expired"));
        }
        if !self.claim_state(state, now) {
            return Err(refuse("state already used"));
        }
        let tokens = self
            .gate
            .oidc()
            .exchange_code(code, &flow.redirect_uri, &flow.pkce_verifier, &flow.nonce)
            .await
            .map_err(|e| match e {
                OidcError::Unavailable | OidcError::Discovery(_) | OidcError::Transport(_) => {
                    ProxyError::Unavailable {
                        detail: e.to_string(),
                    }
                }
                other => refuse(&other.to_string()),
            })?;
        let (_, mut cookies) = sessions.start(tokens, codec, &facts.source())?;
        cookies.push(
            codec
                .set_cookie(&cookie_name, "", 0)
                .map_err(|e| ProxyError::Internal {
                    detail: e.to_string(),
                })?,
        );
        let return_to = validate_return_to(
            &flow.return_to,
            &target.origin(),
            &self.config.allowed_redirect_origins,
        )
        .unwrap_or_else(|_| "/".to_owned());
        Ok(redirect(&return_to, cookies))
    }

    /// `/.sekisho/login?rd=TARGET`: validates the return target (same origin or an allowed
    /// origin, nothing else), then starts a login, or returns at once when already signed in.
    pub(super) async fn explicit_login<B>(
        &self,
        request: &Request<B>,
        target: &Target,
        facts: &Facts,
        cookies: &mut Vec<HeaderValue>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let rd = url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "rd")
            .map_or_else(|| "/".to_owned(), |(_, v)| v.into_owned());
        let return_to =
            validate_return_to(&rd, &target.origin(), &self.config.allowed_redirect_origins)
                .map_err(|e| {
                    tracing::info!(error = ?e.to_string(), "refused return target");
                    ProxyError::BadRequest {
                        reason: "invalid return target",
                    }
                })?;
        let codec = self.gate.sessions().codec(target.scheme);
        if self
            .gate
            .authenticate(request.headers(), codec, cookies, facts)
            .await?
            .is_some()
        {
            return Ok(redirect(&return_to, Vec::new()));
        }
        self.gate.start_login(target, &return_to).await
    }

    /// Marks a state as used; false when it already was (a replayed callback). States are
    /// kept by their hash, which is also what the other instances are told.
    fn claim_state(&self, state: &str, now: u64) -> bool {
        let key = crate::session::sid_hash(state);
        let until = now.saturating_add(FLOW_LIFETIME.as_secs());
        let claimed = match self.used_states.lock() {
            Ok(mut used) => used.claim(&key, now, until),
            Err(_) => return false,
        };
        if claimed && let Some(shared) = &self.shared {
            shared.publish(crate::shared::Message::StateUsed { key, until });
        }
        claimed
    }
}
