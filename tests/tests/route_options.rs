//! Per-route options end to end, the real `sekisho` binary in front of the echo upstream (which
//! reports the path and headers it received): `set_request_headers` and
//! `remove_request_headers` in every spelling a client may send, `prefix_rewrite` before the
//! upstream's base path, a forward-auth-only route (no `to`) answering direct requests 502,
//! and `sekisho check` refusing every invalid option with its line and a reason.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use std::process::Command;

use sekisho_tests::raw::{get, single};
use sekisho_tests::{eventually, sekisho_binary, stack};

#[tokio::test]
async fn configured_headers_are_removed_and_set_before_sekishos_own() {
    let (idp, echo, proxy) = stack(Default::default(), "RS256", |o| {
        o.routes_yaml = "  - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n    \
                         remove_request_headers: [X-Debug]\n    \
                         set_request_headers:\n      X-Tenant: acme\n      \
                         Authorization: Basic dXBzdHJlYW06cGFzcw==\n"
            .to_owned();
    })
    .await;
    let token = idp.bearer("alice").await;
    let authorization = format!("Bearer {token}");
    let headers: Vec<(&str, &[u8])> = vec![
        ("Authorization", authorization.as_bytes()),
        ("X-Control", b"arrives"),
        ("X-Debug", b"1"),
        ("x_debug", b"2"),
        ("X-Debug-Level", b"arrives"),
        ("X-Tenant", b"evil"),
        ("x-tenant", b"evil-too"),
        ("X_Tenant", b"evil-underscore"),
    ];
    let hits = echo.hits();
    let response = single(proxy.http, &get(&proxy, "/x", &headers)).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(echo.hits(), hits + 1);
    let echoed = response.echoed();
    let names = echoed.header_names();
    // Removed in every spelling; a longer name that merely starts alike is kept.
    for removed in ["x-debug", "x_debug"] {
        assert!(
            !names.iter().any(|n| n == removed),
            "{removed} in {names:?}"
        );
    }
    assert_eq!(echoed.header("x-debug-level").as_deref(), Some("arrives"));
    // The set value replaces every copy and spelling the client sent: one value, not appended.
    assert_eq!(echoed.header_values("x-tenant"), ["acme"]);
    assert!(!names.iter().any(|n| n == "x_tenant"), "{names:?}");
    // Set after the bearer token is consumed: the upstream's own credential arrives.
    assert_eq!(
        echoed.header_values("authorization"),
        ["Basic dXBzdHJlYW06cGFzcw=="]
    );
    // sekisho's own headers are still set, after the configured ones.
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));
    assert!(echoed.header("x-sekisho-jwt-assertion").is_some());
    assert_eq!(
        echoed.header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(echoed.header("x-control").as_deref(), Some("arrives"));
}

#[tokio::test]
async fn prefix_rewrite_replaces_the_route_prefix_before_the_upstream_base_path() {
    let (idp, _echo, proxy) = stack(Default::default(), "RS256", |o| {
        o.routes_yaml = "  - id: app\n    from: http://127.0.0.1\n    path: {prefix: /app/}\n    \
                         to: http://{echo}\n    prefix_rewrite: /\n\
                         \x20 - id: api\n    from: http://127.0.0.1/v1\n    \
                         to: http://{echo}/base/\n    prefix_rewrite: /v2/\n\
                         \x20 - id: plain\n    from: http://127.0.0.1\n    to: http://{echo}\n"
            .to_owned();
    })
    .await;
    let token = idp.bearer("alice").await;
    let authorization = format!("Bearer {token}");
    let headers = [("Authorization", authorization.as_bytes())];
    for (target, path, query) in [
        ("/app/x?q=1", "/x", Some("q=1")),
        ("/app/", "/", None),
        ("/app", "/", None),
        ("/app/a/b/?z", "/a/b/", Some("z")),
        // Normalised first: the rewrite sees `/app/x`.
        ("/app/y/../%78", "/x", None),
        ("/v1/x?q=1", "/base/v2/x", Some("q=1")),
        ("/v1", "/base/v2", None),
        // Not under a rewriting route's prefix: forwarded as is.
        ("/apple", "/apple", None),
    ] {
        let response = single(proxy.http, &get(&proxy, target, &headers)).await;
        assert_eq!(response.status, 200, "{target}: {response:?}");
        let echoed = response.echoed();
        assert_eq!(echoed.path(), path, "{target}");
        assert_eq!(echoed.0["query"].as_str(), query, "{target}");
    }
}

