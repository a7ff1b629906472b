//! Attacks on every security rule, end to end: the real `sekisho` binary in front of the echo
//! upstream, logging users in at the real OpenID provider. Each test attacks one rule and, next
//! to each refusal, sends a control request that differs only by the attack and must succeed,
//! so a refusal for the wrong reason cannot pass for a defence. "Never reached the upstream" is
//! the echo server's hit counter, read before and after.
//!
//! Requests whose exact bytes matter (header-name case, dot segments, backslashes, duplicated or
//! conflicting framing headers) go over a raw `TcpStream`: reqwest and the `url` crate would
//! normalise them before they reached the proxy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sekisho::seal::Sealer;
use sekisho::session::{CookieCodec, SessionState, unix_now};
use sekisho_tests::echo::{Echo, Echoed};
use sekisho_tests::raw::{self, RawResponse, exchange, get, single};
use sekisho_tests::{Agent, Idp, IdpOptions, Pending, Proxy, location, no_redirect_client, stack};
use serde_json::{Value, json};

/// The session cookie's name on plain HTTP.
const SESSION: &str = "_sekisho";

// ---------------------------------------------------------------------------------------------
// 1. Open redirects through `/.sekisho/login?rd=`

/// A stack whose configuration allows one extra return origin.
async fn redirect_stack() -> (Idp, Echo, Proxy) {
    stack(IdpOptions::default(), "RS256", |o| {
        o.extra_yaml = "allowed_redirect_origins: [https://portal.example.com]\n".to_owned();
    })
    .await
}

/// `{base}/.sekisho/login?rd=VALUE`, `VALUE` form-encoded exactly once.
fn login_url(proxy: &Proxy, rd: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    format!("{}/.sekisho/login?rd={encoded}", proxy.base())
}

/// Every return target that leaves the proxy's origin, hides another host, or is not a URL.
fn open_redirect_vectors(proxy: &Proxy, other: SocketAddr) -> Vec<String> {
    let port = proxy.http.port();
    let mut vectors: Vec<String> = [
        "//evil.com",
        "//evil.com/path",
        "///evil.com",
        "/\\evil.com",
        "\\\\evil.com",
        "/%2F%2Fevil.com",
        "/%2fevil.com",
        "%2F%2Fevil.com",
        "/%5Cevil.com",
        "/%252F%252Fevil.com",
        "/%25252F%25252Fevil.com",
        "https://evil.com",
        "https://evil.com/",
        "https://127.0.0.1.evil.com/",
        "https://127.0.0.1@evil.com/",
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "/\r\nLocation: https://evil.com",
        "/%0D%0ALocation:%20https://evil.com",
        "/\tevil.com",
        "/\t/evil.com",
        " //evil.com",
        "/.//evil.com",
        "/x/..//evil.com",
        "/%2e%2e//evil.com",
        "evil.com",
        "https://portal.example.com.evil.com/",
    ]
    .iter()
    .map(|v| (*v).to_owned())
    .collect();
    vectors.extend([
        format!("https://user:pw@127.0.0.1:{port}/"),
        format!("http://user:pw@127.0.0.1:{port}/"),
        format!("http://127.0.0.1:{port}@evil.com/"),
        format!("http://127.0.0.1.evil.com:{port}/"),
        format!("https://127.0.0.1:{port}/"),
        format!("http://{other}/"),
        format!("http://{other}@127.0.0.1:{port}/"),
    ]);
    vectors
}

/// Asserts a refused return target: 400, no `Location`, no login flow started.
async fn assert_refused_target(agent: &Agent, proxy: &Proxy, rd: &str) {
    let response = agent.browse(&login_url(proxy, rd)).await;
    let status = response.status();
    assert_eq!(status, 400, "rd={rd:?} answered {status}");
    assert!(
        response.headers().get("location").is_none(),
        "rd={rd:?} got a Location: {:?}",
        response.headers().get("location")
    );
    let flows: Vec<_> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.contains("_flow_"))
        .collect();
    assert!(
        flows.is_empty(),
        "rd={rd:?} started a login flow: {flows:?}"
    );
}

