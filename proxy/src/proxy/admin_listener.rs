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
use crate::health::{self, Readiness};
use crate::target::Target;

impl Proxy {
    /// `GET`/`HEAD /healthz` and `/readyz` on the admin listener, answered before anything
    /// else: no login (probes carry no credentials; the listener is private), no audit record
    /// (an orchestrator probes every few seconds, and `/healthz` must answer while the audit
    /// log cannot be written — with `on_failure: deny` every other request is refused then).
    /// `None` for every other request.
    pub(super) fn probe<B>(
        &self,
        request: &Request<B>,
        conn: &Connection,
    ) -> Option<Response<ProxyBody>> {
        if !conn.admin || !matches!(*request.method(), Method::GET | Method::HEAD) {
            return None;
        }
        match request.uri().path() {
            "/healthz" => Some(health::alive()),
            "/readyz" => {
                let readiness = self.readiness();
                if !readiness.ready() {
                    tracing::debug!(failing = %readiness.failing(), "/readyz: not ready");
                }
                Some(readiness.response())
            }
            _ => None,
        }
    }

    /// Runs the readiness checks. A new check is one line here (and a function in health.rs).
    pub fn readiness(&self) -> Readiness {
        let required = |xdp: Option<bool>| xdp.unwrap_or(false);
        Readiness {
            checks: vec![
                health::provider(self.oidc()),
                health::audit(&self.audit),
                health::nic_guard(
                    &self.nic,
                    required(self.config.xdp.as_ref().map(|x| x.required)),
                ),
                health::attribution(
                    &self.attribution,
                    required(self.config.attribution.as_ref().map(|a| a.required)),
                ),
                health::shared_state(self.shared.as_deref()),
            ],
        }
    }

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
                &self.readiness(),
                &crate::metrics::Sources {
                    refreshes: self.gate.sessions().refresh_counts(),
                    provider: self.gate.oidc().fetch_errors(),
                    traces: self.trace_metrics(),
                    audit_queue: self
                        .audit
                        .metrics()
                        .queued
                        .load(std::sync::atomic::Ordering::Relaxed),
                    shared: self.shared.as_deref(),
                    upstreams: &routing.upstreams,
                },
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
