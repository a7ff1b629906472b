//! One client connection, after accept (and the TLS handshake): the protocol (ALPN, or the HTTP/2
//! preface on a plain listener), HTTP/2 served by hyper, and HTTP/1.1 served by hyper in *cycles*
//! that let go of hyper's buffers while the connection idles.
//!
//! An idle HTTP/1.1 keep-alive connection inside hyper keeps a read buffer (8–16 KiB), a write
//! buffer (8 KiB) and its dispatcher: tens of kilobytes per connection, for nothing, on a fleet of
//! browsers that each hold a few connections open. So once a connection that has served a
//! request has been quiet for [`PARK_AFTER`] with no request in flight and nothing unread, it is
//! *parked*: hyper is asked to
//! finish (it is idle, so it just stops, writing nothing), the socket is taken back without a
//! shutdown, and the connection waits for readability holding only the socket. The next byte
//! starts a new hyper connection on the same socket, with whatever hyper had read handed back in
//! front. The client sees one ordinary keep-alive connection. A parked connection is closed after
//! the idle timeout (`server.timeouts.idle`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::connection::Connection;
use crate::error::ProxyBody;
use crate::proxy::Proxy;

/// How long an HTTP/1.1 connection stays quiet (no request in flight, no byte either way) before
/// it lets go of hyper's buffers.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// How often one thread may hand freed memory back to the system (see [`set_memory_release`]).
const RELEASE_INTERVAL: Duration = Duration::from_secs(1);

/// The allocator's "give free pages back" call, set once by the binary (the allocator is its
/// choice); parking connections call it, at most every [`RELEASE_INTERVAL`] per thread.
static RELEASE_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets the function that returns the calling thread's free allocator pages to the system. A
/// second call is ignored.
pub fn set_memory_release(release: fn()) {
    let _ = RELEASE_MEMORY.set(release);
}

/// Calls the release function, at most once per [`RELEASE_INTERVAL`] on this thread, and once
/// more at the end of an interval in which it was asked again: the pages freed by connections
/// that park after the call (a burst of them parks within the same second) go back too, not
/// whenever the next connection happens to park.
fn release_memory() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
        static PENDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    let Some(release) = RELEASE_MEMORY.get() else {
        return;
    };
    let now = std::time::Instant::now();
    let wait = LAST.with(|last| match last.get() {
        Some(at) if now.duration_since(at) < RELEASE_INTERVAL => {
            Some(RELEASE_INTERVAL.saturating_sub(now.duration_since(at)))
        }
        _ => {
            last.set(Some(now));
            None
        }
    });
    let Some(wait) = wait else {
        release();
        return;
    };
    // Already one to come on this thread: it will release these pages too.
    if PENDING.with(|pending| pending.replace(true)) {
        return;
    }
    // This runs on a worker thread's (current-thread) runtime, so the task runs on this
    // thread, whose heap it releases.
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            PENDING.with(|pending| pending.set(false));
            LAST.with(|last| last.set(Some(std::time::Instant::now())));
            release();
        });
    } else {
        PENDING.with(|pending| pending.set(false));
    }
}

/// The HTTP/2 client preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The hyper builders every connection of a listener uses.
#[derive(Debug, Clone)]
pub struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    read_header: Duration,
    idle: Duration,
}

impl Protocols {
    /// Builders with the server's timeouts.
    pub fn new(timeouts: &sekisho_config::ServerTimeouts) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(timeouts.read_header)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .keep_alive_interval(Some(timeouts.idle / 2))
            .keep_alive_timeout(Duration::from_secs(20))
            .max_concurrent_streams(250);
        Protocols {
            http1: h1,
            http2: h2,
            read_header: timeouts.read_header,
            idle: timeouts.idle,
        }
    }
}

/// A stream that can wait for readability without reading (a parked connection holds no buffer).
pub trait Parkable: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Resolves when the peer has sent something (or closed).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

impl Parkable for tokio::net::TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        tokio::net::TcpStream::readable(self)
    }
}

