//! Login in a real browser: headless Chromium (`tests/node/browser.mjs`) through the real IdP's
//! login form, over TLS (the `__Host-` Secure cookie) and over plain HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use sekisho_tests::echo::Echoed;
use sekisho_tests::{IdpOptions, regex_escape, run_browser, stack};
use serde_json::{Value, json};

/// A route for the TLS listener too: routes match the scheme the client used.
const TLS_ROUTE: &str = "  - id: app-tls\n    from: https://127.0.0.1\n    to: http://{echo}\n";

/// The echo upstream's JSON as the browser showed it (Chromium may add a pretty-print toolbar
/// around a JSON document, so take the outermost object).
fn echoed_from_page(dump: &Value) -> Echoed {
    let body = dump["body"].as_str().unwrap_or_default();
    let (Some(start), Some(end)) = (body.find('{'), body.rfind('}')) else {
        panic!("no JSON on the page {}: {body}", dump["url"]);
    };
    Echoed(
        serde_json::from_str(&body[start..=end])
            .unwrap_or_else(|e| panic!("page JSON ({e}): {body}")),
    )
}

/// The steps from an unauthenticated visit of `app_url` through the IdP's login form back to
/// the app, dumping the app page as `app`.
fn login_steps(
    app_url: &str,
    origin: &str,
    issuer: &str,
    user: &str,
    password: &str,
) -> Vec<Value> {
    vec![
        json!({"goto": app_url}),
        json!({"wait_url": format!("^{}/interaction/", regex_escape(issuer))}),
        json!({"expect_text": "Sign in"}),
        json!({"fill": "input[name=login]", "value": user}),
        json!({"fill": "input[name=password]", "value": password}),
        json!({"click": "#submit"}),
        json!({"wait_url": format!("^{}/hello", regex_escape(origin))}),
        json!({"expect_text": "x-sekisho-user"}),
        json!({"expect_status": 200}),
        json!({"dump": "app"}),
    ]
}

#[tokio::test]
async fn chromium_logs_in_over_tls_with_a_host_prefixed_secure_cookie_and_logs_out() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |o| {
        o.tls = true;
        o.routes_yaml.push_str(TLS_ROUTE);
    })
    .await;
    let origin = proxy.tls_base().expect("TLS listener");
    let app = format!("{origin}/hello");
    let mut steps = login_steps(&app, &origin, &idp.issuer, "alice", "alice-pw");
    steps.extend([
        json!({"cookies": "after_login"}),
        json!({"goto": format!("{origin}/.sekisho/logout")}),
        // The IdP's end-session page submits itself and sends the browser back.
        json!({"wait_url": format!("^{}/\\.sekisho/signed-out", regex_escape(&origin))}),
        json!({"expect_text": "signed out"}),
        json!({"expect_status": 200}),
        json!({"cookies": "after_logout"}),
        json!({"goto": &app}),
        json!({"wait_url": format!("^{}/interaction/", regex_escape(&idp.issuer))}),
        json!({"expect_text": "Sign in"}),
        json!({"dump": "again"}),
    ]);
    let result = run_browser(&json!({ "steps": steps })).await;
    let dumps = &result["dumps"];

    let echoed = echoed_from_page(&dumps["app"]);
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));
    assert_eq!(
        echoed.header("x-sekisho-groups").as_deref(),
        Some("eng,admins")
    );
    assert_eq!(echoed.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(echoed.path(), "/hello");
    let upstream_cookie = echoed.header("cookie").unwrap_or_default();
    assert!(
        !upstream_cookie.contains("_sekisho"),
        "session cookie leaked upstream: {upstream_cookie}"
    );

    let session = find_cookie(&dumps["after_login"], "__Host-_sekisho")
        .unwrap_or_else(|| panic!("no __Host-_sekisho cookie: {}", dumps["after_login"]));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["secure"], true, "{session}");
    assert_eq!(session["sameSite"], "Lax", "{session}");
    assert_eq!(session["path"], "/", "{session}");
    assert_eq!(
        session["domain"], "127.0.0.1",
        "host-only cookie: {session}"
    );
    assert!(
        find_cookie(&dumps["after_login"], "_sekisho").is_none(),
        "no plain cookie over TLS"
    );
    let flows: Vec<&Value> = cookies(&dumps["after_login"])
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.contains("_flow_")))
        .collect();
    assert!(
        flows.is_empty(),
        "the login-flow cookie is cleared after the callback: {flows:?}"
    );

    assert!(
        find_cookie(&dumps["after_logout"], "__Host-_sekisho").is_none(),
        "logout clears the session cookie: {}",
        dumps["after_logout"]
    );
    let again = &dumps["again"];
    assert!(
        again["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&idp.issuer)),
        "after logout the app asks for a login: {again}"
    );
    assert!(
        !again["body"]
            .as_str()
            .unwrap_or_default()
            .contains("x-sekisho-user"),
        "the app was shown after logout: {again}"
    );
}

