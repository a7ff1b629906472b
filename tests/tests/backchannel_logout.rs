//! OpenID Connect Back-Channel Logout 1.0, end to end: the real `sekisho` binary as the relying
//! party of the real test provider (panva's oidc-provider), which calls
//! `/.sekisho/backchannel-logout` when a user signs out there; logout tokens made by hand with
//! the provider's own key, each breaking one rule; and the built-in provider telling its clients
//! — sekisho itself, and a third-party relying party — that a sign-in ended.
//!
//! Every wait is on a condition with a deadline ([`sekisho_tests::eventually`]); the clock
//! ticks the user-before-time test waits for are conditions too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sekisho::session::unix_now;
use sekisho_tests::builtin::{ALICE_PASSWORD, Options, RP_REDIRECT, Stack, pkce};
use sekisho_tests::raw::connect_tunnel;
use sekisho_tests::{
    Agent, CLIENT_SECRET, Idp, IdpOptions, Proxy, audit_records, eventually, jwt_claims, location,
    no_redirect_client, stack,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Registers sekisho at the test provider with its back-channel logout URI (and a `sid` in its
/// ID tokens and logout tokens).
async fn register_with_backchannel(idp: &Idp, proxy: &Proxy) {
    idp.register_client_with(
        "sekisho",
        CLIENT_SECRET,
        &proxy.origins(),
        "ES256",
        json!({
            "backchannel_logout_uri": format!("{}/.sekisho/backchannel-logout", proxy.base()),
            "backchannel_logout_session_required": true,
        }),
    )
    .await;
}

/// Signs `user` in through sekisho at the test provider: the agent and the page it landed on.
async fn signed_in(idp: &Idp, proxy: &Proxy, user: &str) -> (Agent, String) {
    let agent = Agent::new();
    let login = agent
        .login(
            &format!("{}/app", proxy.base()),
            &idp.issuer,
            user,
            &format!("{user}-pw"),
        )
        .await;
    (agent, login.landed)
}

/// The status an API request with exactly these `cookies` gets at `url`.
async fn status_with(cookies: &std::collections::BTreeMap<String, String>, url: &str) -> u16 {
    let agent = Agent::new();
    agent.set_cookies(cookies.clone());
    agent.api(url).await.status().as_u16()
}

/// The status a request with `Authorization: Bearer token` gets at `url`.
async fn status_bearer(token: &str, url: &str) -> u16 {
    no_redirect_client()
        .get(url)
        .header("accept", "application/json")
        .bearer_auth(token)
        .send()
        .await
        .expect("bearer request")
        .status()
        .as_u16()
}

/// Posts `body` (form-encoded) to sekisho's back-channel logout endpoint: status and JSON.
async fn post_logout(proxy: &Proxy, token: &str) -> (u16, Value) {
    let response = no_redirect_client()
        .post(format!("{}/.sekisho/backchannel-logout", proxy.base()))
        .form(&[("logout_token", token)])
        .send()
        .await
        .expect("back-channel request");
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(cache.as_deref(), Some("no-store"), "status {status}");
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Logout-token claims from the test provider for sekisho, with a fresh `jti`.
fn claims(idp: &Idp, extra: Value) -> Value {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = unix_now();
    let mut claims = json!({
        "iss": idp.issuer,
        "aud": "sekisho",
        "iat": now,
        "exp": now + 120,
        "jti": format!("jti-{}-{}", now, NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        "events": { EVENT: {} },
    });
    if let (Some(map), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        for (name, value) in extra {
            if value.is_null() {
                map.remove(&name);
            } else {
                map.insert(name, value);
            }
        }
    }
    claims
}

/// The Authentication records with `unmapped.event == event`, once `ready` holds for them.
async fn auth_records(
    dir: &std::path::Path,
    event: &str,
    what: &str,
    ready: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let pick = |all: Vec<Value>| -> Vec<Value> {
        all.into_iter()
            .filter(|r| r["class_uid"] == 3002 && r["unmapped"]["event"] == event)
            .collect()
    };
    eventually(what, || {
        let found = std::fs::read_dir(dir)
            .map(|_| pick(audit_records(dir)))
            .unwrap_or_default();
        let done = ready(&found);
        async move { done }
    })
    .await;
    pick(audit_records(dir))
}

/// The close record of a tunnel closed for `reason`, once written.
async fn tunnel_close_record(dir: &std::path::Path, reason: &str) -> Value {
    let closed = |records: Vec<Value>| {
        records.into_iter().find(|r| {
            r["unmapped"]["event"] == "tunnel_closed" && r["unmapped"]["reason"] == reason
        })
    };
    eventually(&format!("a tunnel's close record ({reason})"), || {
        let found = closed(audit_records(dir)).is_some();
        async move { found }
    })
    .await;
    closed(audit_records(dir)).unwrap()
}

/// Waits until the wall clock (Unix seconds) has passed `second`.
async fn clock_past(second: u64) {
    eventually("the clock to tick", || async move { unix_now() > second }).await;
}

#[tokio::test]
async fn a_sign_out_at_the_provider_ends_the_cookie_session_its_tunnel_and_its_bearer_tokens() {
    let tcp_echo = sekisho_tests::echo::tcp().await;
    let (idp, echo, proxy) = stack(IdpOptions::default(), "ES256", |o| {
        o.routes_yaml = format!(
            "  - id: db\n    from: tcp+http://db.internal:5432\n    to: tcp://{tcp_echo}\n  \
             - id: app\n    from: http://127.0.0.1\n    to: http://{{echo}}\n"
        );
    })
    .await;
    register_with_backchannel(&idp, &proxy).await;
    let (alice, landed) = signed_in(&idp, &proxy, "alice").await;
    assert_eq!(alice.api(&landed).await.status(), 200);
    // A TCP tunnel held by the session.
    let (status, head, mut tunnel) = connect_tunnel(
        proxy.http,
        "db.internal:5432",
        &format!("Cookie: {}\r\n", alice.cookie_header()),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    tunnel.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    tunnel.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"ping");
    let session = proxy.session_of(&alice);
    let id_token = session
        .id_token
        .clone()
        .expect("the session keeps its ID token");
    let sid = jwt_claims(&id_token)["sid"]
        .as_str()
        .expect("the provider's ID token carries a sid")
        .to_owned();
    assert_eq!(session.identity.provider_sid.as_deref(), Some(sid.as_str()));
    let cookies = alice.cookies();
    // An access token of the same provider session, and controls: bob's session and a token
    // of another provider session.
    let mint = |sid: String| {
        let idp = &idp;
        async move {
            idp.token(&[
                ("sub", "alice"),
                ("alg", "ES256"),
                ("ttl", "600"),
                ("aud", "sekisho"),
                ("sid", sid.as_str()),
            ])
            .await
        }
    };
    let same_session = mint(sid.clone()).await;
    let other_session = mint("another-provider-session".into()).await;
    assert_eq!(status_bearer(&same_session, &landed).await, 200);
    // A tunnel held by that access token.
    let (status, head, mut token_tunnel) = connect_tunnel(
        proxy.http,
        "db.internal:5432",
        &format!("Authorization: Bearer {same_session}\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    let (bob, bob_landed) = signed_in(&idp, &proxy, "bob").await;
    let bob_cookies = bob.cookies();
    assert_eq!(status_with(&bob_cookies, &bob_landed).await, 200);

    // RP-initiated logout at the provider (not at sekisho): its confirmation form, submitted.
    let end = format!(
        "{}/session/end?id_token_hint={id_token}&post_logout_redirect_uri={}",
        idp.issuer,
        url::form_urlencoded::byte_serialize(
            format!("{}/.sekisho/signed-out", proxy.base()).as_bytes()
        )
        .collect::<String>()
    );
    let page = alice.browse(&end).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let xsrf = html
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no xsrf in the provider's logout page: {html}"))
        .to_owned();
    let action = html
        .split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let hits = echo.hits();
    let confirmed = alice
        .send(
            no_redirect_client()
                .post(url::Url::parse(&end).unwrap().join(&action).unwrap())
                .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")]),
        )
        .await;
    assert_eq!(confirmed.status(), 303);
    assert_eq!(
        location(&confirmed, &idp.issuer),
        format!("{}/.sekisho/signed-out", proxy.base())
    );

    // oidc-provider waits for the back-channel calls before it answers: sekisho already
    // ended the session. The same cookie is refused (sign-in redirect for a browser, 401 for
    // a program), and so is the provider session's access token.
    assert_eq!(status_with(&cookies, &landed).await, 401);
    let browser = Agent::new();
    browser.set_cookies(cookies.clone());
    let again = browser.browse(&landed).await;
    assert_eq!(again.status(), 302);
    assert!(location(&again, &landed).starts_with(&idp.issuer));
    assert_eq!(status_bearer(&same_session, &landed).await, 401);
    assert_eq!(echo.hits(), hits, "nothing of alice's reached the upstream");
    // The session's tunnel was closed by the session's end (announced at once, not found by
    // the periodic check, whose records say credential_expired).
    let mut rest = Vec::new();
    tokio::time::timeout(sekisho_tests::DEADLINE, tunnel.read_to_end(&mut rest))
        .await
        .expect("the tunnel outlived its session")
        .expect("the tunnel ends cleanly");
    let closed = tunnel_close_record(&proxy.audit_dir(), "session_ended").await;
    assert_eq!(
        closed["unmapped"]["user"], "alice@example.com",
        "{closed:#}"
    );
    // The access token's tunnel closes at the next tunnel check (2 s by default).
    tokio::time::timeout(sekisho_tests::DEADLINE, token_tunnel.read_to_end(&mut rest))
        .await
        .expect("the token's tunnel outlived its provider session")
        .expect("the tunnel ends cleanly");
    tunnel_close_record(&proxy.audit_dir(), "credential_expired").await;
    // Others are untouched.
    assert_eq!(status_with(&bob_cookies, &bob_landed).await, 200);
    assert_eq!(status_bearer(&other_session, &landed).await, 200);

    // The records: the accepted logout token, and alice's session ended by it.
    let accepted = auth_records(
        &proxy.audit_dir(),
        "backchannel_logout",
        "the back-channel logout's record",
        |r| r.iter().any(|r| r["status"] == "Success"),
    )
    .await;
    let record = accepted.iter().find(|r| r["status"] == "Success").unwrap();
    assert_eq!(record["activity_name"], "Logoff");
    assert_eq!(record["session"]["issuer"], idp.issuer.as_str());
    assert!(
        record["status_detail"]
            .as_str()
            .unwrap()
            .contains("1 live sessions announced as ended"),
        "{record}"
    );
    let ended = auth_records(&proxy.audit_dir(), "logout", "alice's session's end", |r| {
        r.iter().any(|r| {
            r["status_detail"] == "ended by the provider's back-channel logout"
                && r["user"]["uid"] == "alice"
        })
    })
    .await;
    assert!(!ended.is_empty());

    // The revocation is persisted: after a restart the cookie stays refused.
    let mut proxy = proxy;
    proxy.restart().await;
    assert_eq!(
        status_with(&cookies, &format!("{}/app", proxy.base())).await,
        401
    );
}

#[tokio::test]
async fn hand_made_logout_tokens_are_each_refused_for_the_rule_they_break_and_recorded() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |_| {}).await;
    register_with_backchannel(&idp, &proxy).await;
    let (alice, landed) = signed_in(&idp, &proxy, "alice").await;
    let cookies = alice.cookies();
    let id_token = proxy.session_of(&alice).id_token.unwrap();
    let header = json!({});
    let sign = |claims: Value| {
        let idp = &idp;
        let header = header.clone();
        async move { idp.sign("ES256", header, claims).await }
    };
    let unrelated = json!({ "sid": "a-session-nobody-has" });

    // Each token breaks one rule: 400 naming it.
    let expired_at = unix_now() - 3600;
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "logout+jwt"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims(&idp, unrelated.clone()).to_string())
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a wrong audience",
            sign(claims(&idp, json!({"sid": "x", "aud": "someone-else"}))).await,
            "aud does not contain",
        ),
        (
            "no events",
            sign(claims(&idp, json!({"sid": "x", "events": null}))).await,
            "events claim has no",
        ),
        (
            "a nonce",
            sign(claims(&idp, json!({"sid": "x", "nonce": "n-1"}))).await,
            "carries a nonce",
        ),
        (
            "expired",
            sign(claims(
                &idp,
                json!({"sid": "x", "iat": expired_at - 120, "exp": expired_at}),
            ))
            .await,
            "expired",
        ),
        ("unsigned (alg none)", none, "unsigned"),
        (
            "neither sid nor sub",
            sign(claims(&idp, json!({}))).await,
            "neither a session",
        ),
        (
            "typed as an access token",
            idp.sign(
                "ES256",
                json!({"typ": "at+jwt"}),
                claims(&idp, unrelated.clone()),
            )
            .await,
            "is not logout+jwt",
        ),
        (
            "another issuer",
            sign(claims(
                &idp,
                json!({"sid": "x", "iss": "https://evil.example"}),
            ))
            .await,
            "is not the provider's issuer",
        ),
    ];
    for (what, token, reason) in &cases {
        let (status, body) = post_logout(&proxy, token).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"], "invalid_request", "{what}");
        let description = body["error_description"].as_str().unwrap_or_default();
        assert!(description.contains(reason), "{what}: {description}");
    }
    // The real ID token of alice's login, posted as a logout token: refused, and nobody is
    // signed out by it.
    let (status, body) = post_logout(&proxy, &id_token).await;
    assert_eq!(status, 400, "an ID token: {body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("an ID token is not a logout token"),
        "{body}"
    );
    assert_eq!(status_with(&cookies, &landed).await, 200);

    // A good token is accepted once; the same token again is a replay.
    let good = sign(claims(&idp, unrelated.clone())).await;
    assert_eq!(post_logout(&proxy, &good).await.0, 200);
    let (status, body) = post_logout(&proxy, &good).await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{body}"
    );
    assert_eq!(status_with(&cookies, &landed).await, 200, "another sid");

    // Requests that are not a logout token at all.
    let endpoint = format!("{}/.sekisho/backchannel-logout", proxy.base());
    let http = no_redirect_client();
    let get = http.get(&endpoint).send().await.unwrap();
    assert_eq!(get.status(), 405);
    let missing = http
        .post(&endpoint)
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let json_body = http
        .post(&endpoint)
        .json(&json!({"logout_token": good}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), 400);
    let huge = http
        .post(&endpoint)
        .form(&[("logout_token", "a".repeat(64 * 1024))])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 400);

    // Every refusal is recorded with its reason (cases, the ID token, the replay, and the
    // four malformed requests), beside the one accepted token.
    let refusals = cases.len() + 2 + 4;
    let records = auth_records(
        &proxy.audit_dir(),
        "backchannel_logout",
        "every refusal's record",
        |r| r.iter().filter(|r| r["status"] == "Failure").count() >= refusals,
    )
    .await;
    let failed: Vec<&str> = records
        .iter()
        .filter(|r| r["status"] == "Failure")
        .map(|r| r["status_detail"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(failed.len(), refusals, "{failed:#?}");
    for (what, _, reason) in &cases {
        assert!(
            failed.iter().any(|d| d.contains(reason)),
            "{what} not recorded: {failed:#?}"
        );
    }
    assert!(failed.iter().any(|d| d.contains("already used")));
    assert!(failed.iter().any(|d| d.contains("takes POST, not GET")));
    assert_eq!(
        records.iter().filter(|r| r["status"] == "Success").count(),
        1
    );
}

#[tokio::test]
async fn a_token_naming_only_the_user_ends_the_sessions_begun_before_it_and_no_later_one() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |_| {}).await;
    register_with_backchannel(&idp, &proxy).await;
    // Before: a session and an access token.
    let (early, landed) = signed_in(&idp, &proxy, "alice").await;
    let early_login = proxy.session_of(&early).login_at;
    let early_cookies = early.cookies();
    let early_token = idp.bearer("alice").await;
    let early_iat = jwt_claims(&early_token)["iat"].as_u64().unwrap();
    // The provider signs alice out at `cut`, a second after both; then she signs in again.
    clock_past(early_login.max(early_iat)).await;
    let cut = unix_now();
    clock_past(cut).await;
    let (late, late_landed) = signed_in(&idp, &proxy, "alice").await;
    assert!(proxy.session_of(&late).login_at > cut);
    let late_cookies = late.cookies();
    let late_token = idp.bearer("alice").await;
    let (bob, bob_landed) = signed_in(&idp, &proxy, "bob").await;
    let bob_cookies = bob.cookies();

    let token = idp
        .sign(
            "ES256",
            json!({}),
            claims(&idp, json!({"sub": "alice", "iat": cut})),
        )
        .await;
    assert_eq!(post_logout(&proxy, &token).await.0, 200);
    assert_eq!(
        status_with(&early_cookies, &landed).await,
        401,
        "began before"
    );
    assert_eq!(
        status_bearer(&early_token, &landed).await,
        401,
        "issued before"
    );
    assert_eq!(
        status_with(&late_cookies, &late_landed).await,
        200,
        "began after"
    );
    assert_eq!(
        status_bearer(&late_token, &landed).await,
        200,
        "issued after"
    );
    assert_eq!(
        status_with(&bob_cookies, &bob_landed).await,
        200,
        "another user"
    );
    let lines = std::fs::read_to_string(proxy.state_dir().join("revoked-sessions")).unwrap();
    assert!(
        lines
            .lines()
            .any(|l| l.split(' ').nth(2) == Some(cut.to_string().as_str())),
        "a subject entry reaching back to {cut}: {lines}"
    );
}

