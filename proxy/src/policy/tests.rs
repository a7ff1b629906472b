//! Unit and property tests of the evaluator.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use sekisho_config::policy::{
    ClaimValue, Criterion, EmailAddress, EmailMatch, GroupsMatch, PathMatch, Policy, Rule,
    RuleKind, StringMatch, TimeWindow,
};

use super::*;
use crate::session::Identity;

fn leaf(path: &str, criterion: Criterion) -> Rule {
    Rule {
        path: path.to_owned(),
        text: path.to_owned(),
        kind: RuleKind::Criterion(criterion),
    }
}

fn node(path: &str, kind: RuleKind) -> Rule {
    Rule {
        path: path.to_owned(),
        text: path.to_owned(),
        kind,
    }
}

fn policy(allow: Option<Rule>, deny: Option<Rule>) -> Policy {
    Policy {
        name: None,
        path: "p".into(),
        allow,
        deny,
    }
}

fn alice() -> Identity {
    Identity {
        sub: "alice".into(),
        email: Some("alice@Example.com".into()),
        name: None,
        groups: vec!["eng".into(), "admins".into()],
        issuer: "http://idp".into(),
        email_verified: Some(true),
        claims: serde_json::json!({"dept": "security", "level": 3, "tags": ["a", "b"]})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        provider_sid: None,
    }
}

#[derive(Debug)]
struct Request {
    identity: Option<Identity>,
    method: Method,
    path: String,
    ip: std::net::IpAddr,
    headers: HeaderMap,
    now: jiff::Timestamp,
}

