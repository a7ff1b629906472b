//! Several instances sharing state through a real Redis (`shared_state:`): the real `sekisho`
//! binary twice (then a third), the real test provider, `redis-server` on a Unix socket. A
//! session made on one instance works on the other; a logout on one is refused on the other
//! within a second; a replayed callback is refused by the instance that did not see it; with
//! Redis gone both keep serving from their own copy, say `degraded`, and queue what changes; a
//! Redis that comes back empty is filled again and every instance converges, a new instance
//! included.
//!
//! Every wait is on a condition with a deadline ([`sekisho_tests::eventually`]).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sekisho_tests::echo::Echo;
use sekisho_tests::redis::{ACL_PASSWORD, Redis};
use sekisho_tests::{
    Agent, CLIENT_SECRET, Idp, IdpOptions, Pending, Proxy, ProxyOptions, audit_records, eventually,
    no_redirect_client,
};
use serde_json::Value;

const ADMIN: &str = "admin:\n  listen: 127.0.0.1:0\n  policy: admins\npolicies:\n  admins:\n    allow:\n      and:\n        - groups: {has: admins}\n";

/// The status an API request with exactly these `cookies` gets at `url`.
async fn status_with(cookies: &BTreeMap<String, String>, url: &str) -> u16 {
    let agent = Agent::new();
    agent.set_cookies(cookies.clone());
    agent.api(url).await.status().as_u16()
}

/// `/readyz` of `proxy`'s admin listener: the HTTP status and the `shared_state` check.
async fn shared_check(proxy: &Proxy) -> (u16, Value) {
    let response = reqwest::get(format!("http://{}/readyz", proxy.admin.unwrap()))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let check = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "shared_state")
        .cloned()
        .unwrap();
    (status, check)
}

