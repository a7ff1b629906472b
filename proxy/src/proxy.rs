//! The request path: one function per phase, in the order of the chart in ARCHITECTURE.md —
//! normalise (`target.rs`), the built-in provider, sekisho's own endpoints
//! (`proxy/endpoints.rs`, `proxy/login.rs`, `proxy/logout.rs`, `proxy/forward_auth.rs`), route
//! (`proxy/route.rs`), the gate (`gate.rs`: credential, policy, refusal), forward
//! (`proxy/forward.rs`). The admin listener is another door through the same gate
//! (`proxy/admin_listener.rs`). Errors leave through [`ProxyError::into_response`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body::Body;
use sekisho_config::{Config, OnFailure};

use crate::assertion::{AssertionError, AssertionSigner};
use crate::audit::{AuditLog, Decision, Event, Lifecycle, LifecycleEvent, Unrecorded};
use crate::connection::Connection;
use crate::error::{BoxError, ProxyBody, ProxyError};
use crate::facts::Facts;
use crate::gate::{Ask, Challenge, Denial, Gate, Verdict};
use crate::metrics::Counters;
use crate::oidc::{OidcError, OidcProvider};
use crate::policy::{self, RegoEngines};
use crate::revocation::RevocationList;
use crate::routes::RouteTable;
use crate::seal::{SealError, Sealer};
use crate::sessions::Sessions;
use crate::sessions::events::SessionEvents;
use crate::target::Target;
use crate::upstream::Upstream;
use crate::xdp::NicStatus;

mod admin_listener;
mod backchannel;
pub(crate) mod cli_login;
mod endpoints;
mod forward;
mod forward_auth;
mod login;
mod logout;
mod route;
mod tunnel_door;
mod used_states;

pub use crate::gate::login::CALLBACK_PATH;
pub use backchannel::BACKCHANNEL_LOGOUT_PATH;
use used_states::UsedStates;

/// Path that starts a login explicitly (`?rd=` names where to return).
pub const LOGIN_PATH: &str = "/.sekisho/login";
/// Path that ends the session.
pub const LOGOUT_PATH: &str = "/.sekisho/logout";
/// Page shown after logout.
pub const SIGNED_OUT_PATH: &str = "/.sekisho/signed-out";
/// Forward-auth: a front proxy asks whether the request it holds may pass.
pub const AUTH_PATH: &str = "/.sekisho/auth";
/// Public keys of the identity assertions.
pub const JWKS_PATH: &str = "/.well-known/sekisho/jwks.json";

