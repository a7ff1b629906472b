//! Forwarding to upstreams: per route and worker, a pool of HTTP/1.1 connections
//! (`upstream/pool.rs`), or hyper-util's client for HTTP/2 (h2c for `http`, ALPN for `https`)
//! when the route asks, with the route's own TLS client (`tls`),
//! round-robin over the route's healthy targets with a retry on the next one when a bodiless
//! idempotent request could not reach its target (`upstream/health.rs` keeps the targets'
//! health; `upstream/probe.rs` runs the active health checks), the response-header timeout,
//! body idle timeouts, and WebSocket upgrades.

pub mod health;
mod pool;
mod probe;
mod tls;

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, Uri, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Empty};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{HttpConnector, HttpInfo};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sekisho_config::{Route, RouteTimeouts, UpstreamVerify};
use tokio::time::Sleep;
use url::Url;

use crate::connection::UpstreamConnection;
use crate::error::{BoxError, ProxyBody, ProxyError};
use health::Health;

/// The workers' connection pools: sekisho's own for HTTP/1.1 (`upstream/pool.rs`), hyper-util's
/// for HTTP/2, where one multiplexed connection per target serves every request.
enum Clients {
    Http1(Vec<pool::Pool>),
    Http2(Vec<Client<HttpsConnector<HttpConnector>, ProxyBody>>),
}

