//! The route options: what each key yields, and every refusal at its line, column and field.

use super::{prefix_rewrite, same_header, settable_name};
use crate::error::RouteProblem;
use crate::model::IdentityHeaders;
use crate::parse::tests::{BASE, assert_has, assert_only, base_with, parse_err, parse_ok, pos_of};

/// `BASE` with `lines` (each indented as route keys) added to its route.
fn route_with(lines: &str) -> String {
    format!("{BASE}{lines}")
}

#[test]
fn absent_options_keep_the_defaults() {
    let config = parse_ok(BASE);
    let [route] = config.routes.as_slice() else {
        panic!("one route expected");
    };
    assert!(!route.public);
    assert!(!route.cors_allow_preflight);
    assert!(route.pass_identity_headers);
    assert!(route.set_request_headers.is_empty());
    assert!(route.remove_request_headers.is_empty());
    assert_eq!(route.prefix_rewrite, None);
    assert_eq!(route.to.len(), 1);
    assert_eq!(route.path_prefix(), Some("/"));
}

#[test]
fn every_option_is_parsed() {
    let source = route_with(
        "    path: {prefix: /app/}
    cors_allow_preflight: true
    set_request_headers:
      X-Tenant: acme
      Authorization: \"Basic  YWxpY2U6c2VjcmV0 \"
      X-Empty: \"\"
    remove_request_headers: [X-Debug, Cookie, Content-Length]
    prefix_rewrite: /
",
    );
    let config = parse_ok(&source);
    let [route] = config.routes.as_slice() else {
        panic!("one route expected");
    };
    assert!(route.cors_allow_preflight);
    let set: Vec<(&str, &[u8])> = route
        .set_request_headers
        .iter()
        .map(|header| (header.name.as_str(), header.value.as_bytes()))
        .collect();
    assert_eq!(
        set,
        [
            ("x-tenant", b"acme".as_slice()),
            ("authorization", b"Basic  YWxpY2U6c2VjcmV0".as_slice()),
            ("x-empty", b"".as_slice()),
        ]
    );
    assert!(
        route
            .set_request_headers
            .iter()
            .all(|header| header.value.is_sensitive())
    );
    let removed: Vec<&str> = route
        .remove_request_headers
        .iter()
        .map(http::HeaderName::as_str)
        .collect();
    assert_eq!(removed, ["x-debug", "cookie", "content-length"]);
    assert_eq!(route.prefix_rewrite.as_deref(), Some("/"));
    assert_eq!(route.path_prefix(), Some("/app"));
}

#[test]
fn a_public_route_passes_no_identity() {
    let config = parse_ok(&route_with(
        "    public: true\n    pass_identity_headers: false\n",
    ));
    let route = config.routes.first();
    assert_eq!(
        route.map(|r| (r.public, r.pass_identity_headers)),
        Some((true, false))
    );
    let config = parse_ok(&route_with("    public: true\n"));
    let route = config.routes.first();
    assert_eq!(
        route.map(|r| (r.public, r.pass_identity_headers)),
        Some((true, false))
    );
}

#[test]
fn a_public_route_names_no_policy_mode_or_identity_headers() {
    let source = route_with(
        "    public: true
    policy: {allow: {or: [{authenticated_user: true}]}}
    mode: report
    pass_identity_headers: true
",
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "{allow"),
        "routes[0].policy",
        "its policy would never be evaluated; remove `policy` or `public: true`",
    );
    assert_has(
        &errors,
        pos_of(&source, "report"),
        "routes[0].mode",
        "`mode` would never apply",
    );
    assert_has(
        &errors,
        (pos_of(&source, "pass_identity_headers: true").0, 28),
        "routes[0].pass_identity_headers",
        "remove `pass_identity_headers: true` or `public: true`",
    );
    // A shared policy by name is refused the same way.
    let source = route_with("    public: true\n    policy: staff\n");
    let source = format!(
        "policies:\n  staff: {{allow: {{or: [{{groups: {{any_of: [staff]}}}}]}}}}\n{source}"
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "staff\n"),
        "routes[0].policy",
        "would never be evaluated",
    );
}