/// Why sekisho could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The shared-state link cannot be set up.
    #[error("{0}")]
    SharedState(#[source] crate::shared::SharedError),
    /// The session keys are unusable.
    #[error("session keys: {0}")]
    Keys(#[source] SealError),
    /// The assertion signing key is unusable.
    #[error("signing key: {0}")]
    Signing(#[source] AssertionError),
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
    /// The span exporter could not start.
    #[error("tracing: {0}")]
    Tracing(String),
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

/// The proxy: configuration turned into the state the request path needs.
pub struct Proxy {
    config: Config,
    routing: RwLock<Arc<Routing>>,
    gate: Gate,
    signer: Arc<AssertionSigner>,
    used_states: Mutex<UsedStates>,
    identity_names: Vec<String>,
    identity_header_names: IdentityHeaderNames,
    request_ids: RequestIds,
    audit: Arc<AuditLog>,
    live_verification: crate::admin::LiveVerification,
    /// The built-in OpenID provider, when configured (served before routing).
    idp: Option<Arc<crate::idp::IdentityProvider>>,
    /// Operational counters.
    pub counters: Arc<Counters>,
    /// The NIC guard, when configured.
    nic: NicStatus,
    /// Container attribution, when configured.
    attribution: crate::attribution::AttributionStatus,
    /// The open TCP tunnels.
    pub tunnels: Arc<crate::tunnel::Tunnels>,
    /// Command-line sign-in codes waiting for their exchange.
    cli_codes: cli_login::PendingCodes,
    /// The link to the other instances, when `shared_state` is configured.
    shared: Option<Arc<crate::shared::SharedState>>,
    /// Request traces (`tracing:`), when configured, and the word that its exporter is done.
    tracer: Option<(crate::traces::Tracer, Mutex<std::sync::mpsc::Receiver<()>>)>,
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
    /// Each route's latency histograms, by index (kept across reloads by route id).
    durations: Vec<Arc<crate::metrics::RouteDurations>>,
}

impl Routing {
    /// Builds the routing of a validated configuration; each route counts its latencies on
    /// `durations`' histograms for its id.
    pub fn new(
        config: &Config,
        durations: &crate::metrics::RequestDurations,
    ) -> Result<Self, StartError> {
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
            durations: config
                .routes
                .iter()
                .map(|r| durations.for_route(&r.id))
                .collect(),
        })
    }
}

impl Proxy {
    /// Builds the proxy from a validated configuration, on the audit log and revocation list
    /// the caller opened ([`crate::app::App`] opens each once, the audit log before the built-in
    /// provider that also writes to it).
    pub fn new(
        config: Config,
        audit: Arc<AuditLog>,
        revoked: RevocationList,
        nic: NicStatus,
    ) -> Result<Self, StartError> {
        let sealer = Sealer::new(config.session.keys.iter().map(|k| k.expose()))
            .map_err(StartError::Keys)?;
        let signer = Arc::new(
            AssertionSigner::new(
                config.signing.key.expose(),
                &config.signing.issuer,
                config.signing.assertion_lifetime,
            )
            .map_err(StartError::Signing)?,
        );
        let counters = Arc::new(Counters::default());
        let routing = Routing::new(&config, &counters.durations)?;
        let tracer = match &config.tracing {
            Some(tracing) => {
                let (tracer, done) =
                    crate::traces::Tracer::start(tracing).map_err(StartError::Tracing)?;
                Some((tracer, Mutex::new(done)))
            }
            None => None,
        };
        let oidc = Arc::new(OidcProvider::new(config.oidc.clone()).map_err(StartError::Oidc)?);
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
        // Whatever follows a session's life subscribes to its events.
        let mut events = SessionEvents::default();
        events.subscribe_local(audit.clone());
        events.subscribe(signer.clone());
        if let NicStatus::Attached(guard) = &nic {
            events.subscribe(guard.clone());
        }
        let tunnels = Arc::new(crate::tunnel::Tunnels::default());
        events.subscribe(tunnels.clone());
        let revoked = Arc::new(revoked);
        let shared = match &config.shared_state {
            Some(shared) => {
                let link = crate::shared::SharedState::new(&shared.redis, revoked.clone())
                    .map_err(StartError::SharedState)?;
                events.subscribe_local(link.clone());
                Some(link)
            }
            None => None,
        };
        let sessions = Sessions::new(&config.session, sealer, oidc.clone(), revoked, events);
        Ok(Proxy {
            routing: RwLock::new(Arc::new(routing)),
            gate: Gate::new(sessions, oidc, audit.clone(), counters.clone()),
            signer,
            used_states: Mutex::new(UsedStates::default()),
            identity_names,
            identity_header_names,
            request_ids: RequestIds::new(),
            audit,
            live_verification: crate::admin::LiveVerification::default(),
            idp: None,
            counters,
            nic,
            attribution: crate::attribution::AttributionStatus::Off,
            tunnels,
            cli_codes: cli_login::PendingCodes::default(),
            shared,
            tracer,
            config,
        })
    }

    /// Serves the built-in OpenID provider on this proxy's listeners (requests to its issuer's
    /// host under its path). The proxy itself still reaches it only over HTTP, as `oidc.issuer`.
    pub fn with_identity_provider(mut self, idp: Arc<crate::idp::IdentityProvider>) -> Self {
        self.idp = Some(idp);
        self
    }

    /// Closes the tunnels whose session stopped being live or whose token expired or was
    /// revoked; the app calls it every `server.timeouts.tunnel_session_check`.
    pub fn sweep_tunnels(&self) {
        let sessions = self.gate.sessions();
        self.tunnels.sweep(
            crate::session::unix_now(),
            |open| sessions.is_live(&open.state),
            |identity, issued_at| {
                sessions
                    .provider_session_revoked(identity, issued_at)
                    .is_none()
            },
        );
    }

    /// Attributes each request's connections to their containers with `attribution`.
    pub fn with_attribution(mut self, attribution: crate::attribution::AttributionStatus) -> Self {
        self.attribution = attribution;
        self
    }

    /// The link to the other instances, when `shared_state` is configured.
    pub fn shared_state(&self) -> Option<&Arc<crate::shared::SharedState>> {
        self.shared.as_ref()
    }

    /// The OpenID relying party (for startup discovery).
    pub fn oidc(&self) -> &OidcProvider {
        self.gate.oidc()
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Records an event that no response waits on (logins, reloads); a refusal is counted by
    /// the log and reported.
    pub fn record(&self, event: Event) {
        self.audit.keep(event);
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
        let routing = Routing::new(config, &self.counters.durations)?;
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
        if let Some(probe) = self.probe(&request, &conn) {
            return probe;
        }
        let started = Instant::now();
        let request_id = self.request_ids.next();
        let browser = is_browser(request.headers());
        let mut facts = Facts::new(
            &request,
            conn,
            &request_id,
            jiff::Timestamp::now(),
            self.config.audit.record_query,
        );
        facts.trace = self.begin_trace(request.headers(), &conn);
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
        self.attribution.annotate(&mut facts.record, &conn);
        let trace = std::mem::take(&mut facts.trace);
        let durations = facts.durations.take();
        let decision = facts.record.decision;
        let mut span = match &self.tracer {
            Some(_) => trace.end(&facts.record),
            None => None,
        };
        let event = facts.event(started.elapsed(), &response);
        let committed = match self.audit.commit(event).await {
            Ok(()) => "audit record committed",
            Err(unrecorded) => {
                response = self.unrecorded(unrecorded, response, &request_id, browser);
                "audit record not committed"
            }
        };
        self.counters
            .durations
            .observe(durations.as_deref(), decision, started.elapsed());
        if let (Some(mut span), Some((tracer, _))) = (span.take(), &self.tracer) {
            span.close(response.status().as_u16(), committed);
            tracer.export(span);
        }
        for cookie in cookies {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        if let Ok(id) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", id);
        }
        response
    }

    /// The request's trace: continued from a trusted proxy's `traceparent`, else new; with
    /// tracing off, only whether the peer's trace headers may pass (a trusted proxy's, valid).
    fn begin_trace(&self, headers: &HeaderMap, conn: &Connection) -> crate::traces::Trace {
        let trusted =
            crate::headers::is_trusted(conn.peer.ip(), &self.config.server.trusted_proxies);
        match &self.tracer {
            Some((tracer, _)) => tracer.begin(headers, trusted),
            None => crate::traces::Trace::off(headers, trusted),
        }
    }

    /// The span exporter's counters, when tracing is on.
    pub fn trace_metrics(&self) -> Option<&crate::otlp::ExportMetrics> {
        self.tracer.as_ref().map(|(tracer, _)| tracer.metrics())
    }

    /// Stops the span exporter after it has sent what it holds, waiting at most one export
    /// timeout (`tracing.otlp.timeout`).
    pub fn close_traces(&self) {
        if let (Some((tracer, done)), Some(config)) = (&self.tracer, &self.config.tracing) {
            tracer.close();
            if let Ok(done) = done.lock()
                && done.recv_timeout(config.otlp.timeout).is_err()
            {
                tracing::warn!("spans still unexported at shutdown were dropped");
            }
        }
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
                if let Some(suppressed) = self.audit.complaint_admitted() {
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
                if let Some(suppressed) = self.audit.complaint_admitted() {
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

    /// The phases in order; each one either hands on or answers. The doors other than a
    /// route's (tunnel, provider, admin listener, forward-auth, sekisho's endpoints) are boxed:
    /// their state would otherwise size every request's future (copied at each await) to the
    /// largest of them.
    async fn process<B>(
        &self,
        request: Request<B>,
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
        // A CONNECT is a tunnel (proxy/tunnel_door.rs), on the proxy listeners only.
        if request.method() == Method::CONNECT && !conn.admin {
            let routing = self.routing();
            return Box::pin(self.tunnel(request, conn, &routing, browser, facts, cookies)).await;
        }
        // Phase: normalise (target.rs).
        let target = Target::read(&request, &conn, &self.config.server.trusted_proxies)?;
        facts.target(&target);

        // The built-in OpenID provider (idp.rs), when the request is for its issuer.
        if let Some(idp) = &self.idp
            && idp.serves(target.scheme, &target.host, target.port, &target.path)
        {
            facts.record.route = Some(Arc::from("sekisho-idp"));
            facts.record.decision = Decision::Allow;
            return Ok(
                Box::pin(idp.handle(request, &target.path, target.forwarded.client_ip)).await,
            );
        }
        let routing = self.routing();
        if conn.admin {
            // The admin listener (proxy/admin_listener.rs).
            return Box::pin(self.admin(request, conn, &target, &routing, facts, cookies)).await;
        }

        // Phase: sekisho's own endpoints (proxy/endpoints.rs).
        if target.path == JWKS_PATH {
            facts.record.decision = Decision::Allow;
            return Ok(crate::error::jwks(self.signer.jwks().to_owned()));
        }
        if target.path == AUTH_PATH {
            // Forward-auth (proxy/forward_auth.rs).
            return Box::pin(
                self.forward_auth(request, conn, &target, &routing, browser, facts, cookies),
            )
            .await;
        }
        if target.path.starts_with("/.sekisho/") {
            return Box::pin(
                self.sekisho_endpoint(request, &target, &routing, request_id, facts, cookies),
            )
            .await;
        }

        // Phase: route (proxy/route.rs).
        let routed = self.route(&routing, request.method(), &target, facts)?;
        if routed.route.to.is_empty() {
            // Nothing to forward to: no sign-in for a door that leads nowhere.
            return Err(ProxyError::BadGateway {
                detail: format!(
                    "route {} has no upstream (forward-auth only)",
                    routed.route.id
                ),
            });
        }

        // Phase: the gate (gate.rs): credential, policy, refusal.
        let check = routed.decision_check(&routing);
        let ask = Ask {
            method: request.method(),
            query: request.uri().query(),
            headers: request.headers(),
            target: &target,
            conn: &conn,
            browser,
            access: routed.access(&routing.rego, Some(&check)),
            challenge: Challenge::Login,
            denial: Denial::Route {
                show_details: routed.route.show_error_details,
            },
        };
        let auth = match self.gate.admit(ask, facts, cookies).await? {
            Verdict::Admitted(auth) => auth,
            Verdict::Refused(response) => return Ok(response),
        };

        // Phase: forward (proxy/forward.rs).
        self.forward(request, &target, &routed, auth.as_ref(), request_id, facts)
            .await
    }
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
    let redis = |c: &Config| {
        c.shared_state.as_ref().map(|s| {
            let r = &s.redis;
            (
                format!("{r:?}"),
                r.password.as_ref().map(|p| p.expose().to_owned()),
            )
        })
    };
    if redis(running) != redis(reloaded) {
        changed.push("shared_state");
    }
    changed
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

impl crate::shared::Replica for Proxy {
    /// A state used at another instance's callback is refused here too.
    fn state_used(&self, key: &str, until: u64) {
        if let Ok(mut used) = self.used_states.lock() {
            used.claim(key, crate::session::unix_now(), until);
        }
    }

    /// A session event from another instance.
    fn session_event(&self, event: &crate::sessions::events::SessionEvent) {
        self.gate.sessions().remote_event(event);
    }

    /// A failure at another instance.
    fn failure(&self, client_ip: std::net::IpAddr) {
        self.gate.sessions().remote_failure(client_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn identity_values_are_header_safe() {
        use crate::session::header_safe;
        assert_eq!(header_safe("alice@example.com"), "alice@example.com");
        assert_eq!(header_safe("a\r\nb"), "a%0D%0Ab");
        assert_eq!(header_safe("100%"), "100%25");
        assert_eq!(header_safe("café"), "caf%C3%A9");
    }
}
