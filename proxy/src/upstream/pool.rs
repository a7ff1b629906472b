//! HTTP/1.1 connections to one route's targets, pooled per worker thread: a request takes the
//! most recently used idle connection to its target (or opens one: TCP, then the route's TLS
//! client for `https`), and its connection goes back when the response body has been read to
//! the end and dropped. A connection whose response was not read to the end, or that switched
//! protocols (WebSocket), never goes back.
//!
//! hyper-util's pool did the same through a key hash, a checkout future and a task spawned per
//! request to wait for the connection to be ready again; here the connection goes back from the
//! body's `Drop`, and the next request waits for readiness itself (the connection's own task,
//! on the same worker, is already due to run).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::Url;

use crate::connection::UpstreamConnection;
use crate::error::ProxyBody;

/// Idle connections kept per target and worker (as nginx's `keepalive N`); a burst opens as
/// many as it needs.
pub(super) const MAX_IDLE: usize = 64;

/// An idle connection unused for this long is closed rather than reused (the upstream may
/// have closed its end already; nginx's own upstream keep-alive timeout is 60 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Where a target's connections go.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    /// Host name or IP literal (no brackets), for the resolver.
    host: String,
    port: u16,
    /// `https`: the TLS server name (the route's `tls_server_name`, else the URL's host).
    tls: Option<ServerName<'static>>,
}

impl Endpoint {
    /// The endpoint of a target URL; `server_name` overrides the name TLS checks for.
    pub(super) fn new(
        url: &Url,
        server_name: Option<&ServerName<'static>>,
    ) -> Result<Self, String> {
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => return Err(format!("upstream {url} has no host")),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("upstream {url} has no port"))?;
        let tls = match url.scheme() {
            "https" => Some(match server_name {
                Some(name) => name.clone(),
                None => ServerName::try_from(host.clone())
                    .map_err(|e| format!("upstream {url}: TLS server name: {e}"))?,
            }),
            _ => None,
        };
        Ok(Endpoint { host, port, tls })
    }
}

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    /// The name did not resolve (or to no address).
    #[error("dns error: {0}")]
    Resolve(#[source] io::Error),
    /// No address accepted the connection.
    #[error("tcp connect error: {0}")]
    Connect(#[source] io::Error),
    /// The connection was not made within the route's connect timeout.
    #[error("tcp connect error: timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The TLS handshake failed (the cause names the certificate problem).
    #[error("TLS handshake: {0}")]
    Tls(#[source] io::Error),
    /// The HTTP exchange failed.
    #[error("{0}")]
    Http(#[source] hyper::Error),
}

impl Failure {
    /// Whether the connection could not be made (a target health failure).
    pub(super) fn is_connect(&self) -> bool {
        !matches!(self, Failure::Http(_))
    }

    /// Whether a connection closed before any answer (the upstream shut it as the request was
    /// sent): a replayable request may go elsewhere.
    pub(super) fn closed_before_answer(&self) -> bool {
        match self {
            Failure::Http(e) => unanswered(e),
            _ => false,
        }
    }
}

/// Whether hyper gave up on an exchange because its connection closed before any answer:
/// the request was not sent (canceled), its response never began (incomplete message), or
/// the connection was reset or broken under it (an upstream closing a keep-alive connection
/// with the request unread answers it with a reset). Only a replayable request (idempotent,
/// no body) is sent again on such a failure, as nginx's `proxy_next_upstream error` does.
pub(super) fn unanswered(error: &hyper::Error) -> bool {
    error.is_incomplete_message() || error.is_canceled() || broken(error)
}

/// Whether the cause of `error` is the connection being reset, aborted or broken.
fn broken(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            );
        }
        source = cause.source();
    }
    false
}

/// One worker's pooled connections to each of a route's targets.
#[derive(Debug)]
pub(super) struct Pool {
    idle: Vec<Arc<Slot>>,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
}

/// The idle connections to one target, most recently used last.
#[derive(Debug, Default)]
struct Slot(Mutex<Vec<Idle>>);

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    connection: UpstreamConnection,
    since: Instant,
}

/// A response from a pooled connection, and that connection's ends.
#[derive(Debug)]
pub(super) struct Answer {
    /// The response; its body hands the connection back when read to the end.
    pub(super) response: Response<Returning>,
    /// Both ends of the connection it came on.
    pub(super) connection: UpstreamConnection,
}

impl Pool {
    /// An empty pool for `targets` targets, with the route's TLS client.
    pub(super) fn new(
        targets: usize,
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
    ) -> Self {
        Pool {
            idle: (0..targets).map(|_| Arc::new(Slot::default())).collect(),
            tls,
            connect_timeout,
        }
    }