/// A route's upstream targets and the client that reaches them.
pub struct Upstream {
    /// The route's id, for log lines.
    route: String,
    targets: Vec<Target>,
    next: AtomicUsize,
    /// One connection pool per worker thread (`server::worker_index`): a pooled connection is
    /// driven by the worker that opened it, and only that worker's requests use it.
    clients: Clients,
    http2: bool,
    timeouts: RouteTimeouts,
    /// The targets' health, shared by every worker (and the probes).
    health: Arc<Health>,
    /// Requests sent again to another target after their first could not be reached.
    retries: AtomicU64,
    /// The active health checks; dropping the upstream (a reload, shutdown) stops them.
    _probes: Option<probe::Probes>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("route", &self.route)
            .field("targets", &self.targets)
            .field("http2", &self.http2)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// A client for `route`'s targets, with the route's upstream TLS settings. Built at every
    /// start and every reload, so a route with `tls_skip_verify` is warned about each time.
    pub fn new(route: &Route) -> Result<Self, ProxyError> {
        if matches!(route.tls.verify, UpstreamVerify::Off) {
            tracing::warn!(
                route = %route.id,
                "route {}: upstream certificate verification is OFF (tls_skip_verify)",
                route.id
            );
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(route.timeouts.connect));
        http.set_nodelay(true);
        let tls_config = tls::client_config(&route.tls)?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config.clone())
            .https_or_http();
        // `tls_server_name`: SNI and certificate verification use it instead of the URL's host.
        let builder = match &route.tls.server_name {
            Some(name) => {
                builder.with_server_name_resolver(FixedServerNameResolver::new(name.clone()))
            }
            None => builder,
        };
        let connector = if route.upstream_http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let mut client = Client::builder(TokioExecutor::new());
        client
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            // A burst opens as many upstream connections as it needs; afterwards at most this
            // many stay open per target, each holding its buffers (as nginx's `keepalive N`).
            .pool_max_idle_per_host(pool::MAX_IDLE);
        if route.upstream_http2 {
            client.http2_only(true);
        }
        let rewrite = match (&route.prefix_rewrite, route.path_prefix()) {
            (Some(replacement), Some(prefix)) => Some(PrefixRewrite {
                prefix: prefix.to_owned(),
                replacement: replacement.clone(),
            }),
            (Some(_), None) => {
                // The config refuses `prefix_rewrite` on exact and regex routes.
                return Err(ProxyError::Internal {
                    detail: format!("route {} rewrites a prefix it does not have", route.id),
                });
            }
            (None, _) => None,
        };
        let target_count = route.to.len();
        let targets: Vec<Target> = route
            .to
            .iter()
            .map(|url| Target::new(url, rewrite.clone(), route.tls.server_name.as_ref()))
            .collect::<Result<_, _>>()?;
        // Fresh health at every start and reload: a reloaded route starts with every target in
        // rotation, and its probes restart with it.
        let health = Arc::new(Health::new(
            &route.id,
            targets.iter().map(|t| t.base.clone()).collect(),
            &route.upstream_health,
        ));
        let probes = match &route.upstream_health.check {
            Some(check) if !targets.is_empty() => {
                // A client of its own (same connector and TLS, no pooling): probes open a fresh
                // connection each time and never share the workers' pools.
                let mut probe_client = client.clone();
                probe_client.pool_max_idle_per_host(0);
                probe::Probes::start(
                    probe_client.build(connector.clone()),
                    check,
                    &targets,
                    health.clone(),
                    route.upstream_http2,
                )
            }
            _ => None,
        };
        Ok(Upstream {
            route: route.id.clone(),
            targets,
            next: AtomicUsize::new(0),
            clients: if route.upstream_http2 {
                Clients::Http2(
                    (0..crate::server::worker_count())
                        .map(|_| client.build(connector.clone()))
                        .collect(),
                )
            } else {
                let mut tls_config = tls_config;
                tls_config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let tls_config = Arc::new(tls_config);
                Clients::Http1(
                    (0..crate::server::worker_count())
                        .map(|_| {
                            pool::Pool::new(
                                target_count,
                                tls_config.clone(),
                                route.timeouts.connect,
                            )
                        })
                        .collect(),
                )
            },
            http2: route.upstream_http2,
            timeouts: route.timeouts,
            health,
            retries: AtomicU64::new(0),
            _probes: probes,
        })
    }

    /// Whether the route has no targets (forward-auth only).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The index of the target for the next request: round-robin over the targets in
    /// rotation, or, when none is, the one round-robin would have chosen (a route with every
    /// target out still tries one rather than fail without trying).
    fn pick(&self, now: u64) -> Option<usize> {
        let len = self.targets.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % len;
        (0..len)
            .map(|k| (start + k) % len)
            .find(|&i| self.health.is_available(i, now))
            .or(Some(start))
    }

    /// The target to retry on after `tried` (in the order tried): the next one after the last
    /// tried that is in rotation and not yet tried, else the next not yet tried at all.
    fn next_target(&self, tried: &[usize], now: u64) -> Option<usize> {
        let len = self.targets.len();
        let last = tried.last().copied().unwrap_or(0);
        let untried = (1..=len)
            .map(|k| (last + k) % len)
            .filter(|i| !tried.contains(i));
        let mut fallback = None;
        for i in untried {
            if self.health.is_available(i, now) {
                return Some(i);
            }
            fallback = fallback.or(Some(i));
        }
        fallback
    }

    /// Sends `request` (absolute URI, `Host` set) to target `index` over the calling worker's
    /// pool.
    async fn exchange(
        &self,
        index: usize,
        target: &Target,
        mut request: Request<ProxyBody>,
    ) -> Result<Sent, Unreached> {
        let worker = crate::server::worker_index();
        match &self.clients {
            Clients::Http1(pools) => {
                let pool = pools
                    .get(worker % pools.len().max(1))
                    .ok_or(Unreached::NoPool)?;
                // HTTP/1.1 sends the origin form (`/path?query`).
                *request.uri_mut() = request
                    .uri()
                    .path_and_query()
                    .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
                let answer = pool
                    .send(index, &target.endpoint, request)
                    .await
                    .map_err(Unreached::Pool)?;
                let idle = self.timeouts.idle;
                Ok(Sent {
                    response: answer
                        .response
                        .map(|body| IdleTimeout::new(body, idle).boxed_unsync()),
                    connection: Some(answer.connection),
                })
            }
            Clients::Http2(clients) => {
                let client = clients
                    .get(worker % clients.len().max(1))
                    .ok_or(Unreached::NoPool)?;
                // The client connection's read buffer must not live on in this one's HPACK table.
                crate::headers::copy_values(request.headers_mut());
                let response = client.request(request).await.map_err(Unreached::Legacy)?;
                Ok(self.sent(response))
            }
        }
    }

    /// Sends `outgoing` to a target in rotation, and waits for the response head within the
    /// route's response-header timeout. Bodies stream both ways, each under the idle timeout.
    ///
    /// When the target cannot be reached — the connection cannot be made (a connect failure,
    /// which also counts towards the target's ejection), or a pooled connection closes (or is
    /// reset) before any answer — a request that can be replayed is sent again to the next target, each
    /// target at most once: an idempotent method (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) whose
    /// body is known to be empty, since a body is consumed by the attempt that failed. Other
    /// failures, a response-header timeout, and every failure of other requests are final.
    ///
    /// A failure (connection, TLS handshake, protocol) is a 502 whose log detail names the
    /// route, each target tried and the whole cause chain (like `invalid peer certificate:
    /// UnknownIssuer`). `record` is set to the `host:port` of each target as it is tried, so it
    /// names the one that answered, or the last that failed. The answer names the pooled
    /// connection the request went out on.
    pub async fn send(
        &self,
        outgoing: Outgoing<'_>,
        record: &mut Option<String>,
    ) -> Result<Sent, ProxyError> {
        let Outgoing {
            mut parts,
            body,
            path,
            host,
        } = outgoing;
        let version = if self.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        parts.version = version;
        // The client's URI, for its query (each target gets its own URI).
        let original = std::mem::take(&mut parts.uri);
        let now = self.health.now();
        let mut index = self.pick(now).ok_or_else(|| ProxyError::BadGateway {
            detail: format!("route {} has no upstream (forward-auth only)", self.route),
        })?;
        // What a replay needs; taken only when there is another target to replay on.
        let replay =
            (self.targets.len() > 1 && is_idempotent(&parts.method) && body.is_end_stream())
                .then(|| (parts.method.clone(), parts.headers.clone()));
        let mut next = Some((parts, body));
        let mut tried: Vec<usize> = Vec::new();
        let mut detail = String::new();
        loop {
            let Some(target) = self.targets.get(index) else {
                return Err(ProxyError::Internal {
                    detail: format!("route {}: no target {index}", self.route),
                });
            };
            *record = target.host.to_str().ok().map(str::to_owned);
            let (mut parts, body) = match (next.take(), &replay) {
                (Some(first), _) => first,
                (None, Some((method, headers))) => {
                    let mut request = Request::new(empty());
                    *request.method_mut() = method.clone();
                    *request.version_mut() = version;
                    *request.headers_mut() = headers.clone();
                    request.into_parts()
                }
                (None, None) => {
                    return Err(ProxyError::Internal {
                        detail: format!("route {}: a retry without a request", self.route),
                    });
                }
            };
            parts.uri = target.uri_for(path, original.query())?;
            parts.headers.insert(
                header::HOST,
                host.clone().unwrap_or_else(|| target.host.clone()),
            );
            let outcome = tokio::time::timeout(
                self.timeouts.response_header,
                self.exchange(index, target, Request::from_parts(parts, body)),
            )
            .await
            .map_err(|_| ProxyError::GatewayTimeout)?;
            let error = match outcome {
                Ok(sent) => {
                    self.health.succeeded(index);
                    return Ok(sent);
                }
                Err(error) => error,
            };
            let connect = error.is_connect();
            if connect {
                self.health.connect_failed(index, self.health.now());
            }
            if detail.is_empty() {
                let _ = write!(detail, "route {}: ", self.route);
            } else {
                detail.push_str("; then ");
            }
            let _ = write!(detail, "{}: {}", target.base, error.chain());
            tried.push(index);
            let retry = replay.is_some() && (connect || error.closed_before_answer());
            match self.next_target(&tried, self.health.now()) {
                Some(following) if retry => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(route = %self.route, failed = %target.base, next = ?self.targets.get(following).map(|t| &t.base), "target not reached; retrying on the next");
                    index = following;
                }
                _ => return Err(ProxyError::BadGateway { detail }),
            }
        }
    }

    /// A response, its body under the idle timeout, with the connection it came on.
    fn sent(&self, response: Response<hyper::body::Incoming>) -> Sent {
        let connection = response
            .extensions()
            .get::<HttpInfo>()
            .map(|info| UpstreamConnection {
                local: info.local_addr(),
                remote: info.remote_addr(),
            });
        let idle = self.timeouts.idle;
        Sent {
            response: response.map(|body| IdleTimeout::new(body, idle).boxed_unsync()),
            connection,
        }
    }

    /// Appends this route's target metrics (Prometheus text, without the HELP and TYPE lines
    /// [`write_metrics_help`] writes once for all routes) to `text`.
    fn write_metrics(&self, text: &mut String) {
        let route = label(&self.route);
        let now = self.health.now();
        for (name, available, ejections) in self.health.report(now) {
            let target = label(name);
            let _ = writeln!(
                text,
                "sekisho_upstream_target_healthy{{route=\"{route}\",target=\"{target}\"}} {}",
                u8::from(available)
            );
            let _ = writeln!(
                text,
                "sekisho_upstream_ejections_total{{route=\"{route}\",target=\"{target}\"}} {ejections}"
            );
        }
        let _ = writeln!(
            text,
            "sekisho_upstream_retries_total{{route=\"{route}\"}} {}",
            self.retries.load(Ordering::Relaxed)
        );
    }
}

