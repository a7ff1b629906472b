//! TCP tunnels at the proxy, end to end with the real provider: a raw HTTP/1.1 CONNECT client
//! (what `sekisho tcp` sends) against a tunnel route whose upstream is an echo server the test
//! owns. Refusals (no credential, another user's route, no such route, an unreachable
//! upstream), a byte-exact bulk transfer both ways, a sign-out that closes the open tunnel within
//! the bound, and the close records.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::time::Duration;

use sekisho_tests::raw::connect_tunnel as connect;
use sekisho_tests::{Agent, audit_records, eventually, stack};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long a signed-out session's tunnel may stay open (the bound is 10 s).
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn tunnels_are_admitted_relayed_refused_and_closed_with_their_session() {
    let echo = sekisho_tests::echo::tcp().await;
    let (idp, _echo, proxy) = stack(Default::default(), "ES256", |o| {
        o.routes_yaml = format!(
            "  - id: db\n    from: tcp+http://db.internal:5432\n    to: tcp://{echo}\n  \
             - id: bobs\n    from: tcp+http://bob.internal:22\n    to: tcp://{echo}\n    \
             policy: {{allow: {{and: [{{email: {{is: bob@example.com}}}}]}}}}\n  \
             - id: gone\n    from: tcp+http://gone.internal:1\n    to: tcp://127.0.0.1:1\n  \
             - id: literal\n    from: tcp+http://[::1]:7000\n    to: tcp://{echo}\n  \
             - id: web\n    from: http://127.0.0.1\n    to: http://{{echo}}\n"
        );
    })
    .await;
    let at = proxy.http;

    // No credential: 401. No such tunnel: 404.
    let (status, _, _) = connect(at, "db.internal:5432", "").await;
    assert_eq!(status, 401);
    let token = idp.bearer("alice").await;
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let (status, _, _) = connect(at, "nowhere.internal:5432", &bearer).await;
    assert_eq!(status, 404);
    // Another user's route: 403, and the rule says why.
    let (status, head, _) = connect(at, "bob.internal:22", &bearer).await;
    assert_eq!(status, 403, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-sekisho-denied: "),
        "{head}"
    );
    // An upstream that refuses: 502, saying why.
    let (status, head, _) = connect(at, "gone.internal:1", &bearer).await;
    assert_eq!(status, 502, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-sekisho-error: "),
        "{head}"
    );

    // A route named by an IPv6 literal matches the CONNECT that names it.
    let (status, head, mut literal) = connect(at, "[::1]:7000", &bearer).await;
    assert_eq!(status, 200, "{head}");
    literal.write_all(b"v6").await.unwrap();
    let mut echoed = [0u8; 2];
    literal.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"v6");
    drop(literal);

    // A bearer tunnel: 8 MiB each way, byte-exact, with half-close.
    let (status, head, stream) = connect(at, "db.internal:5432", &bearer).await;
    assert_eq!(status, 200, "{head}");
    let payload: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let (mut read, mut write) = stream.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    read.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert!(
        back == payload,
        "the echo came back byte-exact ({} bytes)",
        back.len()
    );

    // Over HTTP/2 (h2c with prior knowledge): a CONNECT stream is a tunnel too.
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(at).await.unwrap());
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .uri("db.internal:5432")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200, "HTTP/2 CONNECT");
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let mut h2_tunnel = hyper_util::rt::TokioIo::new(upgraded);
    h2_tunnel.write_all(b"over h2").await.unwrap();
    let mut echoed = [0u8; 7];
    h2_tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"over h2");
    drop(h2_tunnel);

    // A session tunnel, closed by the session's sign-out.
    let alice = Agent::new();
    let base = proxy.base();
    alice
        .login(&format!("{base}/hello"), &idp.issuer, "alice", "alice-pw")
        .await;
    let cookie = format!("Cookie: {}\r\n", alice.cookie_header());
    let (status, head, mut tunnel) = connect(at, "db.internal:5432", &cookie).await;
    assert_eq!(status, 200, "{head}");
    tunnel.write_all(b"still there?").await.unwrap();
    let mut echoed = [0u8; 12];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"still there?");
    let out = alice.browse(&format!("{base}/.sekisho/logout")).await;
    assert_eq!(out.status(), 302);
    let signed_out = tokio::time::Instant::now();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(CLOSE_WITHIN, tunnel.read_to_end(&mut rest)).await;
    assert!(
        ended.is_ok(),
        "the tunnel outlived its session by more than {CLOSE_WITHIN:?}"
    );
    let took = signed_out.elapsed();

    // The close records: bytes each way, who closed and why.
    let audit = proxy.audit_dir();
    eventually("the tunnels' close records", || {
        let audit = audit.clone();
        async move {
            let records = audit_records(&audit);
            let closed: Vec<_> = records
                .iter()
                .filter(|r| r["unmapped"]["event"] == "tunnel_closed")
                .collect();
            closed
                .iter()
                .any(|r| r["unmapped"]["reason"] == "session_ended")
                && closed.iter().any(|r| r["unmapped"]["reason"] == "finished")
        }
    })
    .await;
    let records = audit_records(&audit);
    let bulk = records
        .iter()
        .find(|r| {
            r["unmapped"]["reason"] == "finished" && r["traffic"]["bytes_out"] == 8 * 1024 * 1024
        })
        .unwrap_or_else(|| panic!("no record of the bulk tunnel"));
    assert_eq!(bulk["traffic"]["bytes_in"], 8 * 1024 * 1024, "{bulk:#}");
    assert_eq!(bulk["unmapped"]["route"], "db");
    let cut = records
        .iter()
        .find(|r| r["unmapped"]["reason"] == "session_ended")
        .unwrap();
    assert_eq!(cut["unmapped"]["closed_by"], "sekisho", "{cut:#}");
    assert_eq!(cut["unmapped"]["user"], "alice@example.com", "{cut:#}");
    // The opening: the CONNECT's own HTTP record, allowed, with the user.
    assert!(records.iter().any(|r| r["class_uid"] == 4002
        && r["http_request"]["http_method"] == "CONNECT"
        && r["unmapped"]["decision"] == "allow"
        && r["unmapped"]["route"] == "db"));
    eprintln!("signed-out tunnel closed after {took:?}");
}