#[tokio::test]
async fn chromium_logs_in_over_plain_http() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "RS256", |_| {}).await;
    let origin = proxy.base();
    let steps = login_steps(
        &format!("{origin}/hello?from=browser"),
        &origin,
        &idp.issuer,
        "bob",
        "bob-pw",
    );
    let result = run_browser(&json!({ "steps": steps, "timeout_ms": 15000 })).await;
    let app = &result["dumps"]["app"];
    assert_eq!(
        app["url"],
        format!("{origin}/hello?from=browser"),
        "returned to where the user started"
    );
    let echoed = echoed_from_page(app);
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("bob"));
    assert_eq!(echoed.header("x-sekisho-groups").as_deref(), Some("sales"));
    assert_eq!(echoed.0["query"], "from=browser");
}

fn cookies(dump: &Value) -> &[Value] {
    dump["cookies"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn find_cookie<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    cookies(dump).iter().find(|c| c["name"] == name)
}

#[tokio::test]
async fn a_logout_link_on_another_site_only_asks_and_the_confirmation_signs_out() {
    let (idp, _echo, proxy) = stack(IdpOptions::default(), "ES256", |_| {}).await;
    let origin = proxy.base();
    let app = format!("{origin}/hello");
    // A page of another site (an opaque data: origin) that links to sekisho's logout.
    let evil =
        format!("data:text/html,<a id=\"evil\" href=\"{origin}/.sekisho/logout\">win a prize</a>");
    let mut steps = login_steps(&app, &origin, &idp.issuer, "alice", "alice-pw");
    steps.extend([
        json!({"goto": evil}),
        json!({"click": "#evil"}),
        json!({"wait_url": format!("^{}/\\.sekisho/logout", regex_escape(&origin))}),
        json!({"expect_text": "Sign out?"}),
        json!({"dump": "confirmation"}),
        // Nothing ended: the app still knows alice.
        json!({"goto": &app}),
        json!({"expect_text": "x-sekisho-user"}),
        json!({"dump": "still_signed_in"}),
        // The user confirms on sekisho's own page: signed out, at sekisho and the provider.
        json!({"goto": format!("{origin}/.sekisho/logout?from=bookmark")}),
        json!({"dump": "own_navigation"}),
    ]);
    let result = run_browser(&json!({ "steps": steps })).await;
    let dumps = &result["dumps"];
    let confirmation = dumps["confirmation"]["body"].as_str().unwrap_or_default();
    assert!(confirmation.contains("Sign out"), "{confirmation}");
    let still = echoed_from_page(&dumps["still_signed_in"]);
    assert_eq!(still.header("x-sekisho-user").as_deref(), Some("alice"));
    // A navigation the browser made itself (typed, bookmarked: Sec-Fetch-Site none) signs out
    // at once and goes through the provider's end-session.
    let own = dumps["own_navigation"]["url"].as_str().unwrap_or_default();
    assert!(
        !own.contains("/.sekisho/logout"),
        "a typed logout URL is not asked again: {own}"
    );

    // The confirmation button in a real browser.
    let mut steps = login_steps(&app, &origin, &idp.issuer, "bob", "bob-pw");
    steps.extend([
        json!({"goto": format!("data:text/html,<a id=\"evil\" href=\"{origin}/.sekisho/logout\">x</a>")}),
        json!({"click": "#evil"}),
        json!({"expect_text": "Sign out?"}),
        json!({"click": "#confirm-logout"}),
        json!({"wait_url": format!("^{}/\\.sekisho/signed-out", regex_escape(&origin))}),
        json!({"expect_text": "signed out"}),
        json!({"goto": &app}),
        json!({"wait_url": format!("^{}/interaction/", regex_escape(&idp.issuer))}),
        json!({"expect_text": "Sign in"}),
    ]);
    run_browser(&json!({ "steps": steps })).await;
}