#[tokio::test]
async fn open_redirect_vectors_are_refused_before_and_after_login() {
    let (idp, echo, proxy) = redirect_stack().await;
    let vectors = open_redirect_vectors(&proxy, echo.addr);

    let anonymous = Agent::new();
    for rd in &vectors {
        assert_refused_target(&anonymous, &proxy, rd).await;
    }
    // Control: the same request with a good target starts a login at the IdP.
    let good = anonymous.browse(&login_url(&proxy, "/ok?x=1")).await;
    assert_eq!(good.status(), 302);
    assert!(location(&good, &proxy.base()).starts_with(&idp.issuer));

    // Signed in, a good target is a redirect straight back; bad ones are still refused.
    let signed_in = Agent::new();
    signed_in
        .login(
            &format!("{}/", proxy.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    for rd in &vectors {
        assert_refused_target(&signed_in, &proxy, rd).await;
    }
    let back = signed_in.browse(&login_url(&proxy, "/ok?x=1")).await;
    assert_eq!(back.status(), 302);
    assert_eq!(
        back.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/ok?x=1")
    );
    assert_eq!(echo.hits(), 0, "a login request reached the upstream");
}

#[tokio::test]
async fn good_return_targets_log_in_and_land_where_asked() {
    let (idp, _echo, proxy) = redirect_stack().await;
    let base = proxy.base();
    let cases = [
        ("/ok?x=1".to_owned(), format!("{base}/ok?x=1")),
        (format!("{base}/x?y=1"), format!("{base}/x?y=1")),
        (
            "https://portal.example.com/home".to_owned(),
            "https://portal.example.com/home".to_owned(),
        ),
    ];
    for (rd, expected) in cases {
        // A fresh browser each time: the IdP would log a second login in silently.
        let agent = Agent::new();
        let login = agent
            .login(&login_url(&proxy, &rd), &idp.issuer, "alice", "alice-pw")
            .await;
        assert_eq!(login.landed, expected, "rd={rd:?}");
    }
}

#[tokio::test]
async fn a_login_started_at_a_scheme_relative_path_lands_on_the_same_origin() {
    let (idp, _echo, proxy) = redirect_stack().await;
    let base = proxy.base();
    for (start, expected) in [
        (format!("{base}//evil.com/x"), "/evil.com/x"),
        (format!("{base}///evil.com/x?a=b"), "/evil.com/x?a=b"),
        (format!("{base}/.//evil.com/x"), "/evil.com/x"),
    ] {
        let agent = Agent::new();
        let callback = agent
            .until_callback(&start, &idp.issuer, "alice", "alice-pw")
            .await
            .callback;
        let done = agent.browse(&callback).await;
        assert_eq!(done.status(), 302, "callback for {start}");
        let raw = done
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            raw, expected,
            "login started at {start} returned to {raw:?}"
        );
        let landed = url::Url::parse(&callback).unwrap().join(&raw).unwrap();
        assert_eq!(
            landed.origin(),
            url::Url::parse(&base).unwrap().origin(),
            "left the origin: {landed}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Spoofed identity and forwarding headers

/// Headers a client may send to impersonate someone or to fake where it came from, in the exact
/// spelling sent on the wire.
const SPOOFED: [(&str, &str); 22] = [
    ("X-Sekisho-User", "mallory"),
    ("x_sekisho_user", "mallory"),
    ("X-SEKISHO-EMAIL", "mallory@evil.com"),
    ("X-Sekisho-Groups", "admins"),
    ("X_Sekisho_Groups", "mallory-admins"),
    ("X-Sekisho-Jwt-Assertion", "forged"),
    ("X-Forwarded-User", "mallory"),
    ("X_Forwarded_Email", "mallory@evil.com"),
    ("X-Auth-Request-User", "mallory"),
    ("X-Auth-Request-Email", "mallory@evil.com"),
    ("X-Remote-User", "mallory"),
    ("Remote-User", "mallory"),
    ("remote_user", "mallory"),
    ("X-Forwarded-For", "1.2.3.4"),
    ("X-Forwarded-Host", "evil"),
    ("X-Forwarded-Proto", "https"),
    ("Forwarded", "for=1.2.3.4;host=evil;proto=https"),
    ("X-Real-IP", "1.2.3.4"),
    ("X-Client-IP", "1.2.3.4"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("X-Request-Id", "forged"),
];

/// Header names (as the upstream's lower-casing server reports them) that must not arrive.
const MUST_NOT_ARRIVE: [&str; 15] = [
    "x_sekisho_user",
    "x_sekisho_groups",
    "x-forwarded-user",
    "x_forwarded_email",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-remote-user",
    "remote-user",
    "remote_user",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "authorization",
];

/// Sends the spoofed headers with `credential` (a `Cookie` or `Authorization` line, if any).
async fn spoofed_request(
    proxy: &Proxy,
    credential: Option<(&str, &str)>,
    accept: &str,
) -> RawResponse {
    let mut headers: Vec<(&str, &str)> = vec![("Accept", accept)];
    headers.extend(credential);
    headers.extend(SPOOFED);
    single(proxy.http, &get(proxy, "/whoami", &headers)).await
}

/// Asserts the upstream saw exactly alice's identity, the proxy's own forwarding facts, and no
/// trace of the spoofed values.
async fn assert_only_alice(proxy: &Proxy, echoed: &Echoed, audience: &str) {
    assert_eq!(echoed.path(), "/whoami", "X-Original-URL changed the path");
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));
    assert_eq!(
        echoed.header("x-sekisho-email").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        echoed.header("x-sekisho-groups").as_deref(),
        Some("eng,admins")
    );
    assert_eq!(
        echoed.header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(echoed.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        echoed.header("x-forwarded-host"),
        Some(proxy.http.to_string())
    );
    let assertion = echoed
        .header("x-sekisho-jwt-assertion")
        .expect("assertion header");
    let claims = verified_assertion(proxy, &assertion, audience).await;
    assert_eq!(claims["sub"], "alice");
    let names = echoed.header_names();
    for name in MUST_NOT_ARRIVE {
        assert!(
            !names.iter().any(|n| n == name),
            "{name} reached the upstream: {names:?}"
        );
    }
    let request_id = echoed.header("x-request-id").expect("request id");
    assert_ne!(request_id, "forged");
    for (name, value) in headers_of(echoed) {
        // The assertion is checked by signature above; its base64 could spell anything.
        if name == "x-sekisho-jwt-assertion" {
            continue;
        }
        for needle in ["mallory", "forged", "1.2.3.4", "evil"] {
            assert!(
                !value.contains(needle),
                "{name}: {value:?} carries the spoofed {needle:?}"
            );
        }
    }
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    // `app` needs a signed-in user (the default policy); `public` lets anyone GET.
    let (idp, echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.routes_yaml =
            "  - id: public\n    from: http://127.0.0.1/public\n    to: http://{echo}\n    \
                         policy:\n      allow:\n        or:\n          - http_method: {in: [GET]}\n\
                         \x20 - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n"
                .to_owned();
    })
    .await;

    // Anonymous: refused, and the upstream never hears of it.
    for accept in ["application/json", "text/html"] {
        let refused = spoofed_request(&proxy, None, accept).await;
        let expected = if accept == "text/html" { 302 } else { 401 };
        assert_eq!(
            refused.status, expected,
            "anonymous spoofed request ({accept})"
        );
    }
    assert_eq!(
        echo.hits(),
        0,
        "an anonymous spoofed request reached the upstream"
    );

    // A route open to anonymous users forwards the request, but no identity at all: not the
    // spoofed one, and no proxy-made one either.
    let mut headers: Vec<(&str, &str)> = vec![("Accept", "application/json")];
    headers.extend(SPOOFED);
    let response = single(proxy.http, &get(&proxy, "/public/page", &headers)).await;
    assert_eq!(
        response.status, 200,
        "anonymous GET on the public route: {response:?}"
    );
    let echoed = response.echoed();
    assert_eq!(echoed.path(), "/public/page");
    let names = echoed.header_names();
    for name in MUST_NOT_ARRIVE {
        assert!(
            !names.iter().any(|n| n == name),
            "{name} reached the upstream: {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.starts_with("x-sekisho-")),
        "identity headers for an anonymous request: {names:?}"
    );
    assert_eq!(
        echoed.header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(echoed.header("x-forwarded-proto").as_deref(), Some("http"));
    for needle in ["mallory", "forged", "1.2.3.4", "evil"] {
        assert_no_value_contains(&echoed, needle);
    }
    assert_eq!(echo.hits(), 1);

    // A session: alice's identity, whatever the client claims.
    let agent = Agent::new();
    agent
        .login(
            &format!("{}/", proxy.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    let cookie = session_cookie_line(&agent);
    let response = spoofed_request(&proxy, Some(("Cookie", &cookie)), "application/json").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_only_alice(&proxy, &response.echoed(), "app").await;

    // A bearer token: the same, and the token itself stays at the proxy.
    let token = idp
        .token(&[
            ("sub", "alice"),
            ("aud", "sekisho"),
            ("alg", "RS256"),
            ("ttl", "300"),
        ])
        .await;
    let authorization = format!("Bearer {token}");
    let response = spoofed_request(
        &proxy,
        Some(("Authorization", &authorization)),
        "application/json",
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    let echoed = response.echoed();
    assert_only_alice(&proxy, &echoed, "app").await;
    for (name, value) in headers_of(&echoed) {
        assert!(
            !value.contains(&token),
            "the bearer token reached the upstream in {name}"
        );
    }
    assert_eq!(echo.hits(), 3);
}

#[tokio::test]
async fn configured_identity_header_names_are_stripped_and_replaced() {
    let (idp, echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.extra_yaml = "identity_headers:\n  user: X-Corp-User\n".to_owned();
        o.routes_yaml = "  - id: noid\n    from: http://127.0.0.1/noid\n    to: http://{echo}\n    pass_identity_headers: false\n\
                         \x20 - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n"
            .to_owned();
    })
    .await;
    let token = idp
        .token(&[
            ("sub", "alice"),
            ("aud", "sekisho"),
            ("alg", "ES256"),
            ("ttl", "300"),
        ])
        .await;
    let authorization = format!("Bearer {token}");
    let spoofed = [
        ("Authorization", authorization.as_str()),
        ("X-Corp-User", "mallory"),
        ("x_corp_user", "mallory"),
        ("X-CORP-USER", "mallory"),
        ("X-Sekisho-User", "mallory"),
        ("X-Sekisho-Email", "mallory@evil.com"),
    ];

    let response = single(proxy.http, &get(&proxy, "/x", &spoofed)).await;
    assert_eq!(response.status, 200, "{response:?}");
    let echoed = response.echoed();
    assert_eq!(
        echoed.header("x-corp-user").as_deref(),
        Some("alice"),
        "the configured header carries the identity, once"
    );
    assert_eq!(
        echoed.header("x-sekisho-user"),
        None,
        "the default user header is not sent when renamed"
    );
    assert_eq!(
        echoed.header("x-sekisho-email").as_deref(),
        Some("alice@example.com")
    );
    assert!(!echoed.header_names().iter().any(|n| n == "x_corp_user"));
    assert_no_value_contains(&echoed, "mallory");

    // A route that passes no identity still strips every spoofed one.
    let response = single(proxy.http, &get(&proxy, "/noid/x", &spoofed)).await;
    assert_eq!(response.status, 200, "{response:?}");
    let echoed = response.echoed();
    for name in echoed.header_names() {
        assert!(
            !name.contains("corp") && !name.starts_with("x-sekisho"),
            "{name} reached an upstream that takes no identity"
        );
    }
    assert_no_value_contains(&echoed, "mallory");
    assert_eq!(echo.hits(), 2);
}

// ---------------------------------------------------------------------------------------------
// 3. Tampered and forged session cookies

/// Sends `cookies` as an API client and as a browser: expects 401 and a redirect to the IdP,
/// never an error page, and no upstream hit.
async fn assert_cookie_refused(
    proxy: &Proxy,
    idp: &Idp,
    echo: &Echo,
    cookies: &[(&str, String)],
    what: &str,
) {
    let hits = echo.hits();
    let jar: BTreeMap<String, String> = cookies
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let url = format!("{}/private", proxy.base());

    let api = Agent::new();
    api.set_cookies(jar.clone());
    let response = api.api(&url).await;
    assert_eq!(
        response.status(),
        401,
        "{what}: API request answered {}",
        response.status()
    );

    let browser = Agent::new();
    browser.set_cookies(jar);
    let response = browser.browse(&url).await;
    assert_eq!(
        response.status(),
        302,
        "{what}: browser request answered {}",
        response.status()
    );
    let to = location(&response, &url);
    assert!(
        to.starts_with(&idp.issuer),
        "{what}: browser sent to {to}, not the IdP"
    );
    assert_eq!(echo.hits(), hits, "{what}: reached the upstream");
}

/// Sends `cookies` as an API client; expects 200 and returns what the upstream saw.
async fn accepted_cookie(proxy: &Proxy, cookies: &[(&str, String)], what: &str) -> Echoed {
    let agent = Agent::new();
    agent.set_cookies(
        cookies
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    );
    let response = agent.api(&format!("{}/private", proxy.base())).await;
    assert_eq!(
        response.status(),
        200,
        "{what}: control request answered {}",
        response.status()
    );
    Echoed(response.json().await.unwrap())
}

/// `value` with bit 0 of byte `index` (of the decoded bytes) flipped.
fn flip_byte(value: &str, index: usize) -> String {
    let mut raw = URL_SAFE_NO_PAD
        .decode(value)
        .expect("session cookie is base64url");
    raw[index] ^= 0x01;
    URL_SAFE_NO_PAD.encode(raw)
}

#[tokio::test]
async fn tampered_session_cookies_are_refused() {
    let (idp, echo, proxy) = stack(IdpOptions::default(), "ES256", |_| {}).await;
    let agent = Agent::new();
    agent
        .login(
            &format!("{}/", proxy.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    let real = agent
        .cookies()
        .get(SESSION)
        .cloned()
        .expect("session cookie after login");
    let len = URL_SAFE_NO_PAD.decode(&real).unwrap().len();

    // Control: the untouched value, alone in a fresh jar, is alice's session.
    let echoed = accepted_cookie(&proxy, &[(SESSION, real.clone())], "real cookie").await;
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));

    // Nonce, first and last ciphertext byte, the middle, the tag.
    for index in [0, 11, 12, len / 2, len - 17, len - 16, len - 1] {
        assert_cookie_refused(
            &proxy,
            &idp,
            &echo,
            &[(SESSION, flip_byte(&real, index))],
            &format!("byte {index} flipped"),
        )
        .await;
    }
    let last_char = if real.ends_with('A') { "B" } else { "A" };
    let mut swapped = real.clone();
    swapped.replace_range(real.len() - 1.., last_char);
    let garbage = [
        ("last character changed", swapped),
        ("one character cut", real[..real.len() - 1].to_owned()),
        ("cut in half", real[..real.len() / 2].to_owned()),
        ("nonce only", real[..16].to_owned()),
        ("doubled", format!("{real}{real}")),
        ("base64 garbage", URL_SAFE_NO_PAD.encode([0x41u8; 64])),
        ("not base64", "not-base64!!".to_owned()),
        (
            "standard base64",
            STANDARD.encode(URL_SAFE_NO_PAD.decode(&real).unwrap()),
        ),
        ("percent-encoded NULs", "%00%00%00".to_owned()),
        ("empty", String::new()),
        ("long", "A".repeat(3000)),
    ];
    for (what, value) in garbage {
        assert_cookie_refused(&proxy, &idp, &echo, &[(SESSION, value)], what).await;
    }

    // The chunked shape: the real value split in two is accepted (control), tampered chunks,
    // garbage chunks, a missing or skipped chunk are not.
    let (head, tail) = real.split_at(real.len() / 2);
    let names: Vec<String> = (0..3).map(|i| format!("{SESSION}_{i}")).collect();
    let (c0, c1, c2) = (names[0].as_str(), names[1].as_str(), names[2].as_str());
    let echoed = accepted_cookie(
        &proxy,
        &[(c0, head.to_owned()), (c1, tail.to_owned())],
        "real value in two chunks",
    )
    .await;
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));
    let mut tampered_tail = tail.to_owned();
    tampered_tail.replace_range(..1, if tail.starts_with('A') { "B" } else { "A" });
    let chunked: [(&str, Vec<(&str, String)>); 5] = [
        (
            "tampered second chunk",
            vec![(c0, head.to_owned()), (c1, tampered_tail)],
        ),
        (
            "garbage chunks",
            vec![(c0, "garbage".to_owned()), (c1, "more-garbage".to_owned())],
        ),
        ("second chunk only", vec![(c1, tail.to_owned())]),
        ("first chunk only", vec![(c0, head.to_owned())]),
        (
            "a chunk skipped",
            vec![(c0, head.to_owned()), (c2, tail.to_owned())],
        ),
    ];
    for (what, cookies) in chunked {
        assert_cookie_refused(&proxy, &idp, &echo, &cookies, what).await;
    }
}

/// A session cookie value for `sub`, sealed with `key` the way sekisho seals its own. The state
/// is built from JSON so fields added later with defaults keep this forgery well-formed.
fn sealed_session(key: &[u8], issuer: &str, sub: &str, login_at: u64, seen_at: u64) -> String {
    let sealer = Sealer::new([key]).expect("sealer");
    let mut sid = [0u8; 16];
    sealer.random(&mut sid).expect("random");
    let state: SessionState = serde_json::from_value(json!({
        "sid": URL_SAFE_NO_PAD.encode(sid),
        "identity": {
            "sub": sub,
            "email": format!("{sub}@example.com"),
            "name": null,
            "groups": ["admins"],
            "issuer": issuer,
        },
        "login_at": login_at,
        "seen_at": seen_at,
        "tokens_expire_at": null,
        "refresh_token": null,
        "id_token": null,
    }))
    .expect("session state JSON");
    let set_cookies = CookieCodec::new(SESSION, false)
        .write(&sealer, &state, Duration::from_secs(3600))
        .expect("sealing");
    let first = set_cookies[0].to_str().expect("Set-Cookie text");
    let pair = first.split(';').next().expect("cookie pair");
    let (name, value) = pair.split_once('=').expect("name=value");
    assert_eq!(name, SESSION, "a small session fits one cookie");
    value.to_owned()
}

#[tokio::test]
async fn forged_session_cookies_need_the_key_and_live_lifetimes() {
    let (idp, echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.session_yaml = "  absolute_lifetime: 2h\n  idle_lifetime: 30m\n".to_owned();
    })
    .await;
    let now = unix_now();
    let hour = 3600;

    // Control: with the proxy's real key and live times, the forgery works — so the refusals
    // below are down to the key and the clock, not to a malformed cookie.
    let control = sealed_session(
        &proxy.cookie_key,
        &idp.issuer,
        "mallory",
        now - 60,
        now - 60,
    );
    let echoed = accepted_cookie(
        &proxy,
        &[(SESSION, control)],
        "live session sealed with the real key",
    )
    .await;
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("mallory"));

    let mut foreign_key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut foreign_key).unwrap();
    let forged = [
        (
            "sealed with another key",
            sealed_session(&foreign_key, &idp.issuer, "mallory", now - 60, now - 60),
        ),
        (
            "past the absolute lifetime",
            sealed_session(
                &proxy.cookie_key,
                &idp.issuer,
                "alice",
                now - 3 * hour,
                now - 60,
            ),
        ),
        (
            "long past the absolute lifetime",
            sealed_session(&proxy.cookie_key, &idp.issuer, "alice", 1, now - 60),
        ),
        (
            "idle too long",
            sealed_session(
                &proxy.cookie_key,
                &idp.issuer,
                "alice",
                now - hour,
                now - hour,
            ),
        ),
    ];
    for (what, value) in forged {
        assert_cookie_refused(&proxy, &idp, &echo, &[(SESSION, value)], what).await;
    }

    // A login-flow cookie (sealed by the same key, for another purpose) is no session.
    let starter = Agent::new();
    let started = starter.browse(&format!("{}/", proxy.base())).await;
    assert_eq!(started.status(), 302);
    let flow = starter
        .cookies()
        .into_iter()
        .find(|(name, _)| name.starts_with("_sekisho_flow_"))
        .map(|(_, value)| value)
        .expect("flow cookie after a login start");
    assert_cookie_refused(
        &proxy,
        &idp,
        &echo,
        &[(SESSION, flow)],
        "login-flow cookie as session",
    )
    .await;
}

#[tokio::test]
async fn session_cookies_of_either_scheme_never_reach_the_upstream() {
    // The same host served over http and https: the plain codec's `_sekisho` cookies carry no
    // `Secure`, so a browser sends them over https too, where the session is `__Host-_sekisho`.
    let (idp, echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.tls = true;
        o.routes_yaml
            .push_str("  - id: app-tls\n    from: https://127.0.0.1\n    to: http://{echo}\n");
    })
    .await;
    let tls_base = proxy.tls_base().expect("TLS listener");
    let plain = Agent::new();
    plain
        .login(
            &format!("{}/", proxy.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    let secure = Agent::new();
    secure
        .login(&format!("{tls_base}/"), &idp.issuer, "alice", "alice-pw")
        .await;
    let started = Agent::new();
    assert_eq!(
        started.browse(&format!("{}/", proxy.base())).await.status(),
        302
    );

    // One browser holding all of them, plus a cookie of the application's own.
    let mut jar: BTreeMap<String, String> = BTreeMap::new();
    for agent in [&plain, &secure, &started] {
        jar.extend(
            agent
                .cookies()
                .into_iter()
                .filter(|(name, _)| name.contains("_sekisho")),
        );
    }
    assert!(
        jar.contains_key(SESSION) && jar.contains_key("__Host-_sekisho"),
        "both sessions: {jar:?}"
    );
    assert!(
        jar.keys().any(|k| k.starts_with("_sekisho_flow_")),
        "a flow cookie: {jar:?}"
    );
    jar.insert("app_pref".to_owned(), "dark".to_owned());
    let sealed: Vec<String> = jar
        .iter()
        .filter(|(name, _)| name.contains("_sekisho"))
        .map(|(_, value)| value.clone())
        .collect();

    for base in [proxy.base(), tls_base] {
        let browser = Agent::new();
        browser.set_cookies(jar.clone());
        let response = browser.api(&format!("{base}/page")).await;
        assert_eq!(response.status(), 200, "{base}");
        let echoed = Echoed(response.json().await.unwrap());
        assert_eq!(
            echoed.header("x-sekisho-user").as_deref(),
            Some("alice"),
            "{base}"
        );
        let cookie = echoed.header("cookie").unwrap_or_default();
        assert_eq!(
            cookie, "app_pref=dark",
            "{base}: the upstream got sekisho's cookies"
        );
        for (name, value) in headers_of(&echoed) {
            for secret in &sealed {
                assert!(
                    !value.contains(secret.as_str()),
                    "{base}: sealed session material in {name}"
                );
            }
        }
    }
    assert_eq!(echo.hits(), 2);
}

// ---------------------------------------------------------------------------------------------
// 4. Callback attacks

/// alice's login from `proxy`'s root, stopped just before the callback.
async fn alice_until_callback(agent: &Agent, idp: &Idp, proxy: &Proxy) -> Pending {
    agent
        .until_callback(
            &format!("{}/", proxy.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await
}

/// `url` with query parameter `name` replaced by `value` (or removed when `None`).
fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != name)
        .collect();
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (k, v) in &pairs {
            query.append_pair(k, v);
        }
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    parsed.to_string()
}

fn param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

/// True when the response sets a (non-empty) session cookie.
fn sets_session(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.starts_with(&format!("{SESSION}=")) && !v.starts_with(&format!("{SESSION}=;")))
}

/// Requests a callback URL with a browser whose jar is `cookies`; expects `status` and no session.
async fn assert_callback_refused(
    cookies: &BTreeMap<String, String>,
    callback: &str,
    status: u16,
    what: &str,
) {
    let agent = Agent::new();
    agent.set_cookies(cookies.clone());
    let response = agent.browse(callback).await;
    assert_eq!(
        response.status(),
        status,
        "{what}: callback answered {}",
        response.status()
    );
    assert!(
        !sets_session(&response),
        "{what}: a session cookie was issued"
    );
    assert!(
        response.headers().get("location").is_none(),
        "{what}: redirected"
    );
}

/// Completes a callback with the browser's own cookies: the control after each refused variant.
async fn assert_callback_completes(agent: &Agent, callback: &str, what: &str) {
    let done = agent.browse(callback).await;
    assert_eq!(
        done.status(),
        302,
        "{what}: the genuine callback answered {}",
        done.status()
    );
    assert!(
        sets_session(&done),
        "{what}: no session after the genuine callback"
    );
}

/// Follows redirects from `url` (the IdP's) until one points at sekisho's callback.
async fn follow_to_callback(agent: &Agent, mut url: String) -> String {
    for _ in 0..8 {
        if url.contains("/.sekisho/callback?") {
            return url;
        }
        let response = agent.browse(&url).await;
        assert!(
            response.status().is_redirection(),
            "{url} answered {}",
            response.status()
        );
        url = location(&response, &url);
    }
    panic!("no callback after 8 redirects, at {url}");
}

#[tokio::test]
async fn a_replayed_callback_is_refused() {
    let (idp, echo, proxy) = stack(IdpOptions::default(), "RS256", |_| {}).await;
    let agent = Agent::new();
    let Pending {
        authorize,
        callback,
    } = alice_until_callback(&agent, &idp, &proxy).await;
    let before = agent.cookies();
    assert!(
        before.keys().any(|k| k.starts_with("_sekisho_flow_")),
        "flow cookie present: {before:?}"
    );
    assert_callback_completes(&agent, &callback, "first use").await;

    // The exact same request again (flow cookie included), and the browser's current jar. The
    // IdP refuses a spent code anyway; sekisho must refuse before asking it.
    assert_callback_refused(&before, &callback, 401, "replay with the original cookies").await;
    assert_callback_refused(
        &agent.cookies(),
        &callback,
        401,
        "replay by the signed-in browser",
    )
    .await;

    // The same flow (state, nonce, PKCE challenge) replayed with a *fresh* code: the IdP
    // authorizes the original URL again silently, and the old flow cookie holds the matching
    // PKCE verifier, so only sekisho's single-use state stands in the way.
    let fresh = follow_to_callback(&agent, authorize).await;
    assert_eq!(
        param(&fresh, "state"),
        param(&callback, "state"),
        "the IdP kept the state"
    );
    assert_ne!(
        param(&fresh, "code"),
        param(&callback, "code"),
        "the IdP issued a new code"
    );
    assert_callback_refused(&before, &fresh, 401, "the old flow with a fresh code").await;
    assert_eq!(echo.hits(), 0);
}

#[tokio::test]
async fn a_callback_from_another_browser_is_refused() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |_| {}).await;
    let victim = Agent::new();
    let callback = alice_until_callback(&victim, &idp, &proxy).await.callback;

    // Login CSRF: the attacker's callback URL in a browser that never started this login.
    assert_callback_refused(&BTreeMap::new(), &callback, 401, "fresh browser").await;
    // A browser with a login flow of its own, for another state.
    let other = Agent::new();
    assert_eq!(
        other.browse(&format!("{}/", proxy.base())).await.status(),
        302
    );
    assert_callback_refused(
        &other.cookies(),
        &callback,
        401,
        "browser with another flow",
    )
    .await;
    // Control: the browser that started the login can still finish it.
    assert_callback_completes(&victim, &callback, "after the CSRF attempts").await;
}