/// The upstream metrics of every route that has targets, in the Prometheus text format:
/// `sekisho_upstream_target_healthy{route,target}` (1 while the target is in rotation),
/// `sekisho_upstream_ejections_total{route,target}` and `sekisho_upstream_retries_total{route}`.
/// They start again from zero when a reload rebuilds the routes.
pub fn write_metrics(upstreams: &[Upstream], text: &mut String) {
    text.push_str(
        "# HELP sekisho_upstream_target_healthy 1 while the target is in rotation (not ejected, not failing its health check).\n# TYPE sekisho_upstream_target_healthy gauge\n\
         # HELP sekisho_upstream_ejections_total Times the target was ejected after consecutive connect failures.\n# TYPE sekisho_upstream_ejections_total counter\n\
         # HELP sekisho_upstream_retries_total Requests sent again to another target after theirs could not be reached.\n# TYPE sekisho_upstream_retries_total counter\n",
    );
    for upstream in upstreams.iter().filter(|u| !u.is_empty()) {
        upstream.write_metrics(text);
    }
}

/// A Prometheus label value: `\`, `"` and line feeds escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Whether a request with `method` may be sent again (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Why a target did not answer.
#[derive(Debug)]
enum Unreached {
    /// From sekisho's HTTP/1.1 pool.
    Pool(pool::Failure),
    /// From hyper-util's client (HTTP/2).
    Legacy(hyper_util::client::legacy::Error),
    /// No pool for this worker (cannot happen: one per worker).
    NoPool,
}

