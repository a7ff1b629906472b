//! The request path: one function per phase, in the order of the chart in ARCHITECTURE.md —
//! normalise, route, authenticate (session cookie or bearer JWT, with the login flow for
//! browsers), authorize, forward. Errors leave through [`ProxyError::into_response`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt as _;
use sekisho_config::policy::PolicyMode;
use sekisho_config::{Config, OnFailure, Origin, Route, Scheme};
use serde::{Deserialize, Serialize};

use crate::assertion::{AssertionError, AssertionSigner};
use crate::audit::{
    Actor, AuditLog, AuthActivity, Decision, Event, Lifecycle, LifecycleEvent, Unrecorded,
};
use crate::error::{BoxError, ProxyBody, ProxyError, full, html_escape, page};
use crate::headers::{
    Forwarded, apply_route_headers, is_websocket_upgrade, sanitize_request_headers, set_forwarded,
    strip_hop_by_hop,
};
use crate::normalize::{Address, Views, normalize_path};
use crate::oidc::{OidcError, OidcProvider};
use crate::policy::{self, ClientCertificate, Effect, RegoEngines};
use crate::redirect::{origin_string, validate_return_to};
use crate::revocation::{RevocationError, RevocationList};
use crate::routes::{Match, RouteTable};
use crate::seal::{Purpose, SealError, Sealer, constant_time_eq};
use crate::session::{
    CookieCodec, Identity, IdentityValues, OpenSession, SessionCache, SessionRejection,
    SessionState, provider_sid_hash, request_cookies, strip_own_cookies, unix_now,
};
use crate::upstream::{IdleTimeout, Upstream, splice_upgrades};

/// Path of the OIDC callback on every route host.
pub const CALLBACK_PATH: &str = "/.sekisho/callback";
/// Path that starts a login explicitly (`?rd=` names where to return).
pub const LOGIN_PATH: &str = "/.sekisho/login";
/// Path that ends the session.
pub const LOGOUT_PATH: &str = "/.sekisho/logout";
/// Page shown after logout.
pub const SIGNED_OUT_PATH: &str = "/.sekisho/signed-out";
/// Public keys of the identity assertions.
pub const JWKS_PATH: &str = "/.well-known/sekisho/jwks.json";
/// Lifetime of a login flow (state, nonce, PKCE verifier).
const FLOW_LIFETIME: Duration = Duration::from_secs(600);