#[tokio::test]
async fn callbacks_with_an_altered_state_or_an_error_are_refused() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |_| {}).await;
    let agent = Agent::new();
    let callback = alice_until_callback(&agent, &idp, &proxy).await.callback;
    let cookies = agent.cookies();
    let state = param(&callback, "state");
    let other = |c: char| if c == 'A' { "B" } else { "A" };

    // Same flow-cookie name (first 12 characters kept), last character changed: the sealed
    // state in the cookie disagrees.
    let mut late = state.clone();
    late.replace_range(state.len() - 1.., other(state.chars().last().unwrap()));
    assert_callback_refused(
        &cookies,
        &with_param(&callback, "state", Some(&late)),
        401,
        "state altered at the end",
    )
    .await;
    let mut early = state.clone();
    early.replace_range(..1, other(state.chars().next().unwrap()));
    assert_callback_refused(
        &cookies,
        &with_param(&callback, "state", Some(&early)),
        401,
        "state altered at the start",
    )
    .await;
    assert_callback_refused(
        &cookies,
        &with_param(&callback, "state", Some(&format!("{state}x"))),
        401,
        "state extended",
    )
    .await;
    assert_callback_refused(
        &cookies,
        &with_param(&callback, "state", Some(&state[..12])),
        401,
        "state cut to the cookie prefix",
    )
    .await;
    assert_callback_refused(
        &cookies,
        &with_param(&callback, "state", Some("")),
        401,
        "empty state",
    )
    .await;

    // The provider's error, and malformed callbacks.
    let error = format!(
        "{}/.sekisho/callback?error=access_denied&state={state}",
        proxy.base()
    );
    assert_callback_refused(&cookies, &error, 401, "error=access_denied").await;
    assert_callback_refused(
        &cookies,
        &with_param(&callback, "error", Some("access_denied")),
        401,
        "error next to a code",
    )
    .await;
    assert_callback_refused(
        &cookies,
        &with_param(&callback, "code", None),
        400,
        "no code",
    )
    .await;
    assert_callback_refused(
        &cookies,
        &with_param(&callback, "state", None),
        400,
        "no state",
    )
    .await;

    // Control: none of the attempts consumed the flow; the genuine callback completes.
    assert_callback_completes(&agent, &callback, "after the altered callbacks").await;
}