#[test]
fn a_route_without_to_is_forward_auth_only() {
    let config = parse_ok(&base_with("    to: http://127.0.0.1:9000\n", ""));
    assert_eq!(config.routes.first().map(|r| r.to.len()), Some(0));

    let source = base_with("    to: http://127.0.0.1:9000\n", "    to:\n");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "to:"),
        "routes[0].to",
        "must have a value",
    );
    let source = base_with("    to: http://127.0.0.1:9000\n", "    to: []\n");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "[]"),
        "routes[0].to",
        "must have at least one entry",
    );
}

#[test]
fn headers_sekisho_decides_cannot_be_set() {
    let cases = [
        ("Host", "sekisho sets `Host` on every forwarded request"),
        ("Content-Length", "it frames the request body"),
        ("Transfer-Encoding", "hop-by-hop"),
        ("Connection", "hop-by-hop"),
        ("Keep-Alive", "hop-by-hop"),
        ("TE", "hop-by-hop"),
        ("Trailer", "hop-by-hop"),
        ("Upgrade", "hop-by-hop"),
        ("Proxy-Authorization", "hop-by-hop"),
        ("X-Forwarded-For", "who the client is"),
        ("X_Forwarded_Host", "who the client is"),
        ("Forwarded", "who the client is"),
        ("X-Real-IP", "who the client is"),
        ("X-Request-Id", "the request's id"),
        (
            "X-Sekisho-Jwt-Assertion",
            "`identity_headers.jwt_assertion`",
        ),
        ("x_sekisho_user", "`identity_headers.user`"),
        (
            "X-Sekisho-Other",
            "sekisho strips `x-sekisho-*` from every request",
        ),
        ("X-Pomerium-Claim-Email", "sekisho strips `x-pomerium-*`"),
        ("X-User", "sekisho strips `x-user`"),
        ("Remote_User", "sekisho strips `remote-*`"),
        ("X Bad", "is not a valid HTTP header name"),
    ];
    for (name, message) in cases {
        let source = route_with(&format!(
            "    set_request_headers:\n      \"{name}\": value\n"
        ));
        assert_only(
            &parse_err(&source),
            pos_of(&source, &format!("\"{name}\"")),
            &format!("routes[0].set_request_headers.{name}"),
            message,
        );
    }
}

#[test]
fn configured_identity_header_names_cannot_be_set() {
    let source = format!(
        "identity_headers: {{user: X-Corp-User, jwt_assertion: X-Corp-Assertion}}\n{}",
        route_with("    set_request_headers: {X_Corp_User: alice, X-Corp-Assertion: x}\n")
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "X_Corp_User:"),
        "routes[0].set_request_headers.X_Corp_User",
        "`X_Corp_User` cannot be set: it is sekisho's identity header `identity_headers.user`, and a route must not be able to forge identity",
    );
    assert_has(
        &errors,
        pos_of(&source, "X-Corp-Assertion: x"),
        "routes[0].set_request_headers.X-Corp-Assertion",
        "`identity_headers.jwt_assertion`",
    );
}

#[test]
fn header_values_hold_visible_ascii_spaces_and_tabs() {
    let cases = [
        (
            "\"a\\r\\nX-Evil: 1\"",
            "character 2 is a carriage return (CR)",
        ),
        ("\"ab\\n\"", "character 3 is a line feed (LF)"),
        ("\"a\\0b\"", "character 2 is NUL"),
        ("\"a\\x7f\"", "character 2 is the control character U+007F"),
        ("\"café\"", "character 4 is the non-ASCII character U+00E9"),
    ];
    for (value, message) in cases {
        let source = route_with(&format!(
            "    set_request_headers:\n      X-Tenant: {value}\n"
        ));
        let errors = parse_err(&source);
        assert_only(
            &errors,
            pos_of(&source, value),
            "routes[0].set_request_headers.X-Tenant",
            message,
        );
        // A value may be a credential: errors never repeat it.
        assert!(
            errors.iter().all(|e| !e.message.contains("X-Evil")),
            "{errors:#?}"
        );
    }
    let source = route_with("    set_request_headers:\n      X-Tenant:\n");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "X-Tenant:"),
        "routes[0].set_request_headers.X-Tenant",
        "must have a value",
    );
    let source = route_with("    set_request_headers: [X-Tenant]\n");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "[X-Tenant]"),
        "routes[0].set_request_headers",
        "expected a mapping of header names to values",
    );
}

