//! Login through the real OpenID provider, identity to the upstream, logout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use sekisho_tests::echo::Echoed;
use sekisho_tests::{Agent, IdpOptions, stack};

async fn login_and_check_identity(alg: &str, claims_in_id_token: bool) {
    let options = IdpOptions {
        claims_in_id_token,
        ..IdpOptions::default()
    };
    let (idp, echo, proxy) = stack(options, alg, |_| {}).await;
    let agent = Agent::new();
    let login = agent
        .login(
            &format!("{}/dashboard?tab=1", proxy.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    assert_eq!(
        login.landed,
        format!("{}/dashboard?tab=1", proxy.base()),
        "returned to where the user started"
    );
    let authorize = url::Url::parse(&login.authorize).unwrap();
    let params: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(
        params.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert!(params.get("state").is_some_and(|s| s.len() >= 32));
    assert!(params.get("nonce").is_some_and(|s| s.len() >= 32));

    let response = agent.browse(&login.landed).await;
    assert_eq!(response.status(), 200);
    let echoed = Echoed(response.json().await.unwrap());
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));
    assert_eq!(
        echoed.header("x-sekisho-email").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        echoed.header("x-sekisho-groups").as_deref(),
        Some("eng,admins")
    );
    assert_eq!(echoed.path(), "/dashboard");
    let cookie = echoed.header("cookie").unwrap_or_default();
    assert!(
        !cookie.contains("_sekisho"),
        "session cookie leaked upstream: {cookie}"
    );

    // The assertion verifies with the proxy's published JWKS, for this route's audience.
    let assertion = echoed
        .header("x-sekisho-jwt-assertion")
        .expect("assertion header");
    let jwks: JwkSet = agent
        .api(&format!("{}/.well-known/sekisho/jwks.json", proxy.base()))
        .await
        .json()
        .await
        .unwrap();
    let key = DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["app"]);
    validation.set_issuer(&["sekisho"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&assertion, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["groups"], serde_json::json!(["eng", "admins"]));
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!(lifetime <= 300, "assertion lifetime {lifetime}s");

    // The same session on a second request reuses the cached assertion (no new signature).
    let again = Echoed(agent.browse(&login.landed).await.json().await.unwrap());
    assert_eq!(again.header("x-sekisho-jwt-assertion"), Some(assertion));
    assert!(echo.hits() >= 2);
    drop(idp);
}

#[tokio::test]
async fn login_with_rs256_id_tokens() {
    login_and_check_identity("RS256", true).await;
}

#[tokio::test]
async fn login_with_es256_id_tokens() {
    login_and_check_identity("ES256", true).await;
}

#[tokio::test]
async fn login_with_eddsa_id_tokens() {
    login_and_check_identity("EdDSA", true).await;
}

#[tokio::test]
async fn groups_come_from_userinfo_when_the_id_token_lacks_them() {
    login_and_check_identity("RS256", false).await;
}

#[tokio::test]
async fn unauthenticated_requests_never_reach_the_upstream() {
    let (_idp, echo, proxy) = stack(IdpOptions::default(), "RS256", |_| {}).await;
    let agent = Agent::new();
    let browser = agent.browse(&format!("{}/x", proxy.base())).await;
    assert_eq!(browser.status(), 302);
    let api = agent.api(&format!("{}/x", proxy.base())).await;
    assert_eq!(api.status(), 401);
    let challenge = api
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "challenge {challenge:?}");
    assert!(api.headers().get("x-request-id").is_some());
    let xhr = agent
        .send(
            reqwest::Client::new()
                .get(format!("{}/x", proxy.base()))
                .header("accept", "text/html")
                .header("x-requested-with", "XMLHttpRequest"),
        )
        .await;
    assert_eq!(xhr.status(), 401, "XHR gets 401, not a redirect");
    let post = agent
        .send(
            reqwest::Client::new()
                .post(format!("{}/x", proxy.base()))
                .header("accept", "text/html"),
        )
        .await;
    assert_eq!(post.status(), 401);
    assert_eq!(echo.hits(), 0, "upstream saw an unauthenticated request");
}

#[tokio::test]
async fn logout_revokes_the_session_even_for_a_copied_cookie_and_across_restarts() {
    let (idp, echo, mut proxy) = stack(IdpOptions::default(), "ES256", |_| {}).await;
    let agent = Agent::new();
    let login = agent
        .login(&format!("{}/", proxy.base()), &idp.issuer, "bob", "bob-pw")
        .await;
    assert_eq!(agent.api(&login.landed).await.status(), 200);
    let copied = agent.cookies();

    let out = agent
        .browse(&format!("{}/.sekisho/logout", proxy.base()))
        .await;
    assert_eq!(out.status(), 302);
    let end_session = url::Url::parse(&sekisho_tests::location(&out, &proxy.base())).unwrap();
    assert!(
        end_session.as_str().starts_with(&idp.issuer),
        "RP-initiated logout goes to the IdP: {end_session}"
    );
    let params: std::collections::HashMap<_, _> = end_session.query_pairs().into_owned().collect();
    assert!(params.contains_key("id_token_hint"));
    assert_eq!(
        params.get("post_logout_redirect_uri"),
        Some(&format!("{}/.sekisho/signed-out", proxy.base()))
    );
    let after = agent.api(&format!("{}/", proxy.base())).await;
    assert_eq!(after.status(), 401, "cookies were cleared");

    let thief = Agent::new();
    thief.set_cookies(copied.clone());
    let hits = echo.hits();
    assert_eq!(
        thief.api(&format!("{}/", proxy.base())).await.status(),
        401,
        "a copied cookie is dead after logout"
    );

    proxy.restart().await;
    let thief = Agent::new();
    thief.set_cookies(copied);
    assert_eq!(
        thief.api(&format!("{}/", proxy.base())).await.status(),
        401,
        "revocation survives a restart"
    );
    assert_eq!(echo.hits(), hits);
}
