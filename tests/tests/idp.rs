//! The built-in OpenID provider, end to end: sekisho logs users in through its own provider
//! (discovered over HTTP like any other), in headless Chromium and by hand; the provider's
//! protocol rules (PKCE, single-use codes, exact redirect URIs, refresh rotation, token types,
//! client authentication, logout), its sign-in form (CSRF, TOTP, failed-login limits), and its
//! keys across restarts and rotation. A third-party relying party (Python authlib) runs the
//! whole flow against it too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::process::Stdio;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sekisho_tests::builtin::{
    ALICE_PASSWORD, BOB_PASSWORD, CAROL_PASSWORD, HASHED_RP_ID, HASHED_RP_SECRET, Options, RP_ID,
    RP_LOGOUT, RP_REDIRECT, RP_SECRET, Stack, authorize_url, code_request, pkce, token_request,
};
use sekisho_tests::echo::Echoed;
use sekisho_tests::{
    Agent, eventually, location, no_redirect_client, regex_escape, run_browser, workspace,
};
use serde_json::{Value, json};

/// Signs in as the test relying party and redeems the code: the token response.
async fn tokens(stack: &Stack, user: &str, password: &str) -> Value {
    let agent = Agent::new();
    let (verifier, challenge) = pkce();
    let code = agent
        .code_for(&stack.issuer, &challenge, user, password)
        .await;
    let (status, body) = token_request(
        &stack.issuer,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", RP_REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn jwks(stack: &Stack) -> JwkSet {
    no_redirect_client()
        .get(format!("{}/jwks", stack.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Verifies an ID token against the provider's published keys.
async fn verify_id_token(stack: &Stack, token: &str) -> Value {
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let set = jwks(stack).await;
    let jwk = set
        .find(&kid)
        .unwrap_or_else(|| panic!("kid {kid} not published"));
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[RP_ID]);
    validation.set_issuer(&[&stack.issuer]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .unwrap_or_else(|e| panic!("ID token does not verify: {e}"))
        .claims
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn echoed(agent: &Agent, url: &str) -> (u16, Option<Echoed>) {
    let response = agent.browse(url).await;
    let status = response.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    (status, Some(Echoed(response.json().await.unwrap())))
}

#[tokio::test]
async fn chromium_signs_in_through_the_built_in_provider_and_out_again() {
    let stack = Stack::start(Options::default()).await;
    let app = format!("{}/hello", stack.origin);
    let issuer = regex_escape(&stack.issuer);
    let steps = vec![
        json!({"goto": &app}),
        json!({"wait_url": format!("^{issuer}/authorize")}),
        json!({"expect_text": "Sign in"}),
        json!({"fill": "#username", "value": "alice@example.com"}),
        json!({"fill": "#password", "value": ALICE_PASSWORD}),
        json!({"click": "#submit"}),
        json!({"wait_url": format!("^{}/hello", regex_escape(&stack.origin))}),
        json!({"expect_status": 200}),
        json!({"dump": "app"}),
        json!({"cookies": "after_login"}),
        json!({"goto": format!("{}/.sekisho/logout", stack.origin)}),
        json!({"wait_url": format!("^{}/\\.sekisho/signed-out", regex_escape(&stack.origin))}),
        json!({"expect_text": "signed out"}),
        json!({"goto": &app}),
        json!({"wait_url": format!("^{issuer}/authorize")}),
        json!({"expect_text": "Sign in"}),
        json!({"dump": "again"}),
    ];
    let result = run_browser(&json!({ "steps": steps })).await;
    let dumps = &result["dumps"];
    let body = dumps["app"]["body"].as_str().unwrap();
    let json_text = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let echoed = Echoed(serde_json::from_str(json_text).unwrap());
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));
    assert_eq!(
        echoed.header("x-sekisho-email").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        echoed.header("x-sekisho-groups").as_deref(),
        Some("eng,admins")
    );
    let cookies = dumps["after_login"]["cookies"].as_array().unwrap();
    let idp_cookie = cookies
        .iter()
        .find(|c| c["name"] == "sekisho_idp")
        .unwrap_or_else(|| panic!("no provider sign-in cookie: {cookies:?}"));
    assert_eq!(idp_cookie["httpOnly"], true);
    assert_eq!(idp_cookie["sameSite"], "Lax");
    assert_eq!(idp_cookie["path"], "/idp");
    // After logout at sekisho (RP-initiated logout at the provider), the provider asks again.
    assert!(
        dumps["again"]["body"]
            .as_str()
            .unwrap()
            .contains("Password")
    );
    assert!(
        stack
            .logs()
            .lines()
            .any(|l| l.contains("identity provider sign-in")
                && l.contains("success")
                && l.contains("alice")),
        "the sign-in is reported as an event"
    );
}

#[tokio::test]
async fn the_sign_in_page_is_accessible_and_hardened() {
    let stack = Stack::start(Options::default()).await;
    let (_, challenge) = pkce();
    let authorize = authorize_url(&stack.issuer, &code_request(&challenge, "s"));
    let response = Agent::new().browse(&authorize).await;
    assert_eq!(response.status(), 200);
    let h = response.headers().clone();
    let header = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(header("x-frame-options"), "DENY");
    assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
    assert!(header("content-security-policy").contains("default-src 'none'"));
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert!(header("set-cookie").contains("HttpOnly"));
    let html = response.text().await.unwrap();
    for needle in [
        "<label for=\"username\">",
        "autocomplete=\"username\"",
        "<label for=\"password\">",
        "autocomplete=\"current-password\"",
        "lang=\"en\"",
    ] {
        assert!(html.contains(needle), "{needle} missing: {html}");
    }
    assert!(!html.contains("<script"), "no JavaScript");
}

#[tokio::test]
async fn tokens_are_standard_and_userinfo_takes_access_tokens_only() {
    let stack = Stack::start(Options::default()).await;
    let body = tokens(&stack, "alice", ALICE_PASSWORD).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    let id_token = body["id_token"].as_str().unwrap();
    let claims = verify_id_token(&stack, id_token).await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["groups"], json!(["eng", "admins"]));
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["amr"], json!(["pwd"]));
    let access = body["access_token"].as_str().unwrap();
    let at_hash = URL_SAFE_NO_PAD
        .encode(&ring::digest::digest(&ring::digest::SHA256, access.as_bytes()).as_ref()[..16]);
    assert_eq!(claims["at_hash"], at_hash);
    assert_eq!(
        jsonwebtoken::decode_header(access).unwrap().typ.as_deref(),
        Some("at+jwt")
    );

    let issuer = &stack.issuer;
    let userinfo = |token: String| async move {
        let response = no_redirect_client()
            .get(format!("{issuer}/userinfo"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        (
            status,
            challenge,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let (status, _, info) = userinfo(access.to_owned()).await;
    assert_eq!(status, 200);
    assert_eq!(info["sub"], "alice");
    assert_eq!(info["groups"], json!(["eng", "admins"]));
    // Token confusion: an ID token is no access token.
    let (status, challenge, _) = userinfo(id_token.to_owned()).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().contains("invalid_token"));
    let (status, _, _) = userinfo(format!("{access}x")).await;
    assert_eq!(status, 401);
    let response = no_redirect_client()
        .get(format!("{}/userinfo", stack.issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn pkce_is_required_s256_only_and_checked() {
    let stack = Stack::start(Options::default()).await;
    let agent = Agent::new();
    let (verifier, challenge) = pkce();
    // No challenge, plain and unknown methods: an error back at the (registered) redirect URI.
    for params in [
        vec![("code_challenge_method", "S256")],
        vec![("code_challenge", challenge.as_str())],
        vec![
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "plain"),
        ],
        vec![
            ("code_challenge", "too-short"),
            ("code_challenge_method", "S256"),
        ],
    ] {
        let mut query: Vec<(&str, &str)> = code_request(&challenge, "st")
            .into_iter()
            .filter(|(k, _)| !k.starts_with("code_challenge"))
            .collect();
        query.extend(params.iter().copied());
        let response = agent.browse(&authorize_url(&stack.issuer, &query)).await;
        assert_eq!(response.status(), 302, "{query:?}");
        let back = location(&response, &stack.issuer);
        assert!(back.starts_with(RP_REDIRECT), "{back}");
        assert_eq!(
            query_param(&back, "error").as_deref(),
            Some("invalid_request"),
            "{back}"
        );
        assert_eq!(query_param(&back, "state").as_deref(), Some("st"));
        assert_eq!(
            query_param(&back, "iss").as_deref(),
            Some(stack.issuer.as_str())
        );
    }
    // A code without its verifier, or with another one, is refused (and burned).
    let code = agent
        .code_for(&stack.issuer, &challenge, "bob", BOB_PASSWORD)
        .await;
    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", RP_REDIRECT),
    ];
    let (status, body) = token_request(&stack.issuer, &base).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (other, _) = pkce();
    let mut wrong = base.to_vec();
    wrong.push(("code_verifier", &other));
    let (status, body) = token_request(&stack.issuer, &wrong).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let mut right = base.to_vec();
    right.push(("code_verifier", &verifier));
    let (status, body) = token_request(&stack.issuer, &right).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "a code that met a wrong verifier is spent: {body}"
    );
}

#[tokio::test]
async fn codes_are_single_use_and_a_replay_revokes_what_they_issued() {
    let stack = Stack::start(Options::default()).await;
    let agent = Agent::new();
    let (verifier, challenge) = pkce();
    let code = agent
        .code_for(&stack.issuer, &challenge, "alice", ALICE_PASSWORD)
        .await;
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", RP_REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, first) = token_request(&stack.issuer, &fields).await;
    assert_eq!(status, 200, "{first}");
    let (status, replay) = token_request(&stack.issuer, &fields).await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, refreshed) = token_request(
        &stack.issuer,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", first["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(
        (status, refreshed["error"].as_str()),
        (400, Some("invalid_grant")),
        "the replay revoked the refresh token: {refreshed}"
    );
    // A redirect_uri differing from the authorization request's is refused.
    let (verifier, challenge) = pkce();
    let agent = Agent::new();
    let code = agent
        .code_for(&stack.issuer, &challenge, "alice", ALICE_PASSWORD)
        .await;
    let (status, body) = token_request(
        &stack.issuer,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn unregistered_redirect_uris_and_clients_get_a_page_never_a_redirect() {
    let stack = Stack::start(Options::default()).await;
    let agent = Agent::new();
    let (_, challenge) = pkce();
    for (name, value) in [
        ("redirect_uri", "https://evil.example/callback"),
        ("redirect_uri", "http://127.0.0.1:9/callback/../evil"),
        ("redirect_uri", "http://127.0.0.1:9/callbackx"),
        ("client_id", "nobody"),
    ] {
        let query: Vec<(&str, &str)> = code_request(&challenge, "st")
            .into_iter()
            .map(|(k, v)| if k == name { (k, value) } else { (k, v) })
            .collect();
        let response = agent.browse(&authorize_url(&stack.issuer, &query)).await;
        assert_eq!(response.status(), 400, "{name}={value}");
        assert!(
            response.headers().get("location").is_none(),
            "{name}={value}"
        );
        assert!(response.text().await.unwrap().contains("Request refused"));
    }
    // Logout: only a registered post_logout_redirect_uri is followed.
    let logout = |uri: &str| {
        format!(
            "{}/end-session?client_id={RP_ID}&post_logout_redirect_uri={}",
            stack.issuer,
            url::form_urlencoded::byte_serialize(uri.as_bytes()).collect::<String>()
        )
    };
    let response = agent.browse(&logout("https://evil.example/")).await;
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
    // A registered one, without id_token_hint: the user confirms first (logout CSRF).
    let response = agent.browse(&logout(RP_LOGOUT)).await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("Sign out?"), "{html}");
    let token = html
        .split("name=\"confirm\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    // Another browser cannot submit the confirmation.
    let other = Agent::new();
    let posted = other
        .post_form(
            &format!("{}/end-session/confirm", stack.issuer),
            &[("confirm", &token)],
            None,
        )
        .await;
    assert_eq!(posted.status, 403);
    let posted = agent
        .post_form(
            &format!("{}/end-session/confirm", stack.issuer),
            &[("confirm", &token)],
            None,
        )
        .await;
    assert_eq!(posted.status, 303);
    assert_eq!(posted.location.as_deref(), Some(RP_LOGOUT));
}

#[tokio::test]
async fn login_forms_posted_from_another_browser_are_refused() {
    let stack = Stack::start(Options::default()).await;
    let (_, challenge) = pkce();
    let authorize = authorize_url(&stack.issuer, &code_request(&challenge, "st"));
    let victim = Agent::new();
    let attacker = Agent::new();
    let (action, interaction) = attacker.open_sign_in(&authorize).await;
    // The victim's browser has its own binding cookie (it opened a form once) ...
    let _ = victim.open_sign_in(&authorize).await;
    let fields = [
        ("interaction", interaction.as_str()),
        ("username", "bob"),
        ("password", BOB_PASSWORD),
    ];
    let posted = victim.post_form(&action, &fields, None).await;
    assert_eq!(posted.status, 403, "{}", posted.body);
    // ... and a browser with no cookie at all is refused as well.
    let posted = Agent::new().post_form(&action, &fields, None).await;
    assert_eq!(posted.status, 403);
    // A forged or tampered form is refused.
    let mut tampered = interaction.clone();
    tampered.replace_range(10..11, if &tampered[10..11] == "A" { "B" } else { "A" });
    let posted = attacker
        .post_form(
            &action,
            &[
                ("interaction", &tampered),
                ("username", "bob"),
                ("password", BOB_PASSWORD),
            ],
            None,
        )
        .await;
    assert_eq!(posted.status, 400);
    // The form's own browser succeeds, once.
    let posted = attacker.post_form(&action, &fields, None).await;
    assert_eq!(posted.status, 303, "{}", posted.body);
    let again = attacker.post_form(&action, &fields, None).await;
    assert_eq!(again.status, 400, "a completed form cannot be used again");
}

/// Signs carol in with her password; returns the code form (action, interaction).
async fn carol_code_page(agent: &Agent, issuer: &str, challenge: &str) -> (String, String) {
    let authorize = authorize_url(issuer, &code_request(challenge, "st"));
    let (action, interaction) = agent.open_sign_in(&authorize).await;
    let posted = agent
        .post_form(
            &action,
            &[
                ("interaction", &interaction),
                ("username", "carol"),
                ("password", CAROL_PASSWORD),
            ],
            None,
        )
        .await;
    assert_eq!(posted.status, 200, "the code page follows a right password");
    assert!(
        posted.body.contains("autocomplete=\"one-time-code\""),
        "{}",
        posted.body
    );
    sekisho_tests::builtin::form(&posted.body, &action)
}

#[tokio::test]
async fn totp_is_asked_after_the_password_and_a_code_works_once() {
    let stack = Stack::start(Options::default()).await;
    let secret = sekisho_config::base32::decode(sekisho_tests::builtin::CAROL_TOTP).unwrap();
    let code_now = || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        format!("{:06}", sekisho::idp::totp::code_at(&secret, now / 30))
    };
    let (verifier, challenge) = pkce();
    let agent = Agent::new();
    let (action, interaction) = carol_code_page(&agent, &stack.issuer, &challenge).await;
    let wrong = agent
        .post_form(
            &action,
            &[("interaction", &interaction), ("code", "000000")],
            None,
        )
        .await;
    // (One in a million: the wrong code is right.)
    if code_now() != "000000" {
        assert_eq!(wrong.status, 401);
    }
    let code = code_now();
    let ok = agent
        .post_form(
            &action,
            &[("interaction", &interaction), ("code", &code)],
            None,
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let back = ok.location.unwrap();
    let auth_code = query_param(&back, "code").unwrap();
    let (status, body) = token_request(
        &stack.issuer,
        &[
            ("grant_type", "authorization_code"),
            ("code", &auth_code),
            ("redirect_uri", RP_REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        sekisho_tests::jwt_claims(body["id_token"].as_str().unwrap())["amr"],
        json!(["pwd", "otp", "mfa"])
    );
    // The same code in a new sign-in (another browser) is refused: no reuse.
    let other = Agent::new();
    let (action, interaction) = carol_code_page(&other, &stack.issuer, &challenge).await;
    let reused = other
        .post_form(
            &action,
            &[("interaction", &interaction), ("code", &code)],
            None,
        )
        .await;
    assert_eq!(reused.status, 401, "a TOTP code is accepted once");
    assert!(stack.logs().contains("reused_code"));
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_its_family() {
    let stack = Stack::start(Options::default()).await;
    let first = tokens(&stack, "bob", BOB_PASSWORD).await;
    let rt1 = first["refresh_token"].as_str().unwrap();
    let issuer = &stack.issuer;
    let refresh = |token: String| async move {
        token_request(
            issuer,
            &[("grant_type", "refresh_token"), ("refresh_token", &token)],
        )
        .await
    };
    let (status, second) = refresh(rt1.to_owned()).await;
    assert_eq!(status, 200, "{second}");
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2, "rotated");
    let claims = verify_id_token(&stack, second["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], "bob");
    // rt1 again: refused, and its family (rt2) with it.
    let (status, reused) = refresh(rt1.to_owned()).await;
    assert_eq!(
        (status, reused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, after) = refresh(rt2).await;
    assert_eq!(
        (status, after["error"].as_str()),
        (400, Some("invalid_grant")),
        "{after}"
    );
}

#[tokio::test]
async fn the_token_endpoint_answers_bad_requests_with_oauth_errors() {
    let stack = Stack::start(Options::default()).await;
    let url = format!("{}/token", stack.issuer);
    let http = no_redirect_client();
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let challenge = response.headers().get("www-authenticate").is_some();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (
            status,
            body["error"].as_str().unwrap_or("").to_owned(),
            challenge,
        )
    };
    let basic = |request: reqwest::RequestBuilder| request.basic_auth(RP_ID, Some(RP_SECRET));
    assert_eq!(
        send(basic(http.post(&url)).form(&[("grant_type", "password")])).await,
        (400, "unsupported_grant_type".into(), false)
    );
    assert_eq!(
        send(basic(http.post(&url)).form(&[("code", "x")])).await,
        (400, "invalid_request".into(), false)
    );
    assert_eq!(
        send(
            http.post(&url)
                .basic_auth(RP_ID, Some("wrong-secret-0123456789"))
                .form(&[("grant_type", "refresh_token")])
        )
        .await,
        (401, "invalid_client".into(), true)
    );
    assert_eq!(
        send(
            http.post(&url)
                .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        )
        .await,
        (401, "invalid_client".into(), true)
    );
    assert_eq!(
        send(
            basic(http.post(&url))
                .body("grant_type=refresh_token&grant_type=authorization_code")
                .header("content-type", "application/x-www-form-urlencoded")
        )
        .await,
        (400, "invalid_request".into(), false)
    );
    assert_eq!(
        send(basic(http.post(&url)).json(&json!({"grant_type": "refresh_token"}))).await,
        (400, "invalid_request".into(), false)
    );
    assert_eq!(
        send(basic(http.post(&url)).form(&[
            ("grant_type", "authorization_code"),
            ("code", "nope"),
            ("redirect_uri", RP_REDIRECT),
            ("code_verifier", &"a".repeat(43))
        ]))
        .await,
        (400, "invalid_grant".into(), false)
    );
    // client_secret_post, and an Argon2id-hashed client secret.
    assert_eq!(
        send(http.post(&url).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", RP_ID),
            ("client_secret", RP_SECRET)
        ]))
        .await,
        (400, "invalid_grant".into(), false)
    );
    assert_eq!(
        send(
            http.post(&url)
                .basic_auth(HASHED_RP_ID, Some(HASHED_RP_SECRET))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        )
        .await,
        (400, "invalid_grant".into(), false)
    );
    assert_eq!(http.get(&url).send().await.unwrap().status(), 405);
}

#[tokio::test]
async fn failed_logins_lock_the_account_from_every_source() {
    let stack = Stack::start(Options {
        login_limits: "{account_failures: 3, source_failures: 100, lockout: 2s, max_lockout: 1m}"
            .into(),
        trusted_proxies: vec!["127.0.0.1".into()],
        ..Options::default()
    })
    .await;
    let (_, challenge) = pkce();
    let authorize = authorize_url(&stack.issuer, &code_request(&challenge, "st"));
    let agent = Agent::new();
    let (action, interaction) = agent.open_sign_in(&authorize).await;
    let attempt = |user: &'static str, password: &'static str, source: &'static str| {
        let (agent, action, interaction) = (&agent, action.clone(), interaction.clone());
        async move {
            agent
                .post_form(
                    &action,
                    &[
                        ("interaction", &interaction),
                        ("username", user),
                        ("password", password),
                    ],
                    Some(source),
                )
                .await
        }
    };
    for _ in 0..3 {
        let posted = attempt("alice", "wrong", "198.51.100.1").await;
        assert_eq!(posted.status, 401);
        assert!(posted.body.contains("Incorrect username or password."));
    }
    // Locked: even the right password, even from elsewhere.
    let locked = attempt("alice", ALICE_PASSWORD, "203.0.113.9").await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert!(locked.retry_after.is_some());
    assert!(locked.body.contains("Too many failed sign-in attempts"));
    // Other accounts from the same source are not affected.
    let bob = Agent::new();
    let (bob_action, bob_interaction) = bob.open_sign_in(&authorize).await;
    let posted = bob
        .post_form(
            &bob_action,
            &[
                ("interaction", &bob_interaction),
                ("username", "bob"),
                ("password", BOB_PASSWORD),
            ],
            Some("198.51.100.1"),
        )
        .await;
    assert_eq!(posted.status, 303);
    // The lockout ends (polled with a deadline; locked attempts are not counted).
    let deadline = tokio::time::Instant::now() + sekisho_tests::DEADLINE;
    loop {
        let status = attempt("alice", ALICE_PASSWORD, "198.51.100.1")
            .await
            .status;
        if status != 429 {
            assert_eq!(status, 303);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lockout did not end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let logs = stack.logs();
    assert!(logs.contains("wrong_password"), "failures are reported");
    assert!(logs.contains("account_locked"), "lockouts are reported");
    // And each attempt is an Authentication record of the audit log, with its source.
    let dir = stack.audit_dir();
    sekisho_tests::eventually("the sign-in records are written", || {
        let records = std::fs::read_dir(&dir)
            .map(|_| sekisho_tests::audit_records(&dir))
            .unwrap_or_default();
        let signed_in = |outcome: &str, source: &str| {
            records.iter().any(|r| {
                r["class_uid"] == 3002
                    && r["src_endpoint"]["ip"] == source
                    && r["status_detail"].as_str().unwrap_or("").ends_with(outcome)
            })
        };
        let done = signed_in("wrong_password", "198.51.100.1")
            && signed_in("account_locked", "203.0.113.9")
            && signed_in("success", "198.51.100.1");
        async move { done }
    })
    .await;
}

#[tokio::test]
async fn failed_logins_lock_the_source_across_accounts() {
    let stack = Stack::start(Options {
        login_limits: "{account_failures: 100, source_failures: 3, lockout: 30s, max_lockout: 1m}"
            .into(),
        trusted_proxies: vec!["127.0.0.1".into()],
        ..Options::default()
    })
    .await;
    let (_, challenge) = pkce();
    let authorize = authorize_url(&stack.issuer, &code_request(&challenge, "st"));
    let agent = Agent::new();
    let (action, interaction) = agent.open_sign_in(&authorize).await;
    let attempt = |user: &'static str, password: &'static str, source: &'static str| {
        let (agent, action, interaction) = (&agent, action.clone(), interaction.clone());
        async move {
            agent
                .post_form(
                    &action,
                    &[
                        ("interaction", &interaction),
                        ("username", user),
                        ("password", password),
                    ],
                    Some(source),
                )
                .await
        }
    };
    // Unknown accounts count like known ones (and get the same answer).
    for user in ["mallory", "trent", "bob"] {
        let posted = attempt(user, "guess", "192.0.2.66").await;
        assert_eq!(posted.status, 401);
        assert!(posted.body.contains("Incorrect username or password."));
    }
    let locked = attempt("alice", ALICE_PASSWORD, "192.0.2.66").await;
    assert_eq!(locked.status, 429);
    // Another source signs in.
    let elsewhere = attempt("alice", ALICE_PASSWORD, "192.0.2.67").await;
    assert_eq!(elsewhere.status, 303, "{}", elsewhere.body);
    let logs = stack.logs();
    assert!(logs.contains("unknown_user"));
    assert!(logs.contains("source_locked"));
}

#[tokio::test]
async fn sessions_and_keys_survive_a_restart_and_rotation_keeps_old_tokens_valid() {
    // Tokens live 30 s: every request through the proxy refreshes at the provider.
    let mut stack = Stack::start(Options {
        token_lifetime: "30s".into(),
        ..Options::default()
    })
    .await;
    let agent = Agent::new();
    agent.proxy_login(&stack, "alice", ALICE_PASSWORD).await;
    let app = format!("{}/hello", stack.origin);
    let (status, echoed_before) = echoed(&agent, &app).await;
    assert_eq!(status, 200);
    assert_eq!(
        echoed_before.unwrap().header("x-sekisho-user").as_deref(),
        Some("alice")
    );
    let before = tokens(&stack, "bob", BOB_PASSWORD).await;
    let kid_before = jsonwebtoken::decode_header(before["id_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();

    stack.restart().await;
    // The proxy's session refreshes through the provider's persisted refresh token.
    let (status, _) = echoed(&agent, &app).await;
    assert_eq!(status, 200, "the old session works after the restart");
    assert!(
        stack.logs().contains("session refreshed"),
        "the session was refreshed after the restart"
    );
    let set = jwks(&stack).await;
    assert!(
        set.find(&kid_before).is_some(),
        "the same key after a restart"
    );
    let (status, refreshed) = token_request(
        &stack.issuer,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", before["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(status, 200, "refresh tokens survive a restart: {refreshed}");

    // Rotation: a new key signs, the old one stays published.
    let output = std::process::Command::new(sekisho_tests::sekisho_binary())
        .args(["idp", "rotate-key", "-c"])
        .arg(&stack.config_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let new_kid = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_ne!(new_kid, kid_before);
    stack.reload();
    eventually("the new key to be published", || {
        let stack = &stack;
        let kid = new_kid.clone();
        async move { jwks(stack).await.find(&kid).is_some() }
    })
    .await;
    let after = tokens(&stack, "bob", BOB_PASSWORD).await;
    let kid_after = jsonwebtoken::decode_header(after["id_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_eq!(kid_after, new_kid, "the new key signs");
    verify_id_token(&stack, before["id_token"].as_str().unwrap()).await;
    verify_id_token(&stack, after["id_token"].as_str().unwrap()).await;
    assert_eq!(jwks(&stack).await.keys.len(), 2);
    let (status, _) = echoed(&agent, &app).await;
    assert_eq!(status, 200, "the session survives the rotation");
    let key_files = std::fs::read_dir(stack.idp_state().join("keys"))
        .unwrap()
        .count();
    assert_eq!(key_files, 2);
}

#[tokio::test]
async fn a_third_party_relying_party_python_authlib_completes_the_code_flow() {
    let stack = Stack::start(Options::default()).await;
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| {
            std::process::Command::new(p)
                .args(["-c", "import authlib, requests"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("python3 with authlib and requests (tests/setup.sh installs python3-authlib)");
    let output = tokio::process::Command::new(python)
        .arg(workspace().join("tests/interop/authlib_rp.py"))
        .args([
            &stack.issuer,
            RP_ID,
            RP_SECRET,
            RP_REDIRECT,
            "alice@example.com",
            ALICE_PASSWORD,
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "authlib relying party failed:\n{stdout}\n{}\nsekisho log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        stack.logs()
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(report["id_token"]["sub"], "alice");
    assert_eq!(report["id_token"]["aud"], RP_ID);
    assert_eq!(report["userinfo"]["email"], "alice@example.com");
    assert_eq!(report["userinfo"]["groups"], json!(["eng", "admins"]));
    assert_eq!(report["refreshed"], true);
    assert_eq!(report["reused_refresh_error"], "invalid_grant");
}

/// Opens `n` sign-in forms for the test relying party in `agent` (one browser, `n` forms).
async fn open_forms(agent: &Agent, stack: &Stack, n: usize) -> Vec<(String, String)> {
    let (_, challenge) = pkce();
    let authorize = authorize_url(&stack.issuer, &code_request(&challenge, "st"));
    let mut forms = Vec::with_capacity(n);
    for _ in 0..n {
        forms.push(agent.open_sign_in(&authorize).await);
    }
    forms
}

/// Posts every `(form, login, password, source)` at once; the outcomes in the same order.
async fn post_all(
    agent: &std::sync::Arc<Agent>,
    attempts: Vec<((String, String), String, String, String)>,
) -> Vec<sekisho_tests::builtin::Posted> {
    let mut tasks = Vec::new();
    for ((action, interaction), login, password, source) in attempts {
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            agent
                .post_form(
                    &action,
                    &[
                        ("interaction", &interaction),
                        ("username", &login),
                        ("password", &password),
                    ],
                    Some(&source),
                )
                .await
        }));
    }
    let mut posted = Vec::new();
    for task in tasks {
        posted.push(task.await.unwrap());
    }
    posted
}

/// (password checks, refusals with 429 + Retry-After, anything else).
fn tally(posted: &[sekisho_tests::builtin::Posted]) -> (usize, usize, Vec<u16>) {
    let checked = posted
        .iter()
        .filter(|p| p.status == 401 && p.body.contains("Incorrect username or password."))
        .count();
    let locked = posted
        .iter()
        .filter(|p| p.status == 429 && p.retry_after.is_some())
        .count();
    let other = posted
        .iter()
        .filter(|p| p.status != 401 && p.status != 429)
        .map(|p| p.status)
        .collect();
    (checked, locked, other)
}

#[tokio::test]
async fn concurrent_wrong_passwords_for_one_account_get_at_most_the_limit_of_checks() {
    let stack = Stack::start(Options {
        login_limits:
            "{account_failures: 3, source_failures: 1000, client_failures: 1000, lockout: 10s, max_lockout: 1m}"
                .into(),
        trusted_proxies: vec!["127.0.0.1".into()],
        ..Options::default()
    })
    .await;
    let agent = std::sync::Arc::new(Agent::new());
    let forms = open_forms(&agent, &stack, 61).await;
    let (last_form, forms) = forms.split_last().unwrap();
    // Sixty at once, each with its own form and source: only the account limit applies.
    let attempts = forms
        .iter()
        .enumerate()
        .map(|(i, form)| {
            (
                form.clone(),
                "alice".to_owned(),
                format!("wrong-{i}"),
                format!("198.51.100.{}", i + 1),
            )
        })
        .collect();
    let posted = post_all(&agent, attempts).await;
    let (checked, locked, other) = tally(&posted);
    assert_eq!(
        (checked, locked, other),
        (3, 57, Vec::new()),
        "at most 3 password checks for alice, the rest 429"
    );
    // The right password during the lockout is refused too.
    let right = post_all(
        &agent,
        vec![(
            last_form.clone(),
            "alice".to_owned(),
            ALICE_PASSWORD.to_owned(),
            "203.0.113.5".to_owned(),
        )],
    )
    .await;
    assert_eq!(right[0].status, 429, "{}", right[0].body);
    // Control: another account is served (in another browser).
    let bob_agent = std::sync::Arc::new(Agent::new());
    let bob_forms = open_forms(&bob_agent, &stack, 1).await;
    let bob = post_all(
        &bob_agent,
        vec![(
            bob_forms[0].clone(),
            "bob".to_owned(),
            BOB_PASSWORD.to_owned(),
            "198.51.100.1".to_owned(),
        )],
    )
    .await;
    assert_eq!(bob[0].status, 303, "{}", bob[0].body);
    // Once the window has passed, alice signs in (polled with a deadline).
    let deadline = tokio::time::Instant::now() + sekisho_tests::DEADLINE;
    loop {
        let form = open_forms(&agent, &stack, 1).await;
        let status = post_all(
            &agent,
            vec![(
                form[0].clone(),
                "alice".to_owned(),
                ALICE_PASSWORD.to_owned(),
                "203.0.113.5".to_owned(),
            )],
        )
        .await[0]
            .status;
        if status != 429 {
            assert_eq!(status, 303);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lockout did not end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn concurrent_wrong_passwords_from_one_source_get_at_most_the_limit_of_checks() {
    let stack = Stack::start(Options {
        login_limits: "{account_failures: 1000, source_failures: 3, lockout: 1m, max_lockout: 1m}"
            .into(),
        trusted_proxies: vec!["127.0.0.1".into()],
        ..Options::default()
    })
    .await;
    let agent = std::sync::Arc::new(Agent::new());
    let forms = open_forms(&agent, &stack, 41).await;
    let (last_form, forms) = forms.split_last().unwrap();
    // Forty accounts (known and unknown) from one IPv6 /64, at once.
    let attempts = forms
        .iter()
        .enumerate()
        .map(|(i, form)| {
            (
                form.clone(),
                format!("user{i}"),
                "guess".to_owned(),
                format!("2001:db8::{i:x}"),
            )
        })
        .collect();
    let (checked, locked, other) = tally(&post_all(&agent, attempts).await);
    assert_eq!((checked, locked, other), (3, 37, Vec::new()));
    let elsewhere = post_all(
        &agent,
        vec![(
            last_form.clone(),
            "alice".to_owned(),
            ALICE_PASSWORD.to_owned(),
            "2001:db8:1::1".to_owned(),
        )],
    )
    .await;
    assert_eq!(elsewhere[0].status, 303, "another source is served");
}

#[tokio::test]
async fn a_sign_in_form_is_good_for_five_attempts() {
    let stack = Stack::start(Options {
        login_limits: "{account_failures: 1000, source_failures: 1000}".into(),
        trusted_proxies: vec!["127.0.0.1".into()],
        ..Options::default()
    })
    .await;
    let agent = std::sync::Arc::new(Agent::new());
    let form = open_forms(&agent, &stack, 1).await.remove(0);
    let attempts = (0..20)
        .map(|i| {
            (
                form.clone(),
                "alice".to_owned(),
                format!("wrong-{i}"),
                "198.51.100.20".to_owned(),
            )
        })
        .collect();
    let posted = post_all(&agent, attempts).await;
    let (checked, _, _) = tally(&posted);
    assert_eq!(checked, 5, "five password checks per form");
    let used_up = posted
        .iter()
        .filter(|p| p.status == 400 && p.body.contains("start again"))
        .count();
    assert_eq!(used_up, 15);
    // Even the right password is refused on that form; a new form works.
    let again = post_all(
        &agent,
        vec![(
            form,
            "alice".to_owned(),
            ALICE_PASSWORD.to_owned(),
            "198.51.100.20".to_owned(),
        )],
    )
    .await;
    assert_eq!(again[0].status, 400, "{}", again[0].body);
    let fresh = open_forms(&agent, &stack, 1).await.remove(0);
    let ok = post_all(
        &agent,
        vec![(
            fresh,
            "alice".to_owned(),
            ALICE_PASSWORD.to_owned(),
            "198.51.100.20".to_owned(),
        )],
    )
    .await;
    assert_eq!(ok[0].status, 303, "{}", ok[0].body);
    assert!(stack.logs().contains("form_exhausted"));
}

#[tokio::test]
async fn client_secret_failures_at_the_token_endpoint_are_limited_per_client_and_source() {
    // The default limit: 10 failures per client and source.
    let stack = Stack::start(Options {
        trusted_proxies: vec!["127.0.0.1".into()],
        ..Options::default()
    })
    .await;
    let url = format!("{}/token", stack.issuer);
    let attempt = |client: &'static str, secret: String, source: &'static str| {
        let url = url.clone();
        async move {
            let response = no_redirect_client()
                .post(&url)
                .basic_auth(client, Some(secret))
                .header("x-forwarded-for", source)
                .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").is_some();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (
                status,
                retry_after,
                body["error"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let mut tasks = Vec::new();
    for i in 0..40 {
        tasks.push(tokio::spawn(attempt(
            HASHED_RP_ID,
            format!("wrong-{i}"),
            "198.51.100.7",
        )));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let checked = outcomes
        .iter()
        .filter(|o| **o == (401, false, "invalid_client".to_owned()))
        .count();
    let limited = outcomes
        .iter()
        .filter(|o| **o == (429, true, "invalid_client".to_owned()))
        .count();
    assert_eq!((checked, limited), (10, 30), "{outcomes:?}");
    // The right secret from that source waits out the lockout too ...
    let (status, _, _) = attempt(HASHED_RP_ID, HASHED_RP_SECRET.into(), "198.51.100.7").await;
    assert_eq!(status, 429);
    // ... while the client from another source, and another client from that source, are served.
    let (status, _, error) = attempt(HASHED_RP_ID, HASHED_RP_SECRET.into(), "198.51.100.8").await;
    assert_eq!((status, error.as_str()), (400, "invalid_grant"));
    let (status, _, error) = attempt(RP_ID, RP_SECRET.into(), "198.51.100.7").await;
    assert_eq!((status, error.as_str()), (400, "invalid_grant"));
    // Failures and the lockout are audit records.
    let dir = stack.audit_dir();
    eventually("the client-authentication records are written", || {
        let records = std::fs::read_dir(&dir)
            .map(|_| sekisho_tests::audit_records(&dir))
            .unwrap_or_default();
        let found = |outcome: &str| {
            records.iter().any(|r| {
                r["class_uid"] == 3002
                    && r["src_endpoint"]["ip"] == "198.51.100.7"
                    && r["status_detail"].as_str().unwrap_or("").ends_with(outcome)
            })
        };
        let done = found("wrong_client_secret") && found("client_locked");
        async move { done }
    })
    .await;
}

#[tokio::test]
async fn a_replayed_end_session_appends_nothing_to_the_grant_file() {
    let stack = Stack::start(Options::default()).await;
    let body = tokens(&stack, "alice", ALICE_PASSWORD).await;
    let hint = body["id_token"].as_str().unwrap();
    let url = format!(
        "{}/end-session?id_token_hint={hint}&post_logout_redirect_uri={RP_LOGOUT}",
        stack.issuer
    );
    let http = no_redirect_client();
    let grants = stack.idp_state().join("grants.jsonl");
    let first = http.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 302);
    let size = std::fs::metadata(&grants).unwrap().len();
    assert!(
        std::fs::read_to_string(&grants)
            .unwrap()
            .contains("revoke_sid"),
        "the first logout is recorded"
    );
    for _ in 0..200 {
        assert_eq!(http.get(&url).send().await.unwrap().status(), 302);
    }
    assert_eq!(
        std::fs::metadata(&grants).unwrap().len(),
        size,
        "logging out an ended sign-in again writes nothing"
    );
    // The refresh token of that sign-in stays revoked.
    let (status, refreshed) = token_request(
        &stack.issuer,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", body["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(
        (status, refreshed["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn login_names_cannot_forge_log_lines() {
    let stack = Stack::start(Options::default()).await;
    let agent = Agent::new();
    let form = open_forms(&agent, &stack, 1).await.remove(0);
    let forged = "nobody\nforged-line INFO sekisho: identity provider sign-in outcome=\"success\"";
    let posted = agent
        .post_form(
            &form.0,
            &[
                ("interaction", &form.1),
                ("username", forged),
                ("password", "x"),
            ],
            None,
        )
        .await;
    assert_eq!(posted.status, 401);
    eventually("the failed sign-in to be logged", || {
        let logged = stack.logs().contains("unknown_user");
        async move { logged }
    })
    .await;
    let logs = stack.logs();
    assert!(
        !logs
            .lines()
            .any(|l| l.trim_start().starts_with("forged-line")),
        "a login name started a log line:\n{logs}"
    );
    assert!(
        logs.contains(r"nobody\nforged-line"),
        "the name is logged, escaped"
    );
}
