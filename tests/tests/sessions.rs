//! Session and credential hardening, end to end: the real `sekisho` binary in front of the echo
//! upstream, users signing in at the real OpenID provider. Each test attacks one rule and sends,
//! beside each refusal, a control that differs only by the attack and must succeed.
//!
//! - only a verified email is asserted (headers, assertion); `assume_email_verified` opt-in;
//! - ID tokens are not bearer credentials; a logged-out provider session ends its bearer tokens;
//! - a refreshed session cookie reaches the browser on every response, not only on a forward;
//! - replayed logouts write nothing; cross-site logouts need a confirmation;
//! - a callback without its flow cookie is refused before any request to the provider, and
//!   attacker text cannot forge log lines;
//! - a cookie with a byte outside ASCII hides neither the session nor the stripping of it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use sekisho_tests::echo::Echoed;
// The claims of a JWT, unverified (the assertion's signature is checked by other suites).
use sekisho_tests::jwt_claims as claims_of;
use sekisho_tests::{
    Agent, Idp, IdpOptions, Proxy, audit_records, location, session_cookies_set, stack,
};
use serde_json::Value;

const SESSION: &str = "_sekisho";

/// Signs in `user` and returns the agent and the page it landed on.
async fn signed_in(idp: &Idp, proxy: &Proxy, user: &str) -> (Agent, String) {
    let agent = Agent::new();
    let login = agent
        .login(
            &format!("{}/whoami", proxy.base()),
            &idp.issuer,
            user,
            &format!("{user}-pw"),
        )
        .await;
    (agent, login.landed)
}

/// What the echo upstream received for `url`, fetched by `agent`.
async fn upstream_view(agent: &Agent, url: &str) -> Echoed {
    let response = agent.api(url).await;
    assert_eq!(response.status(), 200, "{url}");
    Echoed(response.json().await.expect("echo JSON"))
}

#[tokio::test]
async fn an_unverified_email_is_never_asserted_as_the_users() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |_| {}).await;
    // alice: email_verified true (control); bob: false; carol: no claim at all.
    for (user, expected) in [
        ("alice", Some("alice@example.com")),
        ("bob", None),
        ("carol", None),
    ] {
        let (agent, landed) = signed_in(&idp, &proxy, user).await;
        let seen = upstream_view(&agent, &landed).await;
        assert_eq!(seen.header("x-sekisho-user").as_deref(), Some(user));
        assert_eq!(
            seen.header("x-sekisho-email").as_deref(),
            expected,
            "{user}'s email header"
        );
        let assertion = seen.header("x-sekisho-jwt-assertion").expect("assertion");
        assert_eq!(
            claims_of(&assertion)["email"].as_str(),
            expected,
            "{user}'s asserted email"
        );
    }

    // The opt-in for providers that never send the claim: carol's address now counts, bob's
    // explicit `false` still does not.
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |o| {
        o.oidc_yaml = "  assume_email_verified: true\n".into();
    })
    .await;
    for (user, expected) in [("carol", Some("carol@example.com")), ("bob", None)] {
        let (agent, landed) = signed_in(&idp, &proxy, user).await;
        let seen = upstream_view(&agent, &landed).await;
        assert_eq!(
            seen.header("x-sekisho-email").as_deref(),
            expected,
            "{user}"
        );
    }
}