impl Parkable for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        // Parking happens only after hyper's read came back empty, so rustls holds no plaintext
        // then: anything new arrives on the socket first.
        self.get_ref().0.readable()
    }
}

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (or 1.0).
    Http1,
    /// HTTP/2.
    Http2,
    /// Plain listener: HTTP/2 with prior knowledge if the client starts with the preface.
    Sniff,
}

/// Serves one connection until it closes, or until `shutdown` changes and its requests are done.
pub async fn serve<S: Parkable>(
    mut io: S,
    protocol: Protocol,
    proxy: Arc<Proxy>,
    conn: Connection,
    protocols: Arc<Protocols>,
    shutdown: watch::Receiver<()>,
) {
    let counters = proxy.counters.clone();
    counters.connections_open.fetch_add(1, Ordering::Relaxed);
    let _open = Gauge(&counters.connections_open);
    let (protocol, prefix) = match protocol {
        Protocol::Sniff => {
            match tokio::time::timeout(protocols.read_header, sniff(&mut io)).await {
                Ok(Ok((true, prefix))) => (Protocol::Http2, prefix),
                Ok(Ok((false, prefix))) => (Protocol::Http1, prefix),
                Ok(Err(e)) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "connection gone before its first request");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %conn.peer, "no request within the header timeout");
                    return;
                }
            }
        }
        other => (other, Bytes::new()),
    };
    let io = Prefixed { prefix, inner: io };
    if protocol == Protocol::Http2 {
        serve_http2(io, proxy, conn, &protocols, shutdown).await;
        return;
    }
    serve_http1(io, proxy, conn, &protocols, shutdown).await;
}