#[tokio::test]
async fn a_stolen_code_is_useless_in_another_browsers_flow() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |_| {}).await;
    let victim = Agent::new();
    let victim_callback = alice_until_callback(&victim, &idp, &proxy).await.callback;

    // The attacker starts a flow of their own and injects the victim's code into it: state and
    // flow cookie match, but the PKCE verifier (and nonce) belong to the attacker's flow.
    let attacker = Agent::new();
    let started = attacker.browse(&format!("{}/", proxy.base())).await;
    assert_eq!(started.status(), 302);
    let attacker_state = param(&location(&started, &proxy.base()), "state");
    let injected = with_param(&victim_callback, "state", Some(&attacker_state));
    assert_callback_refused(
        &attacker.cookies(),
        &injected,
        401,
        "victim's code in the attacker's flow",
    )
    .await;
    // Control: the code itself was good — the victim's own flow redeems it.
    assert_callback_completes(&victim, &victim_callback, "the victim's own callback").await;
}

// ---------------------------------------------------------------------------------------------
// 5. Bearer tokens

async fn alice_token(idp: &Idp, alg: &str) -> String {
    idp.token(&[
        ("sub", "alice"),
        ("aud", "sekisho"),
        ("alg", alg),
        ("ttl", "300"),
    ])
    .await
}