    /// Sends `request` (origin-form URI, `Host` set) to target `index` at `endpoint`.
    pub(super) async fn send(
        &self,
        index: usize,
        endpoint: &Endpoint,
        mut request: Request<ProxyBody>,
    ) -> Result<Answer, Failure> {
        let slot = self.idle.get(index).cloned().unwrap_or_default();
        // A pooled connection: the newest first; one the upstream closed meanwhile is dropped.
        while let Some(idle) = slot.take() {
            let Idle {
                mut sender,
                connection,
                ..
            } = idle;
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(Answer::new(response, sender, connection, slot)),
                Err(mut error) => match error.take_message() {
                    // Not sent: the connection closed first. Try the next one.
                    Some(unsent) => request = unsent,
                    None => return Err(Failure::Http(error.into_error())),
                },
            }
        }
        // Boxed: a new connection (resolver, TCP, TLS handshake) is the rare case, and its
        // state would otherwise size every request's future.
        let (mut sender, connection) = Box::pin(self.connect(endpoint)).await?;
        sender.ready().await.map_err(Failure::Http)?;
        let response = sender.send_request(request).await.map_err(Failure::Http)?;
        Ok(Answer::new(response, sender, connection, slot))
    }

    /// A new connection to `endpoint`, its task spawned on this worker.
    async fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> Result<(http1::SendRequest<ProxyBody>, UpstreamConnection), Failure> {
        let tcp = open(endpoint, self.connect_timeout).await?;
        let connection = UpstreamConnection {
            local: tcp.local_addr().map_err(Failure::Connect)?,
            remote: tcp.peer_addr().map_err(Failure::Connect)?,
        };
        let _ = tcp.set_nodelay(true);
        let handshake = match &endpoint.tls {
            Some(name) => {
                let stream = tokio::time::timeout(
                    self.connect_timeout,
                    TlsConnector::from(self.tls.clone()).connect(name.clone(), tcp),
                )
                .await
                .map_err(|_| Failure::ConnectTimeout(self.connect_timeout))?
                .map_err(Failure::Tls)?;
                let (sender, conn) = http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(Failure::Http)?;
                spawn(conn.with_upgrades(), connection);
                sender
            }
            None => {
                let (sender, conn) = http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(Failure::Http)?;
                spawn(conn.with_upgrades(), connection);
                sender
            }
        };
        Ok((handshake, connection))
    }
}

/// Drives a connection until it closes.
fn spawn<F>(conn: F, connection: UpstreamConnection)
where
    F: Future<Output = hyper::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(upstream = %connection.remote, error = %e, "upstream connection ended with an error");
        }
    });
}

/// The first address of `endpoint` that accepts a TCP connection within `timeout`, tried in
/// the resolver's order, each given an equal share of the time left (a dual-stack name whose
/// first address is unreachable still gets to its second).
async fn open(endpoint: &Endpoint, timeout: Duration) -> Result<TcpStream, Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let addresses: Vec<SocketAddr> = tokio::time::timeout_at(
        deadline,
        tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)),
    )
    .await
    .map_err(|_| Failure::ConnectTimeout(timeout))?
    .map_err(Failure::Resolve)?
    .collect();
    if addresses.is_empty() {
        return Err(Failure::Resolve(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} resolved to no address", endpoint.host),
        )));
    }
    let mut last = None;
    for (i, address) in addresses.iter().enumerate() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let share = left / u32::try_from(addresses.len() - i).unwrap_or(u32::MAX);
        match tokio::time::timeout(share, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = Some(Failure::Connect(e)),
            Err(_) => last = Some(Failure::ConnectTimeout(timeout)),
        }
    }
    Err(last.unwrap_or(Failure::ConnectTimeout(timeout)))
}

impl Slot {
    /// The newest idle connection still young enough; older ones are closed.
    fn take(&self) -> Option<Idle> {
        let mut idle = self.0.lock().ok()?;
        let idle_at = idle.pop()?;
        if idle_at.since.elapsed() > IDLE_TIMEOUT {
            // Everything below is older still.
            idle.clear();
            return None;
        }
        Some(idle_at)
    }

    /// Keeps a connection for the next request; beyond [`MAX_IDLE`] the oldest is closed.
    fn put(&self, sender: http1::SendRequest<ProxyBody>, connection: UpstreamConnection) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.0.lock() else {
            return;
        };
        // The oldest first: those idle too long are closed (a route in use sheds them here; an
        // unused one's are closed by the upstream's own keep-alive timeout, or on the next take).
        let stale = idle
            .iter()
            .take_while(|i| i.since.elapsed() > IDLE_TIMEOUT)
            .count();
        idle.drain(..stale);
        if idle.len() >= MAX_IDLE {
            idle.retain(|i| !i.sender.is_closed());
            if idle.len() >= MAX_IDLE {
                idle.remove(0);
            }
        }
        idle.push(Idle {
            sender,
            connection,
            since: Instant::now(),
        });
    }
}