/// Why sekisho could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The session keys are unusable.
    #[error("session keys: {0}")]
    Keys(#[source] SealError),
    /// The assertion signing key is unusable.
    #[error("signing key: {0}")]
    Signing(#[source] AssertionError),
    /// The revocation list could not be loaded.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// The provider client could not be built.
    #[error("OpenID provider: {0}")]
    Oidc(#[source] OidcError),
    /// An identity header name is not a valid header name (configuration is validated, so this
    /// is an internal error).
    #[error("identity header name {0:?} is invalid")]
    HeaderName(String),
    /// A `rego` policy rule did not load.
    #[error(transparent)]
    Rego(#[from] policy::RegoError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] crate::audit::writer::OpenError),
    /// An upstream client could not be built.
    #[error("route {route}: {source}")]
    Upstream {
        /// Route id.
        route: String,
        /// Cause.
        #[source]
        source: ProxyError,
    },
}

/// The configured identity header names, parsed once.
#[derive(Debug)]
struct IdentityHeaderNames {
    user: HeaderName,
    email: HeaderName,
    groups: HeaderName,
    jwt_assertion: HeaderName,
}

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the listener terminated TLS.
    pub tls: bool,
    /// The negotiated TLS version (`1.2`, `1.3`), when it did.
    pub tls_version: Option<&'static str>,
    /// The request came to the admin listener (metrics, audit review).
    pub admin: bool,
    /// The client certificate presented over mTLS, if any.
    pub client_certificate: Option<ClientCertificate>,
}

/// Counters exposed for operators (and asserted by tests).
#[derive(Debug, Default)]
pub struct Counters {
    /// Session cookies that did not decrypt or parse.
    pub invalid_cookies: AtomicU64,
    /// Bearer tokens rejected.
    pub rejected_tokens: AtomicU64,
    /// Callbacks refused (bad state, replay, failed exchange).
    pub rejected_callbacks: AtomicU64,
    /// Requests forwarded upstream.
    pub forwarded: AtomicU64,
}

/// The proxy: configuration turned into the state the request path needs.
pub struct Proxy {
    config: Config,
    routing: RwLock<Arc<Routing>>,
    sealer: Sealer,
    secure_cookies: CookieCodec,
    plain_cookies: CookieCodec,
    oidc: OidcProvider,
    signer: AssertionSigner,
    revoked: Arc<RevocationList>,
    used_states: Mutex<UsedStates>,
    refreshes: Mutex<HashMap<String, Arc<RefreshSlot>>>,
    identity_names: Vec<String>,
    identity_header_names: IdentityHeaderNames,
    sessions: SessionCache,
    request_ids: RequestIds,
    audit: Arc<AuditLog>,
    live_verification: crate::admin::LiveVerification,
    /// At most one log line per second about records that could not be kept (the metrics count
    /// every one): an overloaded or full disk must not also flood the log.
    audit_complaints: OncePerSecond,
    /// The built-in OpenID provider, when configured (served before routing).
    idp: Option<Arc<crate::idp::IdentityProvider>>,
    /// Operational counters.
    pub counters: Counters,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("routes", &self.routing().table.routes().len())
            .finish_non_exhaustive()
    }
}

/// What a configuration reload replaces atomically: the routes, their upstream clients and
/// their policies. A request holds the `Routing` it started with until it finishes.
#[derive(Debug)]
pub struct Routing {
    table: RouteTable,
    upstreams: Vec<Upstream>,
    rego: RegoEngines,
}

impl Routing {
    /// Builds the routing of a validated configuration.
    pub fn new(config: &Config) -> Result<Self, StartError> {
        let upstreams = config
            .routes
            .iter()
            .map(|r| {
                Upstream::new(r).map_err(|source| StartError::Upstream {
                    route: r.id.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rego = RegoEngines::prepare(config.routes.iter().map(|r| r.policy.as_ref()))?;
        Ok(Routing {
            table: RouteTable::new(config.routes.clone()),
            upstreams,
            rego,
        })
    }
}

/// What the login-flow cookie carries between the redirect and the callback.
#[derive(Debug, Serialize, Deserialize)]
struct FlowState {
    state: String,
    nonce: String,
    pkce_verifier: String,
    redirect_uri: String,
    return_to: String,
    created_at: u64,
}

/// A request's addressing facts, computed once.
#[derive(Debug, Clone)]
struct Target {
    scheme: Scheme,
    host: String,
    port: Option<u16>,
    path: String,
    forwarded: Forwarded,
}

impl Target {
    fn origin(&self) -> Origin {
        let default = match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        Origin {
            scheme: self.scheme,
            host: self.host.clone(),
            port: self.port.unwrap_or(default),
        }
    }
}

/// How the request authenticated.
#[derive(Debug)]
enum Authenticated {
    /// A session cookie (a refreshed or touched one is already re-issued in the request's
    /// cookies).
    Session { session: Arc<OpenSession> },
    /// A bearer JWT.
    Bearer {
        identity: Arc<Identity>,
        values: IdentityValues,
        token_hash: String,
    },
}

impl Authenticated {
    fn identity(&self) -> &Identity {
        match self {
            Authenticated::Session { session } => &session.state.identity,
            Authenticated::Bearer { identity, .. } => identity,
        }
    }

    fn values(&self) -> &IdentityValues {
        match self {
            Authenticated::Session { session } => &session.values,
            Authenticated::Bearer { values, .. } => values,
        }
    }

    fn actor(&self) -> Actor {
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

    fn cache_key(&self) -> &str {
        match self {
            Authenticated::Session { session } => &session.sid_hash,
            Authenticated::Bearer { token_hash, .. } => token_hash,
        }
    }
}

/// Where concurrent requests carrying the same due cookie wait for its one refresh; holds the
/// outcome and when it was reached.
type RefreshSlot = tokio::sync::Mutex<Option<(RefreshOutcome, Instant)>>;

/// The result of a (single-flight) session refresh.
#[derive(Debug, Clone)]
enum RefreshOutcome {
    Refreshed(Box<SessionState>),
    Ended,
    Kept,
}

impl Proxy {
    /// Builds the proxy from a validated configuration.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let sealer = Sealer::new(config.session.keys.iter().map(|k| k.expose()))
            .map_err(StartError::Keys)?;
        let signer = AssertionSigner::new(
            config.signing.key.expose(),
            &config.signing.issuer,
            config.signing.assertion_lifetime,
        )
        .map_err(StartError::Signing)?;
        let (revoked, malformed) =
            RevocationList::load(&config.session.revocation_file, unix_now())?;
        if malformed > 0 {
            tracing::warn!(malformed, file = %config.session.revocation_file.display(), "skipped malformed revocation entries");
        }
        let routing = Routing::new(&config)?;
        let audit = Arc::new(AuditLog::open(&config.audit, &config.state_dir)?);
        let oidc = OidcProvider::new(config.oidc.clone()).map_err(StartError::Oidc)?;
        let h = &config.identity_headers;
        let identity_names = [&h.user, &h.email, &h.groups, &h.jwt_assertion]
            .map(|n| crate::headers::fold_name(n))
            .to_vec();
        let header_name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| StartError::HeaderName(n.to_owned()))
        };
        let identity_header_names = IdentityHeaderNames {
            user: header_name(&h.user)?,
            email: header_name(&h.email)?,
            groups: header_name(&h.groups)?,
            jwt_assertion: header_name(&h.jwt_assertion)?,
        };
        Ok(Proxy {
            routing: RwLock::new(Arc::new(routing)),
            secure_cookies: CookieCodec::new(&config.session.cookie_name, true),
            plain_cookies: CookieCodec::new(&config.session.cookie_name, false),
            sealer,
            oidc,
            signer,
            revoked: Arc::new(revoked),
            used_states: Mutex::new(UsedStates::default()),
            refreshes: Mutex::new(HashMap::new()),
            identity_names,
            identity_header_names,
            sessions: SessionCache::default(),
            request_ids: RequestIds::new(),
            audit,
            live_verification: crate::admin::LiveVerification::default(),
            audit_complaints: OncePerSecond::default(),
            idp: None,
            counters: Counters::default(),
            config,
        })
    }

    /// Serves the built-in OpenID provider on this proxy's listeners (requests to its issuer's
    /// host under its path). The proxy itself still reaches it only over HTTP, as `oidc.issuer`.
    pub fn with_identity_provider(mut self, idp: Arc<crate::idp::IdentityProvider>) -> Self {
        self.idp = Some(idp);
        self
    }

    /// The OpenID relying party (for startup discovery).
    pub fn oidc(&self) -> &OidcProvider {
        &self.oidc
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// A shared handle on the audit log (for the built-in provider's records).
    pub fn audit_handle(&self) -> Arc<AuditLog> {
        self.audit.clone()
    }

    /// Records an event that no response waits on (logins, reloads); a refusal is counted by
    /// the log and reported here.
    pub fn record(&self, event: Event) {
        if let Err(e) = self.audit.record(event)
            && let Some(suppressed) = self.audit_complaints.admit()
        {
            tracing::error!(error = %e, suppressed, "audit record not kept");
        }
    }

    /// The routing requests start with now.
    fn routing(&self) -> Arc<Routing> {
        match self.routing.read() {
            Ok(routing) => routing.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps in the routes and policies of `config` (already validated). Requests in flight
    /// finish under the routing they started with. Settings that need a restart (listeners,
    /// provider, session keys, signing key) are kept, and each difference is logged.
    pub fn reload(&self, config: &Config) -> Result<usize, StartError> {
        let routing = Routing::new(config)?;
        if let Some(idp) = &self.idp {
            idp.reload(config);
        }
        for setting in restart_only_changes(&self.config, config) {
            tracing::warn!(
                setting,
                "changed in the configuration file; takes effect at the next restart"
            );
        }
        let routes = routing.table.routes().len();
        self.record(Event::Lifecycle(Box::new(LifecycleEvent {
            time: jiff::Timestamp::now(),
            activity: Lifecycle::Reload,
            success: true,
            message: format!("configuration reloaded: {routes} routes"),
        })));
        match self.routing.write() {
            Ok(mut slot) => *slot = Arc::new(routing),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(routing),
        }
        Ok(routes)
    }

    /// Serves one request. Never fails: every error becomes a short page.
    pub async fn handle<B>(&self, request: Request<B>, conn: Connection) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let time = jiff::Timestamp::now();
        let request_id = self.request_ids.next();
        let browser = is_browser(request.headers());
        let mut facts = Facts::new(&request, conn, &request_id, self.config.audit.record_query);
        // Session cookies this request re-issued (refresh, activity) or cleared: every response
        // carries them, whatever it is (forwarded, denied, an error, a login redirect, the admin
        // listener), or the browser keeps a cookie whose refresh token is already spent.
        let mut cookies: Vec<HeaderValue> = Vec::new();
        let mut response = if self.audit.accepting() {
            match self
                .process(
                    request,
                    conn,
                    &request_id,
                    browser,
                    &mut facts,
                    &mut cookies,
                )
                .await
            {
                Ok(response) => response,
                Err(e) => {
                    facts.refused(&e);
                    e.into_response(&request_id, browser)
                }
            }
        } else {
            self.audit
                .metrics()
                .requests_refused
                .fetch_add(1, Ordering::Relaxed);
            let e = ProxyError::Unavailable {
                detail: "the audit log cannot be written (on_failure: deny)".into(),
            };
            facts.refused(&e);
            e.into_response(&request_id, browser)
        };
        let event = facts.event(time, started.elapsed(), &response);
        if let Err(unrecorded) = self.audit.commit(event).await {
            response = self.unrecorded(unrecorded, response, &request_id, browser);
        }
        for cookie in cookies {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        if let Ok(id) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", id);
        }
        response
    }

    /// A response whose record could not be made durable: with `on_failure: deny` it is
    /// replaced by a 503, and the record, rewritten to say so, waits in the writer's buffer;
    /// with `allow` the response goes out and the record waits as it is.
    fn unrecorded(
        &self,
        unrecorded: Unrecorded,
        response: Response<ProxyBody>,
        request_id: &str,
        browser: bool,
    ) -> Response<ProxyBody> {
        let Unrecorded { reason, event } = unrecorded;
        match self.audit.on_failure() {
            OnFailure::Allow => {
                if let Some(suppressed) = self.audit_complaints.admit() {
                    tracing::warn!(request_id, error = %reason, suppressed, "response released before its audit record was durable (on_failure: allow)");
                }
                if let Some(event) = event {
                    self.record(event);
                }
                response
            }
            OnFailure::Deny => {
                self.audit
                    .metrics()
                    .requests_refused
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.audit_complaints.admit() {
                    tracing::error!(request_id, error = %reason, suppressed, "response withheld: its audit record could not be written (on_failure: deny)");
                }
                let e = ProxyError::Unavailable {
                    detail: format!("audit record not written: {reason}"),
                };
                let replacement = e.into_response(request_id, browser);
                if let Some(Event::Http(mut event)) = event {
                    event.status = replacement.status().as_u16();
                    event.decision = Decision::Error;
                    event.detail = Some(format!(
                        "response withheld: audit record not written ({reason})"
                    ));
                    event.bytes_out = None;
                    self.record(Event::Http(event));
                }
                replacement
            }
        }
    }

    async fn process<B>(
        &self,
        mut request: Request<B>,
        conn: Connection,
        request_id: &str,
        browser: bool,
        facts: &mut Facts,
        cookies: &mut Vec<HeaderValue>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        // Phase: normalise.
        let target = self.target(&request, conn)?;
        facts.target(&target);
        if let Some(idp) = &self.idp
            && idp.serves(target.scheme, &target.host, target.port, &target.path)
        {
            facts.route = Some(Arc::from("sekisho-idp"));
            facts.decision = Decision::Allow;
            return Ok(idp
                .handle(request, &target.path, target.forwarded.client_ip)
                .await);
        }
        let routing = self.routing();
        if conn.admin {
            return self
                .admin(request, conn, &target, &routing, facts, cookies)
                .await;
        }

        // Phase: sekisho's own endpoints.
        if target.path == JWKS_PATH {
            facts.decision = Decision::Allow;
            return Ok(self.jwks_response());
        }
        if target.path.starts_with("/.sekisho/") {
            if !routing
                .table
                .serves_host(target.scheme, &target.host, target.port)
            {
                return Err(ProxyError::NoRoute);
            }
            return self
                .own_endpoint(request, &target, request_id, facts, cookies)
                .await;
        }

        // Phase: route.
        let (route_index, route) = match routing.table.lookup(
            target.scheme,
            &target.host,
            target.port,
            request.method(),
            &target.path,
        ) {
            Match::Found(index, route) => {
                facts.route = Some(Arc::from(route.id.as_str()));
                (index, route)
            }
            Match::MethodNotAllowed => return Err(ProxyError::MethodNotAllowed),
            Match::NoRoute => return Err(ProxyError::NoRoute),
        };
        // A path its upstream would read as one routed elsewhere (case, `;`, `%25`) is refused.
        let address = Address {
            scheme: target.scheme,
            host: &target.host,
            port: target.port,
            method: request.method(),
        };
        let views = Views::check_route(&routing.table, address, &target.path, route_index, route)?;
        let upstream = routing
            .upstreams
            .get(route_index)
            .ok_or(ProxyError::Internal {
                detail: "route without upstream".into(),
            })?;

        // Phase: authenticate.
        let codec = self.codec(target.scheme);
        let auth = self
            .authenticate(request.headers(), codec, cookies, facts)
            .await?;
        facts.actor = auth.as_ref().map(Authenticated::actor);

        // Phase: authorize.
        let input = policy_input(&request, &target, &conn, auth.as_ref());
        let decision = policy::decide(&route.policy, &input, &routing.rego);
        views.check_decision(
            &routing.table,
            route_index,
            route,
            &input,
            decision.effect,
            &routing.rego,
        )?;
        let explanation = decision.explanation();
        let allowed = match (decision.effect, route.mode) {
            (Effect::Allow, _) => true,
            // Report mode never lets an unauthenticated request through a policy that denies it.
            (Effect::Deny, PolicyMode::Report) if auth.is_some() => {
                tracing::warn!(request_id, route = %route.id, explanation = %explanation, "report-only policy would deny");
                facts.report_only_deny = true;
                true
            }
            (Effect::Deny, _) => false,
        };
        facts.policy = Some(Arc::from(route.policy.path.as_str()));
        facts.rule = Some(explanation);
        facts.decision = if allowed {
            Decision::Allow
        } else {
            Decision::Deny
        };
        if !allowed {
            let Some(auth) = &auth else {
                let response = self
                    .challenge(&request, &target, request_id, browser)
                    .await?;
                facts.decision = if response.status().is_redirection() {
                    Decision::Login
                } else {
                    Decision::Unauthenticated
                };
                return Ok(response);
            };
            tracing::info!(request_id, route = %route.id, sub = ?auth.identity().sub, explanation = %decision.explanation(), "denied");
            let reason = if route.show_error_details {
                format!("Access denied: {}", decision.explanation())
            } else {
                "Access denied by this route's policy.".to_owned()
            };
            return Ok(ProxyError::Forbidden { reason }.into_response(request_id, browser));
        }

        // Phase: forward.
        let websocket = is_websocket_upgrade(request.headers());
        if websocket && !route.allow_websockets {
            return Err(ProxyError::Forbidden {
                reason: "WebSockets are not enabled for this route.".into(),
            });
        }
        if websocket && request.version() != Version::HTTP_11 {
            return Err(ProxyError::BadRequest {
                reason: "WebSocket upgrades need HTTP/1.1",
            });
        }
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
        let target_url = upstream.pick().ok_or_else(|| ProxyError::BadGateway {
            detail: format!("route {} has no upstream (forward-auth only)", route.id),
        })?;
        let uri = target_url.uri_for(&target.path, request.uri().query())?;
        facts.upstream = target_url.host.to_str().ok().map(str::to_owned);
        let (mut parts, body) = request.into_parts();
        parts.uri = uri;
        let keep_te_trailers = route.upstream_http2
            && parts
                .headers
                .get(header::TE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("trailers"));
        let bearer_used = matches!(auth, Some(Authenticated::Bearer { .. }));
        self.rewrite_request_headers(
            &mut parts.headers,
            &target,
            route,
            websocket,
            bearer_used,
            codec,
        );
        if keep_te_trailers {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let host = if route.preserve_host {
            let text = match target.port {
                Some(p) => format!("{}:{p}", target.host),
                None => target.host.clone(),
            };
            HeaderValue::from_str(&text).map_err(|_| ProxyError::BadRequest {
                reason: "malformed Host",
            })?
        } else {
            target_url.host.clone()
        };
        parts.headers.insert(header::HOST, host);
        if let Ok(id) = HeaderValue::from_str(request_id) {
            parts.headers.insert("x-request-id", id);
        }
        if let (true, Some(auth)) = (route.pass_identity_headers, &auth) {
            self.set_identity_headers(&mut parts.headers, auth, &route.id)?;
        }
        let body = IdleTimeout::new(body, route.timeouts.idle).boxed_unsync();
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        let mut response = upstream.send(Request::from_parts(parts, body)).await?;

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            match client_upgrade {
                Some(client) => splice_upgrades(
                    client,
                    hyper::upgrade::on(&mut response),
                    route.timeouts.idle,
                ),
                None => {
                    return Err(ProxyError::BadGateway {
                        detail: "upstream switched protocols unasked".into(),
                    });
                }
            }
        } else {
            strip_hop_by_hop(response.headers_mut(), false);
        }
        tracing::debug!(request_id, route = %route.id, sub = auth.as_ref().map(|a| a.identity().sub.as_str()), status = %response.status(), "forwarded");
        Ok(response)
    }

    /// `/.sekisho/…`: login callback, explicit login, logout, the signed-out page.
    async fn own_endpoint<B>(
        &self,
        request: Request<B>,
        target: &Target,
        request_id: &str,
        facts: &mut Facts,
        cookies: &mut Vec<HeaderValue>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        facts.decision = Decision::Allow;
        match target.path.as_str() {
            CALLBACK_PATH => {
                let outcome = self.callback(&request, target, facts).await;
                if let Err(e) = &outcome {
                    self.record(facts.auth(
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
            _ => Err(ProxyError::NoRoute),
        }
    }

    /// The admin listener: `/metrics` as is; sekisho's own login endpoints; everything else is
    /// the audit review page, for users the `admin` policy allows.
    async fn admin<B>(
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
        facts.route = Some(Arc::from("sekisho-admin"));
        if target.path == "/metrics" {
            facts.decision = Decision::Allow;
            return Ok(crate::admin::metrics(&self.audit, &self.counters));
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
        let codec = self.codec(target.scheme);
        let auth = self
            .authenticate(request.headers(), codec, cookies, facts)
            .await?;
        facts.actor = auth.as_ref().map(Authenticated::actor);
        let input = policy_input(&request, target, &conn, auth.as_ref());
        let decision = policy::decide(&admin.policy, &input, &routing.rego);
        let allowed = decision.effect == Effect::Allow;
        facts.policy = Some(Arc::from(admin.policy.path.as_str()));
        facts.rule = Some(decision.explanation());
        let browser = is_browser(request.headers());
        let auth = match auth {
            Some(auth) if allowed => auth,
            Some(_) => {
                facts.decision = Decision::Deny;
                return Err(ProxyError::Forbidden {
                    reason: "The audit review is for the administrators the admin policy names."
                        .into(),
                });
            }
            None => {
                let response = self
                    .challenge(&request, target, &request_id, browser)
                    .await?;
                facts.decision = if response.status().is_redirection() {
                    Decision::Login
                } else {
                    Decision::Unauthenticated
                };
                return Ok(response);
            }
        };
        facts.decision = Decision::Allow;
        let identity = auth.identity();
        let who = identity.user_key();
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
            who,
        )
    }

    /// An unauthenticated request a policy did not allow: browsers navigating with GET/HEAD go
    /// to the provider; everything else gets 401 with a challenge.
    async fn challenge<B>(
        &self,
        request: &Request<B>,
        target: &Target,
        request_id: &str,
        browser: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let websocket = is_websocket_upgrade(request.headers());
        let response =
            if browser && !websocket && matches!(*request.method(), Method::GET | Method::HEAD) {
                let mut return_to = target.path.clone();
                if let Some(q) = request.uri().query() {
                    return_to.push('?');
                    return_to.push_str(q);
                }
                self.start_login(target, &return_to).await?
            } else {
                ProxyError::Unauthenticated {
                    detail: "no credentials".into(),
                    invalid_token: false,
                }
                .into_response(request_id, browser)
            };
        Ok(response)
    }

    /// Normalises the addressing of a request: host (one, consistent), port, scheme, path.
    fn target<B>(&self, request: &Request<B>, conn: Connection) -> Result<Target, ProxyError> {
        let bad = |reason| ProxyError::BadRequest { reason };
        let mut hosts = request.headers().get_all(header::HOST).iter();
        let host_header = hosts.next();
        if hosts.next().is_some() {
            return Err(bad("more than one Host header"));
        }
        let host_header = host_header
            .map(|h| h.to_str().map_err(|_| bad("Host header is not text")))
            .transpose()?;
        let authority_text = match (request.uri().authority(), host_header) {
            (Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(h) => {
                return Err(bad("Host header disagrees with the request target"));
            }
            (Some(a), _) => a.as_str().to_owned(),
            (None, Some(h)) => h.to_owned(),
            (None, None) => return Err(bad("missing Host")),
        };
        let authority: http::uri::Authority =
            authority_text.parse().map_err(|_| bad("malformed Host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("malformed Host"));
        }
        let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad("malformed Host"));
        }
        let port = authority.port_u16();
        let path = normalize_path(request.uri().path()).map_err(|e| {
            tracing::debug!(error = %e, path = request.uri().path(), "path refused");
            bad(e.public_reason())
        })?;
        let listener_scheme = if conn.tls { "https" } else { "http" };
        let forwarded = Forwarded::from_request(
            request.headers(),
            conn.peer.ip(),
            listener_scheme,
            &authority_text,
            &self.config.server.trusted_proxies,
        )
        .map_err(|e| {
            tracing::debug!(error = %e, "X-Forwarded-For refused");
            bad("X-Forwarded-For: the client entry is not an address")
        })?;
        let scheme = if forwarded.proto == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        Ok(Target {
            scheme,
            host,
            port,
            path,
            forwarded,
        })
    }

    fn codec(&self, scheme: Scheme) -> &CookieCodec {
        match scheme {
            Scheme::Https => &self.secure_cookies,
            Scheme::Http => &self.plain_cookies,
        }
    }

    /// Authenticates by bearer token (when an `Authorization: Bearer` header is present) or by
    /// session cookie. `Ok(None)` is "no valid credential". A session refreshed or touched here
    /// is re-issued, and a dead one cleared, through `set_cookies`, which every response of the
    /// request carries.
    async fn authenticate(
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
                let token = token.trim();
                let verified = self.oidc.verify_bearer(token).await.and_then(|identity| {
                    match &identity.provider_sid {
                        // No hashing per request while nothing is revoked.
                        Some(sid)
                            if !self.revoked.is_empty()
                                && self
                                    .revoked
                                    .is_revoked(&provider_sid_hash(&identity.issuer, sid)) =>
                        {
                            Err(OidcError::Rejected(
                                "the provider session (sid) of this token was signed out at \
                                 sekisho"
                                    .into(),
                            ))
                        }
                        _ => Ok(identity),
                    }
                });
                return match verified {
                    Ok(identity) => Ok(Some(Authenticated::Bearer {
                        values: IdentityValues::new(&identity),
                        identity: Arc::new(identity),
                        token_hash: crate::session::sid_hash(token),
                    })),
                    Err(OidcError::Unavailable | OidcError::Discovery(_)) => {
                        Err(ProxyError::Unavailable {
                            detail: "provider unavailable for bearer validation".into(),
                        })
                    }
                    Err(e) => {
                        self.counters
                            .rejected_tokens
                            .fetch_add(1, Ordering::Relaxed);
                        self.record(facts.auth(
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
                };
            }
        }
        let session = match self.sessions.open(codec, &self.sealer, headers) {
            Ok(session) => session,
            Err(SessionRejection::Absent) => return Ok(None),
            Err(rejection) => {
                self.counters
                    .invalid_cookies
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%rejection, "session cookie refused");
                self.record(facts.auth(
                    AuthActivity::CredentialRejected,
                    false,
                    Some(format!("session cookie rejected: {rejection}")),
                    None,
                    None,
                ));
                set_cookies.extend(codec.clear());
                return Ok(None);
            }
        };
        let now = unix_now();
        let lifetimes = &self.config.session;
        if let Err(rejection) =
            session
                .state
                .check_lifetimes(now, lifetimes.absolute_lifetime, lifetimes.idle_lifetime)
        {
            tracing::debug!(%rejection, sid = %session.sid_hash, "session ended");
            set_cookies.extend(codec.clear());
            return Ok(None);
        }
        if self.revoked.is_revoked(&session.sid_hash) {
            tracing::debug!(sid = %session.sid_hash, "revoked session presented");
            set_cookies.extend(codec.clear());
            return Ok(None);
        }
        let mut fresh: Option<SessionState> = None;
        if session.state.refresh_due(now) {
            match self
                .refresh_session(
                    &session.state,
                    &presented_session_key(headers, codec, &session.state),
                )
                .await
            {
                RefreshOutcome::Refreshed(state) => {
                    self.record(facts.auth(
                        AuthActivity::Refresh,
                        true,
                        None,
                        Some(Arc::new(state.identity.clone())),
                        Some(session.sid_hash.clone()),
                    ));
                    fresh = Some(*state);
                }
                RefreshOutcome::Ended => {
                    self.record(facts.auth(
                        AuthActivity::Refresh,
                        false,
                        Some("the provider refused the refresh; session ended".into()),
                        Some(Arc::new(session.state.identity.clone())),
                        Some(session.sid_hash.clone()),
                    ));
                    set_cookies.extend(codec.clear());
                    return Ok(None);
                }
                RefreshOutcome::Kept => {}
            }
        }
        if session.state.touch_due(now, lifetimes.idle_lifetime) {
            fresh.get_or_insert_with(|| session.state.clone()).seen_at = now;
        }
        let session = match fresh {
            Some(state) => {
                let reissued = codec
                    .write(&self.sealer, &state, lifetimes.absolute_lifetime)
                    .map_err(|e| ProxyError::Internal {
                        detail: e.to_string(),
                    })?;
                set_cookies.extend(reissued);
                Arc::new(OpenSession::new(state))
            }
            None => session,
        };
        Ok(Some(Authenticated::Session { session }))
    }

    /// Refreshes a session once even when many requests carrying the same cookie arrive
    /// together; `key` names that cookie (see [`presented_session_key`]).
    async fn refresh_session(&self, state: &SessionState, key: &str) -> RefreshOutcome {
        let slot = {
            let Ok(mut map) = self.refreshes.lock() else {
                return RefreshOutcome::Kept;
            };
            map.retain(|_, v| {
                Arc::strong_count(v) > 1
                    || v.try_lock()
                        .map(|g| {
                            g.as_ref()
                                .is_some_and(|(_, t)| t.elapsed() < Duration::from_secs(30))
                        })
                        .unwrap_or(true)
            });
            map.entry(key.to_owned()).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some((outcome, at)) = guard.as_ref()
            && at.elapsed() < Duration::from_secs(30)
        {
            return outcome.clone();
        }
        let Some(refresh_token) = state.refresh_token.as_deref() else {
            return RefreshOutcome::Kept;
        };
        let outcome = match self.oidc.refresh(refresh_token, &state.identity).await {
            Ok(tokens) => {
                let mut fresh = state.clone();
                fresh.identity = tokens.identity;
                fresh.refresh_token = tokens.refresh_token;
                fresh.tokens_expire_at = tokens.expires_at;
                if tokens.id_token.is_some() {
                    fresh.id_token = tokens.id_token;
                }
                tracing::info!(sid = %state.sid_hash(), "session refreshed");
                RefreshOutcome::Refreshed(Box::new(fresh))
            }
            Err(OidcError::Refused(reason) | OidcError::Rejected(reason)) => {
                tracing::info!(sid = %state.sid_hash(), %reason, "provider refused the refresh; session ended");
                if let Err(e) = self
                    .revoked
                    .revoke(&state.sid_hash(), self.revoke_until(state), unix_now())
                    .await
                {
                    tracing::error!(error = %e, "could not persist revocation");
                }
                RefreshOutcome::Ended
            }
            Err(e) => {
                tracing::warn!(sid = %state.sid_hash(), error = %e, "refresh failed; session kept until the provider answers");
                RefreshOutcome::Kept
            }
        };
        *guard = Some((outcome.clone(), Instant::now()));
        outcome
    }

    fn revoke_until(&self, state: &SessionState) -> u64 {
        state
            .login_at
            .saturating_add(self.config.session.absolute_lifetime.as_secs())
            .saturating_add(60)
    }

    /// Strips hop-by-hop, spoofable and sekisho's own headers, applies the route's
    /// `remove_request_headers` and `set_request_headers`, then sets the forwarded set.
    fn rewrite_request_headers(
        &self,
        headers: &mut HeaderMap,
        target: &Target,
        route: &Route,
        websocket: bool,
        bearer_used: bool,
        codec: &CookieCodec,
    ) {
        let names: Vec<&str> = self.identity_names.iter().map(String::as_str).collect();
        sanitize_request_headers(headers, &names, &route.strip_request_headers, websocket);
        strip_own_cookies(headers, codec);
        if bearer_used {
            headers.remove(header::AUTHORIZATION);
        }
        apply_route_headers(
            headers,
            &route.remove_request_headers,
            &route.set_request_headers,
        );
        set_forwarded(headers, &target.forwarded);
    }

    fn set_identity_headers(
        &self,
        headers: &mut HeaderMap,
        auth: &Authenticated,
        audience: &str,
    ) -> Result<(), ProxyError> {
        let names = &self.identity_header_names;
        let values = auth.values();
        headers.insert(names.user.clone(), values.user.clone());
        if let Some(email) = &values.email {
            headers.insert(names.email.clone(), email.clone());
        }
        headers.insert(names.groups.clone(), values.groups.clone());
        let assertion = self
            .signer
            .assertion(auth.cache_key(), audience, auth.identity(), unix_now())
            .map_err(|e| ProxyError::Internal {
                detail: e.to_string(),
            })?;
        headers.insert(names.jwt_assertion.clone(), assertion);
        Ok(())
    }

    fn jwks_response(&self) -> Response<ProxyBody> {
        crate::error::jwks(self.signer.jwks().to_owned())
    }

    /// Redirects a browser to the provider, remembering state, nonce, PKCE verifier and where
    /// to return in a sealed, short-lived cookie bound to this browser.
    async fn start_login(
        &self,
        target: &Target,
        return_to: &str,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let state = self.random_token(24)?;
        let nonce = self.random_token(24)?;
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
        let plain = serde_json::to_vec(&flow).map_err(|e| ProxyError::Internal {
            detail: e.to_string(),
        })?;
        let sealed =
            self.sealer
                .seal(Purpose::LoginFlow, &plain)
                .map_err(|e| ProxyError::Internal {
                    detail: e.to_string(),
                })?;
        let codec = self.codec(target.scheme);
        let cookie = codec
            .set_cookie(
                &flow_cookie_name(codec, &state),
                &sealed,
                FLOW_LIFETIME.as_secs(),
            )
            .map_err(|e| ProxyError::Internal {
                detail: e.to_string(),
            })?;
        Ok(redirect(login.url.as_str(), vec![cookie]))
    }

    /// The provider's redirect back: checks state (bound to this browser's flow cookie, single
    /// use), exchanges the code with PKCE, validates the ID token and nonce, starts a session.
    async fn callback<B>(
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
        let codec = self.codec(target.scheme);
        let cookie_name = flow_cookie_name(codec, state);
        let sealed = request_cookies(request.headers())
            .find(|(name, _)| *name == cookie_name)
            .map(|(_, v)| v.to_owned())
            .ok_or_else(|| refuse("no login flow for this state in this browser"))?;
        let flow: FlowState = self
            .sealer
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
            .oidc
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
        let mut sid = [0u8; 16];
        self.sealer
            .random(&mut sid)
            .map_err(|e| ProxyError::Internal {
                detail: e.to_string(),
            })?;
        let session = SessionState {
            sid: URL_SAFE_NO_PAD.encode(sid),
            identity: tokens.identity,
            login_at: now,
            seen_at: now,
            tokens_expire_at: tokens.expires_at,
            refresh_token: tokens.refresh_token,
            id_token: tokens.id_token,
        };
        tracing::info!(sub = ?session.identity.sub, sid = %session.sid_hash(), "login");
        self.record(facts.auth(
            AuthActivity::Login,
            true,
            None,
            Some(Arc::new(session.identity.clone())),
            Some(session.sid_hash()),
        ));
        let mut cookies = codec
            .write(
                &self.sealer,
                &session,
                self.config.session.absolute_lifetime,
            )
            .map_err(|e| ProxyError::Internal {
                detail: e.to_string(),
            })?;
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
    async fn explicit_login<B>(
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
        let codec = self.codec(target.scheme);
        if self
            .authenticate(request.headers(), codec, cookies, facts)
            .await?
            .is_some()
        {
            return Ok(redirect(&return_to, Vec::new()));
        }
        self.start_login(target, &return_to).await
    }

    /// Marks a state as used; false when it already was (a replayed callback).
    fn claim_state(&self, state: &str, now: u64) -> bool {
        let Ok(mut used) = self.used_states.lock() else {
            return false;
        };
        used.claim(state, now, now.saturating_add(FLOW_LIFETIME.as_secs()))
    }

    /// `/.sekisho/logout`. A GET the browser says it made itself (`Sec-Fetch-Site: same-origin`
    /// or `none`: a link on this origin, a typed URL, a bookmark) signs out at once; any other
    /// GET (another site, or no such header) only shows a confirmation form, whose POST carries
    /// a token bound to this browser's session: another site can neither end the session nor
    /// the provider sign-in with a link or an image.
    async fn logout<B>(
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
        let codec = self.codec(target.scheme);
        let session = codec.read(&self.sealer, request.headers()).ok();
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

    /// Revokes a live session (durably, provider session id too), clears cookies, and sends
    /// the browser through the provider's RP-initiated logout when it has one. A session already
    /// revoked or expired is only cleared: nothing is written.
    async fn end_session(
        &self,
        codec: &CookieCodec,
        session: Option<SessionState>,
        target: &Target,
        facts: &Facts,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let now = unix_now();
        let lifetimes = &self.config.session;
        let live = session.filter(|state| {
            state
                .check_lifetimes(now, lifetimes.absolute_lifetime, lifetimes.idle_lifetime)
                .is_ok()
                && !self.revoked.is_revoked(&state.sid_hash())
        });
        if let Some(state) = &live {
            let until = self.revoke_until(state);
            let internal = |e: RevocationError| ProxyError::Internal {
                detail: e.to_string(),
            };
            self.revoked
                .revoke(&state.sid_hash(), until, now)
                .await
                .map_err(internal)?;
            if let Some(sid) = &state.identity.provider_sid {
                self.revoked
                    .revoke(&provider_sid_hash(&state.identity.issuer, sid), until, now)
                    .await
                    .map_err(internal)?;
            }
            self.signer.forget(&state.sid_hash());
            tracing::info!(sub = ?state.identity.sub, sid = %state.sid_hash(), "logout");
            self.record(facts.auth(
                AuthActivity::Logout,
                true,
                None,
                Some(Arc::new(state.identity.clone())),
                Some(state.sid_hash()),
            ));
        }
        let post_logout = match &self.config.oidc.post_logout_redirect_uri {
            Some(url) => url.to_string(),
            None => format!("{}{SIGNED_OUT_PATH}", origin_string(&target.origin())),
        };
        let id_token = live.as_ref().and_then(|s| s.id_token.as_deref());
        let location = match self.oidc.end_session_url(id_token, &post_logout).await {
            Some(url) => url.to_string(),
            None => post_logout,
        };
        Ok(redirect(&location, codec.clear()))
    }

    /// A sign-out form token for the session `sid_hash` (empty: no session), valid 10 minutes.
    fn logout_token(&self, sid_hash: &str) -> Result<String, ProxyError> {
        let expires = unix_now().saturating_add(FLOW_LIFETIME.as_secs());
        self.sealer
            .seal(
                Purpose::LogoutConfirmation,
                format!("{expires} {sid_hash}").as_bytes(),
            )
            .map_err(|e| ProxyError::Internal {
                detail: e.to_string(),
            })
    }

    fn logout_token_valid(&self, token: &str, sid_hash: &str) -> bool {
        let Ok(plain) = self.sealer.open(Purpose::LogoutConfirmation, token) else {
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

    fn random_token(&self, len: usize) -> Result<String, ProxyError> {
        crate::seal::random_token(len).map_err(|e| ProxyError::Internal {
            detail: e.to_string(),
        })
    }
}

mod facts;
mod used_states;
use facts::Facts;
use used_states::UsedStates;

/// Admits one event per second and counts the ones it turned away meanwhile.
#[derive(Debug, Default)]
struct OncePerSecond {
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl OncePerSecond {
    /// `Some(events turned away since the last admitted one)`, at most once per second.
    fn admit(&self) -> Option<u64> {
        self.admit_at(unix_now())
    }

    /// [`Self::admit`] at `now` (Unix seconds).
    fn admit_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        if now > last
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// What the policy sees of a request: one place builds it for routes and the admin listener.
fn policy_input<'a, B>(
    request: &'a Request<B>,
    target: &'a Target,
    conn: &'a Connection,
    auth: Option<&'a Authenticated>,
) -> policy::Input<'a> {
    policy::Input {
        identity: auth.map(Authenticated::identity),
        method: request.method(),
        host: &target.host,
        path: &target.path,
        source_ip: target.forwarded.client_ip,
        headers: request.headers(),
        client_certificate: conn.client_certificate.as_ref(),
        now: jiff::Timestamp::now(),
    }
}

/// The refresh-cache key of the session cookie a request presented: the session id's hash and a
/// digest of the sealed cookie value(s). Every sealing draws a fresh nonce, so a re-issued
/// (refreshed) cookie never shares its predecessor's key and is never answered with its
/// predecessor's cached outcome, while requests carrying the same cookie share one refresh.
/// (`tokens_expire_at` would not do: a refresh within the second of the login or of the previous
/// refresh yields the same value.)
fn presented_session_key(headers: &HeaderMap, codec: &CookieCodec, state: &SessionState) -> String {
    // The same sealed value (single cookie or joined chunks) the session was opened from.
    let sealed = codec.sealed(headers).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, sealed.as_bytes());
    format!(
        "{}.{}",
        state.sid_hash(),
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    )
}

/// The restart-only settings that differ between the running and a reloaded configuration.
fn restart_only_changes(running: &Config, reloaded: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let (a, b) = (&running.server, &reloaded.server);
    if a.http_listen != b.http_listen
        || a.https_listen != b.https_listen
        || a.trusted_proxies != b.trusted_proxies
    {
        changed.push("server");
    }
    let (a, b) = (&running.oidc, &reloaded.oidc);
    if a.issuer != b.issuer
        || a.client_id != b.client_id
        || a.client_secret != b.client_secret
        || a.scopes != b.scopes
    {
        changed.push("oidc");
    }
    let (a, b) = (&running.session, &reloaded.session);
    if a.cookie_name != b.cookie_name
        || a.keys != b.keys
        || a.absolute_lifetime != b.absolute_lifetime
        || a.idle_lifetime != b.idle_lifetime
    {
        changed.push("session");
    }
    if running.signing.key != reloaded.signing.key {
        changed.push("signing");
    }
    if running.allowed_redirect_origins != reloaded.allowed_redirect_origins {
        changed.push("allowed_redirect_origins");
    }
    let (a, b) = (&running.identity_headers, &reloaded.identity_headers);
    if (&a.user, &a.email, &a.groups, &a.jwt_assertion)
        != (&b.user, &b.email, &b.groups, &b.jwt_assertion)
    {
        changed.push("identity_headers");
    }
    changed
}

fn flow_cookie_name(codec: &CookieCodec, state: &str) -> String {
    let prefix: String = state.chars().take(12).collect();
    format!("{}_flow_{prefix}", codec.name)
}

fn redirect(location: &str, cookies: Vec<HeaderValue>) -> Response<ProxyBody> {
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

/// A browser navigation (as opposed to an API call): accepts HTML and is not an XHR.
fn is_browser(headers: &HeaderMap) -> bool {
    let html = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"));
    let xhr = headers
        .get("x-requested-with")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest"));
    html && !xhr
}

/// Request ids: a random per-process prefix and a counter, so ids are unique and cheap.
#[derive(Debug)]
struct RequestIds {
    prefix: String,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let mut bytes = [0u8; 6];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        RequestIds {
            prefix: URL_SAFE_NO_PAD.encode(bytes),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        format!(
            "{}-{:x}",
            self.prefix,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complaints_are_admitted_once_per_second_and_the_rest_counted() {
        let limiter = OncePerSecond::default();
        assert_eq!(limiter.admit_at(1000), Some(0));
        assert_eq!(limiter.admit_at(1000), None);
        assert_eq!(limiter.admit_at(1000), None);
        assert_eq!(limiter.admit_at(1001), Some(2));
        assert_eq!(limiter.admit_at(1001), None);
        assert_eq!(
            limiter.admit_at(999),
            None,
            "a clock stepping back admits nothing"
        );
        assert_eq!(limiter.admit_at(1005), Some(2));
    }

    #[test]
    fn browsers_are_told_from_programs() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        assert!(is_browser(&h));
        h.insert(
            "x-requested-with",
            HeaderValue::from_static("XMLHttpRequest"),
        );
        assert!(!is_browser(&h));
        let mut api = HeaderMap::new();
        api.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!is_browser(&api));
        assert!(!is_browser(&HeaderMap::new()));
    }

    #[test]
    fn refreshes_are_cached_per_presented_cookie_not_per_session() {
        let sealer = Sealer::new([[7u8; 32].as_slice()]).unwrap_or_else(|e| panic!("{e}"));
        let codec = CookieCodec::new("_sekisho", false);
        let state = SessionState {
            sid: "sid-1".into(),
            identity: serde_json::from_value(serde_json::json!({
                "sub": "alice", "email": null, "name": null, "groups": [], "issuer": "http://idp"
            }))
            .unwrap_or_else(|e| panic!("{e}")),
            login_at: 1000,
            seen_at: 1000,
            tokens_expire_at: Some(1030),
            refresh_token: Some("rt".into()),
            id_token: None,
        };
        let presented = |extra: &str| {
            let cookies = codec
                .write(&sealer, &state, Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{e}"));
            let live: Vec<&str> = cookies
                .iter()
                .filter_map(|c| c.to_str().ok())
                .filter(|c| !c.contains("Max-Age=0"))
                .filter_map(|c| c.split(';').next())
                .collect();
            let mut headers = HeaderMap::new();
            let value = format!("{}{extra}", live.join("; "));
            headers.insert(
                header::COOKIE,
                HeaderValue::from_str(&value).unwrap_or_else(|e| panic!("{e}")),
            );
            headers
        };
        let first = presented("");
        let key = presented_session_key(&first, &codec, &state);
        assert_eq!(
            key,
            presented_session_key(&first.clone(), &codec, &state),
            "the same cookie shares one refresh"
        );
        let mut with_other_cookies = first.clone();
        let value = format!(
            "theme=dark; {}; _sekisho_flow_abc=x",
            first
                .get(header::COOKIE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        );
        with_other_cookies.insert(
            header::COOKIE,
            HeaderValue::from_str(&value).unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(
            key,
            presented_session_key(&with_other_cookies, &codec, &state),
            "other cookies do not matter"
        );
        // The same state sealed again (a re-issued cookie, same second, same expiry): a new key.
        assert_ne!(key, presented_session_key(&presented(""), &codec, &state));
        assert!(key.starts_with(&format!("{}.", state.sid_hash())));
    }

    #[test]
    fn identity_values_are_header_safe() {
        use crate::session::header_safe;
        assert_eq!(header_safe("alice@example.com"), "alice@example.com");
        assert_eq!(header_safe("a\r\nb"), "a%0D%0Ab");
        assert_eq!(header_safe("100%"), "100%25");
        assert_eq!(header_safe("café"), "caf%C3%A9");
    }
}
