//! The echo upstream: answers every request with a JSON description of what it received
//! (method, path, query, version, headers, body length), counts hits, and echoes raw bytes after
//! a WebSocket handshake. Speaks HTTP/1.1 and h2c. `/slow` never answers (timeout tests);
//! `/bytes/N` answers with N bytes (large-response tests).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
}

impl Echo {
    /// Starts the echo server on `127.0.0.1:0`.
    pub async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("echo address");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let counter = counter.clone();
                        async move { Ok::<_, Infallible>(answer(request, peer, &counter).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Echo { addr, hits }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn answer(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    hits: &AtomicUsize,
) -> Response<Full<Bytes>> {
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
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("x-upstream", "echo")
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
