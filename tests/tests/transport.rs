//! The HTTP machinery end to end: HTTP/2 on both sides, WebSocket upgrades, streamed bodies,
//! upstream failures and timeouts, hop-by-hop hygiene, `Host` handling, certificate selection by
//! SNI with ALPN, and session refresh against the real IdP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use reqwest::Version;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sekisho_tests::echo::{Echo, Echoed};
use sekisho_tests::{
    Agent, DEADLINE, Idp, IdpOptions, Proxy, no_redirect_client, self_signed_pem_for,
    session_cookies_set, stack,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Routes on the plain listener, one per behaviour under test (longest prefix wins), and one on
/// the TLS listener. `{dead}` is a port nobody listens on.
const ROUTES: &str = "  - id: app
    from: http://127.0.0.1
    to: http://{echo}
  - id: app-tls
    from: https://127.0.0.1
    to: http://{echo}
  - id: h2
    from: http://127.0.0.1/h2
    to: http://{echo}
    upstream_http2: true
  - id: ws
    from: http://127.0.0.1/ws
    to: http://{echo}
    allow_websockets: true
  - id: dead
    from: http://127.0.0.1/dead
    to: http://127.0.0.1:{dead}
  - id: slow
    from: http://127.0.0.1/slow
    to: http://{echo}
    timeouts:
      response_header: 1s
  - id: host
    from: http://127.0.0.1/host
    to: http://{echo}
    preserve_host: true
";

/// IdP, echo upstream and sekisho with [`ROUTES`] (and TLS when `tls`); the dead port.
async fn transport_stack(tls: bool) -> (Idp, Echo, Proxy, u16) {
    let dead = dead_port();
    let (idp, echo, proxy) = stack(IdpOptions::default(), "ES256", |o| {
        o.tls = tls;
        o.routes_yaml = ROUTES.replace("{dead}", &dead.to_string());
    })
    .await;
    (idp, echo, proxy, dead)
}

/// A port that was just free: bound, then released.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// A bearer JWT for alice from the IdP.
async fn bearer(idp: &Idp) -> String {
    idp.token(&[
        ("sub", "alice"),
        ("aud", "sekisho"),
        ("alg", "ES256"),
        ("ttl", "300"),
    ])
    .await
}

/// An API request (`Accept: application/json`) with `token`.
fn api(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
) -> reqwest::RequestBuilder {
    client
        .request(method, url)
        .bearer_auth(token)
        .header("accept", "application/json")
}

async fn echo_of(response: reqwest::Response) -> Echoed {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(
        status, 200,
        "expected the echo upstream's answer, got {status}: {text}"
    );
    Echoed(serde_json::from_str(&text).unwrap_or_else(|e| panic!("echo JSON ({e}): {text}")))
}

fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("{} response without x-request-id", response.status()))
        .to_str()
        .expect("request id text")
        .to_owned()
}

#[tokio::test]
async fn http2_from_clients_reaches_the_upstream_with_identity() {
    let (idp, _echo, proxy, _) = transport_stack(true).await;
    let token = bearer(&idp).await;

    // TLS: ALPN negotiates h2.
    let tls = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let url = format!("{}/v2?q=1", proxy.tls_base().unwrap());
    let response = api(&tls, reqwest::Method::GET, &url, &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let id = request_id(&response);
    let echoed = echo_of(response).await;
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));
    assert_eq!(
        echoed.header("x-sekisho-groups").as_deref(),
        Some("eng,admins")
    );
    assert!(echoed.header("x-sekisho-jwt-assertion").is_some());
    assert_eq!(echoed.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        echoed.header("x-request-id"),
        Some(id),
        "the upstream sees the client's request id"
    );
    assert_eq!(
        echoed.header("authorization"),
        None,
        "the bearer token stays at the proxy"
    );
    assert_eq!(
        echoed.0["version"], "HTTP/1.1",
        "the default route speaks HTTP/1.1 upstream"
    );
    assert_eq!(echoed.path(), "/v2");
    assert_eq!(echoed.0["query"], "q=1");

    // Plain HTTP: h2c with prior knowledge.
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let response = api(
        &h2c,
        reqwest::Method::GET,
        &format!("{}/h2c", proxy.base()),
        &token,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let echoed = echo_of(response).await;
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));
    assert_eq!(echoed.header("x-forwarded-proto").as_deref(), Some("http"));
}

