//! Upstreams behind an internal CA, end to end: sekisho's TLS client against real nginx TLS
//! servers whose certificates a test CA issued. A route trusts its own CA (and then only it),
//! verifies a name other than the URL's host, presents a client certificate, or skips
//! verification with a warning at every start and reload; a failed handshake (an unknown issuer,
//! another name, a server that requires a client certificate) is a 502 whose log line names the
//! route, the target and the cause; a bad CA file fails `sekisho check`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use sekisho_tests::pki::{Issued, TestCa};
use sekisho_tests::{
    Idp, IdpOptions, Nginx, Proxy, eventually, no_redirect_client, sekisho_binary,
    self_signed_pem_for, stack,
};

/// The subject of the client certificate sekisho presents, as nginx prints it (RFC 2253).
const CLIENT_SUBJECT: &str = "CN=sekisho upstream client,O=Sekisho Tests";

/// A TLS nginx serving `server` with its key, answering every request with what it saw of the
/// TLS client: `verify=$ssl_client_verify subject=$ssl_client_s_dn sni=$ssl_server_name`.
/// With `client_ca`, it asks for a client certificate issued by it (`verify`: `optional` or
/// `on`).
async fn tls_nginx(server: &Issued, client_ca: Option<(&TestCa, &str)>) -> Nginx {
    let client_auth = match client_ca {
        Some((ca, verify)) => format!(
            "    ssl_client_certificate {};\n    ssl_verify_client {verify};\n",
            ca.cert.display()
        ),
        None => String::new(),
    };
    Nginx::start_tls(&format!(
        "    ssl_certificate {};\n    ssl_certificate_key {};\n{client_auth}    \
         location / {{\n      \
         return 200 \"verify=$ssl_client_verify subject=$ssl_client_s_dn sni=$ssl_server_name\\n\";\n    }}",
        server.cert.display(),
        server.key.display(),
    ))
    .await
}

