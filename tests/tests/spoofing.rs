//! Forged identity and forwarding headers, end to end: the real `sekisho` binary in front of the
//! echo upstream, which reports every header it received. Requests go over a raw `TcpStream`
//! so header-name spelling and non-ASCII bytes reach the proxy exactly as written. Each forged
//! header is sent beside a control header that must arrive, so a request refused or stripped
//! wholesale cannot pass for a defence.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use sekisho_tests::echo::Echoed;
use sekisho_tests::raw::{get, single};
use sekisho_tests::{Proxy, audit_records, eventually, stack};
use serde_json::Value;

/// The value of every forged header: it must not appear at the upstream under any name.
const FORGED: &str = "forged-by-the-client";

/// Identity and original-URL headers of other products (mod_auth_openidc, Pomerium, Google IAP,
/// Vouch, Authelia-style, Cloudflare Access, AWS ALB, Azure App Service, IIS, Envoy), each in
/// several spellings a peer or a CGI-style upstream would equate.
const FOREIGN_IDENTITY: &[&str] = &[
    "OIDC_CLAIM_email",
    "oidc-claim-email",
    "Oidc_Claim_Groups",
    "OIDC_access_token",
    "OIDC-Id-Token",
    "X-Pomerium-Claim-Email",
    "x_pomerium_claim_groups",
    "X-Pomerium-Jwt-Assertion",
    "X_POMERIUM_JWT_ASSERTION",
    "X-Goog-Authenticated-User-Email",
    "x_goog_authenticated_user_id",
    "X-Goog-Iap-Jwt-Assertion",
    "x_goog_iap_jwt_assertion",
    "X-Vouch-User",
    "X_Vouch_IdP_Claims_Groups",
    "X-User",
    "x_user",
    "X-Email",
    "X_EMAIL",
    "X-Remote-User",
    "X-Remote-Group",
    "x_remote_email",
    "Cf-Access-Authenticated-User-Email",
    "CF_ACCESS_JWT_ASSERTION",
    "cf-access-client-id",
    "X-Amzn-Oidc-Data",
    "x_amzn_oidc_identity",
    "X-AMZN-OIDC-ACCESSTOKEN",
    "X-Ms-Client-Principal",
    "X-MS-CLIENT-PRINCIPAL-NAME",
    "x_ms_client_principal_id",
    "X-Original-URL",
    "x_original_url",
    "X-Rewrite-URL",
    "X_REWRITE_URL",
    "X-Envoy-Original-Path",
    "x_envoy_original_path",
];

/// One header name as CGI, nginx and several frameworks read it: lower-case, `_` for `-`.
fn folded(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Asserts that no header named like `forged` (in any spelling) and no forged value reached the
/// upstream.
fn assert_absent(echoed: &Echoed, forged: &[&str], context: &str) {
    let received: Vec<String> = echoed.header_names();
    for name in forged {
        let spoofed = received.iter().find(|r| folded(r) == folded(name));
        assert!(
            spoofed.is_none(),
            "{context}: forged {name} reached the upstream as {spoofed:?}; it received {received:?}"
        );
    }
    let leaked: Vec<&String> = received
        .iter()
        .filter(|name| echoed.header_values(name).iter().any(|v| v == FORGED))
        .collect();
    assert!(
        leaked.is_empty(),
        "{context}: forged values reached the upstream under {leaked:?}"
    );
}

#[tokio::test]
async fn other_products_identity_headers_never_reach_the_upstream() {
    let (idp, echo, proxy) = stack(Default::default(), "RS256", |_| {}).await;
    let token = idp.bearer("alice").await;
    let authorization = format!("Bearer {token}");
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("Authorization", authorization.as_bytes()),
        ("X-Control", b"arrives"),
        // Close relatives of the stripped names that are nobody's identity header.
        ("X-Userland", b"arrives"),
        ("X-Goog-Api-Client", b"arrives"),
    ];
    headers.extend(FOREIGN_IDENTITY.iter().map(|n| (*n, FORGED.as_bytes())));
    let hits = echo.hits();
    let response = single(proxy.http, &get(&proxy, "/whoami", &headers)).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(echo.hits(), hits + 1);
    let echoed = response.echoed();
    assert_absent(&echoed, FOREIGN_IDENTITY, "built-in list");
    for control in ["x-control", "x-userland", "x-goog-api-client"] {
        assert_eq!(
            echoed.header(control).as_deref(),
            Some("arrives"),
            "control header {control}"
        );
    }
    // sekisho's own identity headers are the only ones that say who the user is.
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));
}