/// A third-party relying party's back-channel endpoint: answers each POST with the next status
/// of `statuses` (then 200) and keeps the logout tokens it was sent.
#[derive(Debug, Clone)]
struct Receiver {
    addr: SocketAddr,
    tokens: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start(statuses: Vec<u16>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(statuses.into_iter()));
        let kept = tokens.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (kept, statuses) = (kept.clone(), statuses.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let (kept, statuses) = (kept.clone(), statuses.clone());
                            async move {
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                if let Some((_, token)) = url::form_urlencoded::parse(&body)
                                    .find(|(name, _)| name == "logout_token")
                                {
                                    kept.lock().unwrap().push(token.into_owned());
                                }
                                let status = statuses.lock().unwrap().next().unwrap_or(200);
                                let mut response = http::Response::new(Full::new(Bytes::new()));
                                *response.status_mut() =
                                    http::StatusCode::from_u16(status).unwrap();
                                Ok::<_, Infallible>(response)
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, tokens }
    }

    fn tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn the_built_in_provider_tells_its_clients_when_a_sign_in_ends() {
    // sekisho is its own provider's client, with its own back-channel endpoint; the test
    // relying party's endpoint fails once (503) and wants no sid.
    let receiver = Receiver::start(vec![503]).await;
    let stack = Stack::start(Options {
        sekisho_client_yaml: "      backchannel_logout_uri: {origin}/.sekisho/backchannel-logout\n"
            .into(),
        rp_client_yaml: format!(
            "      backchannel_logout_uri: http://{}/bcl\n      backchannel_logout_session_required: false\n",
            receiver.addr
        ),
        ..Options::default()
    })
    .await;
    let discovery: Value = no_redirect_client()
        .get(format!("{}/.well-known/openid-configuration", stack.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["backchannel_logout_supported"], true);
    assert_eq!(discovery["backchannel_logout_session_supported"], true);

    // alice signs in to sekisho, and in the same browser to the test relying party (the
    // provider signs her in silently: one sign-in, two clients).
    let agent = Agent::new();
    agent.proxy_login(&stack, "alice", ALICE_PASSWORD).await;
    let app = format!("{}/hello", stack.origin);
    assert_eq!(agent.api(&app).await.status(), 200);
    let cookies = agent.cookies();
    let (verifier, challenge) = pkce();
    let authorize = sekisho_tests::builtin::authorize_url(
        &stack.issuer,
        &sekisho_tests::builtin::code_request(&challenge, "st-1"),
    );
    let silent = agent.browse(&authorize).await;
    assert_eq!(silent.status(), 302, "signed in already: a code at once");
    let back = location(&silent, &authorize);
    let code = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let (status, tokens) = sekisho_tests::builtin::token_request(
        &stack.issuer,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", RP_REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let sid = jwt_claims(tokens["id_token"].as_str().unwrap())["sid"]
        .as_str()
        .unwrap()
        .to_owned();

    // She signs out at the provider itself (confirming the form), not at sekisho.
    let page = agent.browse(&format!("{}/end-session", stack.issuer)).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let confirm = html
        .split("name=\"confirm\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let posted = agent
        .post_form(
            &format!("{}/end-session/confirm", stack.issuer),
            &[("confirm", &confirm)],
            None,
        )
        .await;
    assert_eq!(posted.status, 200, "{}", posted.body);

    // The provider tells sekisho in the background: the same cookie is soon refused.
    eventually("sekisho to end the session at the provider's word", || {
        let (cookies, app) = (cookies.clone(), app.clone());
        async move { status_with(&cookies, &app).await == 401 }
    })
    .await;
    // The relying party was told too, after one retry: a logout token with its audience, the
    // user and no sid (it registered backchannel_logout_session_required: false), signed
    // with the provider's published key.
    eventually(
        "the relying party's logout token, sent again after a 503",
        || {
            let done = receiver.tokens().len() >= 2;
            async move { done }
        },
    )
    .await;
    let received = receiver.tokens();
    let token = received.last().unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "logout+jwt");
    let jwks: jsonwebtoken::jwk::JwkSet = no_redirect_client()
        .get(format!("{}/jwks", stack.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = jwks.find(header["kid"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[sekisho_tests::builtin::RP_ID]);
    validation.set_issuer(&[&stack.issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(key).unwrap(),
        &validation,
    )
    .unwrap_or_else(|e| panic!("the logout token does not verify: {e}"))
    .claims;
    assert_eq!(claims["sub"], "alice");
    assert!(claims.get("sid").is_none(), "{claims}");
    assert!(claims.get("nonce").is_none());
    assert_eq!(claims["events"], json!({ EVENT: {} }));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        120
    );
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    assert_eq!(
        received.len(),
        2,
        "the first answer was 503: one retry, then done"
    );
    assert_eq!(received[0], received[1], "the same token is sent again");

    // Recorded at both ends: the provider's deliveries, sekisho's acceptance and the
    // session it ended.
    let sent = auth_records(
        &stack.audit_dir(),
        "backchannel_logout_sent",
        "both deliveries' records",
        |r| r.iter().filter(|r| r["status"] == "Success").count() >= 2,
    )
    .await;
    let details: Vec<&str> = sent
        .iter()
        .map(|r| r["status_detail"].as_str().unwrap_or_default())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("\"rp-test\"") && d.contains("after 2 attempts")),
        "{details:#?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("\"sekisho\"") && d.contains("delivered (HTTP 200)")),
        "{details:#?}"
    );
    let accepted = auth_records(
        &stack.audit_dir(),
        "backchannel_logout",
        "sekisho's acceptance",
        |r| r.iter().any(|r| r["status"] == "Success"),
    )
    .await;
    assert_eq!(
        accepted[0]["session"]["uid"],
        sekisho::session::provider_logout_hash(&stack.issuer, &sid).as_str(),
        "the provider session the token named: the sign-in both clients shared"
    );
    auth_records(&stack.audit_dir(), "logout", "the session's end", |r| {
        r.iter()
            .any(|r| r["status_detail"] == "ended by the provider's back-channel logout")
    })
    .await;
}
