//! Forwarding to upstreams: one pooled hyper client per route (HTTP/1.1, or HTTP/2 — h2c for
//! `http`, ALPN for `https` — when the route asks) with the route's own TLS client (`tls`),
//! round-robin over the route's targets, the response-header timeout, body idle timeouts, and
//! WebSocket upgrades.

mod tls;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{HttpConnector, HttpInfo};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sekisho_config::{Route, RouteTimeouts, UpstreamVerify};
use tokio::time::Sleep;
use url::Url;

use crate::connection::UpstreamConnection;
use crate::error::{BoxError, ProxyBody, ProxyError};

/// Idle pooled connections kept per upstream target.
const MAX_IDLE_PER_TARGET: usize = 64;

/// A route's upstream targets and the client that reaches them.
pub struct Upstream {
    /// The route's id, for log lines.
    route: String,
    targets: Vec<Target>,
    next: AtomicUsize,
    /// One client (one connection pool) per worker thread (`server::worker_index`): a pooled
    /// connection is driven by the worker that opened it, and only that worker's requests use it.
    clients: Vec<Client<HttpsConnector<HttpConnector>, ProxyBody>>,
    http2: bool,
    timeouts: RouteTimeouts,
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
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls::client_config(&route.tls)?)
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
            .pool_max_idle_per_host(MAX_IDLE_PER_TARGET);
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
        Ok(Upstream {
            route: route.id.clone(),
            targets: route
                .to
                .iter()
                .map(|url| Target::new(url, rewrite.clone()))
                .collect::<Result<_, _>>()?,
            next: AtomicUsize::new(0),
            clients: (0..crate::server::worker_count())
                .map(|_| client.build(connector.clone()))
                .collect(),
            http2: route.upstream_http2,
            timeouts: route.timeouts,
        })
    }

    /// The target for the next request (round-robin); `None` for a forward-auth-only route,
    /// which has none.
    pub fn pick(&self) -> Option<&Target> {
        let len = self.targets.len();
        if len == 0 {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % len;
        self.targets.get(i)
    }

    /// The calling worker's client.
    fn client(&self) -> &Client<HttpsConnector<HttpConnector>, ProxyBody> {
        let index = crate::server::worker_index() % self.clients.len().max(1);
        // `clients` has one entry per worker, at least one.
        #[allow(
            clippy::indexing_slicing,
            reason = "index is reduced modulo the non-zero length"
        )]
        &self.clients[index]
    }

    /// Sends `request` (already rewritten) and waits for the response head within the route's
    /// response-header timeout. Bodies stream both ways, each under the idle timeout. A failure
    /// (connection, TLS handshake, protocol) is a 502 whose log detail names the route, the
    /// target and the whole cause chain (like `invalid peer certificate: UnknownIssuer`). The
    /// answer names the pooled connection the request went out on.
    pub async fn send(&self, request: Request<ProxyBody>) -> Result<Sent, ProxyError> {
        let (mut parts, body) = request.into_parts();
        parts.version = if self.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        // Kept for the log line of a failure (reference-counted, no copy of the text).
        let (scheme, authority) = (parts.uri.scheme().cloned(), parts.uri.authority().cloned());
        let request = Request::from_parts(parts, body);
        let response = tokio::time::timeout(
            self.timeouts.response_header,
            self.client().request(request),
        )
        .await
        .map_err(|_| ProxyError::GatewayTimeout)?
        .map_err(|e| ProxyError::BadGateway {
            detail: format!(
                "route {}: {}://{}: {}",
                self.route,
                scheme.as_ref().map_or("", |s| s.as_str()),
                authority.as_ref().map_or("", |a| a.as_str()),
                crate::oidc::error_chain(&e)
            ),
        })?;
        let connection = response
            .extensions()
            .get::<HttpInfo>()
            .map(|info| UpstreamConnection {
                local: info.local_addr(),
                remote: info.remote_addr(),
            });
        let idle = self.timeouts.idle;
        Ok(Sent {
            response: response.map(|body| IdleTimeout::new(body, idle).boxed_unsync()),
            connection,
        })
    }
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
    fn new(url: &Url, rewrite: Option<PrefixRewrite>) -> Result<Self, ProxyError> {
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
        })
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
        Target::new(&url, rewrite).unwrap_or_else(|e| panic!("{upstream}: {e}"))
    }

    fn uri(target: &Target, path: &str, query: Option<&str>) -> String {
        target
            .uri_for(path, query)
            .map(|uri| uri.to_string())
            .unwrap_or_else(|e| panic!("{path}: {e}"))
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