/// GETs `path` on the proxy as alice with a bearer token; (status, body).
async fn get(idp: &Idp, proxy: &Proxy, path: &str) -> (u16, String) {
    let token = idp.bearer("alice").await;
    let response = no_redirect_client()
        .get(format!("{}{path}", proxy.base()))
        .bearer_auth(token)
        .header("accept", "application/json")
        .send()
        .await
        .expect("request to sekisho");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Waits until the proxy's log contains every one of `needles` (its log is printed if not).
async fn log_mentions(proxy: &Proxy, needles: &[&str]) {
    eventually(&format!("the proxy log to mention {needles:?}"), || async {
        let logs = proxy.logs();
        needles.iter().all(|needle| logs.contains(needle))
    })
    .await;
}

/// `  - id: {id}\n    from: http://127.0.0.1/{id}\n    to: {to}\n` and `keys` (lines indented
/// by four spaces).
fn route(id: &str, to: &str, keys: &str) -> String {
    format!("  - id: {id}\n    from: http://127.0.0.1/{id}\n    to: {to}\n{keys}")
}

/// `    tls_client_certificate: ...\n    tls_client_key: ...\n` for `client`.
fn client_keys(client: &Issued) -> String {
    format!(
        "    tls_client_certificate: {}\n    tls_client_key: {}\n",
        client.cert.display(),
        client.key.display()
    )
}

#[tokio::test]
async fn a_custom_ca_replaces_the_public_roots_and_a_server_name_replaces_the_host() {
    let ca = TestCa::new("Sekisho Test Upstream CA");
    let by_ip = tls_nginx(
        &ca.server("by-ip", "DNS:upstream.internal,IP:127.0.0.1"),
        None,
    )
    .await;
    let by_name = tls_nginx(&ca.server("by-name", "DNS:upstream.internal"), None).await;
    let ca_key = format!("    tls_custom_ca: {}\n", ca.cert.display());
    let routes = [
        route("ca", &format!("https://{}", by_ip.addr), &ca_key),
        route("public", &format!("https://{}", by_ip.addr), ""),
        route(
            "named",
            &format!("https://{}", by_name.addr),
            &format!("{ca_key}    tls_server_name: upstream.internal\n"),
        ),
        route("unnamed", &format!("https://{}", by_name.addr), &ca_key),
    ]
    .concat();
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |o| {
        o.routes_yaml = routes;
    })
    .await;

    // (1) The route's CA vouches for the upstream: the request goes through.
    let (status, body) = get(&idp, &proxy, "/ca/x").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("verify=NONE "), "{body}");

    // (2) The same upstream on a route with the public roots: not trusted, 502, and the log
    // names the route, the target and the certificate problem. The page names none of them.
    let (status, body) = get(&idp, &proxy, "/public/x").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        !body.contains("UnknownIssuer") && !body.contains("127.0.0.1"),
        "502 page leaks detail: {body}"
    );
    let target = format!("route public: https://{}: ", by_ip.addr);
    log_mentions(
        &proxy,
        &[&target, "invalid peer certificate: UnknownIssuer"],
    )
    .await;
    assert_eq!(
        by_ip.requests(),
        1,
        "only the trusted route reached the upstream"
    );

    // (3) A certificate only for upstream.internal, reached by address: verified (and sent as
    // SNI) under tls_server_name, refused without it.
    let (status, body) = get(&idp, &proxy, "/named/x").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sni=upstream.internal"), "{body}");
    let (status, body) = get(&idp, &proxy, "/unnamed/x").await;
    assert_eq!(status, 502, "{body}");
    let target = format!("route unnamed: https://{}: ", by_name.addr);
    log_mentions(
        &proxy,
        &[
            &target,
            "invalid peer certificate: certificate not valid for name \"127.0.0.1\"",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_configured() {
    let ca = TestCa::new("Sekisho Test Upstream CA");
    let client_ca = TestCa::new("Sekisho Test Client CA");
    let client = client_ca.client("sekisho", "/O=Sekisho Tests/CN=sekisho upstream client");
    let server = ca.server("upstream", "IP:127.0.0.1");
    let optional = tls_nginx(&server, Some((&client_ca, "optional"))).await;
    let required = tls_nginx(&server, Some((&client_ca, "on"))).await;
    let strict = strict_upstream(&server, &client_ca).await;
    let ca_key = format!("    tls_custom_ca: {}\n", ca.cert.display());
    let routes = [
        route(
            "presents",
            &format!("https://{}", optional.addr),
            &format!("{ca_key}{}", client_keys(&client)),
        ),
        route("anonymous", &format!("https://{}", optional.addr), &ca_key),
        route(
            "required",
            &format!("https://{}", required.addr),
            &format!("{ca_key}{}", client_keys(&client)),
        ),
        route("refused", &format!("https://{}", required.addr), &ca_key),
        route(
            "handshakes",
            &format!("https://{strict}"),
            &format!("{ca_key}{}", client_keys(&client)),
        ),
        route("aborted", &format!("https://{strict}"), &ca_key),
    ]
    .concat();
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |o| {
        o.routes_yaml = routes;
    })
    .await;

    // (4) The upstream verified sekisho's certificate and sees its subject.
    let (status, body) = get(&idp, &proxy, "/presents/x").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with(&format!("verify=SUCCESS subject={CLIENT_SUBJECT} ")),
        "{body}"
    );
    let (status, body) = get(&idp, &proxy, "/anonymous/x").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("verify=NONE subject= "), "{body}");
    let (status, body) = get(&idp, &proxy, "/required/x").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("verify=SUCCESS "), "{body}");
    // An upstream that requires a certificate refuses a route that has none. nginx completes
    // the handshake and answers 400 itself...
    let (status, body) = get(&idp, &proxy, "/refused/x").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("No required SSL certificate was sent"),
        "{body}"
    );
    // ...while a server that aborts the handshake gets a 502, logged with its alert.
    let (status, body) = get(&idp, &proxy, "/aborted/x").await;
    assert_eq!(status, 502, "{body}");
    let target = format!("route aborted: https://{strict}: ");
    log_mentions(&proxy, &[&target, "CertificateRequired"]).await;
    let (status, body) = get(&idp, &proxy, "/handshakes/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "verified");
}