/// GET `/api` with `Authorization: Bearer {token}`.
async fn with_bearer(proxy: &Proxy, token: &str) -> RawResponse {
    let authorization = format!("Bearer {token}");
    single(
        proxy.http,
        &get(proxy, "/api", &[("Authorization", &authorization)]),
    )
    .await
}

/// Asserts a token was refused with an `invalid_token` challenge and never forwarded.
async fn assert_token_refused(proxy: &Proxy, echo: &Echo, token: &str, what: &str) {
    let hits = echo.hits();
    let response = with_bearer(proxy, token).await;
    assert_eq!(
        response.status,
        401,
        "{what}: answered {} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{what}: challenge {challenge:?}"
    );
    assert_eq!(echo.hits(), hits, "{what}: reached the upstream");
}

/// Splits a JWT into its decoded header, decoded claims and raw signature.
fn jwt_parts(token: &str) -> (Value, Value, String) {
    let mut parts = token.split('.');
    let mut decode = || -> Value {
        serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(parts.next().expect("JWT part"))
                .expect("base64url"),
        )
        .expect("JSON")
    };
    let header = decode();
    let claims = decode();
    (header, claims, parts.next().expect("signature").to_owned())
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Signs `claims` with `key` under a header naming `alg` and `kid`.
fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let header = Header {
        kid: kid.map(str::to_owned),
        ..Header::new(alg)
    };
    jsonwebtoken::encode(&header, claims, key).expect("signing")
}

