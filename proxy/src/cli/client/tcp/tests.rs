use std::net::SocketAddr;

use tokio::sync::mpsc;

use super::super::credentials::tests::{credential, temporary_store};
use super::*;

#[test]
fn targets_parse_host_and_port() {
    let target = Target::parse("DB.internal:5432").unwrap();
    assert_eq!((target.host.as_str(), target.port), ("db.internal", 5432));
    assert_eq!(target.to_string(), "db.internal:5432");
    assert_eq!(
        Target::parse("10.0.0.7:22").unwrap().to_string(),
        "10.0.0.7:22"
    );
    assert_eq!(Target::parse("[::1]:22").unwrap().to_string(), "[::1]:22");
    // ssh's %h writes an IPv6 address without brackets.
    assert_eq!(
        Target::parse("fe80::1:22").unwrap().to_string(),
        "[fe80::1]:22"
    );
    for bad in [
        "db.internal",
        "db.internal:",
        ":22",
        "db:0",
        "db:65536",
        "a b:1",
        "x/y:1",
        "[zz]:1",
    ] {
        assert!(Target::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_connect_request_is_exact() {
    let target = Target::parse("db.internal:5432").unwrap();
    let request = connect_request(&target, &credential(&["sekisho_session=abc", "x=1"]));
    assert_eq!(
        String::from_utf8(request).unwrap(),
        format!(
            "CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\
             Cookie: sekisho_session=abc; x=1\r\nUser-Agent: sekisho-cli/{}\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn heads_parse_status_and_headers() {
    let answer = b"HTTP/1.1 200 Connection established\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n\
                   X-Other:\tspaced \r\n\r\nSSH-2.0-banner";
    let (head, length) = parse_head(answer).unwrap().unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.all("set-cookie").collect::<Vec<_>>(), ["a=1", "b=2"]);
    assert_eq!(head.first("x-other"), Some("spaced"));
    assert_eq!(answer.get(length..).unwrap(), b"SSH-2.0-banner");
    let (head, _) = parse_head(b"HTTP/1.0 403\r\n\r\n").unwrap().unwrap();
    assert_eq!((head.status, head.headers.len()), (403, 0));
}

#[test]
fn heads_wait_for_the_blank_line() {
    let answer = b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n";
    for end in 0..answer.len() {
        assert_eq!(parse_head(answer.get(..end).unwrap()), Ok(None), "{end}");
    }
    assert!(parse_head(answer).unwrap().is_some());
}

#[test]
fn bad_heads_are_refused() {
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    while huge.len() < MAX_HEAD {
        huge.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert_eq!(parse_head(&huge), Err(HeadError::TooLarge));
    huge.extend_from_slice(b"\r\n");
    assert_eq!(parse_head(&huge), Err(HeadError::TooLarge));
    for (answer, problem) in [
        (&b"SSH-2.0-OpenSSH\r\n\r\n"[..], "bad status line"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "bad status line"),
        (b"HTTP/2 200\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", "bad header line"),
    ] {
        let error = parse_head(answer).unwrap_err().to_string();
        assert!(error.starts_with(problem), "{error}");
    }
}

#[tokio::test]
async fn heads_are_read_across_partial_reads() {
    let (mut client, mut server) = tokio::io::duplex(64);
    let writer = tokio::spawn(async move {
        for piece in [
            &b"HTTP/1.1 2"[..],
            b"00 OK\r\nSet-Cookie: a",
            b"=1\r\n\r",
            b"\nhello",
        ] {
            server.write_all(piece).await.unwrap();
            server.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        server
    });
    let (head, early) = read_head(&mut client).await.unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.first("set-cookie"), Some("a=1"));
    let mut early = early;
    while early.len() < 5 {
        let mut more = [0_u8; 8];
        let n = client.read(&mut more).await.unwrap();
        early.extend_from_slice(&more[..n]);
    }
    assert_eq!(early, b"hello");
    drop(writer.await.unwrap());
    let (mut client, server) = tokio::io::duplex(64);
    drop(server);
    assert_eq!(read_head(&mut client).await, Err(HeadError::Truncated));
}

/// The head of an answer with `status` and `headers`.
fn head(status: u16, headers: &[(&str, &str)]) -> ResponseHead {
    ResponseHead {
        status,
        headers: headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
    }
}

#[test]
fn refusals_say_what_happened() {
    let origin = ProxyOrigin::parse("https://proxy.example.com").unwrap();
    let target = Target::parse("db.internal:5432").unwrap();
    let message = |head: ResponseHead, body: &str| {
        refusal(&origin, &target, &head, body.as_bytes()).to_string()
    };
    assert_eq!(
        message(head(401, &[]), ""),
        "your sign-in to https://proxy.example.com has expired or was ended (refresh failed): \
         run `sekisho login https://proxy.example.com`"
    );
    assert_eq!(
        message(
            head(
                403,
                &[("x-sekisho-denied", "rule db-admins: group dba required")]
            ),
            "Forbidden\n"
        ),
        "denied by policy: rule db-admins: group dba required"
    );
    assert_eq!(
        message(head(403, &[]), "\nnot in group dba\nmore"),
        "denied by policy: not in group dba"
    );
    assert_eq!(
        message(head(403, &[]), ""),
        "denied by policy: HTTP 403 without a reason"
    );
    assert_eq!(
        message(head(404, &[]), "Not Found"),
        "https://proxy.example.com has no tunnel route for db.internal:5432"
    );
    assert_eq!(
        message(
            head(502, &[("x-sekisho-error", "connection refused")]),
            "Bad Gateway"
        ),
        "https://proxy.example.com could not reach db.internal:5432: connection refused"
    );
    assert_eq!(
        message(head(504, &[]), "upstream timed out\x1b[2J"),
        "https://proxy.example.com could not reach db.internal:5432: upstream timed out [2J"
    );
    assert_eq!(
        message(head(429, &[]), "slow down"),
        "https://proxy.example.com refused the tunnel to db.internal:5432 with HTTP 429: slow down"
    );
}

/// What a fake proxy does after reading a CONNECT.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers `answer`, then echoes every byte until the client's end, then ends.
    Echo(&'static str),
    /// Answers `answer` with a greeting and ends its side at once, then reports what it
    /// receives until the client's end.
    SpeakAndHalfClose(&'static str),
    /// Answers `answer` and closes.
    Refuse(&'static str),
}

/// A fake sekisho: a plain-HTTP listener that answers CONNECTs as `behaviour` says; the
/// request heads it received, and what a half-closing proxy received, are sent to the
/// returned channel.
async fn fake_proxy(behaviour: Behaviour) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (heard, heard_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let heard = heard.clone();
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.into_split();
                let mut request = Vec::new();
                while !request.ends_with(b"\r\n\r\n") {
                    let mut byte = [0_u8; 1];
                    if reader.read(&mut byte).await.unwrap() == 0 {
                        return;
                    }
                    request.push(byte[0]);
                }
                heard.send(String::from_utf8(request).unwrap()).unwrap();
                match behaviour {
                    Behaviour::Echo(answer) => {
                        writer.write_all(answer.as_bytes()).await.unwrap();
                        tokio::io::copy(&mut reader, &mut writer).await.unwrap();
                        writer.shutdown().await.unwrap();
                    }
                    Behaviour::SpeakAndHalfClose(answer) => {
                        writer.write_all(answer.as_bytes()).await.unwrap();
                        writer.shutdown().await.unwrap();
                        let mut received = String::new();
                        reader.read_to_string(&mut received).await.unwrap();
                        heard.send(received).unwrap();
                    }
                    Behaviour::Refuse(answer) => {
                        writer.write_all(answer.as_bytes()).await.unwrap();
                        writer.shutdown().await.unwrap();
                    }
                }
            });
        }
    });
    (address, heard_rx)
}

/// A tunnel to db.internal:5432 through the fake proxy at `address`, signed in with
/// `cookies` in a store of its own.
fn tunnel_via(address: SocketAddr, name: &str, cookies: &[&str]) -> Arc<Tunnel> {
    let origin = ProxyOrigin::parse(&format!("http://{address}")).unwrap();
    let store = temporary_store(name);
    if !cookies.is_empty() {
        store
            .update(|all| {
                all.insert(origin.as_str(), credential(cookies));
                (true, ())
            })
            .unwrap();
    }
    Arc::new(Tunnel {
        origin,
        target: Target::parse("db.internal:5432").unwrap(),
        tls: None,
        store,
    })
}

/// Serves `tunnel` with `--listen` on a loopback port of its own.
async fn listening(tunnel: &Arc<Tunnel>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, Arc::clone(tunnel)));
    address
}