#[tokio::test]
async fn id_tokens_are_no_bearer_credentials_and_a_signed_out_provider_session_ends_its_tokens() {
    let (idp, echo, proxy) = stack(IdpOptions::default(), "ES256", |_| {}).await;
    // oidc-provider puts `sid` in ID tokens of clients that ask for back-channel logout with a
    // session id; nothing listens there, the provider's notification simply fails.
    let callbacks: Vec<String> = proxy
        .origins()
        .iter()
        .map(|o| format!("{o}/.sekisho/callback"))
        .collect();
    let registered = reqwest::Client::new()
        .post(format!("{}/test/clients", idp.issuer))
        .json(&serde_json::json!({
            "client_id": "sekisho",
            "client_secret": sekisho_tests::CLIENT_SECRET,
            "redirect_uris": callbacks,
            "post_logout_redirect_uris": proxy.origins().iter().map(|o| format!("{o}/.sekisho/signed-out")).collect::<Vec<_>>(),
            "id_token_signed_response_alg": "ES256",
            "token_endpoint_auth_method": "client_secret_basic",
            "backchannel_logout_uri": "http://127.0.0.1:9/backchannel",
            "backchannel_logout_session_required": true,
        }))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success());
    let (agent, landed) = signed_in(&idp, &proxy, "alice").await;
    let session = proxy.session_of(&agent);
    let id_token = session
        .id_token
        .clone()
        .expect("the session keeps its ID token");
    let sid = claims_of(&id_token)["sid"]
        .as_str()
        .expect("the provider's ID token carries a sid")
        .to_owned();
    let client = sekisho_tests::no_redirect_client();
    let bearer = |token: String| {
        let client = client.clone();
        let url = landed.clone();
        async move {
            client
                .get(url)
                .header("accept", "application/json")
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
                .status()
        }
    };
    let mint = |extra: &'static [(&'static str, &'static str)]| {
        let mut query = vec![
            ("sub", "alice"),
            ("alg", "ES256"),
            ("ttl", "600"),
            ("aud", "sekisho"),
        ];
        query.extend_from_slice(extra);
        query
    };

    // The real ID token of this login: refused as a bearer credential even while signed in.
    let hits = echo.hits();
    assert_eq!(bearer(id_token.clone()).await, 401, "an ID token as bearer");
    // Tokens shaped like ID tokens: `typ: JWT` for sekisho's client id, or a nonce.
    let typ_jwt = idp.token(&mint(&[("typ", "JWT")])).await;
    assert_eq!(bearer(typ_jwt).await, 401, "typ JWT for the client id");
    let with_nonce = idp
        .token(&[
            ("sub", "alice"),
            ("alg", "ES256"),
            ("aud", "api://sekisho"),
            ("nonce", "n-1"),
        ])
        .await;
    assert_eq!(bearer(with_nonce).await, 401, "a token with a nonce");
    let logout_token = idp.token(&mint(&[("typ", "logout+jwt")])).await;
    assert_eq!(bearer(logout_token).await, 401, "a logout token");
    assert_eq!(echo.hits(), hits, "no refused token reached the upstream");

    // Controls: an access token (at+jwt) for the client id, and a plain JWT whose audience is
    // one configured for programs.
    let access = idp.token(&mint(&[("sid", "other-session")])).await;
    assert_eq!(bearer(access.clone()).await, 200, "an at+jwt access token");
    let program = idp
        .token(&[
            ("sub", "alice"),
            ("alg", "ES256"),
            ("aud", "api://sekisho"),
            ("typ", "JWT"),
        ])
        .await;
    assert_eq!(bearer(program).await, 200, "a program audience");
    let same_session = idp
        .token(&[
            ("sub", "alice"),
            ("alg", "ES256"),
            ("aud", "sekisho"),
            ("sid", sid.as_str()),
        ])
        .await;
    assert_eq!(bearer(same_session.clone()).await, 200, "before the logout");

    // Sign out at sekisho: tokens of that provider session stop working, others do not.
    let out = agent
        .send(
            sekisho_tests::no_redirect_client()
                .get(format!("{}/.sekisho/logout", proxy.base()))
                .header("sec-fetch-site", "same-origin"),
        )
        .await;
    assert_eq!(out.status(), 302);
    assert_eq!(
        bearer(same_session).await,
        401,
        "a token of the signed-out provider session"
    );
    assert_eq!(bearer(access).await, 200, "a token of another session");
    assert_eq!(bearer(id_token).await, 401);

    proxy_records_rejections(&proxy, 5).await;
}

