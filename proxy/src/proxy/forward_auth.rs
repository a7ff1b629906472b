//! Forward-auth, `GET /.sekisho/auth`: a front proxy (nginx `auth_request`, Caddy
//! `forward_auth`, Traefik `forwardAuth`) asks whether the request
//! it holds may pass. The original request is read from the forwarded headers — believed only
//! from `server.trusted_proxies` — and the route matching its host and path decides, through
//! the gate, exactly as if the request had come to the proxy itself.
//!
//! - admitted: 200 with the identity headers and the assertion for the front proxy to copy
//!   (every identity header is present, empty when there is no value, so a copy always
//!   replaces whatever the client sent);
//! - not signed in: 401 for programs and for nginx (whose `error_page 401` sends browsers to
//!   `/.sekisho/login?rd=…`); for browsers behind other front proxies, the login redirect,
//!   which they pass on;
//! - signed in but refused: 403.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;

use super::{Proxy, Routing};
use crate::audit::{Door, Query};
use crate::connection::Connection;
use crate::error::{BoxError, ProxyBody, ProxyError, full};
use crate::facts::Facts;
use crate::gate::login::redirect;
use crate::gate::{Ask, Authenticated, Challenge, Denial, Verdict};
use crate::session::unix_now;
use crate::target::{Original, Target};

impl Proxy {
    /// Answers a front proxy's question about the request it holds.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward_auth<B>(
        &self,
        request: Request<B>,
        conn: Connection,
        own: &Target,
        routing: &Routing,
        browser: bool,
        facts: &mut Facts,
        cookies: &mut Vec<HeaderValue>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        facts.record.door = Door::ForwardAuth;
        if !crate::headers::is_trusted(conn.peer.ip(), &self.config.server.trusted_proxies) {
            tracing::info!(peer = %conn.peer, "forward-auth asked by a peer that is not a trusted proxy");
            return Err(ProxyError::Forbidden {
                reason: "Forward-auth answers only the front proxies in server.trusted_proxies."
                    .into(),
            });
        }
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return Err(ProxyError::MethodNotAllowed);
        }
        let original = Target::original(&request, own)?;
        facts.target(&original.target);
        facts.record.method = original.method.clone();
        facts.record.query = match &original.query {
            None => Query::None,
            Some(q) if self.config.audit.record_query => Query::Kept(q.clone()),
            Some(_) => Query::Redacted,
        };
        let routed = self.route(routing, &original.method, &original.target, facts)?;
        let check = routed.decision_check(routing);
        let ask = Ask {
            method: &original.method,
            query: original.query.as_deref(),
            headers: request.headers(),
            target: &original.target,
            conn: &conn,
            browser,
            access: routed.access(&routing.rego, Some(&check)),
            challenge: if original.nginx {
                Challenge::Status401
            } else {
                Challenge::Login
            },
            denial: Denial::Route {
                show_details: routed.route.show_error_details,
            },
        };
        let auth = match self.gate.admit(ask, facts, cookies).await? {
            Verdict::Admitted(auth) => auth,
            Verdict::Refused(response) => return Ok(response),
        };
        if reissue_by_redirect(&original, browser, auth.as_ref(), cookies) {
            // Caddy and Traefik hand a refusal's headers to the browser, not an admission's:
            // the re-issued session cookie (idle touch, refresh) travels on a redirect back to
            // the same URL. The fresh session is not due again, so this happens once.
            let mut location = original.target.path.clone();
            if let Some(query) = &original.query {
                location.push('?');
                location.push_str(query);
            }
            return Ok(redirect(&location, Vec::new()));
        }
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        self.identity_for_front_proxy(headers, auth.as_ref(), routed.route)?;
        Ok(response)
    }

    /// Every identity header, each present (empty when there is nothing to say): a front
    /// proxy copying them replaces the client's own, whatever it sent.
    fn identity_for_front_proxy(
        &self,
        headers: &mut HeaderMap,
        auth: Option<&Authenticated>,
        route: &sekisho_config::Route,
    ) -> Result<(), ProxyError> {
        let names = &self.identity_header_names;
        for name in [
            &names.user,
            &names.email,
            &names.groups,
            &names.jwt_assertion,
        ] {
            headers.insert(name.clone(), HeaderValue::from_static(""));
        }
        if let (true, Some(auth)) = (route.pass_identity_headers, auth) {
            self.set_identity_headers(headers, auth, &route.id)?;
        }
        Ok(())
    }
}

/// Whether the session cookies re-issued for this admission must reach the browser by a
/// redirect: a browser navigation (GET/HEAD) behind a front proxy other than nginx (whose
/// `auth_request_set` passes them on a 200), admitted on a session that was re-issued and is not
/// due for another refresh at once (a provider whose tokens live under a minute would otherwise
/// send the browser round in circles).
fn reissue_by_redirect(
    original: &Original,
    browser: bool,
    auth: Option<&Authenticated>,
    cookies: &[HeaderValue],
) -> bool {
    let Some(Authenticated::Session { session }) = auth else {
        return false;
    };
    !original.nginx
        && browser
        && matches!(original.method, Method::GET | Method::HEAD)
        && !cookies.is_empty()
        && !session.state.refresh_due(unix_now())
}