#[tokio::test]
async fn listen_relays_megabytes_exactly_and_saves_refreshed_cookies() {
    let (proxy, mut heard) = fake_proxy(Behaviour::Echo(
        "HTTP/1.1 200 Connection established\r\nSet-Cookie: sekisho_session=new; Path=/; \
         HttpOnly; Secure\r\nSet-Cookie: csrf=; Max-Age=0\r\n\r\ngreeting\n",
    ))
    .await;
    let tunnel = tunnel_via(proxy, "listen-echo", &["sekisho_session=old", "csrf=1"]);
    let local = listening(&tunnel).await;

    let payload: Vec<u8> = (0..4 * 1024 * 1024_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let connection = TcpStream::connect(local).await.unwrap();
    let (mut reader, mut writer) = connection.into_split();
    let sent = payload.clone();
    let sending = tokio::spawn(async move {
        writer.write_all(&sent).await.unwrap();
        // Our end of input: the proxy sees it, echoes the rest and ends its side.
        writer.shutdown().await.unwrap();
    });
    let mut received = Vec::new();
    reader.read_to_end(&mut received).await.unwrap();
    sending.await.unwrap();
    let (greeting, echoed) = received.split_at(9);
    assert_eq!(greeting, b"greeting\n");
    assert!(echoed == payload.as_slice(), "the echo differs");

    let request = heard.recv().await.unwrap();
    assert!(
        request.starts_with(
            "CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\
             Cookie: sekisho_session=old; csrf=1\r\nUser-Agent: sekisho-cli/"
        ),
        "{request}"
    );
    let stored = tunnel
        .store
        .credential(tunnel.origin.as_str())
        .unwrap()
        .unwrap();
    assert_eq!(stored.cookie_header(), "sekisho_session=new");

    // The next tunnel presents the refreshed session.
    let mut second = TcpStream::connect(local).await.unwrap();
    second.write_all(b"ping").await.unwrap();
    let mut pong = [0_u8; 13];
    second.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"greeting\nping");
    let request = heard.recv().await.unwrap();
    assert!(
        request.contains("\r\nCookie: sekisho_session=new\r\n"),
        "{request}"
    );
    std::fs::remove_dir_all(tunnel.store.path().parent().unwrap()).unwrap();
}

