//! Per-route policies end to end: the real IdP's users (alice in `admins`, bob in `sales`),
//! path tricks against a policy-protected path, methods, report mode, and hot reload under
//! concurrent requests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sekisho_tests::echo::Echoed;
use sekisho_tests::{Idp, IdpOptions, eventually, no_redirect_client, stack};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const POLICIES: &str = "policies:\n  admins-only:\n    allow:\n      and:\n        - groups: {has: admins}\n\
                        \x20       - email: {ends_with: \"@example.com\"}\n";

const ROUTES: &str = "  - id: admin\n    from: http://127.0.0.1/admin\n    to: http://{echo}\n    policy: admins-only\n\
                      \x20 - id: report\n    from: http://127.0.0.1/trial\n    to: http://{echo}\n    policy: admins-only\n    mode: report\n\
                      \x20 - id: detailed\n    from: http://127.0.0.1/detailed\n    to: http://{echo}\n    policy: admins-only\n    show_error_details: true\n\
                      \x20 - id: read-only\n    from: http://127.0.0.1/docs\n    methods: [GET, HEAD]\n    to: http://{echo}\n\
                      \x20 - id: localhost-docs\n    from: http://localhost/docs\n    methods: [GET]\n    to: http://{echo}\n\
                      \x20 - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n";

async fn get(url: &str, token: &str) -> reqwest::Response {
    no_redirect_client()
        .get(url)
        .bearer_auth(token)
        .header("accept", "application/json")
        .send()
        .await
        .expect("request")
}

/// Sends a raw HTTP/1.1 request (paths the url crate would normalise itself) and returns the
/// status code.
async fn raw_status(addr: std::net::SocketAddr, path: &str, token: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

async fn policy_stack() -> (Idp, sekisho_tests::echo::Echo, sekisho_tests::Proxy) {
    stack(IdpOptions::default(), "RS256", |o| {
        o.extra_yaml = POLICIES.to_owned();
        o.routes_yaml = ROUTES.to_owned();
    })
    .await
}

#[tokio::test]
async fn admins_pass_others_are_refused_with_a_reason() {
    let (idp, echo, proxy) = policy_stack().await;
    let (alice, bob) = (idp.bearer("alice").await, idp.bearer("bob").await);
    let ok = get(&format!("{}/admin/panel", proxy.base()), &alice).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(
        Echoed(ok.json().await.unwrap())
            .header("x-sekisho-user")
            .as_deref(),
        Some("alice")
    );

    let hits = echo.hits();
    let refused = get(&format!("{}/admin/panel", proxy.base()), &bob).await;
    assert_eq!(refused.status(), 403);
    let id = refused
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let body = refused.text().await.unwrap();
    assert!(
        body.contains(&id),
        "denial page carries the request id: {body}"
    );
    assert!(
        !body.contains("groups has"),
        "no rule details unless the route opts in: {body}"
    );
    assert_eq!(echo.hits(), hits, "the upstream never saw bob's request");
    assert!(
        proxy.logs().contains("policies.admins-only.allow.and[0]"),
        "the log names the deciding rule"
    );

    let detailed = get(&format!("{}/detailed", proxy.base()), &bob).await;
    assert_eq!(detailed.status(), 403);
    let body = detailed.text().await.unwrap();
    assert!(
        body.contains("policies.admins-only.allow.and[0] groups has"),
        "opted-in details: {body}"
    );

    // Bob may use the rest of the app.
    assert_eq!(
        get(&format!("{}/home", proxy.base()), &bob).await.status(),
        200
    );
}

#[tokio::test]
async fn path_tricks_do_not_reach_the_protected_path() {
    let (idp, echo, proxy) = policy_stack().await;
    let bob = idp.bearer("bob").await;
    for trick in [
        "/admin",
        "/admin/",
        "//admin",
        "/./admin",
        "/x/../admin",
        "/%61dmin",
        "/%2e/admin",
        "/public/%2e%2e/admin",
        "/public/..%2Fadmin",
        "/admin%2Fpanel",
        "/admin;x",
        "/%2fadmin",
        "/admin/../admin/x",
    ] {
        let hits = echo.hits();
        let status = raw_status(proxy.http, trick, &bob).await;
        assert!(
            status == 403 || status == 400 || status == 200,
            "{trick}: {status}"
        );
        if status == 200 {
            // Only a genuinely different path may pass (e.g. "/admin;x" is not under /admin).
            assert_eq!(echo.hits(), hits + 1);
        } else {
            assert_eq!(
                echo.hits(),
                hits,
                "{trick} reached the upstream with status {status}"
            );
        }
        assert!(
            !(status == 200
                && (trick.contains("admin/") || trick.ends_with("admin") && trick != "/admin;x")),
            "{trick} passed the admin policy"
        );
    }
}

#[tokio::test]
async fn methods_outside_a_route_get_405() {
    let (idp, echo, proxy) = policy_stack().await;
    let alice = idp.bearer("alice").await;
    let localhost = format!("http://localhost:{}/docs/x", proxy.http.port());
    assert_eq!(get(&localhost, &alice).await.status(), 200);
    let hits = echo.hits();
    let post = no_redirect_client()
        .post(&localhost)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        post.status(),
        405,
        "the only route for this host and path does not serve POST"
    );
    assert_eq!(echo.hits(), hits);
    // Where a less specific route serves the method, the request falls through to it.
    let post = no_redirect_client()
        .post(format!("{}/docs/x", proxy.base()))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    let echoed = Echoed(post.json().await.unwrap());
    let assertion = echoed.header("x-sekisho-jwt-assertion").unwrap();
    let payload = assertion.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], "app", "served by the catch-all route");
}