#[test]
fn repeated_headers_are_refused_ignoring_case_and_underscores() {
    let source = route_with(
        "    set_request_headers: {X-Tenant: a, x_tenant: b}
    remove_request_headers: [X-Debug, x-DEBUG, X-Tenant]
",
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "x_tenant"),
        "routes[0].set_request_headers.x_tenant",
        "`x_tenant` is the same header as `X-Tenant`, listed before",
    );
    assert_has(
        &errors,
        pos_of(&source, "x-DEBUG"),
        "routes[0].remove_request_headers[1]",
        "`x-DEBUG` is the same header as `X-Debug`",
    );
    assert_has(
        &errors,
        pos_of(&source, "X-Tenant]"),
        "routes[0].remove_request_headers[2]",
        "`X-Tenant` is also in `set_request_headers`",
    );
}

#[test]
fn any_header_but_host_can_be_removed() {
    let source = route_with("    remove_request_headers: [X-Forwarded-For, Authorization, host]\n");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "host]"),
        "routes[0].remove_request_headers[2]",
        "`host` cannot be removed: sekisho sets `Host`",
    );
    let source = route_with("    remove_request_headers: [\"\"]\n");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "\"\"]"),
        "routes[0].remove_request_headers[0]",
        "a header name must not be empty",
    );
}

#[test]
fn prefix_rewrite_is_a_normal_path_on_a_prefix_route() {
    for (written, message) in [
        (
            "app/",
            "is not a path sekisho could forward: path must start with '/'",
        ),
        ("/a/../b", "write it as `/b`"),
        ("/a//b", "write it as `/a/b`"),
        ("/%61pp", "write it as `/app`"),
        ("/a?b", "write it as `/a%3Fb`"),
        ("/a%2Fb", "encoded '/', '\\' or NUL"),
    ] {
        let source = route_with(&format!("    prefix_rewrite: \"{written}\"\n"));
        assert_only(
            &parse_err(&source),
            pos_of(&source, &format!("\"{written}\"")),
            "routes[0].prefix_rewrite",
            message,
        );
    }
    for (path, test) in [
        ("{exact: /app}", "exact \"/app\""),
        ("{regex: '^/app'}", "regex \"^/app\""),
    ] {
        let source = route_with(&format!("    path: {path}\n    prefix_rewrite: /\n"));
        assert_only(
            &parse_err(&source),
            pos_of(&source, "/\n"),
            "routes[0].prefix_rewrite",
            &format!("this route's path test is {test}; match with `path: {{prefix: ...}}`"),
        );
    }
    let source = base_with(
        "  - from: http://app.localhost:8080\n",
        "  - from: http://app.localhost:8080/app/\n    prefix_rewrite: /v2/\n",
    );
    let config = parse_ok(&source);
    let route = config.routes.first();
    assert_eq!(
        route.and_then(|r| r.prefix_rewrite.as_deref()),
        Some("/v2/")
    );
    assert_eq!(route.and_then(|r| r.path_prefix()), Some("/app"));
}

#[test]
fn header_names_fold_like_upstreams_read_them() {
    assert!(same_header("X-Corp-User", "x_corp_user"));
    assert!(!same_header("X-Corp-User", "X-Corp-Users"));
    let identity = IdentityHeaders::default();
    assert!(settable_name("X-Tenant", Some(&identity)).is_ok());
    assert_eq!(
        settable_name("X-Sekisho-Groups", Some(&identity)),
        Err(RouteProblem::Identity {
            name: "X-Sekisho-Groups".into(),
            field: "groups"
        })
    );
    // Without the identity section (it failed to parse), the built-in list still covers it.
    assert!(matches!(
        settable_name("X-Sekisho-Groups", None),
        Err(RouteProblem::Stripped { .. })
    ));
    assert_eq!(prefix_rewrite(" /x/ "), Ok("/x/".into()));
}