impl Unreached {
    /// Whether the connection could not be made (counts towards the target's ejection).
    fn is_connect(&self) -> bool {
        match self {
            Unreached::Pool(e) => e.is_connect(),
            Unreached::Legacy(e) => e.is_connect(),
            Unreached::NoPool => false,
        }
    }

    /// Whether the request went out on a pooled connection that closed or was reset before any
    /// answer (the upstream shut it down as the request was sent): nothing was answered, and a
    /// replayable request may go to another target.
    fn closed_before_answer(&self) -> bool {
        match self {
            Unreached::Pool(e) => e.closed_before_answer(),
            Unreached::Legacy(e) => {
                let mut source: Option<&(dyn std::error::Error + 'static)> =
                    std::error::Error::source(e);
                while let Some(cause) = source {
                    if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
                        return pool::unanswered(hyper);
                    }
                    source = cause.source();
                }
                false
            }
            Unreached::NoPool => false,
        }
    }

    /// The error and its causes, for the log and the record's detail.
    fn chain(&self) -> String {
        match self {
            Unreached::Pool(e) => crate::oidc::error_chain(e),
            Unreached::Legacy(e) => crate::oidc::error_chain(e),
            Unreached::NoPool => "no connection pool for this worker".to_owned(),
        }
    }
}

/// An empty request body, for a replay.
fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A request ready for a route's upstream but for the target: [`Upstream::send`] sets the URI
/// and `Host` of each target it tries.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// The request head, its headers rewritten; its URI is the client's (for the query).
    pub parts: http::request::Parts,
    /// The body (under the idle timeout).
    pub body: ProxyBody,
    /// The normalised request path, before `prefix_rewrite` and the target's base path.
    pub path: &'a str,
    /// The `Host` to send instead of each target's own (`preserve_host`).
    pub host: Option<HeaderValue>,
}