#[tokio::test]
async fn report_mode_allows_and_records_the_would_be_denial() {
    let (idp, echo, proxy) = policy_stack().await;
    let bob = idp.bearer("bob").await;
    let hits = echo.hits();
    assert_eq!(
        get(&format!("{}/trial/x", proxy.base()), &bob)
            .await
            .status(),
        200
    );
    assert_eq!(echo.hits(), hits + 1);
    eventually("the would-be denial in the log", || async {
        proxy.logs().contains("report-only policy would deny")
    })
    .await;
    // Report mode never admits an unauthenticated request.
    let anonymous = no_redirect_client()
        .get(format!("{}/trial/x", proxy.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn policies_hot_reload_without_failing_a_request() {
    let (idp, _echo, proxy) = policy_stack().await;
    let alice = idp.bearer("alice").await;
    let url = format!("{}/admin/x", proxy.base());
    assert_eq!(get(&url, &alice).await.status(), 200);

    // Hammer the proxy while the configuration changes under it.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, failures, done, url, token) = (
            stop.clone(),
            failures.clone(),
            done.clone(),
            url.clone(),
            alice.clone(),
        );
        workers.push(tokio::spawn(async move {
            let client = no_redirect_client();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status() == 200 || r.status() == 403 => {}
                    other => {
                        eprintln!("failed during reload: {other:?}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    eventually("requests flowing", || async {
        done.load(Ordering::Relaxed) > 20
    })
    .await;

    // A stricter policy: admins must also be in `sales` now.
    let original = std::fs::read_to_string(&proxy.config_path).unwrap();
    let stricter = original.replace(
        "        - groups: {has: admins}\n",
        "        - groups: {all_of: [admins, sales]}\n",
    );
    assert_ne!(stricter, original);
    sekisho_tests::write_atomically(&proxy.config_path, &stricter);
    eventually("the stricter policy to apply", || async {
        get(&url, &alice).await.status() == 403
    })
    .await;

    // An invalid file is refused with a precise error and the running set stays.
    let broken = stricter.replace("groups: {all_of: [admins, sales]}", "groups: {all_of: []}");
    sekisho_tests::write_atomically(&proxy.config_path, &broken);
    eventually("the reload error in the log", || async {
        proxy.logs().contains("configuration not reloaded")
    })
    .await;
    assert!(
        proxy.logs().contains("sekisho.yaml:"),
        "the error names the file and position:\n{}",
        proxy.logs()
    );
    assert_eq!(
        get(&url, &alice).await.status(),
        403,
        "the last valid policy still applies"
    );

    // Back to the original policy.
    sekisho_tests::write_atomically(&proxy.config_path, &original);
    eventually("the original policy to apply again", || async {
        get(&url, &alice).await.status() == 200
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(done.load(Ordering::Relaxed) > 50);
}

/// A CA and a client certificate it signed (PEM: CA cert, client cert, client key), plus the
/// client certificate's SHA-256 fingerprint (hex), made with the system's openssl.
fn client_pki() -> (String, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test client CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=laptop-42",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
    ]);
    std::fs::write(
        dir.path().join("ext.cnf"),
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "client.pem",
    ]);
    run(&[
        "x509",
        "-in",
        "client.pem",
        "-outform",
        "DER",
        "-out",
        "client.der",
    ]);
    let der = std::fs::read(dir.path().join("client.der")).unwrap();
    let fingerprint: String = ring::digest::digest(&ring::digest::SHA256, &der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    (
        read("ca.pem"),
        read("client.pem"),
        read("client.key"),
        fingerprint,
    )
}

#[tokio::test]
async fn client_certificates_are_verified_and_tested_by_policy() {
    let (ca, client_cert, client_key, fingerprint) = client_pki();
    let routes = format!(
        "  - id: devices\n    from: https://127.0.0.1/devices\n    to: http://{{echo}}\n    policy:\n      allow:\n        and:\n          \
         - authenticated_user: true\n          - client_certificate: {{fingerprint: [\"{fingerprint}\"]}}\n\
         \x20 - id: app\n    from: https://127.0.0.1\n    to: http://{{echo}}\n"
    );
    let (idp, echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.tls = true;
        o.client_ca_pem = Some(ca.clone());
        o.routes_yaml = routes;
    })
    .await;
    let alice = idp.bearer("alice").await;
    let base = proxy.tls_base().unwrap();
    let identity =
        reqwest::Identity::from_pem(format!("{client_cert}{client_key}").as_bytes()).unwrap();
    let with_cert = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .identity(identity)
        .build()
        .unwrap();
    let without_cert = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();

    let ok = with_cert
        .get(format!("{base}/devices/x"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "the enrolled device passes");
    let hits = echo.hits();
    let refused = without_cert
        .get(format!("{base}/devices/x"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        403,
        "no client certificate, no access to the device route"
    );
    assert_eq!(echo.hits(), hits);
    // Client certificates stay optional elsewhere.
    assert_eq!(
        without_cert
            .get(format!("{base}/home"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn logged_in_users_meet_the_policy_through_their_sessions() {
    let (idp, echo, proxy) = policy_stack().await;
    let alice = sekisho_tests::Agent::new();
    let login = alice
        .login(
            &format!("{}/admin/console", proxy.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    let response = alice.api(&login.landed).await;
    assert_eq!(
        response.status(),
        200,
        "alice (admins) reaches the admin console"
    );
    assert_eq!(
        Echoed(response.json().await.unwrap())
            .header("x-sekisho-user")
            .as_deref(),
        Some("alice")
    );

    let bob = sekisho_tests::Agent::new();
    let login = bob
        .login(
            &format!("{}/admin/console", proxy.base()),
            &idp.issuer,
            "bob",
            "bob-pw",
        )
        .await;
    let hits = echo.hits();
    let refused = bob.browse(&login.landed).await;
    assert_eq!(
        refused.status(),
        403,
        "bob (sales) is refused, not sent to log in again"
    );
    assert!(
        refused.text().await.unwrap().contains("<h1>403"),
        "browsers get the HTML denial page"
    );
    assert_eq!(echo.hits(), hits);
    assert_eq!(
        bob.api(&format!("{}/home", proxy.base())).await.status(),
        200
    );
}