#[tokio::test]
async fn the_proxy_ending_its_side_first_leaves_ours_open() {
    let (proxy, mut heard) = fake_proxy(Behaviour::SpeakAndHalfClose(
        "HTTP/1.1 200 OK\r\n\r\nbye from the service",
    ))
    .await;
    let tunnel = tunnel_via(proxy, "listen-half-close", &["s=1"]);
    let local = listening(&tunnel).await;
    let mut connection = TcpStream::connect(local).await.unwrap();
    let mut received = String::new();
    connection.read_to_string(&mut received).await.unwrap();
    assert_eq!(received, "bye from the service");
    // Our direction still flows after theirs ended.
    connection.write_all(b"late words").await.unwrap();
    connection.shutdown().await.unwrap();
    heard.recv().await.unwrap();
    assert_eq!(heard.recv().await.unwrap(), "late words");
    std::fs::remove_dir_all(tunnel.store.path().parent().unwrap()).unwrap();
}

#[tokio::test]
async fn a_denied_tunnel_closes_the_local_connection_and_listening_goes_on() {
    let (proxy, mut heard) = fake_proxy(Behaviour::Refuse(
        "HTTP/1.1 403 Forbidden\r\nX-Sekisho-Denied: rule db-admins: group dba required\r\n\
         Content-Length: 10\r\n\r\nForbidden\n",
    ))
    .await;
    let tunnel = tunnel_via(proxy, "listen-denied", &["s=1"]);
    let error = tunnel.open().await.err().unwrap();
    assert_eq!(
        error.to_string(),
        "denied by policy: rule db-admins: group dba required"
    );
    heard.recv().await.unwrap();
    let local = listening(&tunnel).await;
    for _ in 0..2 {
        let mut connection = TcpStream::connect(local).await.unwrap();
        let mut received = Vec::new();
        connection.read_to_end(&mut received).await.unwrap();
        assert!(received.is_empty());
        heard.recv().await.unwrap();
    }
    std::fs::remove_dir_all(tunnel.store.path().parent().unwrap()).unwrap();
}

#[tokio::test]
async fn no_credential_or_no_proxy_are_clear_errors() {
    let (proxy, _heard) = fake_proxy(Behaviour::Refuse("HTTP/1.1 200 OK\r\n\r\n")).await;
    let tunnel = tunnel_via(proxy, "not-signed-in", &[]);
    let error = tunnel.open().await.err().unwrap();
    assert_eq!(
        error.to_string(),
        format!("not signed in to http://{proxy}: run `sekisho login http://{proxy}`")
    );

    // A port nothing listens on: bind one, note it, close it.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let tunnel = tunnel_via(closed, "no-proxy", &["s=1"]);
    let error = tunnel.open().await.err().unwrap().to_string();
    assert!(
        error.starts_with(&format!("cannot reach the proxy http://{closed}: ")),
        "{error}"
    );
    std::fs::remove_dir_all(tunnel.store.path().parent().unwrap()).unwrap();

    let (proxy, _heard) = fake_proxy(Behaviour::Refuse("SSH-2.0-OpenSSH_9.6\r\n\r\n")).await;
    let tunnel = tunnel_via(proxy, "not-http", &["s=1"]);
    let error = tunnel.open().await.err().unwrap().to_string();
    assert_eq!(
        error,
        format!(
            "http://{proxy} did not answer the tunnel request as an HTTP proxy: bad status line \
             \"SSH-2.0-OpenSSH_9.6\""
        )
    );
    std::fs::remove_dir_all(tunnel.store.path().parent().unwrap()).unwrap();
}