/// An upstream's response and the connection it came on.
#[derive(Debug)]
pub struct Sent {
    /// The response (body under the idle timeout).
    pub response: Response<ProxyBody>,
    /// The connection: both ends (absent only if the connector did not say).
    pub connection: Option<UpstreamConnection>,
}

/// One upstream URL, with what every request to it needs prepared once.
#[derive(Debug)]
pub struct Target {
    /// `scheme://authority/base-path` without a trailing `/`.
    base: String,
    /// `host[:port]` as a `Host` header value.
    pub host: HeaderValue,
    /// The route's `prefix_rewrite`, applied before `base` is put in front.
    rewrite: Option<PrefixRewrite>,
    /// Where its HTTP/1.1 connections go.
    endpoint: pool::Endpoint,
}

/// A route's `prefix_rewrite` with the path prefix it replaces.
#[derive(Debug, Clone)]
struct PrefixRewrite {
    /// The route's path prefix (normal form, no trailing `/` except the root).
    prefix: String,
    /// What replaces it (normal form).
    replacement: String,
}

impl Target {
    fn new(
        url: &Url,
        rewrite: Option<PrefixRewrite>,
        server_name: Option<&rustls::pki_types::ServerName<'static>>,
    ) -> Result<Self, ProxyError> {
        let endpoint = pool::Endpoint::new(url, server_name)
            .map_err(|detail| ProxyError::Internal { detail })?;
        let authority = authority(url);
        let host = HeaderValue::from_str(&authority).map_err(|_| ProxyError::Internal {
            detail: format!("upstream {url} has an invalid host"),
        })?;
        let base = format!(
            "{}://{authority}{}",
            url.scheme(),
            url.path().trim_end_matches('/')
        );
        Ok(Target {
            base,
            host,
            rewrite,
            endpoint,
        })
    }

    /// The URI of the active health check's `path` (with its query) on this target: the
    /// target's base path, then `path`; `prefix_rewrite` does not apply.
    fn probe_uri(&self, path: &str) -> Result<Uri, http::uri::InvalidUri> {
        format!("{}{path}", self.base).parse()
    }

    /// The URI for a request path (normalised) and query on this target: the route's
    /// `prefix_rewrite` applied to the path, then the target's own path put in front.
    pub fn uri_for(&self, path: &str, query: Option<&str>) -> Result<Uri, ProxyError> {
        let rewritten;
        let path = match &self.rewrite {
            Some(rewrite) => {
                rewritten = rewrite_prefix(path, &rewrite.prefix, &rewrite.replacement)
                    .ok_or_else(|| ProxyError::Internal {
                        detail: format!(
                            "path {path} is not under the route's prefix {}",
                            rewrite.prefix
                        ),
                    })?;
                rewritten.as_str()
            }
            None => path,
        };
        let mut text =
            String::with_capacity(self.base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        text.push_str(&self.base);
        text.push_str(path);
        if let Some(q) = query {
            text.push('?');
            text.push_str(q);
        }
        text.parse().map_err(|_| ProxyError::BadRequest {
            reason: "request target cannot be forwarded",
        })
    }
}

/// `path` with `prefix` replaced by `replacement`, segment by segment (`prefix_rewrite`): a
/// trailing `/` of either is not significant, the request's own trailing `/` is kept, and an
/// empty result is `/`. With prefix `/app` and replacement `/`, `/app/x` becomes `/x` and `/app`
/// and `/app/` become `/`; with replacement `/v2/`, `/app/x` becomes `/v2/x`. `None` when `path`
/// is not `prefix` or under it on a segment boundary. Normal-form inputs give a normal-form path.
pub fn rewrite_prefix(path: &str, prefix: &str, replacement: &str) -> Option<String> {
    let rest = path.strip_prefix(prefix.trim_end_matches('/'))?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let head = replacement.trim_end_matches('/');
    if head.is_empty() && rest.is_empty() {
        return Some("/".to_owned());
    }
    let mut out = String::with_capacity(head.len() + rest.len());
    out.push_str(head);
    out.push_str(rest);
    Some(out)
}

/// `host[:port]` of a URL, bracketing IPv6.
pub fn authority(url: &Url) -> String {
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// Joins a client's and an upstream's upgraded connections (WebSocket) until either closes or
/// neither side sends anything for `idle`.
pub fn splice_upgrades(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    idle: Duration,
) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
        let (upstream_read, upstream_write) = tokio::io::split(TokioIo::new(upstream));
        let activity = Activity::new();
        let outcome = tokio::select! {
            r = pump(client_read, upstream_write, &activity, idle) => r,
            r = pump(upstream_read, client_write, &activity, idle) => r,
        };
        if let Err(e) = outcome {
            tracing::debug!(error = %e, "upgraded connection ended");
        }
    });
}

