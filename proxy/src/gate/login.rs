//! The start of a sign-in: the browser goes to the provider with state, nonce and a PKCE S256
//! challenge; the verifier and where to return wait in a sealed, short-lived cookie bound to
//! this browser (`{cookie}_flow_{state prefix}`). The callback (`proxy/login.rs`) opens it.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::Gate;
use crate::error::{ProxyBody, ProxyError, full};
use crate::redirect::origin_string;
use crate::seal::Purpose;
use crate::session::{CookieCodec, unix_now};
use crate::target::Target;

/// Path of the OIDC callback on every route host.
pub const CALLBACK_PATH: &str = "/.sekisho/callback";
/// Lifetime of a login flow (state, nonce, PKCE verifier).
pub const FLOW_LIFETIME: Duration = Duration::from_secs(600);

/// What the login-flow cookie carries between the redirect and the callback.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FlowState {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub redirect_uri: String,
    pub return_to: String,
    pub created_at: u64,
}

impl Gate {
    /// Redirects a browser to the provider, remembering state, nonce, PKCE verifier and where
    /// to return in a sealed, short-lived cookie bound to this browser.
    pub(crate) async fn start_login(
        &self,
        target: &Target,
        return_to: &str,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let internal = |e: &dyn std::fmt::Display| ProxyError::Internal {
            detail: e.to_string(),
        };
        let state = crate::seal::random_token(24).map_err(|e| internal(&e))?;
        let nonce = crate::seal::random_token(24).map_err(|e| internal(&e))?;
        let redirect_uri = format!("{}{CALLBACK_PATH}", origin_string(&target.origin()));
        let login = self
            .oidc
            .authorization_url(&redirect_uri, &state, &nonce)
            .await
            .map_err(|e| ProxyError::Unavailable {
                detail: e.to_string(),
            })?;
        let flow = FlowState {
            state: state.clone(),
            nonce,
            pkce_verifier: login.pkce_verifier,
            redirect_uri,
            return_to: return_to.to_owned(),
            created_at: unix_now(),
        };
        let plain = serde_json::to_vec(&flow).map_err(|e| internal(&e))?;
        let sealed = self
            .sessions
            .sealer()
            .seal(Purpose::LoginFlow, &plain)
            .map_err(|e| internal(&e))?;
        let codec = self.sessions.codec(target.scheme);
        let cookie = codec
            .set_cookie(
                &flow_cookie_name(codec, &state),
                &sealed,
                FLOW_LIFETIME.as_secs(),
            )
            .map_err(|e| internal(&e))?;
        Ok(redirect(login.url.as_str(), vec![cookie]))
    }
}

/// The flow cookie's name for `state`.
pub(crate) fn flow_cookie_name(codec: &CookieCodec, state: &str) -> String {
    let prefix: String = state.chars().take(12).collect();
    format!("{}_flow_{prefix}", codec.name)
}

/// A 302 to `location`, not cached, setting `cookies`.
pub(crate) fn redirect(location: &str, cookies: Vec<HeaderValue>) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    response
}