/// A DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap());
    } else {
        let bytes = len.to_be_bytes();
        let significant: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        out.push(0x80 | u8::try_from(significant.len()).unwrap());
        out.extend(significant);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER holding the unsigned big-endian `bytes`.
fn der_unsigned(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::new();
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend(trimmed);
    der(0x02, &content)
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The IdP's RSA public key `kid` as (PKCS#1 DER, SubjectPublicKeyInfo DER, JWK JSON), from
/// its JWKS.
async fn idp_rsa_public_key(idp: &Idp, kid: &str) -> (Vec<u8>, Vec<u8>, String) {
    let jwks: Value = no_redirect_client()
        .get(format!("{}/jwks", idp.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("{kid} not in {jwks}"));
    let component = |name: &str| URL_SAFE_NO_PAD.decode(key[name].as_str().unwrap()).unwrap();
    let pkcs1 = der(
        0x30,
        &[der_unsigned(&component("n")), der_unsigned(&component("e"))].concat(),
    );
    const RSA_ENCRYPTION: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let algorithm = der(0x30, &[der(0x06, &RSA_ENCRYPTION), der(0x05, &[])].concat());
    let spki = der(
        0x30,
        &[algorithm, der(0x03, &[&[0u8][..], &pkcs1].concat())].concat(),
    );
    (pkcs1, spki, key.to_string())
}

/// A fresh RSA-2048 private key (PEM), made with the system's openssl.
fn rsa_private_pem() -> Vec<u8> {
    let output = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("running openssl genpkey");
    assert!(output.status.success(), "openssl genpkey failed");
    output.stdout
}

/// A fresh P-256 key, PKCS#8 DER.
fn ec_private_der() -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap()
    .as_ref()
    .to_vec()
}

/// A fresh Ed25519 key, PKCS#8 DER.
fn ed_private_der() -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .unwrap()
        .as_ref()
        .to_vec()
}

#[tokio::test]
async fn bearer_tokens_of_every_allowed_algorithm_authenticate_and_stay_at_the_proxy() {
    let (idp, echo, proxy) = stack(IdpOptions::default(), "RS256", |_| {}).await;
    for alg in ["RS256", "ES256", "EdDSA"] {
        let token = alice_token(&idp, alg).await;
        let response = with_bearer(&proxy, &token).await;
        assert_eq!(response.status, 200, "{alg}: {response:?}");
        let echoed = response.echoed();
        assert_eq!(
            echoed.header("x-sekisho-user").as_deref(),
            Some("alice"),
            "{alg}"
        );
        assert_eq!(
            echoed.header("x-sekisho-email").as_deref(),
            Some("alice@example.com"),
            "{alg}"
        );
        assert_eq!(
            echoed.header("authorization"),
            None,
            "{alg}: the bearer token was forwarded"
        );
        for (name, value) in headers_of(&echoed) {
            assert!(
                !value.contains(&token),
                "{alg}: the token reached the upstream in {name}"
            );
        }
    }
    assert_eq!(echo.hits(), 3);
}

#[tokio::test]
async fn invalid_bearer_tokens_are_refused() {
    let (idp, echo, proxy) = stack(IdpOptions::default(), "RS256", |_| {}).await;
    let valid = alice_token(&idp, "RS256").await;
    let (header, claims, signature) = jwt_parts(&valid);
    let rs_kid = header["kid"].as_str().expect("kid").to_owned();
    let es_kid = jwt_parts(&alice_token(&idp, "ES256").await).0["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let ed_kid = jwt_parts(&alice_token(&idp, "EdDSA").await).0["kid"]
        .as_str()
        .unwrap()
        .to_owned();

    // Refused by the IdP's own minting: lifetime, audience, issuer.
    let minted: [(&str, &[(&str, &str)]); 4] = [
        ("expired", &[("aud", "sekisho"), ("ttl", "-120")]),
        (
            "wrong audience",
            &[("aud", "other-service"), ("ttl", "300")],
        ),
        ("no audience", &[("ttl", "300")]),
        (
            "wrong issuer",
            &[("aud", "sekisho"), ("ttl", "300"), ("iss", "http://evil")],
        ),
    ];
    for (what, query) in minted {
        let mut query = query.to_vec();
        query.extend([("sub", "alice"), ("alg", "RS256")]);
        let token = idp.token(&query).await;
        assert_token_refused(&proxy, &echo, &token, what).await;
    }

    // Unsigned: the real header and claims with `alg: none`, in several spellings.
    for alg in ["none", "None", "NONE"] {
        let unsigned = format!(
            "{}.{}.",
            b64_json(&json!({"alg": alg, "typ": "JWT"})),
            b64_json(&claims)
        );
        assert_token_refused(&proxy, &echo, &unsigned, &format!("alg {alg}")).await;
        let with_kid = format!(
            "{}.{}.",
            b64_json(&json!({"alg": alg, "typ": "JWT", "kid": rs_kid})),
            b64_json(&claims)
        );
        assert_token_refused(
            &proxy,
            &echo,
            &with_kid,
            &format!("alg {alg} with a real kid"),
        )
        .await;
    }
    let stripped = format!("{}.{}.", b64_json(&header), b64_json(&claims));
    assert_token_refused(&proxy, &echo, &stripped, "signature stripped").await;

    // HMAC with the client secret, and with the IdP's RSA public key (key confusion): check
    // first that the key bytes are the real public key, by verifying the real token with them.
    let client_secret = EncodingKey::from_secret(sekisho_tests::CLIENT_SECRET.as_bytes());
    assert_token_refused(
        &proxy,
        &echo,
        &sign(Algorithm::HS256, None, &claims, &client_secret),
        "HS256 with the client secret",
    )
    .await;
    assert_token_refused(
        &proxy,
        &echo,
        &sign(Algorithm::HS256, Some(&rs_kid), &claims, &client_secret),
        "HS256 with the client secret and a kid",
    )
    .await;
    let (pkcs1, spki, jwk) = idp_rsa_public_key(&idp, &rs_kid).await;
    let spki_pem = pem("PUBLIC KEY", &spki);
    let pkcs1_pem = pem("RSA PUBLIC KEY", &pkcs1);
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["sekisho"]);
    validation.set_issuer(&[idp.issuer.as_str()]);
    for (what, key) in [
        (
            "SPKI PEM",
            DecodingKey::from_rsa_pem(spki_pem.as_bytes()).unwrap(),
        ),
        (
            "PKCS#1 PEM",
            DecodingKey::from_rsa_pem(pkcs1_pem.as_bytes()).unwrap(),
        ),
        ("PKCS#1 DER", DecodingKey::from_rsa_der(&pkcs1)),
    ] {
        jsonwebtoken::decode::<Value>(&valid, &key, &validation)
            .unwrap_or_else(|e| panic!("{what} is not the IdP's key: {e}"));
    }
    let secrets: [(&str, Vec<u8>); 6] = [
        ("SPKI PEM", spki_pem.clone().into_bytes()),
        (
            "SPKI PEM without final newline",
            spki_pem.trim_end().as_bytes().to_vec(),
        ),
        ("PKCS#1 PEM", pkcs1_pem.into_bytes()),
        ("SPKI DER", spki),
        ("PKCS#1 DER", pkcs1),
        ("JWK JSON", jwk.into_bytes()),
    ];
    for (what, secret) in secrets {
        let key = EncodingKey::from_secret(&secret);
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = sign(alg, Some(&rs_kid), &claims, &key);
            assert_token_refused(
                &proxy,
                &echo,
                &token,
                &format!("{alg:?} keyed with the IdP's public key as {what}"),
            )
            .await;
        }
        let no_kid = sign(Algorithm::HS256, None, &claims, &key);
        assert_token_refused(
            &proxy,
            &echo,
            &no_kid,
            &format!("HS256 keyed with {what}, no kid"),
        )
        .await;
    }

    // Real key ids, signatures by other keys; the real signature over other claims.
    let rsa = EncodingKey::from_rsa_pem(&rsa_private_pem()).unwrap();
    assert_token_refused(
        &proxy,
        &echo,
        &sign(Algorithm::RS256, Some(&rs_kid), &claims, &rsa),
        "RS256, real kid, other key",
    )
    .await;
    let ec = EncodingKey::from_ec_der(&ec_private_der());
    assert_token_refused(
        &proxy,
        &echo,
        &sign(Algorithm::ES256, Some(&es_kid), &claims, &ec),
        "ES256, real kid, other key",
    )
    .await;
    let ed = EncodingKey::from_ed_der(&ed_private_der());
    assert_token_refused(
        &proxy,
        &echo,
        &sign(Algorithm::EdDSA, Some(&ed_kid), &claims, &ed),
        "EdDSA, real kid, other key",
    )
    .await;
    assert_token_refused(
        &proxy,
        &echo,
        &sign(Algorithm::ES256, Some(&rs_kid), &claims, &ec),
        "ES256 under the RSA kid",
    )
    .await;
    let mut mallory = claims.clone();
    mallory["sub"] = json!("mallory");
    let swapped = format!("{}.{}.{signature}", b64_json(&header), b64_json(&mallory));
    assert_token_refused(
        &proxy,
        &echo,
        &swapped,
        "claims swapped under a real signature",
    )
    .await;
    let mut longer = claims.clone();
    longer["exp"] = json!(claims["exp"].as_u64().unwrap() + 86_400);
    let extended = format!("{}.{}.{signature}", b64_json(&header), b64_json(&longer));
    assert_token_refused(
        &proxy,
        &echo,
        &extended,
        "exp extended under a real signature",
    )
    .await;

    // Not JWTs at all.
    let extra_part = format!("{valid}.extra");
    for garbage in ["abc", "a.b.c", "..", &valid[..valid.len() / 2], &extra_part] {
        assert_token_refused(&proxy, &echo, garbage, &format!("garbage {garbage:?}")).await;
    }

    // Two Authorization headers, whatever they hold: a bad request, before any verification.
    let hits = echo.hits();
    let twice = format!("Bearer {valid}");
    for second in [twice.as_str(), "Bearer abc", "Basic YWxpY2U6cHc="] {
        let response = single(
            proxy.http,
            &get(
                &proxy,
                "/api",
                &[("Authorization", twice.as_str()), ("Authorization", second)],
            ),
        )
        .await;
        assert_eq!(
            response.status, 400,
            "two Authorization headers ({second:?})"
        );
    }
    assert_eq!(echo.hits(), hits);

    // Control: the untouched token still works, so every refusal above was the attack's.
    let response = with_bearer(&proxy, &valid).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.echoed().header("x-sekisho-user").as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn rotated_keys_are_fetched_but_unknown_key_ids_are_refused() {
    let (idp, echo, proxy) = stack(IdpOptions::default(), "RS256", |_| {}).await;
    let before = alice_token(&idp, "RS256").await;
    assert_eq!(
        with_bearer(&proxy, &before).await.status,
        200,
        "token signed before rotation"
    );

    let rotated = idp.hook("/test/rotate-keys").await;
    let new_kid = rotated["kids"]["RS256"]
        .as_str()
        .expect("new RS256 kid")
        .to_owned();
    let after = alice_token(&idp, "RS256").await;
    let (header, claims, _) = jwt_parts(&after);
    assert_eq!(
        header["kid"],
        new_kid.as_str(),
        "the IdP signs with the new key"
    );
    let response = with_bearer(&proxy, &after).await;
    assert_eq!(
        response.status, 200,
        "the JWKS was not refreshed for the new kid: {response:?}"
    );
    assert_eq!(
        response.echoed().header("x-sekisho-user").as_deref(),
        Some("alice")
    );
    for alg in ["ES256", "EdDSA"] {
        assert_eq!(
            with_bearer(&proxy, &alice_token(&idp, alg).await)
                .await
                .status,
            200,
            "{alg} after rotation"
        );
    }

    // An unknown kid right after the refresh, signed by a key the IdP never published.
    let ec = EncodingKey::from_ec_der(&ec_private_der());
    let unknown = sign(Algorithm::ES256, Some("attacker-kid-0001"), &claims, &ec);
    assert_token_refused(&proxy, &echo, &unknown, "unknown kid").await;
    let rsa = EncodingKey::from_rsa_pem(&rsa_private_pem()).unwrap();
    let unknown_rsa = sign(Algorithm::RS256, Some("RS256-1-deadbeef"), &claims, &rsa);
    assert_token_refused(&proxy, &echo, &unknown_rsa, "unknown RSA kid").await;
    assert_token_refused(
        &proxy,
        &echo,
        &sign(Algorithm::RS256, Some(&new_kid), &claims, &rsa),
        "new kid, other key",
    )
    .await;
    let no_kid = sign(Algorithm::RS256, None, &claims, &rsa);
    assert_token_refused(&proxy, &echo, &no_kid, "no kid, other key").await;
}

// ---------------------------------------------------------------------------------------------
// 6. Path normalisation

/// A stack with a `/public` route in front of the catch-all `app` route, and alice's token.
async fn path_stack() -> (Idp, Echo, Proxy, String) {
    let (idp, echo, proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.routes_yaml =
            "  - id: public\n    from: http://127.0.0.1/public\n    to: http://{echo}\n\
                         \x20 - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n"
                .to_owned();
    })
    .await;
    let token = alice_token(&idp, "RS256").await;
    (idp, echo, proxy, format!("Bearer {token}"))
}