/// The last time either direction of a spliced connection carried data.
struct Activity {
    start: tokio::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Copies one direction until EOF, an error, or both directions idle for `idle`.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    activity: &Activity,
    idle: Duration,
) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(idle, from.read(&mut buf)).await {
            Ok(Ok(0)) => {
                to.shutdown().await?;
                return Ok(());
            }
            Ok(Ok(n)) => {
                activity.touch();
                to.write_all(buf.get(..n).unwrap_or_default()).await?;
                to.flush().await?;
            }
            Ok(Err(e)) => return Err(e),
            Err(_) if activity.idle_for() < idle => {}
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "idle timeout",
                ));
            }
        }
    }
}

/// A body that fails when no frame arrives for `idle`; streaming stays streaming.
#[derive(Debug)]
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    /// Armed the first time the body has to wait, so bodies that never wait cost no timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            timer: None,
        }
    }
}

/// A body stalled for longer than its idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("body idle timeout")]
pub struct BodyIdleTimeout;

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(timer) = this.timer.as_mut() {
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.idle);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    // An error, not an early end: a chunked body must never look complete when
                    // it is not.
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyIdleTimeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(upstream: &str, rewrite: Option<(&str, &str)>) -> Target {
        let url = Url::parse(upstream).unwrap_or_else(|e| panic!("{upstream}: {e}"));
        let rewrite = rewrite.map(|(prefix, replacement)| PrefixRewrite {
            prefix: prefix.to_owned(),
            replacement: replacement.to_owned(),
        });
        Target::new(&url, rewrite, None).unwrap_or_else(|e| panic!("{upstream}: {e}"))
    }

    fn uri(target: &Target, path: &str, query: Option<&str>) -> String {
        target
            .uri_for(path, query)
            .map(|uri| uri.to_string())
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The upstream of a route to three targets that ejects at the first connect failure.
    fn three_targets() -> Upstream {
        let source = "server:\n  http_listen: 127.0.0.1:8080\noidc:\n  issuer: https://idp.example.com\n  client_id: c\n  client_secret: {env: X}\nsession:\n  keys: [{env: K}]\nsigning:\n  key: {env: S}\nroutes:\n  - id: app\n    from: http://app.example.com\n    to: [http://127.0.0.1:1, http://127.0.0.1:2, http://127.0.0.1:3]\n    upstream_health: {eject_after: 1}\n";
        let config = sekisho_config::parse_without_secrets(source, std::path::Path::new("s.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let route = config.routes.first().unwrap_or_else(|| panic!("one route"));
        Upstream::new(route).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn requests_go_round_robin_over_the_targets_in_rotation() {
        let upstream = three_targets();
        let picks: Vec<Option<usize>> = (0..4).map(|_| upstream.pick(0)).collect();
        assert_eq!(picks, [Some(0), Some(1), Some(2), Some(0)]);
        upstream.health.connect_failed(1, 0);
        // The rotation goes on from where it was; target 1's turns go to the next in rotation.
        let picks: Vec<Option<usize>> = (0..4).map(|_| upstream.pick(1)).collect();
        assert_eq!(picks, [Some(2), Some(2), Some(0), Some(2)]);
        // With every target out, the one round-robin would have chosen is tried anyway.
        upstream.health.connect_failed(0, 1);
        upstream.health.connect_failed(2, 1);
        let picks: Vec<Option<usize>> = (0..3).map(|_| upstream.pick(2)).collect();
        assert_eq!(picks, [Some(2), Some(0), Some(1)]);
    }

    #[test]
    fn a_retry_goes_to_an_untried_target_in_rotation_first() {
        let upstream = three_targets();
        assert_eq!(upstream.next_target(&[0], 0), Some(1));
        assert_eq!(upstream.next_target(&[2], 0), Some(0));
        assert_eq!(upstream.next_target(&[0, 1], 0), Some(2));
        assert_eq!(
            upstream.next_target(&[0, 1, 2], 0),
            None,
            "each target once"
        );
        // Target 1 ejected: it comes after the others, but is still tried last.
        upstream.health.connect_failed(1, 0);
        assert_eq!(upstream.next_target(&[0], 1), Some(2));
        assert_eq!(upstream.next_target(&[0, 2], 1), Some(1));
    }

    #[test]
    fn only_bodiless_idempotent_requests_are_replayable() {
        for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            let method = Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert!(is_idempotent(&method), "{method}");
        }
        for method in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&method), "{method}");
        }
    }

    #[test]
    fn metric_labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_prefix_is_replaced_segment_by_segment() {
        let cases = [
            ("/app/x", "/app", "/", Some("/x")),
            ("/app/", "/app", "/", Some("/")),
            ("/app", "/app", "/", Some("/")),
            ("/app/x/y/", "/app", "/", Some("/x/y/")),
            ("/app/x", "/app", "/v2/", Some("/v2/x")),
            ("/app/x", "/app", "/v2", Some("/v2/x")),
            ("/app", "/app", "/v2/", Some("/v2")),
            ("/app/", "/app", "/v2", Some("/v2/")),
            ("/x", "/", "/v2/", Some("/v2/x")),
            ("/", "/", "/", Some("/")),
            ("/", "/", "/v2", Some("/v2/")),
            ("/a/b/c", "/a/b", "/z", Some("/z/c")),
            // Not under the prefix on a segment boundary.
            ("/apple", "/app", "/", None),
            ("/ap", "/app", "/", None),
            ("/other/app", "/app", "/", None),
        ];
        for (path, prefix, replacement, expected) in cases {
            assert_eq!(
                rewrite_prefix(path, prefix, replacement).as_deref(),
                expected,
                "{path} with {prefix} -> {replacement}"
            );
        }
    }

    #[test]
    fn rewritten_paths_stay_in_normal_form() {
        use sekisho_config::path::is_normal;
        let paths = ["/", "/app", "/app/", "/app/x", "/app/x/", "/app/%3C/y;p=1"];
        let prefixes = ["/", "/app"];
        let replacements = ["/", "/v2", "/v2/", "/a/b", "/%C3%A9/"];
        for path in paths {
            for prefix in prefixes {
                for replacement in replacements {
                    if let Some(out) = rewrite_prefix(path, prefix, replacement) {
                        assert!(is_normal(&out), "{path} {prefix} {replacement} -> {out}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_rewrite_comes_before_the_upstream_base_path() {
        let plain = target("http://127.0.0.1:9000/base/", None);
        assert_eq!(
            uri(&plain, "/app/x", Some("q=1")),
            "http://127.0.0.1:9000/base/app/x?q=1"
        );
        let rewriting = target("http://127.0.0.1:9000/base/", Some(("/app", "/")));
        assert_eq!(
            uri(&rewriting, "/app/x", Some("q=1")),
            "http://127.0.0.1:9000/base/x?q=1"
        );
        assert_eq!(
            uri(&rewriting, "/app/", None),
            "http://127.0.0.1:9000/base/"
        );
        let at_root = target("http://127.0.0.1:9000", Some(("/app", "/")));
        assert_eq!(uri(&at_root, "/app/x", None), "http://127.0.0.1:9000/x");
        assert_eq!(uri(&at_root, "/app", None), "http://127.0.0.1:9000/");
        assert!(matches!(
            at_root.uri_for("/elsewhere", None),
            Err(ProxyError::Internal { .. })
        ));
    }
}
