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

/// A route's upstream targets and the client that reaches them.
pub struct Upstream {
    /// The route's id, for log lines.
    route: String,
    targets: Vec<Target>,
    next: AtomicUsize,
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
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
            .pool_idle_timeout(Duration::from_secs(90));
        if route.upstream_http2 {
            client.http2_only(true);
        }
        Ok(Upstream {
            route: route.id.clone(),
            targets: route.to.iter().map(Target::new).collect::<Result<_, _>>()?,
            next: AtomicUsize::new(0),
            client: client.build(connector),
            http2: route.upstream_http2,
            timeouts: route.timeouts,
        })
    }

    /// The target for the next request (round-robin).
    pub fn pick(&self) -> Option<&Target> {
        let len = self.targets.len();
        if len == 0 {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % len;
        self.targets.get(i)
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
        let response =
            tokio::time::timeout(self.timeouts.response_header, self.client.request(request))
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
}

impl Target {
    fn new(url: &Url) -> Result<Self, ProxyError> {
        let authority = authority(url);
        let host = HeaderValue::from_str(&authority).map_err(|_| ProxyError::Internal {
            detail: format!("upstream {url} has an invalid host"),
        })?;
        let base = format!(
            "{}://{authority}{}",
            url.scheme(),
            url.path().trim_end_matches('/')
        );
        Ok(Target { base, host })
    }

    /// The URI for a request path and query on this target: the target's own path is a prefix.
    pub fn uri_for(&self, path: &str, query: Option<&str>) -> Result<Uri, ProxyError> {
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