#[tokio::test]
async fn a_route_without_upstream_answers_direct_requests_502() {
    let (idp, echo, proxy) = stack(Default::default(), "RS256", |o| {
        o.routes_yaml = "  - id: gate-only\n    from: http://127.0.0.1/gated\n\
                         \x20 - id: app\n    from: http://127.0.0.1\n    to: http://{echo}\n"
            .to_owned();
    })
    .await;
    let token = idp.bearer("alice").await;
    let client = reqwest::Client::new();
    let hits = echo.hits();
    let response = client
        .get(format!("{}/gated/x", proxy.base()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let page = response.text().await.unwrap();
    assert!(
        !page.contains("gate-only"),
        "the detail is for the log: {page}"
    );
    assert_eq!(echo.hits(), hits, "nothing was forwarded");
    eventually("the 502's reason in the log", || async {
        proxy
            .logs()
            .contains("route gate-only has no upstream (forward-auth only)")
    })
    .await;
    // The other route still forwards.
    let response = client
        .get(format!("{}/x", proxy.base()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(echo.hits(), hits + 1);
}

/// What `sekisho check` said about a configuration.
struct Checked {
    /// The configuration file's text.
    config: String,
    /// The exit code.
    code: Option<i32>,
    /// The summary.
    stdout: String,
    /// The errors.
    stderr: String,
}

impl Checked {
    /// The 1-based line of the first occurrence of `needle` in the configuration, as `:N:`.
    fn line_of(&self, needle: &str) -> String {
        let offset = self
            .config
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in the configuration"));
        format!(":{}:", self.config[..offset].matches('\n').count() + 1)
    }
}

/// Runs `sekisho check` on `routes` (YAML under `routes:`), with `identity_headers.user`
/// renamed and a shared policy `staff`.
fn check(routes: &str) -> Checked {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    let config = format!(
        "server:\n  http_listen: 127.0.0.1:8080\n\
         oidc:\n  issuer: https://idp.example.com\n  client_id: x\n  client_secret: s\n\
         session:\n  keys: [MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=]\n\
         signing:\n  key: {{env: SEKISHO_SIGNING_KEY}}\n\
         identity_headers: {{user: X-Corp-User}}\n\
         policies:\n  staff: {{allow: {{or: [{{groups: {{any_of: [staff]}}}}]}}}}\n\
         routes:\n{routes}"
    );
    std::fs::write(&path, &config).unwrap();
    let out = Command::new(sekisho_binary())
        .arg("check")
        .arg("-c")
        .arg(&path)
        .env(
            "SEKISHO_SIGNING_KEY",
            sekisho::assertion::generate_pem().expect("keygen"),
        )
        .output()
        .expect("running sekisho check");
    Checked {
        config,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn check_refuses_every_invalid_route_option_with_its_position() {
    let routes = "  - from: http://a.example.com\n    to: http://127.0.0.1:1\n    public: true\n    \
                  policy: staff\n    mode: report\n    pass_identity_headers: true\n\
                  \x20 - from: http://b.example.com\n    to: http://127.0.0.1:1\n    \
                  set_request_headers:\n      Host: b\n      Content-Length: \"1\"\n      \
                  Transfer-Encoding: chunked\n      Proxy-Authorization: x\n      X_Forwarded_For: 1.2.3.4\n      \
                  X-Real-IP: 1.2.3.4\n      X-Request-Id: x\n      x_corp_user: alice\n      \
                  X-Sekisho-Jwt-Assertion: x\n      X-Pomerium-Claim-Email: a@b\n      \
                  X-Tenant: \"a\\r\\nX-Evil: 1\"\n      X-Ok: ok\n      x_ok: again\n    \
                  remove_request_headers: [Host, X-Drop, x-DROP, X-Ok]\n\
                  \x20 - from: http://c.example.com\n    path: {exact: /c}\n    to: http://127.0.0.1:1\n    \
                  prefix_rewrite: /\n\
                  \x20 - from: http://d.example.com/d\n    to: http://127.0.0.1:1\n    prefix_rewrite: /a/../b\n\
                  \x20 - from: http://e.example.com\n    to:\n";
    let checked = check(routes);
    let stderr = &checked.stderr;
    assert_eq!(checked.code, Some(1), "{stderr}");
    let expected = [
        (
            "policy: staff",
            "routes[0].policy",
            "its policy would never be evaluated",
        ),
        ("mode: report", "routes[0].mode", "`mode` would never apply"),
        (
            "pass_identity_headers: true",
            "routes[0].pass_identity_headers",
            "has no signed-in user",
        ),
        (
            "Host: b",
            "routes[1].set_request_headers.Host",
            "sekisho sets `Host`",
        ),
        (
            "Content-Length",
            "routes[1].set_request_headers.Content-Length",
            "frames the request body",
        ),
        (
            "Transfer-Encoding",
            "routes[1].set_request_headers.Transfer-Encoding",
            "hop-by-hop",
        ),
        (
            "Proxy-Authorization",
            "routes[1].set_request_headers.Proxy-Authorization",
            "hop-by-hop",
        ),
        (
            "X_Forwarded_For",
            "routes[1].set_request_headers.X_Forwarded_For",
            "who the client is",
        ),
        (
            "X-Real-IP",
            "routes[1].set_request_headers.X-Real-IP",
            "who the client is",
        ),
        (
            "X-Request-Id",
            "routes[1].set_request_headers.X-Request-Id",
            "the request's id",
        ),
        (
            "x_corp_user",
            "routes[1].set_request_headers.x_corp_user",
            "`identity_headers.user`",
        ),
        (
            "X-Sekisho-Jwt-Assertion",
            "routes[1].set_request_headers.X-Sekisho-Jwt-Assertion",
            "`identity_headers.jwt_assertion`",
        ),
        (
            "X-Pomerium-Claim-Email",
            "routes[1].set_request_headers.X-Pomerium-Claim-Email",
            "`x-pomerium-*`",
        ),
        (
            "X-Tenant",
            "routes[1].set_request_headers.X-Tenant",
            "is a carriage return (CR)",
        ),
        (
            "x_ok",
            "routes[1].set_request_headers.x_ok",
            "the same header as `X-Ok`",
        ),
        (
            "remove_request_headers",
            "routes[1].remove_request_headers[0]",
            "`Host` cannot be removed",
        ),
        (
            "remove_request_headers",
            "routes[1].remove_request_headers[2]",
            "the same header as `X-Drop`",
        ),
        (
            "remove_request_headers",
            "routes[1].remove_request_headers[3]",
            "also in `set_request_headers`",
        ),
        (
            "prefix_rewrite: /\n",
            "routes[2].prefix_rewrite",
            "this route's path test is exact \"/c\"",
        ),
        (
            "prefix_rewrite: /a/../b",
            "routes[3].prefix_rewrite",
            "write it as `/b`",
        ),
        ("to:\n", "routes[4].to", "must have a value"),
    ];
    for (needle, field, message) in expected {
        let line = checked.line_of(needle);
        assert!(
            stderr.lines().any(|l| l.contains(&line)
                && l.contains(&format!(": {field}: "))
                && l.contains(message)),
            "no error for {field} at line {line} containing {message:?} in:\n{stderr}"
        );
    }
    assert_eq!(
        stderr.lines().filter(|l| l.contains(": routes[")).count(),
        expected.len(),
        "{stderr}"
    );
    // A header value may be a credential: errors never repeat it.
    assert!(!stderr.contains("X-Evil"), "{stderr}");
}

#[test]
fn check_accepts_and_summarises_valid_route_options() {
    let routes = "  - id: docs\n    from: http://docs.example.com\n    to: http://127.0.0.1:1\n    \
                  public: true\n    cors_allow_preflight: true\n\
                  \x20 - id: app\n    from: http://app.example.com/app/\n    to: http://127.0.0.1:1\n    \
                  prefix_rewrite: /\n    set_request_headers: {X-Tenant: acme}\n    \
                  remove_request_headers: [X-Debug]\n\
                  \x20 - id: gate\n    from: http://gate.example.com\n    policy: staff\n";
    let checked = check(routes);
    assert_eq!(checked.code, Some(0), "{}", checked.stderr);
    let summary = &checked.stdout;
    for line in [
        "docs  http://docs.example.com/ -> http://127.0.0.1:1/  (cors_preflight)",
        "public: no sign-in, no policy",
        "app   http://app.example.com/app prefix_rewrite / -> http://127.0.0.1:1/  (headers_removed, headers_set)",
        "gate  http://gate.example.com/ -> (forward-auth only)",
        "policy staff (enforce)",
    ] {
        assert!(summary.contains(line), "{line:?} not in:\n{summary}");
    }
}