/// HTTP/2 until the client closes, the server stops, or no request has been open for the idle
/// timeout (`server.timeouts.idle`, as for HTTP/1.1): then a GOAWAY, and the connection closes.
/// hyper's keep-alive pings only find dead peers; a live client that answers them but sends no
/// request would otherwise hold its connection, and h2's buffers, for ever.
async fn serve_http2<S: Parkable>(
    io: Prefixed<S>,
    proxy: Arc<Proxy>,
    conn: Connection,
    protocols: &Protocols,
    mut shutdown: watch::Receiver<()>,
) {
    let requests = Arc::new(Requests::new());
    let service = {
        let requests = requests.clone();
        service_fn(move |request| {
            let proxy = proxy.clone();
            let open = Open::start(requests.clone());
            Box::pin(async move {
                let response = proxy.handle(request, conn).await;
                Ok::<_, std::convert::Infallible>(with_own_header_values(response, open))
            })
        })
    };
    // Boxed, like the HTTP/1.1 connection, so that the task is sized for neither.
    let mut connection = Box::pin(protocols.http2.serve_connection(TokioIo::new(io), service));
    let mut stopping = false;
    let outcome = loop {
        let check = requests.next_check(protocols.idle);
        tokio::select! {
            outcome = connection.as_mut() => break outcome,
            () = tokio::time::sleep_until(check), if !stopping => {
                if requests.quiet_for(protocols.idle) {
                    tracing::debug!(peer = %conn.peer, "HTTP/2 connection idle: GOAWAY");
                    connection.as_mut().graceful_shutdown();
                    stopping = true;
                }
            }
            _ = shutdown.changed(), if !stopping => {
                connection.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
    }
}

/// The requests of one HTTP/2 connection: how many are open, and when one last started or ended.
struct Requests {
    epoch: tokio::time::Instant,
    open: AtomicU32,
    /// Milliseconds from `epoch` to the last start or end of a request.
    last: AtomicU64,
}

impl Requests {
    fn new() -> Self {
        Requests {
            epoch: tokio::time::Instant::now(),
            open: AtomicU32::new(0),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        self.epoch + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// No request open, and none started or ended for `idle`.
    fn quiet_for(&self, idle: Duration) -> bool {
        self.open.load(Ordering::Relaxed) == 0 && self.last().elapsed() >= idle
    }

    /// When to look again: `idle` after the last request, or after now while one is open.
    fn next_check(&self, idle: Duration) -> tokio::time::Instant {
        if self.open.load(Ordering::Relaxed) > 0 {
            tokio::time::Instant::now() + idle
        } else {
            self.last() + idle
        }
    }
}

/// One open HTTP/2 request, until its response body is dropped.
struct Open(Arc<Requests>);

impl Open {
    fn start(requests: Arc<Requests>) -> Self {
        requests.open.fetch_add(1, Ordering::Relaxed);
        requests.touch();
        Open(requests)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// HTTP/1.1 in cycles: hyper while there is traffic, the bare socket while there is none.
async fn serve_http1<S: Parkable>(
    io: Prefixed<S>,
    proxy: Arc<Proxy>,
    conn: Connection,
    protocols: &Protocols,
    mut shutdown: watch::Receiver<()>,
) {
    let activity = Arc::new(Activity::default());
    let mut io = io;
    loop {
        activity.parking.store(false, Ordering::Relaxed);
        let tracked = Tracked {
            inner: io,
            activity: activity.clone(),
        };
        let service = {
            let proxy = proxy.clone();
            let activity = activity.clone();
            service_fn(move |request: Request<Incoming>| {
                let proxy = proxy.clone();
                let guard = InFlight::start(activity.clone());
                // Boxed: hyper keeps the slot for a request's future for the connection's whole
                // life; boxed, the slot is a pointer and the state goes when the request is done.
                Box::pin(async move {
                    let response = proxy.handle(request, conn).await;
                    Ok::<_, std::convert::Infallible>(response.map(|body| Guarded {
                        body,
                        _guard: guard,
                    }))
                })
            })
        };
        // Boxed so that the task of a parked connection is not sized for hyper's state.
        let mut connection = Box::new(
            protocols
                .http1
                .serve_connection(TokioIo::new(tracked), service)
                .with_upgrades(),
        );
        let mut quiet_since = activity.ops.load(Ordering::Relaxed);
        let mut stopping = false;
        let outcome = loop {
            tokio::select! {
                outcome = &mut *connection => break outcome,
                _ = tokio::time::sleep(PARK_AFTER), if !stopping => {
                    let ops = activity.ops.load(Ordering::Relaxed);
                    if ops == quiet_since && activity.is_idle() {
                        // Idle for a whole period: hyper stops (it writes nothing when idle) and
                        // gives the socket back instead of shutting it down.
                        activity.parking.store(true, Ordering::Relaxed);
                        Pin::new(&mut *connection).graceful_shutdown();
                        stopping = true;
                    }
                    quiet_since = ops;
                }
                _ = shutdown.changed(), if !stopping => {
                    Pin::new(&mut *connection).graceful_shutdown();
                    stopping = true;
                }
            }
        };
        if let Err(e) = outcome {
            tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
            return;
        }
        if !activity.parking.load(Ordering::Relaxed) || shutdown.has_changed().unwrap_or(true) {
            return;
        }
        // Upgraded (WebSocket, CONNECT): the socket belongs to the upgrade now.
        let Some(parts) = connection.into_parts() else {
            return;
        };
        drop(parts.service);
        let Tracked { inner, .. } = parts.io.into_inner();
        let Prefixed { prefix, inner } = inner;
        // What hyper had read but not used (the start of a request) goes in front again. An
        // empty one is dropped, not kept: it may still hold hyper's whole read buffer.
        let prefix = match (parts.read_buf.is_empty(), prefix.is_empty()) {
            (true, true) => Bytes::new(),
            (true, false) => prefix,
            (false, true) => Bytes::copy_from_slice(&parts.read_buf),
            (false, false) => {
                let mut joined = Vec::with_capacity(parts.read_buf.len() + prefix.len());
                joined.extend_from_slice(&parts.read_buf);
                joined.extend_from_slice(&prefix);
                Bytes::from(joined)
            }
        };
        drop(parts.read_buf);
        if prefix.is_empty() {
            release_memory();
            proxy
                .counters
                .connections_parked
                .fetch_add(1, Ordering::Relaxed);
            let parked = Gauge(&proxy.counters.connections_parked);
            let woke = tokio::select! {
                ready = tokio::time::timeout(protocols.idle, inner.readable()) => matches!(ready, Ok(Ok(()))),
                _ = shutdown.changed() => false,
            };
            drop(parked);
            if !woke {
                // Idle too long, the socket failed, or the server is stopping: close it.
                let mut inner = inner;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut inner).await;
                return;
            }
        }
        io = Prefixed { prefix, inner };
    }
}

/// An HTTP/2 response whose header and trailer values own their bytes.
///
/// HPACK keeps the values an HTTP/2 connection sends in its dynamic table, for as long as the
/// connection lives. A value hyper parsed from an upstream's response is a slice of that upstream
/// connection's read buffer (8 KiB and more), so one indexed value would pin a whole buffer to the
/// client connection, a fresh one per response: measured, 8 KiB more per idle HTTP/2 connection
/// after a single request. Copying the few bytes of each value lets the buffer go.
///
/// The body keeps its request counted as open (`open`) until it is dropped.
fn with_own_header_values(
    response: http::Response<ProxyBody>,
    open: Open,
) -> http::Response<OwnTrailers> {
    let (mut parts, body) = response.into_parts();
    crate::headers::copy_values(&mut parts.headers);
    http::Response::from_parts(parts, OwnTrailers { body, _open: open })
}

/// A response body whose trailers (gRPC's status, from an HTTP/2 upstream) own their values too.
struct OwnTrailers {
    body: ProxyBody,
    _open: Open,
}

impl Body for OwnTrailers {
    type Data = Bytes;
    type Error = crate::error::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        crate::headers::copy_values(&mut trailers);
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Reads until the bytes cannot be the HTTP/2 preface or are all of it; returns whether they are
/// and what was read.
async fn sniff<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<(bool, Bytes)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    loop {
        let Some(rest) = buf.get_mut(filled..) else {
            return Ok((true, Bytes::copy_from_slice(&buf)));
        };
        let n = io.read(rest).await?;
        if n == 0 {
            return Ok((
                false,
                Bytes::copy_from_slice(buf.get(..filled).unwrap_or_default()),
            ));
        }
        filled += n;
        let read = buf.get(..filled).unwrap_or_default();
        if read != H2_PREFACE.get(..filled).unwrap_or_default() {
            return Ok((false, Bytes::copy_from_slice(read)));
        }
        if filled == H2_PREFACE.len() {
            return Ok((true, Bytes::copy_from_slice(&buf)));
        }
    }
}

/// A gauge held up while the value lives.
struct Gauge<'a>(&'a AtomicU64);

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the parking decision needs to know of a connection, updated by its socket and service.
#[derive(Debug, Default)]
struct Activity {
    /// Reads and writes that moved bytes.
    ops: AtomicU64,
    /// Whether bytes were read since the last write (a request may be starting).
    read_since_write: AtomicBool,
    /// Requests whose response has not been sent completely.
    in_flight: AtomicU32,
    /// Whether a request has been served: a connection that never sent one is not parked, so
    /// it stays under the header timeout (`server.timeouts.read_header`), not the idle one.
    served: AtomicBool,
    /// Set before asking hyper to stop for parking: its shutdown of the socket is skipped.
    parking: AtomicBool,
}

impl Activity {
    fn is_idle(&self) -> bool {
        self.served.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && !self.read_since_write.load(Ordering::Relaxed)
    }
}

/// A request counted as in flight until its response body is dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.served.store(true, Ordering::Relaxed);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight.
struct Guarded {
    body: ProxyBody,
    _guard: InFlight,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket as hyper sees it: counts activity, and skips the shutdown when parking.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.ops.fetch_add(1, Ordering::Relaxed);
            self.activity
                .read_since_write
                .store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.activity.parking.load(Ordering::Relaxed) {
            // Flushed, not shut down: the connection goes on after parking.
            return Pin::new(&mut self.inner).poll_flush(cx);
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> Tracked<S> {
    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.ops.fetch_add(1, Ordering::Relaxed);
            self.activity
                .read_since_write
                .store(false, Ordering::Relaxed);
        }
    }
}

/// A stream with bytes already read from it put back in front.
struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(self.prefix.get(..n).unwrap_or_default());
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};
    use http_body_util::BodyExt as _;

    /// The values parsed from an upstream's response, as hyper makes them: slices of one buffer.
    fn sliced(buffer: &Bytes, pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            let at = buffer
                .windows(value.len())
                .position(|w| w == value.as_bytes())
                .unwrap_or_else(|| panic!("{value} not in the buffer"));
            let slice = buffer.slice(at..at + value.len());
            let value = HeaderValue::from_maybe_shared(slice).unwrap_or_else(|e| panic!("{e}"));
            headers.append(*name, value);
        }
        headers
    }

    #[tokio::test]
    async fn http2_header_and_trailer_values_do_not_pin_the_upstream_buffer() {
        let mut read_buffer =
            b"HTTP/1.1 200 OK\r\nserver: nginx\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\r\n"
                .to_vec();
        read_buffer.resize(8192, 0);
        let buffer = Bytes::from(read_buffer);
        let mut headers = sliced(
            &buffer,
            &[
                ("server", "nginx"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
            ],
        );
        if let Some(cookie) = headers.get_mut("set-cookie") {
            cookie.set_sensitive(true);
        }
        let trailers = sliced(&buffer, &[("grpc-status", "0")]);
        let body = http_body_util::Full::new(Bytes::from_static(b"ok"))
            .map_err(|never| -> crate::error::BoxError { match never {} })
            .with_trailers(async move { Some(Ok(trailers)) });
        let mut response = http::Response::new(body.boxed_unsync());
        *response.headers_mut() = headers;

        let (parts, body) =
            with_own_header_values(response, Open::start(Arc::new(Requests::new()))).into_parts();
        let collected = body.collect().await.unwrap_or_else(|e| panic!("{e}"));
        let trailers = collected.trailers().cloned().unwrap_or_default();

        // Every slice of the buffer is gone: nothing sent on the connection refers to it.
        assert!(
            buffer.is_unique(),
            "a header or trailer value still refers to the upstream buffer"
        );
        let values: Vec<_> = parts.headers.get_all("set-cookie").iter().collect();
        assert_eq!(
            values,
            ["a=1", "b=2"],
            "every value of a repeated header is kept, in order"
        );
        assert!(
            values.first().is_some_and(|v| v.is_sensitive()),
            "sensitivity is kept"
        );
        assert!(values.get(1).is_some_and(|v| !v.is_sensitive()));
        assert_eq!(
            parts.headers.get("server").map(HeaderValue::as_bytes),
            Some(&b"nginx"[..])
        );
        assert_eq!(
            trailers.get("grpc-status").map(HeaderValue::as_bytes),
            Some(&b"0"[..])
        );
    }

    #[tokio::test]
    async fn the_http2_preface_is_told_from_http1() {
        let cases: [(&[u8], bool); 4] = [
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0", true),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false),
            (b"PRI * HTTP/1.1\r\n", false),
            (b"P", false),
        ];
        for (bytes, h2) in cases {
            let mut reader = bytes;
            let (is_h2, prefix) = sniff(&mut reader).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(is_h2, h2, "{bytes:?}");
            // Nothing is lost: what sniffing read plus what is left is the input.
            let mut all = prefix.to_vec();
            all.extend_from_slice(reader);
            assert_eq!(all, bytes);
        }
    }

    #[tokio::test]
    async fn a_prefix_is_read_before_the_stream() {
        let mut io = Prefixed {
            prefix: Bytes::from_static(b"GET / HT"),
            inner: &b"TP/1.1\r\n"[..],
        };
        let mut out = Vec::new();
        io.read_to_end(&mut out)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out, b"GET / HTTP/1.1\r\n");
    }
}