#[tokio::test]
async fn paths_are_normalised_before_routing_and_forwarding() {
    let (_idp, echo, proxy, authorization) = path_stack().await;
    let cases = [
        ("/a/./b/../c", "/a/c", "app"),
        ("//x", "/x", "app"),
        ("/a//b///c", "/a/b/c", "app"),
        ("/%61dmin", "/admin", "app"),
        ("/%7Euser/%2E/x", "/~user/x", "app"),
        ("/public/x", "/public/x", "public"),
        ("/public/../admin", "/admin", "app"),
        ("/public/%2e%2e/admin", "/admin", "app"),
        ("/public/.%2E/admin", "/admin", "app"),
        ("/x/../public/y", "/public/y", "public"),
        ("/publicx", "/publicx", "app"),
        ("/public/./", "/public/", "public"),
    ];
    for (sent, path, route) in cases {
        let hits = echo.hits();
        let response = single(
            proxy.http,
            &get(&proxy, sent, &[("Authorization", &authorization)]),
        )
        .await;
        assert_eq!(response.status, 200, "{sent}: {response:?}");
        let echoed = response.echoed();
        assert_eq!(echoed.path(), path, "{sent} forwarded as {}", echoed.path());
        let assertion = echoed.header("x-sekisho-jwt-assertion").expect("assertion");
        assert_eq!(
            unverified_claims(&assertion)["aud"],
            route,
            "{sent} (normalised {path}) routed by the wrong route"
        );
        assert_eq!(echo.hits(), hits + 1);
    }
    // The query is forwarded untouched and takes no part in the path.
    let response = single(
        proxy.http,
        &get(
            &proxy,
            "/a/../b?x=/../y&z=%2F",
            &[("Authorization", &authorization)],
        ),
    )
    .await;
    let echoed = response.echoed();
    assert_eq!(echoed.path(), "/b");
    assert_eq!(echoed.0["query"], "x=/../y&z=%2F");
}