/// The audit records once `ready` holds for them (the log is written in batches, in order).
async fn records_when(proxy: &Proxy, what: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let dir = proxy.audit_dir();
    sekisho_tests::eventually(what, || {
        let dir = dir.clone();
        let ready = &ready;
        async move { ready(&audit_records(&dir)) }
    })
    .await;
    audit_records(&dir)
}

fn count(records: &[Value], event: &str) -> usize {
    records
        .iter()
        .filter(|r| r["unmapped"]["event"] == event)
        .count()
}

/// At least `n` rejected bearer tokens are in the audit log, each with its reason.
async fn proxy_records_rejections(proxy: &Proxy, n: usize) {
    let records = records_when(proxy, "the rejected tokens' records", |r| {
        count(r, "credential_rejected") >= n
    })
    .await;
    let rejected: Vec<&Value> = records
        .iter()
        .filter(|r| r["unmapped"]["event"] == "credential_rejected")
        .collect();
    assert!(rejected.len() >= n, "{rejected:#?}");
    assert!(
        rejected.iter().any(|r| r["status_detail"]
            .as_str()
            .is_some_and(|d| d.contains("ID tokens are not bearer credentials"))),
        "{rejected:#?}"
    );
}

#[tokio::test]
async fn a_refreshed_session_cookie_reaches_the_browser_on_every_response() {
    // Tokens living 30 s are due for refresh at once (sekisho refreshes 60 s ahead), so every
    // request below refreshes and must hand the browser the new cookie, whatever its answer.
    let (idp, _echo, proxy) = stack(IdpOptions::short_tokens(), "ES256", |o| {
        o.extra_yaml = "policies:\n  admins-only:\n    allow:\n      and:\n        - groups: {has: admins}\n\
                        admin:\n  listen: 127.0.0.1:0\n  policy: admins-only\n"
            .into();
        o.routes_yaml = "  - id: admin\n    from: http://127.0.0.1/admin\n    to: http://{echo}\n    policy: admins-only\n\
                         \x20 - id: dead\n    from: http://127.0.0.1/dead\n    to: http://127.0.0.1:9\n\
                         \x20 - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n"
            .into();
    })
    .await;
    let (agent, _) = signed_in(&idp, &proxy, "bob").await;
    let admin = format!("http://{}", proxy.admin.expect("admin listener"));
    let cases = [
        ("a policy denial", format!("{}/admin/x", proxy.base()), 403),
        ("an upstream error", format!("{}/dead/x", proxy.base()), 502),
        (
            "an explicit login of a signed-in user",
            format!("{}/.sekisho/login?rd=/", proxy.base()),
            302,
        ),
        ("the admin listener", format!("{admin}/audit"), 403),
        ("a forward (control)", format!("{}/x", proxy.base()), 200),
    ];
    for (what, url, status) in cases {
        let before = agent.cookies()[SESSION].clone();
        let refreshes = idp.token_requests().await;
        let response = agent.api(&url).await;
        assert_eq!(response.status(), status, "{what}: {url}");
        assert_eq!(
            idp.token_requests().await,
            refreshes + 1,
            "{what}: the due session was refreshed"
        );
        let set = session_cookies_set(&response);
        assert!(
            set.len() == 1 && !set[0].is_empty() && set[0] != before,
            "{what}: the refreshed cookie must reach the browser: {set:?}"
        );
    }
    // The cookie the browser holds now still works: no refresh token was spent behind its back.
    assert_eq!(
        agent.api(&format!("{}/x", proxy.base())).await.status(),
        200
    );
}

/// The token of a "Sign out?" confirmation form.
fn form_token(page: &str) -> String {
    page.split("name=\"token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no token in the form: {page}"))
        .to_owned()
}