/// One sample of `proxy`'s `/metrics`.
async fn metric(proxy: &Proxy, line_start: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", proxy.admin.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits until `/readyz` of `proxy` says the shared state is `status`.
async fn shared_state_is(proxy: &Proxy, status: &str) {
    eventually(&format!("shared_state {status}"), || async {
        let (http, check) = shared_check(proxy).await;
        assert_eq!(http, 200, "shared state never makes an instance unready");
        check["status"] == status
    })
    .await;
}

/// Signs out the session in `cookies` at `proxy`.
async fn logout(cookies: &BTreeMap<String, String>, proxy: &Proxy) {
    let agent = Agent::new();
    agent.set_cookies(cookies.clone());
    let out = agent
        .send(
            no_redirect_client()
                .get(format!("{}/.sekisho/logout", proxy.base()))
                .header("sec-fetch-site", "same-origin"),
        )
        .await;
    assert_eq!(out.status(), 302, "logout at {}", proxy.base());
}

#[tokio::test]
async fn instances_share_sessions_revocations_and_used_states_through_redis_and_ride_out_its_loss()
{
    let mut redis = Redis::start().await;
    let idp = Idp::start(IdpOptions::default()).await;
    let echo = Echo::start().await;
    let mut options = ProxyOptions::new(&idp.issuer);
    options.extra_yaml = format!("{ADMIN}{}", redis.shared_state_yaml(""));
    let a = Proxy::start(&options, echo.addr).await;
    options.cookie_key = Some(a.cookie_key.clone().try_into().unwrap());
    let b = Proxy::start(&options, echo.addr).await;
    let mut origins = a.origins();
    origins.extend(b.origins());
    idp.register_client("sekisho", CLIENT_SECRET, &origins, "RS256")
        .await;
    shared_state_is(&a, "ok").await;
    shared_state_is(&b, "ok").await;

    // A browser session made on A works on B (shared cookie keys), and A tells B of it.
    let alice = Agent::new();
    let Pending { callback, .. } = alice
        .until_callback(
            &format!("{}/app", a.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    let flow_cookies = alice.cookies();
    let done = alice.browse(&callback).await;
    assert_eq!(done.status(), 302, "the callback at A");
    let alice_cookies = alice.cookies();
    assert_eq!(
        status_with(&alice_cookies, &format!("{}/app", b.base())).await,
        200
    );
    // A's used state and session start reach B (two messages), then the same callback with
    // the same flow cookie, replayed at B, is refused there before the code is exchanged.
    eventually("B applied A's used state and session", || async {
        metric(
            &b,
            "sekisho_shared_state_messages_total{outcome=\"received\"}",
        )
        .await
            >= 2
    })
    .await;
    let replay = callback.replace(&a.http.to_string(), &b.http.to_string());
    let replayed = {
        let agent = Agent::new();
        agent.set_cookies(flow_cookies);
        agent.browse(&replay).await
    };
    assert_eq!(
        replayed.status(),
        401,
        "a callback replayed at the other instance"
    );
    eventually("B's audit log says why", || async {
        audit_records(&b.audit_dir()).iter().any(|r| {
            r["http_request"]["url"]["path"] == "/.sekisho/callback"
                && r.to_string().contains("state already used")
        })
    })
    .await;

    // A logout on A is refused on B within a second.
    let bob = Agent::new();
    bob.login(&format!("{}/app", a.base()), &idp.issuer, "bob", "bob-pw")
        .await;
    let bob_cookies = bob.cookies();
    assert_eq!(
        status_with(&bob_cookies, &format!("{}/app", b.base())).await,
        200
    );
    logout(&alice_cookies, &a).await;
    let logged_out = Instant::now();
    eventually("B refuses alice's signed-out session", || async {
        status_with(&alice_cookies, &format!("{}/app", b.base())).await == 401
    })
    .await;
    let reached = logged_out.elapsed();
    eprintln!("a logout on A was refused on B after {reached:?}");
    assert!(
        reached < Duration::from_secs(1),
        "the revocation took {reached:?} to reach B"
    );
    assert_eq!(
        status_with(&bob_cookies, &format!("{}/app", b.base())).await,
        200,
        "bob's session is untouched"
    );

    // Redis goes away: both instances say degraded, stay ready, and keep serving sessions from
    // their own copy. A logout on B applies on B at once and is queued for A.
    redis.stop().await;
    shared_state_is(&a, "degraded").await;
    shared_state_is(&b, "degraded").await;
    assert_eq!(
        status_with(&bob_cookies, &format!("{}/app", a.base())).await,
        200
    );
    assert_eq!(
        status_with(&alice_cookies, &format!("{}/app", a.base())).await,
        401
    );
    logout(&bob_cookies, &b).await;
    assert_eq!(
        status_with(&bob_cookies, &format!("{}/app", b.base())).await,
        401
    );
    assert_eq!(
        status_with(&bob_cookies, &format!("{}/app", a.base())).await,
        200,
        "A cannot know yet: Redis is down"
    );
    eventually("B queued the logout", || async {
        metric(&b, "sekisho_shared_state_queued ").await >= 1
    })
    .await;

    // Redis comes back empty. B's queue reaches A; both push what they know, so a third
    // instance started now knows both logouts without ever having seen them happen.
    redis.start_again().await;
    shared_state_is(&a, "ok").await;
    shared_state_is(&b, "ok").await;
    eventually(
        "A refuses bob's session, signed out at B while Redis was down",
        || async { status_with(&bob_cookies, &format!("{}/app", a.base())).await == 401 },
    )
    .await;
    let revocations = redis.cli(&["ZCARD", "sekisho:revocations"]);
    assert!(
        revocations.trim().parse::<u64>().unwrap() >= 2,
        "the empty Redis holds both sessions' revocations again: {revocations}"
    );
    let c = Proxy::start(&options, echo.addr).await;
    shared_state_is(&c, "ok").await;
    for (who, cookies) in [("alice", &alice_cookies), ("bob", &bob_cookies)] {
        assert_eq!(
            status_with(cookies, &format!("{}/app", c.base())).await,
            401,
            "{who}'s signed-out session at the new instance"
        );
    }
    // And a fresh session made on the new instance still works everywhere.
    origins.extend(c.origins());
    idp.register_client("sekisho", CLIENT_SECRET, &origins, "RS256")
        .await;
    let carol = Agent::new();
    carol
        .login(
            &format!("{}/app", c.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    for proxy in [&a, &b, &c] {
        assert_eq!(
            status_with(&carol.cookies(), &format!("{}/app", proxy.base())).await,
            200
        );
    }
}

#[tokio::test]
async fn redis_over_tls_with_a_least_privilege_user_and_a_wrong_password_says_why() {
    let redis = Redis::start_tls().await;
    let idp = Idp::start(IdpOptions::default()).await;
    let echo = Echo::start().await;
    let mut options = ProxyOptions::new(&idp.issuer);
    options.extra_yaml = format!("{ADMIN}{}", redis.shared_state_yaml(ACL_PASSWORD));
    let good = Proxy::start(&options, echo.addr).await;
    options.extra_yaml = format!("{ADMIN}{}", redis.shared_state_yaml("not-the-password"));
    let refused = Proxy::start(&options, echo.addr).await;
    idp.register_client("sekisho", CLIENT_SECRET, &good.origins(), "RS256")
        .await;
    shared_state_is(&good, "ok").await;
    eventually(
        "the instance with the wrong password says why it is degraded",
        || async {
            let (_, check) = shared_check(&refused).await;
            check["status"] == "degraded" && check["detail"].to_string().contains("WRONGPASS")
        },
    )
    .await;

    // The narrow ACL user is enough for everything the link does: a login and a logout land
    // in the stream and the revocation in its sorted set, and no write was refused.
    let alice = Agent::new();
    alice
        .login(
            &format!("{}/app", good.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    logout(&alice.cookies(), &good).await;
    eventually("the revocation is in Redis", || async {
        redis.cli(&["ZCARD", "sekisho:revocations"]).trim() == "1"
    })
    .await;
    let entries: u64 = redis
        .cli(&["XLEN", "sekisho:events"])
        .trim()
        .parse()
        .unwrap();
    assert!(
        entries >= 4,
        "used state, session start, revocation and session end were streamed: {entries}"
    );
    assert!(
        !good.logs().contains("Redis refused"),
        "a write was refused: {}",
        good.logs()
    );
}
