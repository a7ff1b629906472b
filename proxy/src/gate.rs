//! The gate: the one place a request is admitted or refused. Every door — the proxy's routes,
//! the admin listener, forward-auth (`/.sekisho/auth`) and, later, tunnels — describes what is
//! asked ([`Ask`]: the request's target, its connection facts, the access rule) and gets back
//! [`Verdict::Admitted`] (who, if anyone; the session cookies to set are already in the
//! request's cookie list) or [`Verdict::Refused`] with the response to send: the login
//! redirect, 401 with a challenge, or 403. A security rule about who may pass lives here once.
//!
//! ```text
//! admit ─► public route / allowed CORS preflight ─► admitted, nobody asked to sign in
//!       ─► credential (credential.rs): bearer JWT access token | session cookie (sessions)
//!       ─► policy (policy.rs) ─► the door's extra check (the route's upstream readings)
//!       ─► allow ─► admitted │ deny ─► signed in: 403 │ not: login (login.rs) or 401
//! ```

use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};
use http::{Method, Response};
use sekisho_config::policy::{Policy, PolicyMode};

use crate::audit::{Actor, AuditLog, Decision};
use crate::connection::Connection;
use crate::error::{ProxyBody, ProxyError};
use crate::facts::Facts;
use crate::metrics::Counters;
use crate::oidc::OidcProvider;
use crate::policy::{self, Effect, RegoEngines};
use crate::session::{Identity, IdentityValues, OpenSession};
use crate::sessions::Sessions;
use crate::target::Target;
use crate::traces::Attribute;

mod credential;
pub(crate) mod login;

/// How a request authenticated.
#[derive(Debug)]
pub enum Authenticated {
    /// A session cookie (a refreshed or touched one is already re-issued in the request's
    /// cookies).
    Session {
        /// The session.
        session: Arc<OpenSession>,
    },
    /// A bearer JWT.
    Bearer {
        /// The verified identity.
        identity: Arc<Identity>,
        /// The identity as header values.
        values: IdentityValues,
        /// [`crate::session::sid_hash`] of the token.
        token_hash: String,
        /// The token's `iat` (Unix seconds).
        issued_at: u64,
        /// The token's `exp` (Unix seconds).
        expires_at: u64,
    },
}

impl Authenticated {
    /// Who.
    pub fn identity(&self) -> &Identity {
        match self {
            Authenticated::Session { session } => &session.state.identity,
            Authenticated::Bearer { identity, .. } => identity,
        }
    }

    /// The identity as header values.
    pub fn values(&self) -> &IdentityValues {
        match self {
            Authenticated::Session { session } => &session.values,
            Authenticated::Bearer { values, .. } => values,
        }
    }

    /// The actor of the audit record.
    pub fn actor(&self) -> Actor {
        match self {
            Authenticated::Session { session } => Actor::Session(session.clone()),
            Authenticated::Bearer {
                identity,
                token_hash,
                ..
            } => Actor::Bearer {
                identity: identity.clone(),
                token_hash: token_hash.clone(),
            },
        }
    }

    /// The key assertions are cached under: the session's or the token's hash.
    pub fn cache_key(&self) -> &str {
        match self {
            Authenticated::Session { session } => &session.sid_hash,
            Authenticated::Bearer { token_hash, .. } => token_hash,
        }
    }

    /// A bearer token (not a cookie) was the credential.
    pub fn is_bearer(&self) -> bool {
        matches!(self, Authenticated::Bearer { .. })
    }
}

/// A further check a door makes once the policy has decided (the proxy: the readings the
/// route's upstream may take of the path must get the same decision).
pub type DecisionCheck<'a> =
    &'a (dyn Fn(&policy::Input<'_>, Effect) -> Result<(), ProxyError> + Sync);

/// Who may pass.
pub enum Access<'a> {
    /// Anyone: no credential is read, no identity passed (`public: true`).
    Public,
    /// Whom `policy` allows.
    Policy {
        /// The policy.
        policy: &'a Policy,
        /// Enforce it, or only report would-be denials of signed-in users.
        mode: PolicyMode,
        /// The compiled `rego` rules.
        rego: &'a RegoEngines,
        /// Let an unauthenticated CORS preflight (`OPTIONS` with `Origin` and
        /// `Access-Control-Request-Method`) through (`cors_allow_preflight: true`).
        cors_allow_preflight: bool,
        /// The door's further check of the decision.
        check: Option<DecisionCheck<'a>>,
    },
}

