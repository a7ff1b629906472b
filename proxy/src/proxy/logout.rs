//! `/.sekisho/logout`: a GET the browser says it made itself signs out at once; any other GET
//! or HEAD gets a confirmation form whose POST carries a token bound to this browser's session.
//! The session layer revokes the session and publishes its end.

use bytes::Bytes;
use http::header::HeaderMap;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt as _;

use super::{LOGOUT_PATH, Proxy, SIGNED_OUT_PATH};
use crate::error::{BoxError, ProxyBody, ProxyError, full, html_escape, page};
use crate::facts::Facts;
use crate::gate::login::{FLOW_LIFETIME, redirect};
use crate::redirect::origin_string;
use crate::seal::{Purpose, constant_time_eq};
use crate::session::{CookieCodec, SessionState, unix_now};
use crate::target::Target;

impl Proxy {
    /// `/.sekisho/logout`. A GET the browser says it made itself (`Sec-Fetch-Site: same-origin`
    /// or `none`: a link on this origin, a typed URL, a bookmark) signs out at once; any other
    /// GET (another site, or no such header) only shows a confirmation form, whose POST carries
    /// a token bound to this browser's session: another site can neither end the session nor
    /// the provider sign-in with a link or an image.
    pub(super) async fn logout<B>(
        &self,
        request: Request<B>,
        target: &Target,
        request_id: &str,
        facts: &Facts,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let sessions = self.gate.sessions();
        let codec = sessions.codec(target.scheme);
        let session = codec.read(sessions.sealer(), request.headers()).ok();
        let bound_to = session
            .as_ref()
            .map(SessionState::sid_hash)
            .unwrap_or_default();
        match *request.method() {
            Method::GET if same_origin_navigation(request.headers()) => {}
            // Any other GET, and every HEAD (no navigation: link checkers and prefetchers send
            // it), only gets the form.
            Method::GET | Method::HEAD => {
                let token = self.logout_token(&bound_to)?;
                return Ok(logout_confirmation_page(&token, request_id));
            }
            Method::POST => {
                let body = http_body_util::Limited::new(request.into_body(), 4096)
                    .collect()
                    .await
                    .map_err(|_| ProxyError::BadRequest {
                        reason: "sign-out form too large or unreadable",
                    })?
                    .to_bytes();
                let token = url::form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                if !self.logout_token_valid(&token, &bound_to) {
                    return Err(ProxyError::Forbidden {
                        reason: "The sign-out form expired or belongs to another session; \
                                 open the sign-out page again."
                            .into(),
                    });
                }
            }
            _ => return Err(ProxyError::MethodNotAllowed),
        }
        self.end_session(codec, session, target, facts).await
    }

    /// Ends a live session (the session layer revokes it durably, the provider session id
    /// too, and publishes the end), clears cookies, and sends the browser through the
    /// provider's RP-initiated logout when it has one. A session already revoked or expired is
    /// only cleared: nothing is written.
    async fn end_session(
        &self,
        codec: &CookieCodec,
        session: Option<SessionState>,
        target: &Target,
        facts: &Facts,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let sessions = self.gate.sessions();
        let live = session.filter(|state| sessions.is_live(state));
        if let Some(state) = &live {
            sessions.end(state, facts.source()).await?;
        }
        let post_logout = match &self.config.oidc.post_logout_redirect_uri {
            Some(url) => url.to_string(),
            None => format!("{}{SIGNED_OUT_PATH}", origin_string(&target.origin())),
        };
        let id_token = live.as_ref().and_then(|s| s.id_token.as_deref());
        let location = match self
            .gate
            .oidc()
            .end_session_url(id_token, &post_logout)
            .await
        {
            Some(url) => url.to_string(),
            None => post_logout,
        };
        Ok(redirect(&location, codec.clear()))
    }

    /// A sign-out form token for the session `sid_hash` (empty: no session), valid 10 minutes.
    fn logout_token(&self, sid_hash: &str) -> Result<String, ProxyError> {
        let expires = unix_now().saturating_add(FLOW_LIFETIME.as_secs());
        self.gate
            .sessions()
            .sealer()
            .seal(
                Purpose::LogoutConfirmation,
                format!("{expires} {sid_hash}").as_bytes(),
            )
            .map_err(|e| ProxyError::Internal {
                detail: e.to_string(),
            })
    }

    fn logout_token_valid(&self, token: &str, sid_hash: &str) -> bool {
        let Ok(plain) = self
            .gate
            .sessions()
            .sealer()
            .open(Purpose::LogoutConfirmation, token)
        else {
            return false;
        };
        let Some((expires, bound)) = std::str::from_utf8(&plain)
            .ok()
            .and_then(|text| text.split_once(' '))
        else {
            return false;
        };
        expires.parse::<u64>().is_ok_and(|e| unix_now() < e)
            && constant_time_eq(bound.as_bytes(), sid_hash.as_bytes())
    }
}

/// True when the browser says it made this request itself: `Sec-Fetch-Site: same-origin` (a
/// link or form of this origin) or `none` (typed, bookmarked). Absent or anything else is not.
fn same_origin_navigation(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all("sec-fetch-site").iter();
    match (values.next(), values.next()) {
        (Some(site), None) => matches!(site.as_bytes(), b"same-origin" | b"none"),
        _ => false,
    }
}

/// "Sign out?": a form that POSTs the token back to the same path.
fn logout_confirmation_page(token: &str, request_id: &str) -> Response<ProxyBody> {
    let mut response = page(StatusCode::OK, "Sign out?", request_id, true);
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign out</title></head>\
         <body><h1>Sign out?</h1><p>A page asked to sign you out of this site.</p>\
         <form method=\"post\" action=\"{LOGOUT_PATH}\"><input type=\"hidden\" name=\"token\" value=\"{}\">\
         <button id=\"confirm-logout\" type=\"submit\">Sign out</button></form>\
         <p><a href=\"/\">Stay signed in</a></p>\
         <p><small>Request id: <code>{}</code></small></p></body></html>\n",
        html_escape(token),
        html_escape(request_id)
    );
    // `page` gives it the pages' headers: no framing, nothing loaded. (No `form-action`:
    // Chromium applies it to the redirect to the provider's end-session.)
    *response.body_mut() = full(body);
    response
}
