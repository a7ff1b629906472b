//! sekisho's own endpoints on every route host, `/.sekisho/…`: the login callback
//! (`login.rs`), the explicit login, the logout (`logout.rs`), the signed-out page, the
//! command-line sign-in (`cli_login.rs`) and the provider's back-channel logout
//! (`backchannel.rs`). (The
//! assertion keys at `/.well-known/sekisho/jwks.json` and forward-auth at `/.sekisho/auth` are
//! dispatched by `process` itself.)

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;

use super::{CALLBACK_PATH, LOGIN_PATH, LOGOUT_PATH, Proxy, Routing, SIGNED_OUT_PATH};
use crate::audit::{AuthActivity, Decision};
use crate::error::{BoxError, ProxyBody, ProxyError, full, html_escape, page};
use crate::facts::Facts;
use crate::target::Target;

impl Proxy {
    /// `/.sekisho/…` on a host some route serves.
    pub(super) async fn sekisho_endpoint<B>(
        &self,
        request: Request<B>,
        target: &Target,
        routing: &Routing,
        request_id: &str,
        facts: &mut Facts,
        cookies: &mut Vec<http::HeaderValue>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        if !routing
            .table
            .serves_host(target.scheme, &target.host, target.port)
        {
            return Err(ProxyError::NoRoute);
        }
        self.own_endpoint(request, target, request_id, facts, cookies)
            .await
    }

    /// `/.sekisho/…`: login callback, explicit login, logout, the signed-out page, the
    /// command-line sign-in, the back-channel logout (on route hosts and on the admin
    /// listener).
    pub(super) async fn own_endpoint<B>(
        &self,
        request: Request<B>,
        target: &Target,
        request_id: &str,
        facts: &mut Facts,
        cookies: &mut Vec<http::HeaderValue>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        facts.record.decision = Decision::Allow;
        match target.path.as_str() {
            CALLBACK_PATH => {
                let outcome = self.callback(&request, target, facts).await;
                if let Err(e) = &outcome {
                    if matches!(e, ProxyError::Unauthenticated { .. }) {
                        // A refused callback (bad state, replay, refused code), not an outage.
                        self.gate.sessions().failure(facts.record.client_ip);
                    }
                    self.record(facts.source().auth(
                        AuthActivity::Login,
                        false,
                        Some(e.to_string()),
                        None,
                        None,
                    ));
                }
                outcome
            }
            LOGIN_PATH => self.explicit_login(&request, target, facts, cookies).await,
            LOGOUT_PATH => self.logout(request, target, request_id, facts).await,
            SIGNED_OUT_PATH => Ok(signed_out_page(request_id)),
            super::cli_login::CLI_LOGIN_PATH => {
                self.cli_login(&request, target, facts, cookies).await
            }
            super::cli_login::CLI_TOKEN_PATH => self.cli_token(request, target, facts).await,
            super::cli_login::CLI_LOGOUT_PATH => self.cli_logout(request, target, facts).await,
            super::backchannel::BACKCHANNEL_LOGOUT_PATH => {
                self.backchannel_logout(request, facts).await
            }
            _ => Err(ProxyError::NoRoute),
        }
    }
}

fn signed_out_page(request_id: &str) -> Response<ProxyBody> {
    let mut response = page(StatusCode::OK, "You are signed out.", request_id, true);
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signed out</title></head>\
         <body><h1>Signed out</h1><p>You are signed out.</p><p><a href=\"/\">Sign in again</a></p>\
         <p><small>Request id: <code>{}</code></small></p></body></html>\n",
        html_escape(request_id)
    );
    *response.body_mut() = full(body);
    response
}