#[tokio::test]
async fn ambiguous_paths_are_refused_without_reaching_the_upstream() {
    let (_idp, echo, proxy, authorization) = path_stack().await;
    let refused = [
        "/a%2Fb",
        "/a%2fb",
        "/public%2F..%2Fadmin",
        "/a%5Cb",
        "/a%5cb",
        "/a%00",
        "/a%00b/c",
        "/..",
        "/../etc/passwd",
        "/a/../../etc/passwd",
        "/public/%2e%2e/%2e%2e/etc/passwd",
        "/a\\b",
        "/public\\..\\admin",
        "/a%zz",
        "/a%2",
        "/a%",
        "/a%%32%46b",
    ];
    for path in refused {
        for credential in [Some(("Authorization", authorization.as_str())), None] {
            let headers: Vec<(&str, &str)> = credential.into_iter().collect();
            let response = single(proxy.http, &get(&proxy, path, &headers)).await;
            assert_eq!(
                response.status,
                400,
                "{path} (signed in: {}) answered {}",
                credential.is_some(),
                response.status
            );
        }
    }
    // Asterisk-form is no path.
    let response = single(
        proxy.http,
        &raw::request(
            "OPTIONS * HTTP/1.1",
            &[
                ("Host", &proxy.http.to_string()),
                ("Authorization", &authorization),
            ],
            "",
        ),
    )
    .await;
    assert_eq!(response.status, 400, "OPTIONS *");
    assert_eq!(echo.hits(), 0, "an ambiguous path reached the upstream");

    // Control: the same socket, credentials and shape with a plain path is forwarded.
    let response = single(
        proxy.http,
        &get(&proxy, "/a/b", &[("Authorization", &authorization)]),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(echo.hits(), 1);
}

// ---------------------------------------------------------------------------------------------
// 7. Request smuggling and host confusion

#[tokio::test]
async fn conflicting_framing_cannot_smuggle_a_request() {
    let (idp, echo, proxy) = stack(IdpOptions::default(), "RS256", |_| {}).await;
    let token = alice_token(&idp, "RS256").await;
    let host = proxy.http.to_string();
    let smuggled = format!(
        "GET /smuggled HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let head = |framing: &str| {
        format!(
            "POST /first HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n{framing}\r\n"
        )
    };

    // CL.TE: Content-Length covers the smuggled request, chunked framing ends before it.
    let cl_te_body = format!("0\r\n\r\n{smuggled}");
    // TE.CL: chunked framing carries the smuggled request as data, Content-Length stops short.
    let te_cl_body = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    let attempts = [
        (
            "CL then TE",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                cl_te_body.len()
            ),
            cl_te_body.clone(),
            0,
        ),
        (
            "TE then CL",
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                cl_te_body.len()
            ),
            cl_te_body,
            0,
        ),
        (
            "TE.CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n".to_owned(),
            te_cl_body,
            smuggled.len(),
        ),
    ];
    for (what, framing, body, chunked_len) in attempts {
        let hits = echo.hits();
        let responses = exchange(proxy.http, format!("{}{body}", head(&framing)).as_bytes()).await;
        assert_eq!(
            responses.len(),
            1,
            "{what}: more than one response on the connection: {responses:?}"
        );
        let response = &responses[0];
        // hyper 1.x may refuse the message (400) or, as RFC 9112 §6.3 allows, let
        // Transfer-Encoding win and close the connection after the response. Either way the
        // upstream sees at most the one request, framed by chunked, never `/smuggled`.
        match response.status {
            400 => assert_eq!(echo.hits(), hits, "{what}: refused, yet forwarded"),
            200 => {
                let echoed = response.echoed();
                assert_eq!(echoed.path(), "/first", "{what}");
                assert_eq!(
                    echoed.0["body_len"], chunked_len,
                    "{what}: the body was not framed by chunked"
                );
                assert_eq!(
                    echo.hits(),
                    hits + 1,
                    "{what}: the upstream saw a second request"
                );
            }
            other => panic!("{what}: answered {other}"),
        }
    }

    // Framing that no reading makes unambiguous: refused before anything is forwarded.
    let hits = echo.hits();
    let refused = [
        (
            "TE not ending in chunked",
            "Transfer-Encoding: chunked, identity\r\n",
            "0\r\n\r\n",
        ),
        (
            "two TE headers, last not chunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            "0\r\n\r\n",
        ),
        ("unknown TE", "Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
        (
            "two different Content-Lengths",
            "Content-Length: 1\r\nContent-Length: 2\r\n",
            "ab",
        ),
        (
            "a Content-Length list that disagrees",
            "Content-Length: 1, 2\r\n",
            "ab",
        ),
        ("signed Content-Length", "Content-Length: +2\r\n", "ab"),
        (
            "space before the colon",
            "Transfer-Encoding : chunked\r\n",
            "0\r\n\r\n",
        ),
    ];
    for (what, framing, body) in refused {
        let responses = exchange(
            proxy.http,
            format!("{}{body}{smuggled}", head(framing)).as_bytes(),
        )
        .await;
        assert_eq!(
            responses.first().map(|r| r.status),
            Some(400),
            "{what}: {responses:?}"
        );
        assert_eq!(
            responses.len(),
            1,
            "{what}: the connection stayed open for the smuggled request"
        );
    }
    let http10 = format!(
        "POST /first HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    let responses = exchange(proxy.http, http10.as_bytes()).await;
    assert_eq!(
        responses.first().map(|r| r.status),
        Some(400),
        "HTTP/1.0 with Transfer-Encoding"
    );
    assert_eq!(echo.hits(), hits, "a refused message reached the upstream");

    // The upstream connection was not poisoned: the next request is seen as itself.
    let response = single(
        proxy.http,
        &get(
            &proxy,
            "/after",
            &[("Authorization", &format!("Bearer {token}"))],
        ),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.echoed().path(), "/after");
    assert_eq!(response.echoed().0["method"], "GET");
}

#[tokio::test]
async fn host_confusion_is_refused() {
    let (idp, echo, proxy) = stack(IdpOptions::default(), "RS256", |_| {}).await;
    let authorization = format!("Bearer {}", alice_token(&idp, "RS256").await);
    let host = proxy.http.to_string();
    let port = proxy.http.port();
    let auth = ("Authorization", authorization.as_str());

    // A request line and its `Host` lines, each with alice's token.
    let request = |line: &str, hosts: &[&str]| {
        let mut headers: Vec<(&str, &str)> = hosts.iter().map(|h| ("Host", *h)).collect();
        headers.push(auth);
        raw::request(line, &headers, "")
    };
    let evil_port = format!("evil.example:{port}");
    let userinfo = format!("evil@{host}");
    let list = format!("{host}, evil.example");
    let cases: Vec<(&str, u16, Vec<u8>)> = vec![
        (
            "two different Host headers",
            400,
            request("GET /x HTTP/1.1", &[&host, "evil.example"]),
        ),
        (
            "the same Host twice",
            400,
            request("GET /x HTTP/1.1", &[&host, &host]),
        ),
        (
            "absolute-form naming another host",
            400,
            request("GET http://evil.example/x HTTP/1.1", &[&host]),
        ),
        (
            "Host naming another host than the target",
            400,
            request(&format!("GET http://{host}/x HTTP/1.1"), &["evil.example"]),
        ),
        (
            "absolute-form on another port",
            400,
            request(
                &format!("GET http://127.0.0.1:{}/x HTTP/1.1", port.wrapping_add(1)),
                &[&host],
            ),
        ),
        (
            "absolute-form with userinfo",
            400,
            request(&format!("GET http://user@{host}/x HTTP/1.1"), &[&host]),
        ),
        (
            "Host with userinfo",
            400,
            request("GET /x HTTP/1.1", &[&userinfo]),
        ),
        ("Host list", 400, request("GET /x HTTP/1.1", &[&list])),
        ("no Host", 400, request("GET /x HTTP/1.1", &[])),
        (
            "HTTP/1.0 without Host",
            400,
            request("GET /x HTTP/1.0", &[]),
        ),
        (
            "unknown host",
            404,
            request("GET /x HTTP/1.1", &["evil.example"]),
        ),
        (
            "unknown host, our port",
            404,
            request("GET /x HTTP/1.1", &[&evil_port]),
        ),
        (
            "login on an unknown host",
            404,
            request("GET /.sekisho/login?rd=/ HTTP/1.1", &["evil.example"]),
        ),
        (
            "callback on an unknown host",
            404,
            request(
                "GET /.sekisho/callback?code=c&state=s HTTP/1.1",
                &["evil.example"],
            ),
        ),
        (
            "absolute-form on an unknown host",
            404,
            request("GET http://evil.example/x HTTP/1.1", &["evil.example"]),
        ),
    ];
    for (what, status, bytes) in cases {
        let response = single(proxy.http, &bytes).await;
        assert_eq!(
            response.status, status,
            "{what}: answered {}",
            response.status
        );
    }
    assert_eq!(echo.hits(), 0, "a confused request reached the upstream");

    // Controls: origin-form and an absolute-form that agrees with Host are forwarded.
    for line in [
        "GET /x HTTP/1.1".to_owned(),
        format!("GET http://{host}/x HTTP/1.1"),
    ] {
        let response = single(
            proxy.http,
            &raw::request(&line, &[("Host", host.as_str()), auth], ""),
        )
        .await;
        assert_eq!(response.status, 200, "{line}");
    }
    assert_eq!(echo.hits(), 2);
}

// ---------------------------------------------------------------------------------------------
// Helpers: echo answers, assertions.

/// The `Cookie` line carrying only the agent's sekisho session cookie.
fn session_cookie_line(agent: &Agent) -> String {
    let jar = agent.cookies();
    let value = jar.get(SESSION).expect("session cookie");
    format!("{SESSION}={value}")
}

/// Every (name, value) the upstream received.
fn headers_of(echoed: &Echoed) -> Vec<(String, String)> {
    echoed.0["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap_or_default().to_owned(),
                pair[1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn assert_no_value_contains(echoed: &Echoed, needle: &str) {
    for (name, value) in headers_of(echoed) {
        assert!(
            !value.contains(needle),
            "{name}: {value:?} carries {needle:?}"
        );
    }
}

/// Verifies an identity assertion with the proxy's published JWKS, for `audience`.
async fn verified_assertion(proxy: &Proxy, assertion: &str, audience: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = no_redirect_client()
        .get(format!("{}/.well-known/sekisho/jwks.json", proxy.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["sekisho"]);
    jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .unwrap_or_else(|e| panic!("assertion does not verify: {e}"))
        .claims
}

/// The claims of a JWT, unverified.
fn unverified_claims(jwt: &str) -> Value {
    jwt_parts(jwt).1
}
