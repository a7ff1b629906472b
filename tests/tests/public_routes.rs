//! Public routes (`public: true`) and CORS preflights (`cors_allow_preflight: true`) through the
//! real binary: no sign-in and no identity on them, identity headers of every spelling still
//! stripped, and no path trick that turns a public path into a protected one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use sekisho_tests::echo::{Echo, Echoed};
use sekisho_tests::{Idp, Proxy, audit_records, eventually, raw, stack};
use serde_json::Value;

const ROUTES: &str = "  - id: public\n    from: http://127.0.0.1\n    path: {prefix: /public/}\n    \
                      to: http://{echo}\n    public: true\n\
                      \x20 - id: api\n    from: http://127.0.0.1\n    path: {prefix: /api/}\n    \
                      to: http://{echo}\n    cors_allow_preflight: true\n\
                      \x20 - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n";

async fn public_stack() -> (Idp, Echo, Proxy) {
    stack(Default::default(), "ES256", |o| {
        o.routes_yaml = ROUTES.to_owned()
    })
    .await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The audit record of the request whose response carried `id`.
async fn record(proxy: &Proxy, id: &str) -> Value {
    let audit = proxy.audit_dir();
    let mut found = None;
    eventually("the request's record", || {
        let hit = audit_records(&audit)
            .into_iter()
            .find(|r| r["http_request"]["uid"] == id);
        let done = hit.is_some();
        found = hit;
        async move { done }
    })
    .await;
    found.unwrap()
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_public_route_needs_no_sign_in_and_passes_no_identity() {
    let (idp, _echo, proxy) = public_stack().await;
    let base = proxy.base();
    let forged = [
        ("x-sekisho-user", "admin"),
        ("x-sekisho-groups", "admins"),
        ("x-sekisho-jwt-assertion", "e30.e30.sig"),
        ("x_sekisho_email", "admin@example.com"),
        ("x-forwarded-user", "admin"),
        (
            "x-goog-authenticated-user-email",
            "accounts.google.com:admin@example.com",
        ),
    ];
    let mut anonymous = client().get(format!("{base}/public/page"));
    for (name, value) in forged {
        anonymous = anonymous.header(name, value);
    }
    let response = anonymous.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let echoed = Echoed(response.json().await.unwrap());
    assert_eq!(echoed.path(), "/public/page");
    for (name, _) in forged {
        let folded = name.replace('_', "-");
        assert!(
            !echoed.header_names().contains(&folded),
            "{name} reached the public upstream: {:?}",
            echoed.header_names()
        );
    }
    let record = record(&proxy, &id).await;
    assert_eq!(record["unmapped"]["decision"], "public");
    assert_eq!(record["unmapped"]["route"], "public");
    assert!(record.get("actor").is_none(), "{record}");

    // Signed in or not, a public route passes no identity (and asks for none).
    let token = idp.bearer("alice").await;
    let signed_in = client()
        .get(format!("{base}/public/page"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    let echoed = Echoed(signed_in.json().await.unwrap());
    assert_eq!(echoed.header("x-sekisho-user"), None);
    assert_eq!(echoed.header("x-sekisho-jwt-assertion"), None);

    // The protected rest of the host still wants a sign-in.
    let protected = client()
        .get(format!("{base}/admin"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(protected.status(), 401);
}

#[tokio::test]
async fn no_path_trick_turns_a_public_path_into_a_protected_one() {
    let (_idp, echo, proxy) = public_stack().await;
    // Sent byte for byte (an HTTP client would normalise some of these itself).
    let cases: &[(&str, &[u16])] = &[
        // Dot segments resolve before routing: these are /admin, which needs a sign-in.
        ("/public/../admin", &[401]),
        ("/public/%2e%2e/admin", &[401]),
        ("/public/%2E%2E/admin", &[401]),
        ("/public/./../admin", &[401]),
        ("/public//../../admin", &[400, 401]),
        // Encoded separators are never decoded into the path.
        ("/public/..%2Fadmin", &[400]),
        ("/public%2F..%2Fadmin", &[400]),
        ("/public/..%5Cadmin", &[400]),
        ("/public/..\\admin", &[400]),
        // What a lenient upstream would read as /admin (Tomcat `..;`, a second decoding, case)
        // is refused rather than sent to the public route.
        ("/public/..;/admin", &[400]),
        ("/public/%252e%252e/admin", &[400]),
        ("/public/%2e%2e;x/admin", &[400, 401]),
        ("/PUBLIC/x", &[400, 401]),
    ];
    let hits = echo.hits();
    for (path, expected) in cases {
        let request = raw::get(&proxy, path, &[("Accept", "application/json")]);
        let status = raw::single(proxy.http, &request).await.status;
        assert!(
            expected.contains(&status),
            "{path}: got {status}, expected one of {expected:?}"
        );
    }
    assert_eq!(
        echo.hits(),
        hits,
        "a trick reached the upstream unauthenticated"
    );
}

#[tokio::test]
async fn cors_preflights_pass_without_sign_in_only_where_allowed() {
    let (_idp, echo, proxy) = public_stack().await;
    let base = proxy.base();
    let preflight = |path: &str| {
        client()
            .request(reqwest::Method::OPTIONS, format!("{base}{path}"))
            .header("origin", "https://web.example.com")
            .header("access-control-request-method", "POST")
    };

    let hits = echo.hits();
    let allowed = preflight("/api/items").send().await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(echo.hits(), hits + 1);
    let id = request_id(&allowed);
    let echoed = Echoed(allowed.json().await.unwrap());
    assert_eq!(echoed.0["method"], "OPTIONS");
    assert_eq!(echoed.header("x-sekisho-user"), None);
    let record = record(&proxy, &id).await;
    assert_eq!(record["unmapped"]["decision"], "public");
    assert_eq!(
        record["unmapped"]["rule"],
        "CORS preflight (cors_allow_preflight)"
    );

    // Not a preflight (no Access-Control-Request-Method), another method, or a route that
    // does not allow them: the policy decides, and nobody is signed in.
    let plain_options = client()
        .request(reqwest::Method::OPTIONS, format!("{base}/api/items"))
        .header("origin", "https://web.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(plain_options.status(), 401);
    let post = client()
        .post(format!("{base}/api/items"))
        .header("origin", "https://web.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 401);
    let elsewhere = preflight("/admin").send().await.unwrap();
    assert_eq!(elsewhere.status(), 401);
    assert_eq!(echo.hits(), hits + 1, "only the allowed preflight arrived");
}