impl Request {
    fn new(identity: Option<Identity>) -> Self {
        Request {
            identity,
            method: Method::GET,
            path: "/admin/x".into(),
            ip: "10.1.2.3"
                .parse()
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            headers: HeaderMap::new(),
            // A Wednesday, 10:30 UTC.
            now: "2026-11-25T10:30:00Z"
                .parse()
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    fn input(&self) -> Input<'_> {
        Input {
            identity: self.identity.as_ref(),
            method: &self.method,
            host: "app.example.com",
            path: &self.path,
            source_ip: self.ip,
            headers: &self.headers,
            client_certificate: None,
            now: self.now,
        }
    }
}

fn holds(criterion: Criterion, request: &Request) -> bool {
    let p = policy(Some(leaf("c", criterion)), None);
    decide(&p, &request.input(), &RegoEngines::default()).effect == Effect::Allow
}

fn email(text: &str) -> EmailAddress {
    EmailAddress::parse(text).unwrap_or_else(|| panic!("{text}"))
}

#[test]
fn no_match_is_deny_and_no_allow_block_is_deny() {
    let r = Request::new(Some(alice()));
    let p = policy(None, None);
    let d = decide(&p, &r.input(), &RegoEngines::default());
    assert_eq!((d.effect, d.reason), (Effect::Deny, Reason::NoAllowBlock));
    let p = policy(
        Some(leaf(
            "allow",
            Criterion::Groups(GroupsMatch::Has("nobody".into())),
        )),
        None,
    );
    let d = decide(&p, &r.input(), &RegoEngines::default());
    assert_eq!(
        (d.effect, d.reason),
        (Effect::Deny, Reason::AllowNotSatisfied)
    );
    assert_eq!(d.explanation(), "not allowed: allow allow is false");
}

#[test]
fn the_deciding_rule_is_named() {
    let r = Request::new(Some(alice()));
    let allow = node(
        "routes[3].policy.allow",
        RuleKind::And(vec![
            leaf(
                "routes[3].policy.allow.and[0]",
                Criterion::AuthenticatedUser,
            ),
            leaf(
                "routes[3].policy.allow.and[1]",
                Criterion::Groups(GroupsMatch::Has("sales".into())),
            ),
        ]),
    );
    let p = policy(Some(allow), None);
    let d = decide(&p, &r.input(), &RegoEngines::default());
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(
        d.rule.map(|r| r.path.as_str()),
        Some("routes[3].policy.allow.and[1]")
    );
}

#[test]
fn emails_are_parsed_addresses() {
    let mut r = Request::new(Some(alice()));
    assert!(
        holds(
            Criterion::Email(EmailMatch::Is(email("alice@example.com"))),
            &r
        ),
        "domain is case-insensitive"
    );
    assert!(
        !holds(
            Criterion::Email(EmailMatch::Is(email("Alice@example.com"))),
            &r
        ),
        "local part is exact"
    );
    assert!(holds(
        Criterion::Email(EmailMatch::EndsWith("@example.com".into())),
        &r
    ));
    assert!(holds(Criterion::Domain(vec!["example.com".into()]), &r));
    for hostile in [
        "bob@evil.com@example.com",
        "bob@evil.com\n@example.com",
        "@example.com",
        "example.com",
    ] {
        r.identity = Some(Identity {
            email: Some(hostile.into()),
            ..alice()
        });
        assert!(
            !holds(Criterion::Domain(vec!["example.com".into()]), &r),
            "{hostile:?}"
        );
        assert!(
            !holds(
                Criterion::Email(EmailMatch::EndsWith("@example.com".into())),
                &r
            ),
            "{hostile:?}"
        );
    }
    r.identity = Some(Identity {
        email: Some("eve@notexample.com".into()),
        ..alice()
    });
    assert!(!holds(
        Criterion::Email(EmailMatch::EndsWith(".example.com".into())),
        &r
    ));
    r.identity = Some(Identity {
        email: Some("eve@corp.example.com".into()),
        ..alice()
    });
    assert!(holds(
        Criterion::Email(EmailMatch::EndsWith(".example.com".into())),
        &r
    ));
    r.identity = Some(Identity {
        email_verified: Some(false),
        ..alice()
    });
    assert!(
        !holds(Criterion::Domain(vec!["example.com".into()]), &r),
        "unverified emails never match"
    );
}

#[test]
fn groups_claims_methods_paths_ips_headers() {
    let mut r = Request::new(Some(alice()));
    assert!(holds(
        Criterion::Groups(GroupsMatch::AllOf(vec!["eng".into(), "admins".into()])),
        &r
    ));
    assert!(!holds(
        Criterion::Groups(GroupsMatch::AllOf(vec!["eng".into(), "sales".into()])),
        &r
    ));
    assert!(holds(
        Criterion::Groups(GroupsMatch::AnyOf(vec!["sales".into(), "eng".into()])),
        &r
    ));
    assert!(holds(
        Criterion::Claim {
            name: "dept".into(),
            values: vec![ClaimValue::String("security".into())]
        },
        &r
    ));
    assert!(holds(
        Criterion::Claim {
            name: "level".into(),
            values: vec![ClaimValue::Number(3.0)]
        },
        &r
    ));
    assert!(holds(
        Criterion::Claim {
            name: "tags".into(),
            values: vec![ClaimValue::String("b".into())]
        },
        &r
    ));
    assert!(!holds(
        Criterion::Claim {
            name: "missing".into(),
            values: vec![ClaimValue::Bool(true)]
        },
        &r
    ));
    assert!(holds(Criterion::HttpMethod(vec!["GET".into()]), &r));
    assert!(holds(
        Criterion::HttpPath(PathMatch::Prefix("/admin".into())),
        &r
    ));
    assert!(!holds(
        Criterion::HttpPath(PathMatch::Prefix("/adm".into())),
        &r
    ));
    let regex = regex::Regex::new("^/admin/[a-z]$").unwrap_or_else(|e| panic!("{e}"));
    assert!(holds(
        Criterion::HttpPath(PathMatch::Regex(Arc::new(regex))),
        &r
    ));
    let net: ipnet::IpNet = "10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"));
    assert!(holds(Criterion::SourceIp(vec![net]), &r));
    r.ip = "::ffff:10.9.9.9".parse().unwrap_or(r.ip);
    assert!(
        holds(Criterion::SourceIp(vec![net]), &r),
        "IPv4-mapped addresses match IPv4 ranges"
    );
    r.headers
        .append("x-env", HeaderValue::from_static("staging"));
    r.headers.append("x-env", HeaderValue::from_static("prod"));
    assert!(holds(
        Criterion::Header {
            name: "x-env".into(),
            matcher: StringMatch::Is("prod".into())
        },
        &r
    ));
    assert!(!holds(
        Criterion::Header {
            name: "x-other".into(),
            matcher: StringMatch::Present
        },
        &r
    ));
    r.identity = None;
    assert!(!holds(Criterion::AuthenticatedUser, &r));
    assert!(!holds(
        Criterion::Groups(GroupsMatch::Has("eng".into())),
        &r
    ));
}

#[test]
fn time_windows_respect_days_hours_and_zones() {
    let r = Request::new(None);
    let window = |days: u8, from: u16, to: u16, zone: &str| TimeWindow {
        days,
        from_minute: from,
        to_minute: to,
        time_zone_name: zone.into(),
        time_zone: jiff::tz::TimeZone::get(zone).unwrap_or_else(|e| panic!("{e}")),
    };
    let weekdays = 0b001_1111;
    assert!(holds(
        Criterion::Time(window(weekdays, 9 * 60, 17 * 60, "UTC")),
        &r
    ));
    assert!(
        !holds(
            Criterion::Time(window(0b110_0000, 9 * 60, 17 * 60, "UTC")),
            &r
        ),
        "not a weekend"
    );
    // 10:30 UTC is 19:30 in Tokyo.
    assert!(!holds(
        Criterion::Time(window(weekdays, 9 * 60, 17 * 60, "Asia/Tokyo")),
        &r
    ));
    assert!(
        holds(
            Criterion::Time(window(weekdays, 18 * 60, 2 * 60, "Asia/Tokyo")),
            &r
        ),
        "window across midnight"
    );
}