#[tokio::test]
async fn a_refresh_that_changes_the_groups_gets_a_new_assertion() {
    let (idp, _echo, proxy) = stack(IdpOptions::short_tokens(), "ES256", |_| {}).await;
    let (agent, landed) = signed_in(&idp, &proxy, "alice").await;
    let groups_of = |seen: &Echoed| {
        let assertion = seen.header("x-sekisho-jwt-assertion").expect("assertion");
        (
            seen.header("x-sekisho-groups").unwrap_or_default(),
            claims_of(&assertion)["groups"].clone(),
        )
    };
    let before = groups_of(&upstream_view(&agent, &landed).await);
    assert_eq!(before.0, "eng,admins");
    assert_eq!(before.1, serde_json::json!(["eng", "admins"]));

    // alice leaves `admins` at the provider; her next request refreshes the session (the
    // tokens are always due) and the upstream must not be told she is still an admin.
    idp.hook("/test/groups?sub=alice&groups=eng").await;
    let refreshes = idp.token_requests().await;
    let after = groups_of(&upstream_view(&agent, &landed).await);
    assert_eq!(idp.token_requests().await, refreshes + 1, "one refresh");
    assert_eq!(after.0, "eng", "the identity headers follow the refresh");
    assert_eq!(
        after.1,
        serde_json::json!(["eng"]),
        "the signed assertion follows the refresh, not the cache"
    );
}