#[tokio::test]
async fn routes_choose_http2_or_http11_towards_the_upstream() {
    let (idp, _echo, proxy, _) = transport_stack(false).await;
    let token = bearer(&idp).await;
    let client = no_redirect_client();

    let h2 = echo_of(
        api(
            &client,
            reqwest::Method::GET,
            &format!("{}/h2/x", proxy.base()),
            &token,
        )
        .header("te", "trailers")
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(h2.0["version"], "HTTP/2.0");
    assert_eq!(h2.path(), "/h2/x");
    assert_eq!(h2.header("x-sekisho-user").as_deref(), Some("alice"));
    assert_eq!(
        h2.header("te").as_deref(),
        Some("trailers"),
        "gRPC's TE: trailers survives on HTTP/2 routes"
    );

    let posted = echo_of(
        api(
            &client,
            reqwest::Method::POST,
            &format!("{}/h2/upload", proxy.base()),
            &token,
        )
        .body(vec![7u8; 100_000])
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(posted.0["version"], "HTTP/2.0");
    assert_eq!(posted.0["body_len"], 100_000);

    let h1 = echo_of(
        api(
            &client,
            reqwest::Method::GET,
            &format!("{}/x", proxy.base()),
            &token,
        )
        .header("te", "trailers")
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(h1.0["version"], "HTTP/1.1");
    assert_eq!(h1.header("te"), None, "TE is hop-by-hop on HTTP/1.1 routes");
}

const WEBSOCKET_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends a raw HTTP/1.1 WebSocket upgrade and returns the response head and the connection.
async fn upgrade(addr: SocketAddr, path: &str, extra_headers: &str) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WEBSOCKET_KEY}\r\n{extra_headers}\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write upgrade");
    // Byte by byte: nothing past the head may be consumed (the 101 is followed by echoed bytes).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut byte))
            .await
            .expect("response head in time")
            .expect("read");
        assert!(
            n == 1,
            "connection closed inside the response head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    (String::from_utf8(head).expect("head text"), stream)
}

fn head_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

#[tokio::test]
async fn websocket_upgrades_are_authenticated_authorized_per_route_and_spliced() {
    let (idp, echo, proxy, _) = transport_stack(false).await;
    let token = bearer(&idp).await;

    let (head, mut stream) = upgrade(
        proxy.http,
        "/ws/chat",
        &format!("Authorization: Bearer {token}\r\n"),
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "expected 101, got:\n{head}"
    );
    assert_eq!(
        head_header(&head, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(
        head_header(&head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{head}"
    );
    for message in [
        b"hello through sekisho".as_slice(),
        &[0u8, 1, 2, 255, 254, 253],
        &vec![b'z'; 64 * 1024],
    ] {
        stream
            .write_all(message)
            .await
            .expect("write through the tunnel");
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("read echo");
        assert_eq!(back, message, "the upstream's echo came back unchanged");
    }
    drop(stream);
    let hits = echo.hits();

    // A route without allow_websockets refuses the upgrade, after authentication.
    let (head, _) = upgrade(
        proxy.http,
        "/plain",
        &format!("Authorization: Bearer {token}\r\n"),
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 403"),
        "expected 403, got:\n{head}"
    );
    assert!(head_header(&head, "x-request-id").is_some(), "{head}");

    // No credentials: 401, never a login redirect, even for a browser.
    let (head, _) = upgrade(proxy.http, "/ws/chat", "Accept: text/html\r\n").await;
    assert!(
        head.starts_with("HTTP/1.1 401"),
        "expected 401, got:\n{head}"
    );
    assert!(head_header(&head, "x-request-id").is_some(), "{head}");
    let (head, _) = upgrade(
        proxy.http,
        "/ws/chat",
        "Authorization: Bearer not-a-jwt\r\n",
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 401"),
        "expected 401, got:\n{head}"
    );
    assert_eq!(
        echo.hits(),
        hits,
        "refused upgrades never reach the upstream"
    );
}

/// A request body of `left` zero bytes, streamed in 1 MiB frames of unknown total length.
struct Zeros {
    left: usize,
}

const MIB: usize = 1 << 20;
static ZEROS: [u8; MIB] = [0; MIB];

impl Body for Zeros {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(MIB);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown length: HTTP/1.1 sends it chunked.
        SizeHint::default()
    }
}

#[tokio::test]
async fn fifty_megabyte_bodies_stream_both_ways() {
    const SIZE: usize = 50 * MIB;
    let (idp, _echo, proxy, _) = transport_stack(true).await;
    let token = bearer(&idp).await;
    let client = no_redirect_client();

    let started = Instant::now();
    let upload = api(
        &client,
        reqwest::Method::POST,
        &format!("{}/upload", proxy.base()),
        &token,
    )
    .body(reqwest::Body::wrap(Zeros { left: SIZE }))
    .send()
    .await
    .unwrap();
    assert_eq!(upload.version(), Version::HTTP_11);
    let echoed_upload = echo_of(upload).await;
    assert_eq!(
        echoed_upload.0["body_len"], SIZE,
        "the upstream received every byte"
    );
    assert_eq!(
        echoed_upload.header("transfer-encoding").as_deref(),
        Some("chunked")
    );
    let upload_time = started.elapsed();

    let tls = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let upload = api(
        &tls,
        reqwest::Method::POST,
        &format!("{}/upload", proxy.tls_base().unwrap()),
        &token,
    )
    .body(reqwest::Body::wrap(Zeros { left: SIZE }))
    .send()
    .await
    .unwrap();
    assert_eq!(upload.version(), Version::HTTP_2);
    assert_eq!(
        echo_of(upload).await.0["body_len"],
        SIZE,
        "HTTP/2 flow control carried every byte"
    );

    let started = Instant::now();
    let mut download = api(
        &client,
        reqwest::Method::GET,
        &format!("{}/bytes/{SIZE}", proxy.base()),
        &token,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(download.status(), 200);
    let mut received = 0usize;
    let mut chunks = 0usize;
    while let Some(chunk) = download.chunk().await.expect("response chunk") {
        assert!(
            chunk.iter().all(|b| *b == b'x'),
            "response bytes changed in transit"
        );
        received += chunk.len();
        chunks += 1;
    }
    assert_eq!(received, SIZE, "the client received every byte");
    assert!(
        chunks > 1,
        "the response arrived in pieces, not as one buffer"
    );
    eprintln!(
        "50 MiB up (HTTP/1.1 chunked): {upload_time:?}; 50 MiB down: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn upstream_failures_and_timeouts_give_short_pages_with_the_request_id() {
    let (idp, echo, proxy, dead) = transport_stack(false).await;
    let token = bearer(&idp).await;
    let client = no_redirect_client();

    // Unreachable upstream: 502, nothing internal in the body.
    let response = api(
        &client,
        reqwest::Method::GET,
        &format!("{}/dead/x", proxy.base()),
        &token,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 502);
    let id = request_id(&response);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "APIs get text"
    );
    let body = response.text().await.unwrap();
    assert!(
        body.contains(&id),
        "the page names the request id {id}: {body}"
    );
    assert!(body.len() < 300, "short page: {body}");
    let lower = body.to_ascii_lowercase();
    for leak in [
        "127.0.0.1",
        &dead.to_string(),
        "refused",
        "connect",
        "tcp",
        "error trying",
        "hyper",
        "os error",
    ] {
        assert!(!lower.contains(leak), "502 page leaks {leak:?}: {body}");
    }

    let response = client
        .get(format!("{}/dead/x", proxy.base()))
        .bearer_auth(&token)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let id = request_id(&response);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "browsers get HTML"
    );
    let body = response.text().await.unwrap();
    assert!(body.contains(&id) && body.contains("<html"), "{body}");
    assert!(
        !body.contains("127.0.0.1") && !body.contains(&dead.to_string()),
        "502 page leaks the upstream: {body}"
    );

    // An upstream that never answers: 504 after the route's response_header timeout (1 s).
    let started = Instant::now();
    let response = api(
        &client,
        reqwest::Method::GET,
        &format!("{}/slow", proxy.base()),
        &token,
    )
    .send()
    .await
    .unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(10),
        "504 after {waited:?}"
    );
    let id = request_id(&response);
    assert!(response.text().await.unwrap().contains(&id));
    assert!(echo.hits() >= 1, "the slow request did reach the upstream");

    // Every error the proxy makes carries a request id.
    let unauthenticated = client
        .get(format!("{}/x", proxy.base()))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    request_id(&unauthenticated);
    let bad_path = api(
        &client,
        reqwest::Method::GET,
        &format!("{}/a%2fb", proxy.base()),
        &token,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(bad_path.status(), 400);
    request_id(&bad_path);
    let no_route = api(
        &client,
        reqwest::Method::GET,
        &format!("{}/x", proxy.base()),
        &token,
    )
    .header("host", "unknown.example")
    .send()
    .await
    .unwrap();
    assert_eq!(no_route.status(), 404);
    request_id(&no_route);
    let bad_token = api(
        &client,
        reqwest::Method::GET,
        &format!("{}/x", proxy.base()),
        "garbage",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(bad_token.status(), 401);
    request_id(&bad_token);
}

#[tokio::test]
async fn hop_by_hop_headers_never_reach_the_upstream() {
    let (idp, _echo, proxy, _) = transport_stack(false).await;
    let token = bearer(&idp).await;
    let response = api(
        &no_redirect_client(),
        reqwest::Method::GET,
        &format!("{}/hop", proxy.base()),
        &token,
    )
    .header("connection", "close, x-drop-me")
    .header("x-drop-me", "1")
    .header("keep-alive", "timeout=5")
    .header("te", "gzip")
    .header("proxy-authorization", "Basic c2VjcmV0OnNlY3JldA==")
    .header("proxy-connection", "keep-alive")
    .header("x-kept", "yes")
    .send()
    .await
    .unwrap();
    let echoed = echo_of(response).await;
    let names = echoed.header_names();
    for hop in [
        "connection",
        "x-drop-me",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            !names.iter().any(|n| n == hop),
            "{hop} reached the upstream: {names:?}"
        );
    }
    assert_eq!(
        echoed.header("x-kept").as_deref(),
        Some("yes"),
        "end-to-end headers pass"
    );
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));
}

#[tokio::test]
async fn preserve_host_sends_the_clients_host_and_the_default_sends_the_upstreams() {
    let (idp, echo, proxy, _) = transport_stack(false).await;
    let token = bearer(&idp).await;
    let client = no_redirect_client();
    let preserved = echo_of(
        api(
            &client,
            reqwest::Method::GET,
            &format!("{}/host/x", proxy.base()),
            &token,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(preserved.header("host"), Some(proxy.http.to_string()));
    let rewritten = echo_of(
        api(
            &client,
            reqwest::Method::GET,
            &format!("{}/x", proxy.base()),
            &token,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(rewritten.header("host"), Some(echo.addr.to_string()));
    assert_eq!(
        rewritten.header("x-forwarded-host"),
        Some(proxy.http.to_string()),
        "the client's host is still told"
    );
}

/// Accepts any certificate, verifies the handshake signature with it (so the server proved it
/// holds the key), and records what was presented.
#[derive(Debug)]
struct RecordingVerifier {
    provider: Arc<CryptoProvider>,
    presented: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.presented.lock().unwrap() = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Handshakes with `addr` sending `server_name` (no SNI for an IP address) and offering `alpn`;
/// returns the presented leaf certificate and the negotiated protocol.
async fn handshake(
    addr: SocketAddr,
    server_name: ServerName<'static>,
    alpn: &[&[u8]],
) -> (CertificateDer<'static>, Option<Vec<u8>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(RecordingVerifier {
        provider: provider.clone(),
        presented: Mutex::new(None),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = tokio::time::timeout(
        DEADLINE,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name.clone(), tcp),
    )
    .await
    .expect("handshake in time")
    .unwrap_or_else(|e| panic!("handshake for {server_name:?}: {e}"));
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let presented = verifier
        .presented
        .lock()
        .unwrap()
        .take()
        .expect("a certificate was presented");
    (presented, negotiated)
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM certificate")
}

#[tokio::test]
async fn sni_selects_the_certificate_and_alpn_prefers_h2() {
    let a = self_signed_pem_for("DNS:a.localtest");
    let b = self_signed_pem_for("DNS:b.localtest");
    let wildcard = self_signed_pem_for("DNS:*.w.localtest");
    let (_idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |o| {
        o.tls = true;
        o.extra_tls_certificates = vec![a.clone(), b.clone(), wildcard.clone()];
    })
    .await;
    let addr = proxy.https.expect("TLS listener");
    let both: &[&[u8]] = &[b"h2", b"http/1.1"];
    let name = |n: &str| ServerName::try_from(n.to_owned()).unwrap();

    let (cert, alpn) = handshake(addr, name("a.localtest"), both).await;
    assert!(cert == der(&a.0), "SNI a.localtest got another certificate");
    assert_eq!(alpn.as_deref(), Some(b"h2".as_slice()), "ALPN prefers h2");
    let (cert, _) = handshake(addr, name("b.localtest"), both).await;
    assert!(cert == der(&b.0), "SNI b.localtest got another certificate");
    let (cert, _) = handshake(addr, name("B.LocalTest"), both).await;
    assert!(cert == der(&b.0), "SNI is case-insensitive");
    let (cert, _) = handshake(addr, name("x.w.localtest"), both).await;
    assert!(
        cert == der(&wildcard.0),
        "x.w.localtest is served by *.w.localtest"
    );

    // No SNI (an IP address) and an unknown name fall back to the first certificate.
    let (default_cert, _) = handshake(addr, ServerName::IpAddress(addr.ip().into()), both).await;
    for other in [&a, &b, &wildcard] {
        assert!(
            default_cert != der(&other.0),
            "no SNI must get the default certificate"
        );
    }
    let (cert, _) = handshake(addr, name("c.localtest"), both).await;
    assert!(
        cert == default_cert,
        "an unknown name gets the default certificate"
    );
    let (cert, _) = handshake(addr, name("y.x.w.localtest"), both).await;
    assert!(cert == default_cert, "a wildcard covers one label only");

    let (_, alpn) = handshake(addr, name("a.localtest"), &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(b"http/1.1".as_slice()));
}

#[tokio::test]
async fn a_due_session_is_refreshed_and_ends_when_the_provider_revokes_it() {
    let (idp, echo, proxy) = stack(IdpOptions::short_tokens(), "ES256", |_| {}).await;
    let agent = Agent::new();
    let login = agent
        .login(
            &format!("{}/r", proxy.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    let login_cookie = agent.cookies()["_sekisho"].clone();
    let before = idp.token_requests().await;

    let refreshed = agent.api(&login.landed).await;
    assert_eq!(refreshed.status(), 200);
    let set = session_cookies_set(&refreshed);
    assert!(
        set.len() == 1 && !set[0].is_empty(),
        "the refreshed session is re-issued: {set:?}"
    );
    assert_ne!(set[0], login_cookie);
    assert_eq!(
        idp.token_requests().await,
        before + 1,
        "one refresh at the IdP"
    );
    assert_eq!(
        Echoed(refreshed.json().await.unwrap())
            .header("x-sekisho-user")
            .as_deref(),
        Some("alice")
    );

    let revoked = idp.hook("/test/revoke-refresh?sub=alice").await;
    assert!(
        revoked["revoked_refresh_tokens"].as_u64() >= Some(1),
        "{revoked}"
    );
    let hits = echo.hits();
    // The re-issued cookie is still due: its refresh is refused, so the session ends now, not
    // when some cached answer for its predecessor runs out.
    let ended = agent.api(&login.landed).await;
    assert_eq!(
        ended.status(),
        401,
        "the session must end once the provider refuses the refresh"
    );
    assert_eq!(
        session_cookies_set(&ended),
        vec![String::new()],
        "the session cookie is cleared"
    );
    assert!(!agent.cookies().contains_key("_sekisho"));
    assert_eq!(
        idp.token_requests().await,
        before + 2,
        "the re-issued cookie was refreshed at the IdP"
    );
    assert_eq!(
        echo.hits(),
        hits,
        "the upstream saw nothing after the refusal"
    );

    // The predecessor cookie is dead too: the session id is revoked.
    let thief = Agent::new();
    thief.set_cookies([("_sekisho".to_owned(), login_cookie)].into());
    assert_eq!(thief.api(&login.landed).await.status(), 401);
}

#[tokio::test]
async fn concurrent_requests_with_the_same_due_cookie_refresh_once() {
    const N: usize = 12;
    let (idp, _echo, proxy) = stack(IdpOptions::short_tokens(), "ES256", |_| {}).await;
    let agent = Agent::new();
    let login = agent
        .login(
            &format!("{}/c", proxy.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    let cookie = agent.cookie_header();
    let before = idp.token_requests().await;

    let client = no_redirect_client();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..N {
        let request = client
            .get(&login.landed)
            .header("accept", "application/json")
            .header("cookie", &cookie);
        requests.spawn(async move { request.send().await.expect("request") });
    }
    let mut ok = 0;
    while let Some(response) = requests.join_next().await {
        let response = response.expect("request task");
        assert_eq!(response.status(), 200);
        assert!(
            session_cookies_set(&response).iter().any(|v| !v.is_empty()),
            "every answer carries the refreshed session"
        );
        ok += 1;
    }
    assert_eq!(ok, N);
    assert_eq!(
        idp.token_requests().await,
        before + 1,
        "{N} concurrent requests with one due cookie refresh once"
    );
}

/// The value of gauge `name` in sekisho's `/metrics` (admin listener).
async fn gauge(admin: SocketAddr, name: &str) -> u64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// Waits until gauge `name` reads `want`.
async fn wait_gauge(admin: SocketAddr, name: &str, want: u64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let value = gauge(admin, name).await;
        if value == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {value}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads until `count` complete responses (each framed by `Content-Length`) have arrived.
async fn read_responses(
    stream: &mut TcpStream,
    count: usize,
) -> Vec<sekisho_tests::raw::RawResponse> {
    let mut bytes = Vec::new();
    let complete = |bytes: &[u8]| -> bool {
        let mut rest = bytes;
        for _ in 0..count {
            let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
                return false;
            };
            let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if rest.len() < end + 4 + length {
                return false;
            }
            rest = &rest[end + 4 + length..];
        }
        true
    };
    let read = async {
        let mut buf = [0u8; 16 * 1024];
        while !complete(&bytes) {
            let n = stream.read(&mut buf).await.expect("reading responses");
            assert_ne!(n, 0, "sekisho closed the connection: {bytes:?}");
            bytes.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("responses within the deadline");
    sekisho_tests::raw::parse_responses(&bytes)
}

/// An idle HTTP/1.1 keep-alive connection lets go of hyper's buffers (it is parked, and counted
/// as such) and goes on serving on the same socket: a request whose first bytes wake it, and two
/// pipelined requests in one write. None of the answers asks the client to close.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_parked_and_serves_on() {
    let (_idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |o| {
        o.routes_yaml = "  - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n".into();
        o.extra_yaml =
            "admin:\n  listen: 127.0.0.1:0\n  policy: {allow: {and: [{groups: {has: admins}}]}}\n"
                .into();
    })
    .await;
    let admin = proxy.admin.expect("the admin listener");
    let request = format!(
        "GET /.well-known/sekisho/jwks.json HTTP/1.1\r\nHost: {}\r\n\r\n",
        proxy.http
    );
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let first = read_responses(&mut stream, 1).await;
    assert_eq!(first[0].status, 200, "{first:?}");
    assert_eq!(first[0].header("connection"), None, "{first:?}");
    wait_gauge(admin, "sekisho_connections_parked", 1).await;

    // The first bytes of a request wake the connection; the rest follows in another segment.
    let (head, tail) = request.split_at(20);
    stream.write_all(head.as_bytes()).await.unwrap();
    wait_gauge(admin, "sekisho_connections_parked", 0).await;
    stream.write_all(tail.as_bytes()).await.unwrap();
    let second = read_responses(&mut stream, 1).await;
    assert_eq!(second[0].status, 200, "{second:?}");
    assert_eq!(second[0].header("connection"), None, "{second:?}");
    assert_eq!(second[0].body, first[0].body);

    // Parked again; two pipelined requests wake it and both are answered, in order.
    wait_gauge(admin, "sekisho_connections_parked", 1).await;
    stream
        .write_all(format!("{request}{request}").as_bytes())
        .await
        .unwrap();
    let pipelined = read_responses(&mut stream, 2).await;
    assert_eq!(pipelined.len(), 2, "{pipelined:?}");
    for response in &pipelined {
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.header("connection"), None, "{response:?}");
    }
    assert!(gauge(admin, "sekisho_connections_open").await >= 1);

    // A client that closes a parked connection is gone from the gauges.
    wait_gauge(admin, "sekisho_connections_parked", 1).await;
    drop(stream);
    wait_gauge(admin, "sekisho_connections_parked", 0).await;
}

/// A request body that sends one chunk, then waits for `finish` before ending.
struct Held {
    first: Option<Bytes>,
    finish: tokio::sync::oneshot::Receiver<()>,
}

impl Body for Held {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        std::future::Future::poll(Pin::new(&mut self.finish), cx).map(|_| None)
    }
}

/// `server.timeouts.idle` holds for HTTP/2 as for HTTP/1.1: a connection with no request open
/// for that long gets a GOAWAY and closes, although its client answers every keep-alive ping.
/// A request open for longer than the timeout (its body still coming) does not count as idle:
/// the connection serves another request after it.
#[tokio::test]
async fn an_http2_connection_with_no_request_for_the_idle_timeout_is_closed() {
    const IDLE: Duration = Duration::from_secs(1);
    let (idp, echo, proxy) = stack(IdpOptions::default(), "ES256", |o| {
        o.server_yaml = "  timeouts:\n    idle: 1s\n".into();
    })
    .await;
    let token = bearer(&idp).await;
    let stream = TcpStream::connect(proxy.http).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let ended = tokio::spawn(connection);
    let url = format!("http://{}/upload", proxy.http);

    // A request whose body is held open for three idle timeouts.
    let (finish, held) = tokio::sync::oneshot::channel();
    let request = http::Request::post(&url)
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Either::Left(Held {
            first: Some(Bytes::from_static(b"first part")),
            finish: held,
        }))
        .unwrap();
    let answer = tokio::spawn(sender.send_request(request));
    sekisho_tests::eventually("the request at the upstream", || async { echo.hits() >= 1 }).await;
    // Not synchronisation: the time passing is what is under test.
    tokio::time::sleep(IDLE * 3).await;
    assert!(!ended.is_finished(), "closed while a request was open");
    finish.send(()).unwrap();
    let response = answer.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let echoed = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let echoed: serde_json::Value = serde_json::from_slice(&echoed).unwrap();
    assert_eq!(echoed["body_len"], 10, "{echoed}");

    // The connection still serves: no GOAWAY was sent during the long request.
    let before_last = Instant::now();
    let request = http::Request::get(&url)
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Either::Right(
            http_body_util::Empty::<Bytes>::new(),
        ))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);

    // Then nothing: the server closes it, no sooner than the idle timeout.
    let closed = tokio::time::timeout(DEADLINE, ended)
        .await
        .expect("the idle connection is closed within the deadline")
        .unwrap();
    assert!(
        closed.is_ok(),
        "a clean close (GOAWAY), not an error: {closed:?}"
    );
    assert!(
        before_last.elapsed() >= IDLE,
        "closed {:?} after the last request was sent, before the idle timeout",
        before_last.elapsed()
    );
}
