//! Path variants an upstream reads differently from sekisho (letter case, `;` parameters, a
//! second percent-decoding, overlong UTF-8): refused with 400 and an audit record unless the
//! route declares its upstream strict about that form; and configuration path literals in the
//! same normal form as request paths. The real IdP's users: alice (admins), bob (sales); a real
//! nginx as the upstream that ignores case (`location ~* ^/admin`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::net::SocketAddr;

use sekisho_tests::raw::{self, RawResponse, single};
use sekisho_tests::{IdpOptions, Nginx, audit_records, stack};

const POLICIES: &str = "policies:\n  admins-only:\n    allow:\n      and:\n        - groups: {has: admins}\n\
                        \x20 no-admin-path:\n    allow:\n      and:\n        - authenticated_user: true\n\
                        \x20   deny:\n      or:\n        - http_path: {prefix: \"/%61dmin\"}\n";

/// `127.0.0.1`: `/admin` for admins, `/` for any user, both on the echo upstream (its hit
/// counter shows what reached an upstream). `lenient.test`: the same on nginx, which ignores
/// case, with the default (lenient) `upstream_paths`. `strict.test`: the same on nginx, declared
/// case-sensitive (wrongly, to show what the default refusal prevents). `policy.test`: any user,
/// but a deny rule written with `%61`.
fn routes(nginx: SocketAddr) -> String {
    format!(
        "  - id: admin\n    from: http://127.0.0.1/admin\n    to: http://{{echo}}\n    policy: admins-only\n\
         \x20 - id: app\n    from: http://127.0.0.1\n    to: http://{{echo}}\n\
         \x20 - id: lenient-admin\n    from: http://lenient.test/admin\n    to: http://{nginx}\n    policy: admins-only\n\
         \x20 - id: lenient\n    from: http://lenient.test\n    to: http://{nginx}\n\
         \x20 - id: strict-admin\n    from: http://strict.test/admin\n    to: http://{nginx}\n    policy: admins-only\n\
         \x20 - id: strict\n    from: http://strict.test\n    to: http://{nginx}\n    upstream_paths: {{case: sensitive}}\n\
         \x20 - id: policy\n    from: http://policy.test\n    to: http://{{echo}}\n    policy: no-admin-path\n"
    )
}

/// Sends a raw HTTP/1.1 request (the path exactly as given; `reqwest` would normalise it).
async fn raw(addr: SocketAddr, host: &str, path: &str, token: &str) -> RawResponse {
    let authorization = format!("Bearer {token}");
    let request = raw::request(
        &format!("GET {path} HTTP/1.1"),
        &[
            ("Host", host),
            ("Authorization", &authorization),
            ("Accept", "application/json"),
        ],
        "",
    );
    single(addr, &request).await
}

#[tokio::test]
async fn path_variants_an_upstream_reads_differently_are_refused() {
    let nginx = Nginx::start(
        "location ~* ^/admin { return 200 \"nginx-admin\\n\"; }\n\
         location / { return 200 \"nginx-public\\n\"; }",
    )
    .await;
    let (idp, echo, mut proxy) = stack(IdpOptions::default(), "RS256", |o| {
        o.extra_yaml = POLICIES.to_owned();
        o.routes_yaml = routes(nginx.addr);
    })
    .await;
    let (alice, bob) = (idp.bearer("alice").await, idp.bearer("bob").await);
    let local = proxy.http.to_string();

    // Controls: bob may use `/` and a harmless mixed-case path; alice reaches the admin route;
    // bob does not.
    assert_eq!(raw(proxy.http, &local, "/", &bob).await.status, 200);
    let mixed = raw(proxy.http, &local, "/api/Users", &bob).await;
    assert_eq!(
        mixed.status,
        200,
        "harmless mixed case passes: {}",
        mixed.text()
    );
    assert!(mixed.text().contains("/api/Users"), "{}", mixed.text());
    assert_eq!(raw(proxy.http, &local, "/admin/", &alice).await.status, 200);
    assert_eq!(raw(proxy.http, &local, "/admin/", &bob).await.status, 403);

    let mut refused = Vec::new();
    for variant in [
        "/ADMIN/",
        "/Admin/",
        "/admin;/",
        "/admin;x=1/",
        "/;/admin/",
        "/%2561dmin/",
        "/x/%252e%252e/admin/",
        "/x/%c0%ae%c0%ae/admin/",
    ] {
        let hits = echo.hits();
        let response = raw(proxy.http, &local, variant, &bob).await;
        assert_eq!(
            response.status,
            400,
            "{variant} as bob: {} {}",
            response.status,
            response.text()
        );
        assert_eq!(echo.hits(), hits, "{variant} reached the upstream");
        let request_id = response
            .header("x-request-id")
            .unwrap_or_default()
            .to_owned();
        assert!(!request_id.is_empty(), "{variant}: no request id");
        refused.push((variant, request_id));
    }

    // nginx ignores case: behind the default (lenient) declaration `/ADMIN/` is refused; behind
    // a route that declares it case-sensitive, the same request reaches nginx's admin location
    // through the open `/` route. That is the bypass the default refusal prevents.
    let nginx_requests = nginx.requests();
    let lenient = raw(proxy.http, "lenient.test", "/ADMIN/", &bob).await;
    assert_eq!(lenient.status, 400, "{}", lenient.text());
    assert_eq!(nginx.requests(), nginx_requests, "/ADMIN/ reached nginx");
    let strict = raw(proxy.http, "strict.test", "/ADMIN/", &bob).await;
    assert_eq!(strict.status, 200, "{}", strict.text());
    assert!(
        strict.text().contains("nginx-admin"),
        "nginx served its admin location: {}",
        strict.text()
    );
    assert_eq!(
        raw(proxy.http, "strict.test", "/admin/", &bob).await.status,
        403
    );
    assert_eq!(
        raw(proxy.http, "lenient.test", "/Public", &bob)
            .await
            .status,
        200
    );

    // A path rule written `/%61dmin` denies `/admin` (it used to never match).
    assert_eq!(
        raw(proxy.http, "policy.test", "/admin/x", &bob)
            .await
            .status,
        403
    );
    assert_eq!(
        raw(proxy.http, "policy.test", "/home", &bob).await.status,
        200
    );

    proxy.terminate().await;
    let records = audit_records(&proxy.audit_dir());
    for (variant, id) in refused {
        let record = records
            .iter()
            .find(|r| r["http_request"]["uid"] == id.as_str())
            .unwrap_or_else(|| panic!("{variant}: no audit record for request {id}"));
        assert_eq!(record["http_response"]["code"], 400, "{variant}: {record}");
        assert_eq!(
            record["unmapped"]["decision"], "error",
            "{variant}: {record}"
        );
        let detail = record["status_detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("bad request:") && detail.len() > "bad request: ".len() + 10,
            "{variant}: the record gives the reason: {record}"
        );
    }
}