fn arbitrary_rule(depth: u32) -> BoxedStrategy<Rule> {
    let leaf_strategy = prop_oneof![
        Just(leaf("authenticated", Criterion::AuthenticatedUser)),
        Just(leaf(
            "eng",
            Criterion::Groups(GroupsMatch::Has("eng".into()))
        )),
        Just(leaf(
            "sales",
            Criterion::Groups(GroupsMatch::Has("sales".into()))
        )),
        Just(leaf("get", Criterion::HttpMethod(vec!["GET".into()]))),
        Just(leaf(
            "admin-path",
            Criterion::HttpPath(PathMatch::Prefix("/admin".into()))
        )),
    ]
    .boxed();
    if depth == 0 {
        return leaf_strategy;
    }
    let child = arbitrary_rule(depth - 1);
    prop_oneof![
        3 => leaf_strategy,
        1 => prop::collection::vec(child.clone(), 0..4).prop_map(|c| node("and", RuleKind::And(c))),
        1 => prop::collection::vec(child.clone(), 0..4).prop_map(|c| node("or", RuleKind::Or(c))),
        1 => prop::collection::vec(child.clone(), 1..4).prop_map(|c| node("not", RuleKind::Not(c))),
        1 => prop::collection::vec(child, 0..4).prop_map(|c| node("nor", RuleKind::Nor(c))),
    ]
    .boxed()
}

fn value_of(rule: &Rule, request: &Request) -> bool {
    let p = policy(Some(rule.clone()), None);
    decide(&p, &request.input(), &RegoEngines::default()).effect == Effect::Allow
}

fn requests() -> impl Strategy<Value = Request> {
    (prop::bool::ANY, prop::bool::ANY, prop::bool::ANY).prop_map(|(authenticated, post, admin)| {
        let mut r = Request::new(authenticated.then(alice));
        if post {
            r.method = Method::POST;
        }
        if !admin {
            r.path = "/public".into();
        }
        r
    })
}

proptest! {
    #[test]
    fn double_negation_is_identity(rule in arbitrary_rule(3), request in requests()) {
        let twice = node("not", RuleKind::Not(vec![node("not", RuleKind::Not(vec![rule.clone()]))]));
        prop_assert_eq!(value_of(&twice, &request), value_of(&rule, &request));
    }

    #[test]
    fn deny_overrides_allow_whatever_the_order(allow in arbitrary_rule(3), deny in arbitrary_rule(3), request in requests()) {
        let p = policy(Some(allow.clone()), Some(deny.clone()));
        let d = decide(&p, &request.input(), &RegoEngines::default());
        let expected = if value_of(&deny, &request) { Effect::Deny } else if value_of(&allow, &request) { Effect::Allow } else { Effect::Deny };
        prop_assert_eq!(d.effect, expected);
        // The explanation path agrees with the short-circuit evaluator.
        let (explained, trace) = explain(&p, &request.input(), &RegoEngines::default());
        prop_assert_eq!(explained.effect, d.effect);
        prop_assert!(!trace.is_empty());
    }

    #[test]
    fn de_morgan_nor_is_and_of_nots(children in prop::collection::vec(arbitrary_rule(2), 0..4), request in requests()) {
        let nor = node("nor", RuleKind::Nor(children.clone()));
        let and_of_nots = node("and", RuleKind::And(children.into_iter().map(|c| node("not", RuleKind::Not(vec![c]))).collect()));
        prop_assert_eq!(value_of(&nor, &request), value_of(&and_of_nots, &request));
    }
}

#[test]
fn rego_rules_see_the_input_document() {
    let module = "package sekisho\nallow if { input.identity.groups[_] == \"admins\"; input.request.method == \"GET\" }";
    let rule = leaf(
        "routes[0].policy.allow.or[0]",
        Criterion::Rego(sekisho_config::policy::RegoRule {
            module: module.into(),
            query: "data.sekisho.allow".into(),
        }),
    );
    let p = policy(Some(rule), None);
    let engines = RegoEngines::prepare([&p]).unwrap_or_else(|e| panic!("{e}"));
    let r = Request::new(Some(alice()));
    assert_eq!(decide(&p, &r.input(), &engines).effect, Effect::Allow);
    let bob = Request::new(Some(Identity {
        groups: vec!["sales".into()],
        ..alice()
    }));
    assert_eq!(decide(&p, &bob.input(), &engines).effect, Effect::Deny);
    // A module that fails at evaluation denies rather than allows.
    let broken = leaf(
        "broken",
        Criterion::Rego(sekisho_config::policy::RegoRule {
            module: "package x\nallow if { 1/0 }".into(),
            query: "data.x.allow".into(),
        }),
    );
    let p = policy(Some(broken), None);
    let engines = RegoEngines::prepare([&p]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decide(&p, &r.input(), &engines).effect, Effect::Deny);
}
