use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};
use sekisho_config::policy::{Criterion, PathMatch, Policy, PolicyMode, Rule, RuleKind};
use sekisho_config::{RouteMatch, RouteTimeouts, Scheme, UpstreamPaths};

use super::*;
use crate::session::Identity;

fn leaf(path: &str, criterion: Criterion) -> Rule {
    Rule {
        path: path.to_owned(),
        text: path.to_owned(),
        kind: RuleKind::Criterion(criterion),
    }
}

fn admins_only() -> Policy {
    Policy {
        name: Some("admins-only".into()),
        path: "policies.admins-only".into(),
        allow: Some(leaf(
            "policies.admins-only.allow",
            Criterion::Groups(sekisho_config::policy::GroupsMatch::Has("admins".into())),
        )),
        deny: None,
    }
}

fn route(id: &str, prefix: &str, policy: Policy) -> Route {
    Route {
        id: id.to_owned(),
        from: RouteMatch {
            scheme: Scheme::Http,
            host: "app.test".into(),
            port: None,
            path_prefix: prefix.to_owned(),
        },
        to: vec![url::Url::parse("http://127.0.0.1:1/").unwrap_or_else(|e| panic!("{e}"))],
        public: false,
        cors_allow_preflight: false,
        preserve_host: false,
        allow_websockets: false,
        pass_identity_headers: true,
        upstream_http2: false,
        timeouts: RouteTimeouts {
            connect: Duration::from_secs(5),
            response_header: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        },
        upstream_health: sekisho_config::UpstreamHealth::default(),
        path: None,
        methods: Vec::new(),
        policy: Arc::new(policy),
        mode: PolicyMode::Enforce,
        show_error_details: false,
        upstream_paths: UpstreamPaths::default(),
        strip_request_headers: Vec::new(),
        tls: sekisho_config::UpstreamTls::default(),
        remove_request_headers: Vec::new(),
        set_request_headers: Vec::new(),
        prefix_rewrite: None,
        tunnel: None,
    }
}

fn bob() -> Identity {
    Identity {
        sub: "bob".into(),
        email: Some("bob@example.com".into()),
        name: None,
        groups: vec!["sales".into()],
        issuer: "https://idp.test".into(),
        email_verified: Some(true),
        claims: serde_json::Map::new(),
        provider_sid: None,
    }
}

/// The route check and, when it passes, the decision check, for `raw` as bob.
fn check(table: &RouteTable, raw: &str) -> Result<String, Ambiguity> {
    let path = normalize_path(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
    let method = Method::GET;
    let address = Address {
        scheme: Scheme::Http,
        host: "app.test",
        port: None,
        method: &method,
    };
    let Some((index, route)) = table
        .lookup(Scheme::Http, "app.test", None, &method, &path)
        .found()
    else {
        panic!("{raw}: no route");
    };
    let views = Views::check_route(table, address, &path, index, route)?;
    let identity = bob();
    let headers = HeaderMap::new();
    let input = Input {
        identity: Some(&identity),
        method: &method,
        host: "app.test",
        path: &path,
        source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        headers: &headers,
        client_certificate: None,
        now: jiff::Timestamp::now(),
    };
    let rego = RegoEngines::default();
    let effect = policy::decide(&route.policy, &input, &rego).effect;
    views.check_decision(table, index, route, &input, effect, &rego)?;
    Ok(route.id.clone())
}

fn admin_and_open() -> RouteTable {
    RouteTable::new(vec![
        route("admin", "/admin", admins_only()),
        route("app", "/", Policy::authenticated_users("app")),
    ])
}

#[test]
fn variants_that_reach_another_route_are_refused() {
    let table = admin_and_open();
    for variant in [
        "/ADMIN/",
        "/Admin/",
        "/admin;/",
        "/admin;x=1/",
        "/;/admin/",
        "/%2561dmin/",
        "/x/%252e%252e/admin/",
        "/ADMIN;x/",
    ] {
        assert!(
            matches!(check(&table, variant), Err(Ambiguity::Route(_))),
            "{variant}: {:?}",
            check(&table, variant)
        );
    }
    assert!(matches!(
        check(&table, "/a%252f"),
        Err(Ambiguity::Unreadable(_, PathError::AmbiguousEscape))
    ));
}

#[test]
fn harmless_variants_pass() {
    let table = admin_and_open();
    for path in [
        "/",
        "/api/Users",
        "/a;b/c",
        "/files/100%25",
        "/x/%2541",
        "/admin/x",
    ] {
        assert!(
            check(&table, path).is_ok(),
            "{path}: {:?}",
            check(&table, path)
        );
    }
}

#[test]
fn a_mixed_case_route_literal_covers_its_lower_case_spelling() {
    let table = RouteTable::new(vec![
        route("admin", "/Admin", admins_only()),
        route("app", "/", Policy::authenticated_users("app")),
    ]);
    assert!(matches!(check(&table, "/admin/"), Err(Ambiguity::Route(_))));
    assert_eq!(check(&table, "/Admin/").ok().as_deref(), Some("admin"));
}

#[test]
fn variants_with_another_decision_are_refused() {
    let mut open = Policy::authenticated_users("app");
    open.deny = Some(leaf(
        "app.deny",
        Criterion::HttpPath(PathMatch::Prefix("/admin".into())),
    ));
    let table = RouteTable::new(vec![route("app", "/", open)]);
    assert!(matches!(
        check(&table, "/ADMIN/x"),
        Err(Ambiguity::Decision(_))
    ));
    assert!(matches!(
        check(&table, "/admin;x/"),
        Err(Ambiguity::Decision(_))
    ));
    assert!(check(&table, "/Docs").is_ok());
}

#[test]
fn declared_strict_upstreams_take_the_path_as_it_is() {
    let mut strict = route("app", "/", Policy::authenticated_users("app"));
    strict.upstream_paths = UpstreamPaths::strict();
    let table = RouteTable::new(vec![route("admin", "/admin", admins_only()), strict]);
    for path in ["/ADMIN/", "/admin;/", "/%2561dmin/"] {
        assert_eq!(check(&table, path).ok().as_deref(), Some("app"), "{path}");
    }
    let mut case_only = route("app", "/", Policy::authenticated_users("app"));
    case_only.upstream_paths.ignores_case = false;
    let table = RouteTable::new(vec![route("admin", "/admin", admins_only()), case_only]);
    assert!(check(&table, "/ADMIN/").is_ok());
    assert!(matches!(
        check(&table, "/admin;/"),
        Err(Ambiguity::Route(_))
    ));
}
