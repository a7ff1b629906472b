//! The echo upstream: answers every request with a JSON description of what it received
//! (method, path, query, version, headers, body length), counts hits, and echoes raw bytes after
//! a WebSocket handshake. Speaks HTTP/1.1 and h2c. `/slow` never answers (timeout tests);
//! `/bytes/N` answers with N bytes (large-response tests); `/.echo/health` and every path under
//! it answer with the status set by [`Echo::set_health`] (200 at first) and are not counted as
//! hits (health check tests). Every answer names the echo's address in `x-echo-addr` and the JSON's `echo`, and
//! [`Echo::stop`] stops it (failover tests).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

/// A running echo upstream.
#[derive(Debug, Clone)]
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// What `/.echo/health` answers, and how often it was asked.
    health: Arc<HealthPath>,
    /// Set to `true` to stop: the listener closes and open connections shut down gracefully.
    stop: Arc<tokio::sync::watch::Sender<bool>>,
}

/// The state of the `/.echo/health` path.
#[derive(Debug)]
struct HealthPath {
    /// The status it answers.
    status: AtomicU16,
    /// Requests it received.
    probes: AtomicUsize,
    /// Of those, the paths asked (with their query), in order.
    asked: std::sync::Mutex<Vec<String>>,
}

impl Echo {
    /// Starts the echo server on `127.0.0.1:0`.
    pub async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("echo address");
        let hits = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(HealthPath {
            status: AtomicU16::new(200),
            probes: AtomicUsize::new(0),
            asked: std::sync::Mutex::new(Vec::new()),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (counter, health_path) = (hits.clone(), health.clone());
        tokio::spawn(async move {
            let mut accept_stopped = stopped.clone();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = stopping(&mut accept_stopped) => return,
                };
                let Ok((stream, peer)) = accepted else {
                    continue;
                };
                let (counter, health_path) = (counter.clone(), health_path.clone());
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let (counter, health_path) = (counter.clone(), health_path.clone());
                        async move {
                            Ok::<_, Infallible>(
                                answer(request, peer, addr, &counter, &health_path).await,
                            )
                        }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => return,
                        () = stopping(&mut stopped) => {}
                    }
                    // Stopping: the request in progress is answered, then the connection closes.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                });
            }
        });
        Echo {
            addr,
            hits,
            health,
            stop: Arc::new(stop),
        }
    }

    /// Stops the server: it accepts no more connections (connecting is refused once the
    /// listener is closed), and its open connections close after the request in progress.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Sets the status `/.echo/health` answers.
    pub fn set_health(&self, status: u16) {
        self.health.status.store(status, Ordering::SeqCst);
    }

    /// Requests `/.echo/health` (or under it) received so far.
    pub fn health_probes(&self) -> usize {
        self.health.probes.load(Ordering::SeqCst)
    }

    /// How many of those asked exactly `path_and_query`.
    pub fn health_probes_of(&self, path_and_query: &str) -> usize {
        let asked = self.health.asked.lock().expect("health paths");
        asked.iter().filter(|p| *p == path_and_query).count()
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Resolves once [`Echo::stop`] was called; never when every [`Echo`] was dropped without it
/// (a test that drops its echo still has it serving, as before stopping existed).
async fn stopping(stopped: &mut tokio::sync::watch::Receiver<bool>) {
    if stopped.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn answer(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    own: SocketAddr,
    hits: &AtomicUsize,
    health: &HealthPath,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path == "/.echo/health" || path.starts_with("/.echo/health/") {
        if let Some(asked) = request.uri().path_and_query() {
            health
                .asked
                .lock()
                .expect("health paths")
                .push(asked.as_str().to_owned());
        }
        health.probes.fetch_add(1, Ordering::SeqCst);
        let status = StatusCode::from_u16(health.status.load(Ordering::SeqCst))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Response::builder()
            .status(status)
            .header("x-echo-addr", own.to_string())
            .body(Full::new(Bytes::from_static(b"health\n")))
            .expect("health response");
    }
    hits.fetch_add(1, Ordering::SeqCst);
    if request.uri().path() == "/slow" {
        std::future::pending::<()>().await;
    }
    if let Some(n) = request
        .uri()
        .path()
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        return Response::builder()
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(vec![b'x'; n])))
            .expect("bytes response");
    }
    let is_upgrade = request
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade {
        let key = request
            .headers()
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut input = key.into_bytes();
        input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
        let accept = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let io = TokioIo::new(upgraded);
                let (mut reader, mut writer) = tokio::io::split(io);
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()))
            .expect("101 response");
    }
    let (parts, body) = request.into_parts();
    let body_len = match body.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => usize::MAX,
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let description = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "peer": peer.to_string(),
        "headers": headers,
        "body_len": body_len,
        "echo": own.to_string(),
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("x-upstream", "echo")
        .header("x-echo-addr", own.to_string())
        .body(Full::new(Bytes::from(description.to_string())))
        .expect("echo response")
}

/// What the echo upstream reported, parsed.
#[derive(Debug, Clone)]
pub struct Echoed(pub serde_json::Value);

impl Echoed {
    /// All values of a header (lower-case name) the upstream received.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.0["headers"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter(|pair| pair[0].as_str() == Some(name))
                    .filter_map(|pair| pair[1].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The single value of a header, if any.
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.header_values(name);
        assert!(
            values.len() <= 1,
            "header {name} received {} times: {values:?}",
            values.len()
        );
        values.into_iter().next()
    }

    /// Every header name received.
    pub fn header_names(&self) -> Vec<String> {
        self.0["headers"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|pair| pair[0].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The address the request came from (sekisho's end of the upstream connection).
    pub fn peer(&self) -> String {
        self.0["peer"].as_str().unwrap_or_default().to_owned()
    }

    /// The path the upstream saw.
    pub fn path(&self) -> String {
        self.0["path"].as_str().unwrap_or_default().to_owned()
    }
}

/// A TCP echo server on 127.0.0.1 (port 0): every connection gets its bytes back, and its end
/// when the client ends its sending side. Runs until the test's runtime stops.
pub async fn tcp() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the TCP echo server");
    let address = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut read, mut write) = stream.into_split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut write).await;
            });
        }
    });
    address
}