/// Lines in the proxy's revocation file.
fn revocations(proxy: &Proxy) -> usize {
    std::fs::read_to_string(proxy.state_dir().join("revoked-sessions"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test]
async fn replayed_logouts_write_nothing_and_cross_site_logouts_ask_first() {
    let (idp, echo, proxy) = stack(IdpOptions::default(), "ES256", |_| {}).await;
    let (agent, landed) = signed_in(&idp, &proxy, "alice").await;
    let logout = format!("{}/.sekisho/logout", proxy.base());
    let client = sekisho_tests::no_redirect_client();

    // Another site links to the logout (or there is no Sec-Fetch-Site): a confirmation page,
    // nothing ended, no trip to the provider.
    for site in [Some("cross-site"), Some("same-site"), None] {
        let mut request = client.get(&logout).header("accept", "text/html");
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        let page = agent.send(request).await;
        assert_eq!(page.status(), 200, "{site:?}");
        assert!(
            session_cookies_set(&page).is_empty(),
            "{site:?}: not cleared"
        );
        let csp = page.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        let body = page.text().await.unwrap();
        assert!(body.contains("confirm-logout"), "{body}");
        assert_eq!(
            upstream_view(&agent, &landed)
                .await
                .header("x-sekisho-user")
                .as_deref(),
            Some("alice")
        );
    }
    // HEAD is no navigation: it never signs out, whatever it claims.
    let head = agent
        .send(client.head(&logout).header("sec-fetch-site", "same-origin"))
        .await;
    assert_eq!(head.status(), 200);
    assert!(
        session_cookies_set(&head).is_empty(),
        "HEAD cleared nothing"
    );
    let page = agent
        .send(
            client
                .get(&logout)
                .header("accept", "text/html")
                .header("sec-fetch-site", "cross-site"),
        )
        .await
        .text()
        .await
        .unwrap();
    let token = form_token(&page);

    // A token of another browser (no session) or a forged one does not end alice's session.
    let stranger = Agent::new();
    let stranger_page = stranger
        .send(client.get(&logout).header("sec-fetch-site", "cross-site"))
        .await
        .text()
        .await
        .unwrap();
    let stranger_token = form_token(&stranger_page);
    for forged in [stranger_token.as_str(), "garbage", ""] {
        let refused = agent
            .send(client.post(&logout).form(&[("token", forged)]))
            .await;
        assert_eq!(refused.status(), 403, "token {forged:?}");
    }
    assert_eq!(
        upstream_view(&agent, &landed)
            .await
            .header("x-sekisho-user")
            .as_deref(),
        Some("alice")
    );
    let before = revocations(&proxy);

    // The confirmed POST signs out.
    let cookie_before_logout = agent.cookies();
    let confirmed = agent
        .send(client.post(&logout).form(&[("token", token.as_str())]))
        .await;
    assert_eq!(confirmed.status(), 302);
    assert!(location(&confirmed, &logout).starts_with(&idp.issuer));
    assert_eq!(revocations(&proxy), before + 1, "one revocation written");
    let hits = echo.hits();
    assert_eq!(agent.api(&landed).await.status(), 401);

    // 300 replays of the revoked cookie, each the browser's own: nothing more is written.
    let replayer = Agent::new();
    for _ in 0..300 {
        replayer.set_cookies(cookie_before_logout.clone());
        let replay = replayer
            .send(client.get(&logout).header("sec-fetch-site", "same-origin"))
            .await;
        assert_eq!(replay.status(), 302);
        assert!(
            !location(&replay, &logout).contains("id_token_hint"),
            "a dead session sends no hint to the provider"
        );
    }
    assert_eq!(revocations(&proxy), before + 1, "replays wrote nothing");
    replayer.set_cookies(cookie_before_logout);
    assert_eq!(replayer.api(&landed).await.status(), 401);
    assert_eq!(echo.hits(), hits);
    // Records are written in order: once the replays' own HTTP records are in, so is any
    // logout record they would have caused.
    let records = records_when(&proxy, "the replays' records", |r| {
        r.iter()
            .filter(|r| r["http_request"]["url"]["path"] == "/.sekisho/logout")
            .count()
            >= 300
    })
    .await;
    assert_eq!(
        count(&records, "logout"),
        1,
        "one logout, not one per replay"
    );
}

#[tokio::test]
async fn a_callback_without_its_flow_cookie_costs_the_provider_nothing_and_forges_no_log_line() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |_| {}).await;
    let agent = Agent::new();
    let start = agent.browse(&format!("{}/x", proxy.base())).await;
    assert_eq!(start.status(), 302);
    let authorize = location(&start, &proxy.base());
    let state = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let before = idp.token_requests().await;
    let stranger = Agent::new();
    let callback = format!(
        "{}/.sekisho/callback?state={state}&code=stolen-code",
        proxy.base()
    );
    let refused = stranger.browse(&callback).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        idp.token_requests().await,
        before,
        "no code exchange without the flow cookie"
    );

    // Attacker text in `error` and `error_description` stays inside its log line.
    let forged = format!(
        "{}/.sekisho/callback?error=x%0AFORGED-LINE+level%3DINFO&error_description=y%0D%0AFORGED-TOO",
        proxy.base()
    );
    assert_eq!(stranger.browse(&forged).await.status(), 401);
    sekisho_tests::eventually("the refusal is logged", || async {
        proxy.logs().contains("provider returned an error")
    })
    .await;
    let logs = proxy.logs();
    for line in logs.lines() {
        assert!(
            !line.starts_with("FORGED") && !line.trim_start().starts_with("FORGED"),
            "a forged log line: {line:?}"
        );
    }
    records_when(
        &proxy,
        "a failed login record for each refused callback",
        |r| {
            r.iter()
                .filter(|r| r["unmapped"]["event"] == "login" && r["status_id"] == 2)
                .count()
                >= 2
        },
    )
    .await;
}

#[tokio::test]
async fn a_cookie_with_a_byte_outside_ascii_hides_nothing() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |o| {
        o.routes_yaml = "  - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n".into();
    })
    .await;
    let (agent, landed) = signed_in(&idp, &proxy, "alice").await;
    let mut line = agent.cookie_header().into_bytes();
    line.extend_from_slice(b"; _=\xef; theme=d\xe4rk");
    let response = sekisho_tests::no_redirect_client()
        .get(&landed)
        .header("accept", "application/json")
        .header(
            "cookie",
            reqwest::header::HeaderValue::from_bytes(&line).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "the session is read beside a non-ASCII cookie"
    );
    let seen = Echoed(response.json().await.unwrap());
    assert_eq!(seen.header("x-sekisho-user").as_deref(), Some("alice"));
    let forwarded = seen
        .header("cookie")
        .expect("the other cookies are forwarded");
    assert!(!forwarded.contains(SESSION), "{forwarded}");
    assert!(forwarded.contains("theme=d"), "{forwarded}");
}