#[tokio::test]
async fn configured_names_are_stripped_globally_and_per_route() {
    let (idp, _echo, proxy) = stack(Default::default(), "RS256", |o| {
        o.extra_yaml = "strip_request_headers: [X-Legacy-User, X-Corp-*]\n".to_owned();
        o.routes_yaml = "  - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n    \
                         strip_request_headers: [X-Route-Secret, X-Team-*]\n\
                         \x20 - id: plain\n    from: http://127.0.0.1/plain\n    to: http://{echo}\n"
            .to_owned();
    })
    .await;
    let token = idp.bearer("alice").await;
    let authorization = format!("Bearer {token}");
    let global = [
        "X-Legacy-User",
        "x_legacy_user",
        "X-Corp-Role",
        "X_CORP_TEAM",
    ];
    let per_route = ["X-Route-Secret", "x_route_secret", "X-Team-Lead"];
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("Authorization", authorization.as_bytes()),
        ("X-Corporate", b"arrives"),
    ];
    headers.extend(global.iter().map(|n| (*n, FORGED.as_bytes())));
    headers.extend(per_route.iter().map(|n| (*n, &b"route-only"[..])));

    let on_app = single(proxy.http, &get(&proxy, "/app", &headers)).await;
    assert_eq!(on_app.status, 200, "{on_app:?}");
    let echoed = on_app.echoed();
    assert_absent(&echoed, &global, "global names on route app");
    assert_absent(&echoed, &per_route, "route app's own names");
    assert_eq!(echoed.header("x-corporate").as_deref(), Some("arrives"));

    let on_plain = single(proxy.http, &get(&proxy, "/plain/x", &headers)).await;
    assert_eq!(on_plain.status, 200, "{on_plain:?}");
    let echoed = on_plain.echoed();
    assert_eq!(echoed.path(), "/plain/x");
    assert_absent(&echoed, &global, "global names on route plain");
    // Route app's names are app's alone.
    for name in ["x-route-secret", "x_route_secret", "x-team-lead"] {
        assert_eq!(
            echoed.header(name).as_deref(),
            Some("route-only"),
            "{name} on route plain: {:?}",
            echoed.header_names()
        );
    }
    assert_eq!(echoed.header("x-corporate").as_deref(), Some("arrives"));
}

/// A stack behind a trusted balancer at 127.0.0.1 (and a trusted internal proxy range 10/8)
/// whose only route lets internal clients (127/8, 10/8) in without signing in.
async fn internal_only_stack() -> (sekisho_tests::Idp, sekisho_tests::echo::Echo, Proxy) {
    stack(Default::default(), "RS256", |o| {
        o.server_yaml = "  trusted_proxies: [127.0.0.1, 10.0.0.0/8]\n".to_owned();
        o.routes_yaml = "  - id: internal\n    from: http://127.0.0.1\n    to: http://{echo}\n    \
                         policy:\n      allow:\n        or:\n          \
                         - source_ip: [127.0.0.0/8, 10.0.0.0/8]\n"
            .to_owned();
    })
    .await
}