impl Answer {
    fn new(
        response: Response<Incoming>,
        sender: http1::SendRequest<ProxyBody>,
        connection: UpstreamConnection,
        slot: Arc<Slot>,
    ) -> Self {
        // After 101 the connection belongs to the upgrade.
        let back = (response.status() != StatusCode::SWITCHING_PROTOCOLS).then_some(Back {
            sender,
            connection,
            slot,
        });
        let response = response.map(|body| Returning {
            ended: body.is_end_stream(),
            body,
            back,
        });
        Answer {
            response,
            connection,
        }
    }
}

/// What a response body needs to hand its connection back.
#[derive(Debug)]
struct Back {
    sender: http1::SendRequest<ProxyBody>,
    connection: UpstreamConnection,
    slot: Arc<Slot>,
}

/// A pooled connection's response body: when dropped after its end, the connection goes back
/// to the pool.
#[derive(Debug)]
pub(super) struct Returning {
    body: Incoming,
    back: Option<Back>,
    ended: bool,
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        let Some(Back {
            mut sender,
            connection,
            slot,
        }) = self.back.take()
        else {
            return;
        };
        if !(self.ended || self.body.is_end_stream()) {
            // Not read to the end: the connection closes with the sender.
            return;
        }
        if sender.is_ready() {
            slot.put(sender, connection);
            return;
        }
        // The response is done but the request is not (its body still going up, after an early
        // answer): back only once it is, so that no request ever waits on this connection.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    slot.put(sender, connection);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Full};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An HTTP/1.1 upstream on 127.0.0.1:0 answering `body` (with `Connection: close` when
    /// `close`); counts the connections it accepted.
    async fn upstream(body: &'static str, close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| async move {
                        let mut response = Response::new(Full::new(Bytes::from(body)));
                        if close {
                            response.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn pool() -> Pool {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Pool::new(1, Arc::new(config), Duration::from_secs(5))
    }

    fn endpoint(addr: SocketAddr) -> Endpoint {
        Endpoint::new(&format!("http://{addr}").parse().unwrap(), None).unwrap()
    }

    fn get() -> Request<ProxyBody> {
        Request::builder()
            .uri("/x")
            .header(http::header::HOST, "upstream")
            .body(
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap()
    }

    async fn read(answer: Answer) -> String {
        let body = answer.response.into_body().collect().await.unwrap();
        String::from_utf8(body.to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_one_after_another_share_one_connection() {
        let (addr, accepted) = upstream("ok", false).await;
        let pool = pool();
        let mut locals = Vec::new();
        for _ in 0..3 {
            let answer = pool.send(0, &endpoint(addr), get()).await.unwrap();
            locals.push(answer.connection.local);
            assert_eq!(answer.connection.remote, addr);
            assert_eq!(read(answer).await, "ok");
            // Back at once, from the body's drop: no task, no wait.
            assert_eq!(pool.idle[0].0.lock().unwrap().len(), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert!(locals.iter().all(|l| *l == locals[0]), "{locals:?}");
    }

    #[tokio::test]
    async fn a_body_not_read_to_the_end_keeps_its_connection_out_of_the_pool() {
        let (addr, accepted) = upstream("a body nobody reads", false).await;
        let pool = pool();
        let unread = pool.send(0, &endpoint(addr), get()).await.unwrap();
        let unread_local = unread.connection.local;
        drop(unread);
        let second = pool.send(0, &endpoint(addr), get()).await.unwrap();
        let second_local = second.connection.local;
        assert_ne!(second_local, unread_local);
        assert_eq!(read(second).await, "a body nobody reads");
        // Read to the end, the second one goes back and serves the third.
        let third = pool.send(0, &endpoint(addr), get()).await.unwrap();
        assert_eq!(third.connection.local, second_local);
        assert_eq!(read(third).await, "a body nobody reads");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closes_is_not_reused() {
        let (addr, accepted) = upstream("bye", true).await;
        let pool = pool();
        for _ in 0..3 {
            let answer = pool.send(0, &endpoint(addr), get()).await.unwrap();
            assert_eq!(read(answer).await, "bye");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_reset_before_any_answer_is_closed_before_answer() {
        // An upstream that reads the request and resets the connection without answering: what
        // a keep-alive connection closed by its upstream as the request arrived looks like.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut head).await;
            stream.set_zero_linger().unwrap();
        });
        let failure = pool().send(0, &endpoint(addr), get()).await.unwrap_err();
        assert!(!failure.is_connect(), "{failure}");
        assert!(failure.closed_before_answer(), "{failure:?}");
    }

    #[tokio::test]
    async fn nobody_listening_is_a_connect_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let failure = pool().send(0, &endpoint(addr), get()).await.unwrap_err();
        assert!(failure.is_connect(), "{failure}");
        assert!(!failure.closed_before_answer());
        assert!(
            failure.to_string().starts_with("tcp connect error: "),
            "{failure}"
        );
    }
}