/// A TLS server (rustls) that refuses, in the handshake, clients without a certificate
/// `client_ca` issued, and answers `verified` to the others.
async fn strict_upstream(server: &Issued, client_ca: &TestCa) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&client_ca.cert).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = CertificateDer::pem_file_iter(&server.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&server.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = vec![0; 8192];
                if tls.read(&mut head).await.is_ok() {
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nverified",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn defaults_give_every_https_route_the_ca_and_the_client_certificate() {
    let ca = TestCa::new("Sekisho Test Upstream CA");
    let client_ca = TestCa::new("Sekisho Test Client CA");
    let client = client_ca.client("sekisho", "/O=Sekisho Tests/CN=sekisho upstream client");
    let upstream = tls_nginx(
        &ca.server("upstream", "IP:127.0.0.1"),
        Some((&client_ca, "on")),
    )
    .await;
    let routes = [
        route("inherits", &format!("https://{}", upstream.addr), ""),
        route(
            "own-roots",
            &format!("https://{}", upstream.addr),
            "    tls_skip_verify: false\n",
        ),
        route("plain", "http://{echo}", ""),
    ]
    .concat();
    let (idp, echo, proxy) = stack(IdpOptions::default(), "ES256", |o| {
        o.extra_yaml = format!(
            "upstream_tls:\n  custom_ca: {}\n  client_certificate: {}\n  client_key: {}\n",
            ca.cert.display(),
            client.cert.display(),
            client.key.display()
        );
        o.routes_yaml = routes;
    })
    .await;

    let (status, body) = get(&idp, &proxy, "/inherits/x").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with(&format!("verify=SUCCESS subject={CLIENT_SUBJECT} ")),
        "{body}"
    );
    // `tls_skip_verify: false` on a route keeps verification on, with the default CA.
    let (status, body) = get(&idp, &proxy, "/own-roots/x").await;
    assert_eq!(status, 200, "{body}");
    // A plain-HTTP route is untouched by the defaults.
    let (status, body) = get(&idp, &proxy, "/plain/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo.hits(), 1);
}

#[tokio::test]
async fn skip_verify_accepts_an_untrusted_certificate_and_warns_at_start_and_reload() {
    let (cert, key) = self_signed_pem_for("DNS:nowhere.invalid");
    let dir = tempfile::tempdir().unwrap();
    let issued = Issued {
        cert: dir.path().join("untrusted.crt"),
        key: dir.path().join("untrusted.key"),
    };
    std::fs::write(&issued.cert, cert).unwrap();
    std::fs::write(&issued.key, key).unwrap();
    let untrusted = tls_nginx(&issued, None).await;
    let routes = [
        route(
            "skip",
            &format!("https://{}", untrusted.addr),
            "    tls_skip_verify: true\n",
        ),
        route("verify", &format!("https://{}", untrusted.addr), ""),
    ]
    .concat();
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |o| {
        o.routes_yaml = routes;
    })
    .await;
    let warning = "route skip: upstream certificate verification is OFF (tls_skip_verify)";
    let warnings = || proxy.logs().matches(warning).count();
    assert_eq!(warnings(), 1, "one warning at start:\n{}", proxy.logs());
    assert!(
        !proxy
            .logs()
            .contains("route verify: upstream certificate verification"),
        "only the skipping route is warned about"
    );

    // (5) Any certificate is accepted on the skipping route, and only there.
    let (status, body) = get(&idp, &proxy, "/skip/x").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&idp, &proxy, "/verify/x").await;
    assert_eq!(status, 502, "{body}");

    // Every reload warns again.
    let mut config = std::fs::read_to_string(&proxy.config_path).unwrap();
    config.push_str("# reloaded\n");
    sekisho_tests::write_atomically(&proxy.config_path, &config);
    eventually("the reload and its warning", || async {
        proxy.logs().contains("configuration reloaded") && warnings() == 2
    })
    .await;
}

/// Runs `sekisho check -c {config}`.
fn check(config: &Path) -> std::process::Output {
    Command::new(sekisho_binary())
        .arg("check")
        .arg("-c")
        .arg(config)
        .output()
        .expect("running sekisho check")
}

#[test]
fn check_reports_a_bad_ca_file_and_a_half_client_pair_with_their_positions() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_a_ca, "this is not PEM\n").unwrap();
    let config = dir.path().join("sekisho.yaml");
    std::fs::write(
        dir.path().join("signing.pem"),
        sekisho::assertion::generate_pem().unwrap(),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "server:\n  http_listen: 127.0.0.1:0\n\
             oidc:\n  issuer: https://idp.example.com\n  client_id: sekisho\n  client_secret: s3cret\n\
             session:\n  keys: [2FOEhCQXMabxHHEK0dJg1eNl9PPqZBYxzuksXrqGFIc=]\n\
             signing:\n  key: {{file: signing.pem}}\n\
             routes:\n\
             \x20 - from: http://app.localhost\n    to: https://10.0.0.1\n    tls_custom_ca: {}\n\
             \x20 - from: http://other.localhost\n    to: https://10.0.0.2\n    tls_client_key: missing.key\n",
            not_a_ca.display()
        ),
    )
    .unwrap();
    let out = check(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|line| line.contains(":14:20: routes[0].tls_custom_ca: ")
                && line.contains("holds no PEM certificate")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|line| line.contains(":17:21: routes[1].tls_client_key: ")
                && line.contains("needs `tls_client_certificate` too")),
        "{stderr}"
    );
}