#[tokio::test]
async fn a_dual_stack_listener_sees_ipv4_clients_as_ipv4() {
    // On `[::]` the kernel hands sekisho IPv4 peers as `::ffff:127.0.0.1`: the trusted proxy
    // `127.0.0.1` must still be recognised, and the audit record must name the client as IPv4,
    // not as forwarded through its own mapped address.
    let (_idp, echo, proxy) = stack(Default::default(), "RS256", |o| {
        o.http_listen = "[::]:0".to_owned();
        o.server_yaml = "  trusted_proxies: [127.0.0.1]\n".to_owned();
        o.routes_yaml = "  - id: internal\n    from: http://127.0.0.1\n    to: http://{echo}\n    \
                         policy:\n      allow:\n        or:\n          \
                         - source_ip: [203.0.113.0/24, 127.0.0.1/32]\n"
            .to_owned();
    })
    .await;
    let url = format!("http://127.0.0.1:{}/x", proxy.http.port());
    let client = reqwest::Client::new();
    let direct = client.get(&url).send().await.unwrap();
    assert_eq!(direct.status(), 200);
    let direct_id = direct.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let forwarded = client
        .get(&url)
        .header("x-forwarded-for", "203.0.113.5")
        .send()
        .await
        .unwrap();
    assert_eq!(
        forwarded.status(),
        200,
        "the mapped peer is the trusted 127.0.0.1"
    );
    let forwarded_id = forwarded.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(echo.hits(), 2);

    let record = http_record(&proxy, &direct_id).await;
    assert_eq!(record["src_endpoint"]["ip"], "127.0.0.1", "{record}");
    assert!(
        record["src_endpoint"].get("intermediate_ips").is_none(),
        "{record}"
    );
    assert!(
        record["src_endpoint"]["port"].as_u64().is_some(),
        "{record}"
    );
    let record = http_record(&proxy, &forwarded_id).await;
    assert_eq!(record["src_endpoint"]["ip"], "203.0.113.5", "{record}");
    assert_eq!(
        record["src_endpoint"]["intermediate_ips"],
        serde_json::json!(["127.0.0.1"]),
        "{record}"
    );
}

/// The HTTP Activity record of request `id`, once it is written.
async fn http_record(proxy: &Proxy, id: &str) -> Value {
    let dir = proxy.audit_dir();
    let mut found = None;
    eventually(&format!("the audit record of {id}"), || {
        found = audit_records(&dir)
            .into_iter()
            .find(|r| r["class_uid"] == 4002 && r["http_request"]["uid"] == id);
        std::future::ready(found.is_some())
    })
    .await;
    found.unwrap()
}

/// `X-Forwarded-For` lines as sent by the balancer, the expected status, and the expected client
/// address (`None`: refused before a client could be named).
struct XffCase(&'static [&'static [u8]], u16, Option<&'static str>);