impl std::fmt::Debug for Access<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Public => f.write_str("Public"),
            Access::Policy {
                policy,
                mode,
                cors_allow_preflight,
                check,
                ..
            } => f
                .debug_struct("Policy")
                .field("policy", &policy.path)
                .field("mode", mode)
                .field("cors_allow_preflight", cors_allow_preflight)
                .field("check", &check.is_some())
                .finish_non_exhaustive(),
        }
    }
}

/// What an unauthenticated request a policy does not allow gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// Browsers navigating with GET/HEAD are sent to sign in; everything else gets 401.
    Login,
    /// 401 with `WWW-Authenticate`, always (nginx `auth_request` understands nothing else; its
    /// `error_page 401` sends browsers to `/.sekisho/login`).
    Status401,
}

/// What a signed-in user the policy refuses is told.
#[derive(Debug, Clone, Copy)]
pub enum Denial<'a> {
    /// The route's text: the policy's explanation when `show_error_details`, else a generic
    /// sentence.
    Route {
        /// `show_error_details`.
        show_details: bool,
    },
    /// A fixed sentence.
    Fixed(&'a str),
}

/// What a door asks the gate.
#[derive(Debug)]
pub struct Ask<'a> {
    /// The request's method (for forward-auth: the original request's).
    pub method: &'a Method,
    /// The request's query string (the return target of a login keeps it).
    pub query: Option<&'a str>,
    /// The request's headers as the client sent them (credentials are read here).
    pub headers: &'a HeaderMap,
    /// The normalised addressing.
    pub target: &'a Target,
    /// The connection facts.
    pub conn: &'a Connection,
    /// A browser navigation (not an API call).
    pub browser: bool,
    /// Who may pass.
    pub access: Access<'a>,
    /// What the unauthenticated get.
    pub challenge: Challenge,
    /// What the refused get.
    pub denial: Denial<'a>,
}

/// The gate's answer.
#[derive(Debug)]
pub enum Verdict {
    /// Pass; `None` for public access.
    Admitted(Option<Authenticated>),
    /// Send this response instead (login redirect, 401, 403); the record's decision is set.
    Refused(Response<ProxyBody>),
}

/// The gate: credentials (sessions and bearer tokens), the policy decision, and the refusal.
#[derive(Debug)]
pub struct Gate {
    sessions: Sessions,
    oidc: Arc<OidcProvider>,
    audit: Arc<AuditLog>,
    counters: Arc<Counters>,
}

impl Gate {
    /// A gate over `sessions`, verifying bearer tokens and starting logins with `oidc`.
    pub fn new(
        sessions: Sessions,
        oidc: Arc<OidcProvider>,
        audit: Arc<AuditLog>,
        counters: Arc<Counters>,
    ) -> Self {
        Gate {
            sessions,
            oidc,
            audit,
            counters,
        }
    }

    /// The session layer.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The OpenID relying party.
    pub fn oidc(&self) -> &OidcProvider {
        &self.oidc
    }

