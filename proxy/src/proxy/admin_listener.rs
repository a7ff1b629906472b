//! The admin listener: `/metrics` as is; sekisho's own login endpoints; everything else is the
//! audit review page, for users the `admin` policy allows — through the same gate as routes.

use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response};
use http_body::Body;

use super::{Proxy, Routing};
use crate::audit::Decision;
use crate::connection::Connection;
use crate::error::{BoxError, ProxyBody, ProxyError};
use crate::facts::Facts;
use crate::gate::{Access, Ask, Challenge, Denial, Verdict};
use crate::target::Target;

impl Proxy {
    /// Serves a request that came to the admin listener.
    pub(super) async fn admin<B>(
        &self,
        request: Request<B>,
        conn: Connection,
        target: &Target,
        routing: &Routing,
        facts: &mut Facts,
        cookies: &mut Vec<HeaderValue>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(admin) = &self.config.admin else {
            return Err(ProxyError::NoRoute);
        };
        facts.record.route = Some(Arc::from("sekisho-admin"));
        if target.path == "/metrics" {
            facts.record.decision = Decision::Allow;
            return Ok(crate::metrics::render(
                &self.audit,
                &self.counters,
                &self.nic,
                &self.attribution,
            ));
        }
        let request_id = facts.request_id().to_owned();
        if target.path.starts_with("/.sekisho/") {
            return self
                .own_endpoint(request, target, &request_id, facts, cookies)
                .await;
        }
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return Err(ProxyError::MethodNotAllowed);
        }
        let browser = super::is_browser(request.headers());
        let ask = Ask {
            method: request.method(),
            query: request.uri().query(),
            headers: request.headers(),
            target,
            conn: &conn,
            browser,
            access: Access::Policy {
                policy: &admin.policy,
                mode: sekisho_config::policy::PolicyMode::Enforce,
                rego: &routing.rego,
                cors_allow_preflight: false,
                check: None,
            },
            challenge: Challenge::Login,
            denial: Denial::Fixed(
                "The audit review is for the administrators the admin policy names.",
            ),
        };
        let auth = match self.gate.admit(ask, facts, cookies).await? {
            Verdict::Admitted(Some(auth)) => auth,
            // An admin policy that lets the unsigned in (`source_ip` alone) still needs to know
            // who reads the audit log.
            Verdict::Admitted(None) if browser => {
                facts.record.decision = Decision::Login;
                let mut return_to = target.path.clone();
                if let Some(query) = request.uri().query() {
                    return_to.push('?');
                    return_to.push_str(query);
                }
                return self.gate.start_login(target, &return_to).await;
            }
            Verdict::Admitted(None) => {
                return Err(ProxyError::Unauthenticated {
                    detail: "the audit review needs a signed-in administrator".into(),
                    invalid_token: false,
                });
            }
            Verdict::Refused(response) => return Ok(response),
        };
        let path = if target.path == "/" {
            "/audit"
        } else {
            target.path.as_str()
        };
        crate::admin::review(
            &self.audit,
            &self.live_verification,
            path,
            request.uri().query(),
            auth.identity().user_key(),
        )
    }
}