#[tokio::test]
async fn x_forwarded_for_names_the_client_or_is_refused() {
    let (_idp, echo, proxy) = internal_only_stack().await;
    // (X-Forwarded-For lines as sent by the balancer, expected status, expected client address;
    // None: refused before a client could be named).
    let cases: &[XffCase] = &[
        // Controls: an internal client is let in, an outside one is not.
        XffCase(&[b"127.0.0.5"], 200, Some("127.0.0.5")),
        XffCase(&[b"203.0.113.5"], 401, Some("203.0.113.5")),
        // The client's own non-ASCII entry must not make the balancer's line disappear.
        XffCase(&[b"\xf1, 203.0.113.5"], 401, Some("203.0.113.5")),
        XffCase(&[b"\xf1", b"203.0.113.5"], 401, Some("203.0.113.5")),
        // A balancer that writes ip:port: its entry is the client, not the forged one to its left.
        XffCase(&[b"127.0.0.5, 203.0.113.5:4711"], 401, Some("203.0.113.5")),
        XffCase(
            &[b"127.0.0.5, [2001:db8::1]:4711"],
            401,
            Some("2001:db8::1"),
        ),
        XffCase(
            &[b"203.0.113.5, [::ffff:127.0.0.5]:80"],
            200,
            Some("127.0.0.5"),
        ),
        XffCase(&[b"127.0.0.5,[2001:db8::7]"], 401, Some("2001:db8::7")),
        // A v4-mapped trusted proxy is the trusted proxy.
        XffCase(&[b"203.0.113.5, ::ffff:10.0.0.1"], 401, Some("203.0.113.5")),
        XffCase(&[b"203.0.113.5, 10.0.0.1:8080"], 401, Some("203.0.113.5")),
        // The client entry is not an address: the client cannot be known.
        XffCase(&[b"127.0.0.5, unknown"], 400, None),
        XffCase(&[b"\xf1"], 400, None),
        XffCase(&[b"127.0.0.5, 203.0.113.5 \xf1"], 400, None),
        XffCase(&[b"127.0.0.5, 10.0.0.1:99999"], 400, None),
        // Every entry trusted: the left-most is the client.
        XffCase(&[b"10.0.0.7, 10.0.0.1"], 200, Some("10.0.0.7")),
    ];
    for XffCase(lines, status, client) in cases {
        let shown: Vec<String> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let mut headers: Vec<(&str, &[u8])> =
            lines.iter().map(|l| ("X-Forwarded-For", *l)).collect();
        headers.push(("X-Control", b"arrives"));
        let hits = echo.hits();
        let response = single(proxy.http, &get(&proxy, "/", &headers)).await;
        assert_eq!(
            response.status, *status,
            "X-Forwarded-For {shown:?}: {response:?}"
        );
        let reached = usize::from(*status == 200);
        assert_eq!(echo.hits(), hits + reached, "X-Forwarded-For {shown:?}");
        if *status == 200 {
            let echoed = response.echoed();
            assert_eq!(echoed.header("x-control").as_deref(), Some("arrives"));
            let chain = echoed.header("x-forwarded-for").unwrap_or_default();
            let expected = client.unwrap();
            assert!(
                chain.starts_with(expected) && chain.ends_with("127.0.0.1"),
                "X-Forwarded-For {shown:?}: upstream got {chain:?}"
            );
        }
        let id = response
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no request id: {response:?}"))
            .to_owned();
        let record = http_record(&proxy, &id).await;
        match client {
            Some(client) => {
                assert_eq!(
                    record["src_endpoint"]["ip"], *client,
                    "X-Forwarded-For {shown:?}: {record}"
                );
                assert_eq!(record["src_endpoint"]["intermediate_ips"][0], "127.0.0.1");
            }
            None => {
                assert_eq!(record["http_response"]["code"], 400, "{record}");
                let detail = record["status_detail"].as_str().unwrap_or_default();
                assert!(
                    detail.contains("X-Forwarded-For"),
                    "X-Forwarded-For {shown:?}: {record}"
                );
            }
        }
    }
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_not_believed() {
    let (_idp, echo, proxy) = stack(Default::default(), "RS256", |o| {
        o.routes_yaml = "  - id: internal\n    from: http://127.0.0.1\n    to: http://{echo}\n    \
                         policy:\n      allow:\n        or:\n          \
                         - source_ip: [127.0.0.0/8]\n"
            .to_owned();
    })
    .await;
    for xff in [&b"203.0.113.5"[..], b"unknown", b"\xf1"] {
        let hits = echo.hits();
        let response = single(
            proxy.http,
            &get(
                &proxy,
                "/",
                &[("X-Forwarded-For", xff), ("X-Control", b"arrives")],
            ),
        )
        .await;
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(echo.hits(), hits + 1);
        let echoed = response.echoed();
        assert_eq!(
            echoed.header("x-forwarded-for").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(echoed.header("x-control").as_deref(), Some("arrives"));
    }
}

#[tokio::test]
async fn connection_listed_headers_go_even_beside_a_non_ascii_token() {
    let (idp, _echo, proxy) = stack(Default::default(), "RS256", |_| {}).await;
    let token = idp.bearer("alice").await;
    let authorization = format!("Bearer {token}");
    let response = single(
        proxy.http,
        &get(
            &proxy,
            "/",
            &[
                ("Authorization", authorization.as_bytes()),
                ("Connection", b"\xe7, x-secret"),
                ("Connection", b"x-other\xff,X-Third"),
                ("X-Secret", b"hop-by-hop"),
                ("X-Third", b"hop-by-hop"),
                ("X-Control", b"arrives"),
            ],
        ),
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    let echoed = response.echoed();
    assert_eq!(
        echoed.header("x-secret"),
        None,
        "{:?}",
        echoed.header_names()
    );
    assert_eq!(
        echoed.header("x-third"),
        None,
        "{:?}",
        echoed.header_names()
    );
    assert_eq!(echoed.header("x-control").as_deref(), Some("arrives"));
}