    /// Admits or refuses `ask`. Session cookies re-issued or cleared on the way are appended
    /// to `cookies` (every response of the request carries them, whatever it is); `facts`
    /// learns the actor, policy, rule and decision.
    pub(crate) async fn admit(
        &self,
        ask: Ask<'_>,
        facts: &mut Facts,
        cookies: &mut Vec<HeaderValue>,
    ) -> Result<Verdict, ProxyError> {
        let (policy, mode, rego, check) = match ask.access {
            Access::Public => {
                facts.record.decision = Decision::Public;
                facts.trace.event("policy decided", || {
                    vec![Attribute::text("sekisho.decision", "public")]
                });
                return Ok(Verdict::Admitted(None));
            }
            Access::Policy {
                cors_allow_preflight: true,
                ..
            } if is_cors_preflight(ask.method, ask.headers) => {
                facts.record.decision = Decision::Public;
                facts.record.rule = Some("CORS preflight (cors_allow_preflight)".to_owned());
                return Ok(Verdict::Admitted(None));
            }
            Access::Policy {
                policy,
                mode,
                rego,
                check,
                ..
            } => (policy, mode, rego, check),
        };
        let codec = self.sessions.codec(ask.target.scheme);
        let auth = self
            .authenticate(ask.headers, codec, cookies, facts)
            .await?;
        facts.record.actor = auth.as_ref().map(Authenticated::actor);
        facts.trace.event("credential checked", || {
            let credential = match &auth {
                Some(Authenticated::Session { .. }) => "session",
                Some(Authenticated::Bearer { .. }) => "bearer",
                None => "none",
            };
            vec![Attribute::text("sekisho.credential", credential)]
        });
        let input = policy::Input {
            identity: auth.as_ref().map(Authenticated::identity),
            method: ask.method,
            host: &ask.target.host,
            path: &ask.target.path,
            source_ip: ask.target.forwarded.client_ip,
            headers: ask.headers,
            client_certificate: ask.conn.client_certificate.as_ref(),
            now: jiff::Timestamp::now(),
        };
        let decision = policy::decide(policy, &input, rego);
        if let Some(check) = check {
            check(&input, decision.effect)?;
        }
        let explanation = decision.explanation();
        let allowed = match (decision.effect, mode) {
            (Effect::Allow, _) => true,
            // Report mode never lets an unauthenticated request through a policy that denies it.
            (Effect::Deny, PolicyMode::Report) if auth.is_some() => {
                tracing::warn!(request_id = facts.request_id(), explanation = %explanation, "report-only policy would deny");
                facts.record.report_only_deny = true;
                true
            }
            (Effect::Deny, _) => false,
        };
        facts.record.policy = Some(Arc::from(policy.path.as_str()));
        facts.trace.event("policy decided", || {
            vec![
                Attribute::text(
                    "sekisho.policy.effect",
                    match decision.effect {
                        Effect::Allow => "allow",
                        Effect::Deny => "deny",
                    },
                ),
                Attribute::string("sekisho.policy", policy.path.as_str()),
                Attribute::text("sekisho.admitted", if allowed { "true" } else { "false" }),
            ]
        });
        if allowed {
            facts.record.rule = Some(explanation);
            facts.record.decision = Decision::Allow;
            return Ok(Verdict::Admitted(auth));
        }
        let request_id = facts.request_id().to_owned();
        let Some(auth) = &auth else {
            facts.record.rule = Some(explanation);
            let response = match ask.challenge {
                Challenge::Login if ask.browser && login_navigation(&ask) => {
                    let mut return_to = ask.target.path.clone();
                    if let Some(q) = ask.query {
                        return_to.push('?');
                        return_to.push_str(q);
                    }
                    self.start_login(ask.target, &return_to).await?
                }
                _ => ProxyError::Unauthenticated {
                    detail: "no credentials".into(),
                    invalid_token: false,
                }
                .into_response(&request_id, ask.browser),
            };
            facts.record.decision = if response.status().is_redirection() {
                Decision::Login
            } else {
                Decision::Unauthenticated
            };
            let refusal = facts.record.decision.as_str();
            facts.trace.event("refused", || {
                vec![Attribute::text("sekisho.refusal", refusal)]
            });
            return Ok(Verdict::Refused(response));
        };
        tracing::info!(request_id, sub = ?auth.identity().sub, explanation = %explanation, "denied");
        let reason = match ask.denial {
            Denial::Route { show_details: true } => format!("Access denied: {explanation}"),
            Denial::Route {
                show_details: false,
            } => "Access denied by this route's policy.".to_owned(),
            Denial::Fixed(text) => text.to_owned(),
        };
        facts.record.rule = Some(explanation);
        facts.record.decision = Decision::Deny;
        facts.trace.event("refused", || {
            vec![Attribute::text("sekisho.refusal", "deny")]
        });
        Ok(Verdict::Refused(
            ProxyError::Forbidden { reason }.into_response(&request_id, ask.browser),
        ))
    }
}

/// A GET or HEAD that is not a WebSocket upgrade: what may be redirected to sign in.
fn login_navigation(ask: &Ask<'_>) -> bool {
    matches!(*ask.method, Method::GET | Method::HEAD)
        && !crate::headers::is_websocket_upgrade(ask.headers)
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
fn is_cors_preflight(method: &Method, headers: &HeaderMap) -> bool {
    *method == Method::OPTIONS
        && headers.contains_key(http::header::ORIGIN)
        && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}
