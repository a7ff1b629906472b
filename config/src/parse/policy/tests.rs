//! Policy tests: whole policies parse into the expected trees (paths and renderings), every
//! criterion form, mTLS settings, and one test per kind of policy error with its line, column
//! and field.

use std::path::Path;
use std::sync::Arc;

use crate::parse::tests::{BASE, assert_has, assert_only, parse_err, parse_ok, pos_of};
use crate::policy::{
    ClaimValue, Criterion, EmailMatch, PathMatch, Policy, PolicyMode, Rule, RuleKind, StringMatch,
};

/// A route that names no policy.
const ROUTE: &str = "  - from: http://app.localhost:8080\n    to: http://127.0.0.1:9000\n";

/// `BASE` with `policies` (the text under `policies:`) and `routes` (the text under `routes:`).
fn with_policies(policies: &str, routes: &str) -> String {
    let (preamble, _) = BASE.split_once("routes:").unwrap_or((BASE, ""));
    format!("{preamble}policies:\n{policies}routes:\n{routes}")
}

/// Path and text of `rule` and all its descendants, depth first.
fn tree(rule: &Rule) -> Vec<(String, String)> {
    let mut lines = vec![(rule.path.clone(), rule.text.clone())];
    if let RuleKind::And(children)
    | RuleKind::Or(children)
    | RuleKind::Not(children)
    | RuleKind::Nor(children) = &rule.kind
    {
        for child in children {
            lines.extend(tree(child));
        }
    }
    lines
}

/// [`tree`] of a block that may be absent (empty then).
fn tree_of(rule: Option<&Rule>) -> Vec<(String, String)> {
    rule.map(tree).unwrap_or_default()
}

/// Owned `(path, text)` pairs from literals.
fn lines(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
        .collect()
}

/// The children of a combinator rule.
fn children(rule: Option<&Rule>) -> &[Rule] {
    match rule.map(|rule| &rule.kind) {
        Some(
            RuleKind::And(children)
            | RuleKind::Or(children)
            | RuleKind::Not(children)
            | RuleKind::Nor(children),
        ) => children,
        _ => &[],
    }
}

/// The criterion of a leaf rule.
fn criterion(rule: Option<&Rule>) -> Option<&Criterion> {
    match rule.map(|rule| &rule.kind) {
        Some(RuleKind::Criterion(criterion)) => Some(criterion),
        _ => None,
    }
}

/// The one policy named in `config.policies`, by name.
fn shared<'c>(config: &'c crate::Config, name: &str) -> &'c Arc<Policy> {
    config
        .policies
        .iter()
        .find(|policy| policy.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no policy {name}"))
}

/// Two shared policies using combinators at three levels and most criteria.
const FULL: &str = "  admins:
    allow:
      and:
        - groups: {has: admins}
        - email: {ends_with: \"@Example.com\"}
        - or:
            - time: {days: [mon, TUE, wed, thu, fri], hours: {from: \"09:00\", to: \"17:30\"}, time_zone: europe/berlin}
            - not:
                - http_method: {in: [get, HEAD]}
    deny:
      or:
        - source_ip: [203.0.113.0/24, \"2001:db8::/32\"]
        - claim/level: {in: [1, \"2\", true]}
        - header/X-Env: {is: prod}
  anyone:
    allow:
      or:
        - authenticated_user: true
";

/// Routes naming the shared policies, an inline one, and none.
const FULL_ROUTES: &str = "  - id: admin
    from: https://*.example.com
    path: {regex: '^/v[0-9]+/'}
    methods: [get, POST]
    policy: admins
    mode: report
    show_error_details: true
    to: http://127.0.0.1:9000
  - id: inline
    from: https://app.example.com
    path: {prefix: /api/}
    policy:
      deny:
        nor:
          - domain: {is: Example.com}
    to: http://127.0.0.1:9001
  - id: default
    from: https://app.example.com
    to: http://127.0.0.1:9002
  - id: shared-again
    from: https://app.example.com
    path: {exact: /anyone}
    policy: anyone
    to: http://127.0.0.1:9003
";

#[test]
fn a_full_policy_parses_into_the_expected_tree() {
    let config = parse_ok(&with_policies(FULL, FULL_ROUTES));
    let names: Vec<Option<&str>> = config.policies.iter().map(|p| p.name.as_deref()).collect();
    assert_eq!(names, [Some("admins"), Some("anyone")]);

    let admins = shared(&config, "admins");
    assert_eq!(admins.path, "policies.admins");
    assert_eq!(
        tree_of(admins.allow.as_ref()),
        lines(&[
            ("policies.admins.allow", "and (3 rules)"),
            ("policies.admins.allow.and[0]", "groups has \"admins\""),
            (
                "policies.admins.allow.and[1]",
                "email ends_with \"@example.com\""
            ),
            ("policies.admins.allow.and[2]", "or (2 rules)"),
            (
                "policies.admins.allow.and[2].or[0]",
                "time mon-fri 09:00-17:30 europe/berlin"
            ),
            ("policies.admins.allow.and[2].or[1]", "not (1 rule)"),
            (
                "policies.admins.allow.and[2].or[1].not[0]",
                "http_method in [\"GET\", \"HEAD\"]"
            ),
        ])
    );
    assert_eq!(
        tree_of(admins.deny.as_ref()),
        lines(&[
            ("policies.admins.deny", "or (3 rules)"),
            (
                "policies.admins.deny.or[0]",
                "source_ip in [203.0.113.0/24, 2001:db8::/32]"
            ),
            (
                "policies.admins.deny.or[1]",
                "claim/level in [1, \"2\", true]"
            ),
            ("policies.admins.deny.or[2]", "header/x-env is \"prod\""),
        ])
    );

    // The values behind the renderings.
    let allow = children(admins.allow.as_ref());
    assert!(matches!(
        criterion(allow.get(1)),
        Some(Criterion::Email(EmailMatch::EndsWith(suffix))) if suffix == "@example.com"
    ));
    let time = children(allow.get(2)).first();
    let Some(Criterion::Time(window)) = criterion(time) else {
        panic!("expected a time window: {time:?}");
    };
    assert_eq!(window.days, 0b001_1111);
    assert_eq!((window.from_minute, window.to_minute), (540, 1050));
    assert_eq!(window.time_zone.iana_name(), Some("Europe/Berlin"));
    let deny = children(admins.deny.as_ref());
    let Some(Criterion::Claim { name, values }) = criterion(deny.get(1)) else {
        panic!("expected a claim: {deny:?}");
    };
    assert_eq!(name, "level");
    assert_eq!(
        values,
        &[
            ClaimValue::Number(1.0),
            ClaimValue::String("2".into()),
            ClaimValue::Bool(true)
        ]
    );
    assert!(matches!(
        criterion(deny.get(2)),
        Some(Criterion::Header { name, matcher: StringMatch::Is(value) })
            if name == "x-env" && value == "prod"
    ));

    let [admin, inline, default, again] = config.routes.as_slice() else {
        panic!("expected four routes: {:?}", config.routes);
    };
    assert_eq!(admin.from.host, "*.example.com");
    assert!(matches!(&admin.path, Some(PathMatch::Regex(r)) if r.as_str() == "^/v[0-9]+/"));
    assert_eq!(admin.methods, ["GET", "POST"]);
    assert!(Arc::ptr_eq(&admin.policy, admins));
    assert_eq!(admin.mode, PolicyMode::Report);
    assert!(admin.show_error_details);
    assert!(Arc::ptr_eq(&again.policy, shared(&config, "anyone")));

    assert!(matches!(&inline.path, Some(PathMatch::Prefix(p)) if p == "/api"));
    assert_eq!(inline.policy.name, None);
    assert_eq!(inline.policy.path, "routes[1].policy");
    assert!(inline.policy.allow.is_none());
    assert_eq!(
        tree_of(inline.policy.deny.as_ref()),
        lines(&[
            ("routes[1].policy.deny", "nor (1 rule)"),
            ("routes[1].policy.deny.nor[0]", "domain is \"example.com\""),
        ])
    );
    assert_eq!(inline.mode, PolicyMode::Enforce);
    assert!(!inline.show_error_details);

    assert_eq!(default.path.as_ref().map(ToString::to_string), None);
    assert!(default.methods.is_empty());
    assert_eq!(default.policy.path, "routes[2].policy (default)");
    assert_eq!(
        tree_of(default.policy.allow.as_ref()),
        lines(&[("routes[2].policy.allow", "authenticated_user")])
    );
}

#[test]
fn every_criterion_form_renders() {
    let policies = "  all:
    allow:
      or:
        - authenticated_user: true
        - email: {is: Alice@Example.COM}
        - email: {in: [a@b.c, d@e.f]}
        - email: {ends_with: .Example.com}
        - domain: {in: [Example.com, example.org]}
        - groups: {any_of: [a, b]}
        - groups: {all_of: [a, b]}
        - claim/dept: {is: eng}
        - claim/admin: {is: \"true\"}
        - claim/https://example.com/level: {is: 2.5}
        - http_method: {is: delete}
        - http_path: {exact: /x/}
        - http_path: {prefix: /admin/}
        - http_path: {regex: \"^/v1\"}
        - header/x-env: {prefix: pro}
        - header/x-env: {regex: \"^p\"}
        - header/x-env: {present: true}
        - time: {hours: {from: \"22:00\", to: \"00:00\"}}
        - time: {days: [sat, sun, mon, wed], time_zone: UTC}
        - rego: {module: \"package x.y\\nok := true\", query: data.x.y.ok}
        - nor:
            - groups: {has: banned}
";
    let config = parse_ok(&with_policies(policies, ROUTE));
    let texts: Vec<String> = tree_of(shared(&config, "all").allow.as_ref())
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(
        texts,
        [
            "or (21 rules)",
            "authenticated_user",
            "email is \"Alice@example.com\"",
            "email in [\"a@b.c\", \"d@e.f\"]",
            "email ends_with \".example.com\"",
            "domain in [\"example.com\", \"example.org\"]",
            "groups any_of [\"a\", \"b\"]",
            "groups all_of [\"a\", \"b\"]",
            "claim/dept is \"eng\"",
            "claim/admin is \"true\"",
            "claim/https://example.com/level is 2.5",
            "http_method is \"DELETE\"",
            "http_path exact \"/x/\"",
            "http_path prefix \"/admin\"",
            "http_path regex \"^/v1\"",
            "header/x-env prefix \"pro\"",
            "header/x-env regex \"^p\"",
            "header/x-env present",
            "time daily 22:00-24:00 UTC",
            "time mon,wed,sat-sun 00:00-24:00 UTC",
            "rego data.x.y.ok",
            "nor (1 rule)",
            "groups has \"banned\"",
        ]
    );
    let rules = children(shared(&config, "all").allow.as_ref());
    assert!(matches!(
        criterion(rules.get(1)),
        Some(Criterion::Email(EmailMatch::Is(address)))
            if address.local == "Alice" && address.domain == "example.com"
    ));
    assert!(matches!(
        criterion(rules.get(8)),
        Some(Criterion::Claim { values, .. }) if values == &[ClaimValue::String("true".into())]
    ));
    let Some(Criterion::Time(window)) = criterion(rules.get(17)) else {
        panic!("expected a time window");
    };
    assert_eq!(
        (window.days, window.from_minute, window.to_minute),
        (0b111_1111, 22 * 60, 24 * 60)
    );
    assert!(matches!(
        criterion(rules.get(19)),
        Some(Criterion::Rego(rego)) if rego.query == "data.x.y.ok" && rego.module.contains("ok := true")
    ));
}

#[test]
fn rego_query_defaults_to_data_sekisho_allow() {
    let policies = "  r:
    allow:
      and:
        - rego:
            module: |
              package sekisho
              allow if { input.identity.email == \"alice@example.com\" }
";
    let config = parse_ok(&with_policies(policies, ROUTE));
    let rule = children(shared(&config, "r").allow.as_ref()).first();
    assert_eq!(
        rule.map(|r| r.text.as_str()),
        Some("rego data.sekisho.allow")
    );
    assert!(matches!(
        criterion(rule),
        Some(Criterion::Rego(rego)) if rego.query == "data.sekisho.allow"
    ));
}

#[test]
fn unknown_criterion_lists_the_known_ones() {
    let source = with_policies(
        "  p:\n    allow:\n      and:\n        - emial: {is: a@b.c}\n",
        ROUTE,
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "emial"),
        "policies.p.allow.and[0].emial",
        "unknown criterion `emial`; expected a combinator (and, or, not, nor) or a criterion \
         (authenticated_user, email, domain, groups, claim/NAME, http_method, http_path, \
         source_ip, time, client_certificate, header/NAME, rego)",
    );
}

#[test]
fn rules_have_exactly_one_key() {
    let source = with_policies(
        "  p:\n    allow:\n      and:\n        - {}\n        - {groups: {has: a}, email: {is: nobody}}\n",
        ROUTE,
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "{}"),
        "policies.p.allow.and[0]",
        "a rule is a mapping with one key",
    );
    assert_has(
        &errors,
        pos_of(&source, "email: {is"),
        "policies.p.allow.and[1].email",
        "a rule has exactly one key, found groups, email",
    );
    // The keys' values are still checked.
    assert_has(
        &errors,
        pos_of(&source, "nobody"),
        "policies.p.allow.and[1].email.is",
        "not an email address",
    );
}

#[test]
fn blocks_hold_exactly_one_combinator() {
    let source = with_policies(
        "  several:\n    allow:\n      and: [{groups: {has: a}}]\n      or: [{groups: {has: b}}]\n  \
         criterion:\n    allow: {groups: {has: a}}\n  \
         unknown:\n    deny: {xor: []}\n  \
         empty:\n    deny: {}\n  \
         listed:\n    allow: [and]\n",
        ROUTE,
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "or: [{groups"),
        "policies.several.allow.or",
        "a block holds exactly one combinator, found and, or",
    );
    assert_has(
        &errors,
        pos_of(&source, "groups: {has: a}}\n  unknown"),
        "policies.criterion.allow.groups",
        "`groups` is a criterion, not a combinator",
    );
    assert_has(
        &errors,
        pos_of(&source, "xor"),
        "policies.unknown.deny.xor",
        "unknown field `xor`; expected one of: and, or, not, nor",
    );
    assert_has(
        &errors,
        pos_of(&source, "{}\n  listed"),
        "policies.empty.deny",
        "a block holds one of and, or, not, nor",
    );
    assert_has(
        &errors,
        pos_of(&source, "[and]"),
        "policies.listed.allow",
        "expected a mapping with one of and, or, not, nor, found a list",
    );
}

#[test]
fn combinators_need_a_non_empty_list() {
    let source = with_policies(
        "  p:\n    allow:\n      and:\n        - or: []\n        - not: {groups: {has: a}}\n        - nor:\n",
        ROUTE,
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "[]"),
        "policies.p.allow.and[0].or",
        "must have at least one entry",
    );
    assert_has(
        &errors,
        pos_of(&source, "{groups"),
        "policies.p.allow.and[1].not",
        "expected a list, found a mapping",
    );
    assert_has(
        &errors,
        pos_of(&source, "nor:"),
        "policies.p.allow.and[2].nor",
        "must have a value",
    );
}

#[test]
fn policies_need_allow_or_deny() {
    let source = with_policies(
        "  empty: {}\n  nulls:\n    allow:\n  typo:\n    alow: {and: [{groups: {has: a}}]}\n  none:\n",
        ROUTE,
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "{}"),
        "policies.empty",
        "a policy needs `allow`, `deny` or both",
    );
    assert_has(
        &errors,
        pos_of(&source, "allow:\n  typo"),
        "policies.nulls",
        "a policy needs `allow`, `deny` or both",
    );
    // Only the typo, not also "needs allow or deny".
    assert_has(
        &errors,
        pos_of(&source, "alow"),
        "policies.typo.alow",
        "unknown field `alow`; expected one of: allow, deny",
    );
    assert_has(
        &errors,
        pos_of(&source, "none"),
        "policies.none",
        "must have a value",
    );
}

#[test]
fn policy_names_and_references() {
    let source = with_policies(
        "  admins:\n    allow: {and: [{groups: {has: admins}}]}\n  Bad_Name:\n    allow: {and: [{groups: {has: x}}]}\n",
        "  - from: http://a.localhost:8080\n    to: http://127.0.0.1:9000\n    policy: admin\n  \
         - from: http://b.localhost:8080\n    to: http://127.0.0.1:9000\n    policy: [admins]\n  \
         - from: http://c.localhost:8080\n    to: http://127.0.0.1:9000\n    policy: Bad_Name\n",
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "Bad_Name:"),
        "policies.Bad_Name",
        "`Bad_Name` is not a valid policy name",
    );
    let (line, column) = pos_of(&source, "policy: admin\n");
    assert_has(
        &errors,
        (line, column + "policy: ".len()),
        "routes[0].policy",
        "no policy named `admin`; defined: admins, Bad_Name",
    );
    assert_has(
        &errors,
        pos_of(&source, "[admins]"),
        "routes[1].policy",
        "expected a policy name or an inline policy",
    );

    let source = with_policies("", "").replace(
        "policies:\nroutes:\n",
        &format!("routes:\n{ROUTE}    policy: admins\n"),
    );
    let (line, column) = pos_of(&source, "policy: admins");
    assert_only(
        &parse_err(&source),
        (line, column + "policy: ".len()),
        "routes[0].policy",
        "no policy named `admins`; `policies:` defines none",
    );

    // A malformed section: references are not reported on top of it.
    let source = with_policies("  - admins\n", &format!("{ROUTE}    policy: admins\n"));
    assert_only(
        &parse_err(&source),
        pos_of(&source, "- admins"),
        "policies",
        "expected a mapping of policy names to policies, found a list",
    );
    // An invalid policy: the routes naming it are not reported either.
    let source = with_policies(
        "  admins:\n    allow: {and: [{groups: {}}]}\n",
        &format!("{ROUTE}    policy: admins\n"),
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "{}"),
        "policies.admins.allow.and[0].groups",
        "write exactly one of: has, any_of, all_of",
    );
}

#[test]
fn criterion_values_are_checked() {
    let policies = "  p:
    allow:
      or:
        - authenticated_user: false
        - email: {is: not-an-email}
        - email: {ends_with: example.com}
        - email: {in: [a@b.c, a@B.C]}
        - domain: {is: a@example.com}
        - groups: {any_of: []}
        - claim/: {is: x}
        - claim/x: {in: [{a: b}]}
        - http_method: {is: \"GE T\"}
        - http_path: {prefix: admin}
        - http_path: {exact: /a/../b}
        - http_path: {regex: '^(unclosed'}
        - source_ip: [10.0.0.1/8]
        - header/x env: {is: a}
        - header/x-ok: {present: false}
        - header/: {present: true}
        - email: {is: a@b.c, in: [a@b.c]}
        - email: {}
";
    let source = with_policies(policies, ROUTE);
    let errors = parse_err(&source);
    let at = |needle: &str| pos_of(&source, needle);
    let expected: &[((usize, usize), &str, &str)] = &[
        (
            at("false"),
            "or[0].authenticated_user",
            "only `true` is accepted; to negate a criterion, wrap it: `not: [{authenticated_user: ...}]`",
        ),
        (
            at("not-an-email"),
            "or[1].email.is",
            "`not-an-email` is not an email address",
        ),
        (
            at("example.com}"),
            "or[2].email.ends_with",
            "must start with `@`",
        ),
        (at("a@B.C"), "or[3].email.in[1]", "`a@B.C` is listed twice"),
        (
            at("a@example.com"),
            "or[4].domain.is",
            "`a@example.com` is not a domain name",
        ),
        (at("[]"), "or[5].groups.any_of", "at least one entry"),
        (
            at("claim/:"),
            "or[6].claim/",
            "write the name after the slash, like `claim/department`",
        ),
        (
            at("{a: b}"),
            "or[7].claim/x.in[0]",
            "expected a string, number or boolean, found a mapping",
        ),
        (
            at("\"GE T\""),
            "or[8].http_method.is",
            "`GE T` is not an HTTP method",
        ),
        (
            at("admin}"),
            "or[9].http_path.prefix",
            "path `admin` must start with `/`",
        ),
        (
            at("/a/../b"),
            "or[10].http_path.exact",
            "contains a `.` or `..` segment",
        ),
        (
            at("'^(unclosed'"),
            "or[11].http_path.regex",
            "`^(unclosed` is not a valid regex: unclosed group",
        ),
        (at("10.0.0.1/8"), "or[12].source_ip[0]", "has host bits set"),
        (
            at("header/x env"),
            "or[13].header/x env",
            "`x env` is not a valid HTTP header name",
        ),
        (
            at("false}"),
            "or[14].header/x-ok.present",
            "only `true` is accepted; to negate a criterion, wrap it: `not: [{header/x-ok: ...}]`",
        ),
        (
            at("header/:"),
            "or[15].header/",
            "write the name after the slash, like `header/x-environment`",
        ),
        (
            at("in: [a@b.c]}"),
            "or[16].email.in",
            "write exactly one of: is, ends_with, in (not several)",
        ),
        (
            at("{}"),
            "or[17].email",
            "write exactly one of: is, ends_with, in",
        ),
    ];
    for (pos, field, message) in expected {
        assert_has(&errors, *pos, &format!("policies.p.allow.{field}"), message);
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn time_windows_are_checked() {
    let policies = "  p:
    allow:
      or:
        - time: {days: [mon, funday, mon]}
        - time: {hours: {from: \"25:00\", to: \"9\"}}
        - time: {hours: {from: \"24:00\", to: \"01:00\"}}
        - time: {hours: {from: \"08:00\", to: \"08:00\"}}
        - time: {days: [sat], time_zone: Mars/Olympus}
        - time: {time_zone: UTC}
        - time: {hours: {from: \"08:00\"}}
";
    let source = with_policies(policies, ROUTE);
    let errors = parse_err(&source);
    let at = |needle: &str| pos_of(&source, needle);
    let (line, column) = at("mon]}");
    assert_has(
        &errors,
        at("funday"),
        "policies.p.allow.or[0].time.days[1]",
        "`funday` is not a day; write mon, tue, wed, thu, fri, sat or sun",
    );
    assert_has(
        &errors,
        (line, column),
        "policies.p.allow.or[0].time.days[2]",
        "`mon` is listed twice",
    );
    assert_has(
        &errors,
        at("\"25:00\""),
        "policies.p.allow.or[1].time.hours.from",
        "`25:00` is not a time of day",
    );
    assert_has(
        &errors,
        at("\"9\""),
        "policies.p.allow.or[1].time.hours.to",
        "`9` is not a time of day",
    );
    assert_has(
        &errors,
        at("\"24:00\""),
        "policies.p.allow.or[2].time.hours.from",
        "a window cannot start at 24:00",
    );
    assert_has(
        &errors,
        at("{from: \"08:00\", to"),
        "policies.p.allow.or[3].time.hours",
        "`from` and `to` are equal",
    );
    assert_has(
        &errors,
        at("Mars/Olympus"),
        "policies.p.allow.or[4].time.time_zone",
        "`Mars/Olympus` is not a known time zone",
    );
    assert_has(
        &errors,
        at("{time_zone: UTC}"),
        "policies.p.allow.or[5].time",
        "write `days`, `hours` or both",
    );
    assert_has(
        &errors,
        at("{from: \"08:00\"}}"),
        "policies.p.allow.or[6].time.hours.to",
        "missing required field `to`",
    );
    assert_eq!(errors.len(), 9, "{errors:#?}");
}

#[test]
fn rego_modules_must_compile_and_queries_name_a_rule() {
    let policies = "  p:
    allow:
      or:
        - rego:
            module: |
              package sekisho
              allow if { input.x == }
        - rego:
            module: \"package sekisho\\nallow if { x > 1 }\"
        - rego:
            module: \"package sekisho\\nallow := true\"
            query: data.sekisho.deny
        - rego:
            module: \"package other\\nallow := true\"
        - rego: {query: data.sekisho.allow}
";
    let source = with_policies(policies, ROUTE);
    let errors = parse_err(&source);
    assert_has(
        &errors,
        pos_of(&source, "package sekisho\n              allow if { input.x"),
        "policies.p.allow.or[0].rego.module",
        "Rego: line 2, column 23 of the module: expecting expression",
    );
    assert_has(
        &errors,
        pos_of(&source, "\"package sekisho\\nallow if { x"),
        "policies.p.allow.or[1].rego.module",
        "Rego: line 2, column 12 of the module: use of undefined variable `x` is unsafe",
    );
    assert_has(
        &errors,
        pos_of(&source, "data.sekisho.deny"),
        "policies.p.allow.or[2].rego.query",
        "`data.sekisho.deny` names no rule of the module (whose package is `data.sekisho`)",
    );
    // The default query, reported at the `rego` mapping.
    assert_has(
        &errors,
        pos_of(&source, "module: \"package other"),
        "policies.p.allow.or[3].rego.query",
        "`data.sekisho.allow` names no rule of the module (whose package is `data.other`)",
    );
    assert_has(
        &errors,
        pos_of(&source, "{query"),
        "policies.p.allow.or[4].rego.module",
        "missing required field `module`",
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");
}

#[test]
fn route_path_methods_and_mode_are_checked() {
    let routes = "  - from: https://app.example.com/api
    path: {prefix: /v1}
    to: http://127.0.0.1:9000
  - from: https://app.example.com
    path: {prefix: /v1, exact: /v1}
    methods: [GET, get, \"P OST\"]
    mode: audit
    to: http://127.0.0.1:9000
  - from: https://app.example.com
    methods: []
    to: http://127.0.0.1:9000
";
    let source = with_policies("", routes).replace("policies:\n", "");
    let errors = parse_err(&source);
    let at = |needle: &str| pos_of(&source, needle);
    assert_has(
        &errors,
        at("{prefix: /v1}"),
        "routes[0].path",
        "`from` already has the path prefix `/api`",
    );
    assert_has(
        &errors,
        at("exact: /v1"),
        "routes[1].path.exact",
        "write exactly one of: exact, prefix, regex (not several)",
    );
    assert_has(
        &errors,
        at("get,"),
        "routes[1].methods[1]",
        "`get` is listed twice",
    );
    assert_has(
        &errors,
        at("\"P OST\""),
        "routes[1].methods[2]",
        "`P OST` is not an HTTP method",
    );
    assert_has(
        &errors,
        at("audit"),
        "routes[1].mode",
        "`audit` is not a policy mode; write `enforce` or `report`",
    );
    assert_has(&errors, at("[]"), "routes[2].methods", "at least one entry");
    assert_eq!(errors.len(), 6, "{errors:#?}");
}

#[test]
fn routes_matching_the_same_requests_are_refused() {
    let routes = "  - from: https://app.example.com/api
    to: http://127.0.0.1:9000
  - from: https://app.example.com
    path: {prefix: /api/}
    to: http://127.0.0.1:9001
  - from: https://app.example.com
    path: {prefix: /api}
    methods: [POST, GET]
    to: http://127.0.0.1:9002
  - from: https://app.example.com
    path: {prefix: /api}
    methods: [get, post]
    to: http://127.0.0.1:9003
  - from: https://app.example.com
    path: {exact: /api}
    to: http://127.0.0.1:9004
";
    let source = with_policies("", routes).replace("policies:\n", "");
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    // Line of the `n`th route written `from: https://app.example.com` (no path).
    let nth = |n: usize| {
        let offset = source
            .match_indices("from: https://app.example.com\n")
            .nth(n)
            .map_or(0, |(offset, _)| offset);
        source
            .get(..offset)
            .unwrap_or_default()
            .matches('\n')
            .count()
            + 1
    };
    assert_has(
        &errors,
        (nth(0), 11),
        "routes[1].from",
        "routes[0] already matches the same requests (https://app.example.com, path prefix \"/api\")",
    );
    assert_has(
        &errors,
        (nth(2), 11),
        "routes[3].from",
        "routes[2] already matches the same requests (https://app.example.com, path prefix \"/api\", methods GET, POST)",
    );
}

#[test]
fn wildcard_hosts_only_as_a_whole_first_label() {
    for good in ["https://*.example.com", "http://*.a.b.example.com:8080/x"] {
        let source = BASE.replace("http://app.localhost:8080", good);
        assert!(
            parse_ok(&source)
                .routes
                .first()
                .is_some_and(|r| r.from.host.starts_with("*.")),
            "{good}"
        );
    }
    for bad in [
        "https://a*.example.com",
        "https://*.com",
        "https://*",
        "https://x.*.example.com",
        "https://*.*.example.com",
    ] {
        let source = BASE.replace("http://app.localhost:8080", bad);
        assert_only(
            &parse_err(&source),
            pos_of(&source, bad),
            "routes[0].from",
            "is not a valid wildcard host",
        );
    }
    let source = BASE.replace(
        "  client_id: sekisho",
        "  client_id: sekisho\n  post_logout_redirect_uri: https://*.example.com/",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "https://*"),
        "oidc.post_logout_redirect_uri",
        "wildcards are only allowed in a route's `from`",
    );
}

/// `BASE` with an https listener and the client CA settings in `server_extra`.
fn with_mtls(server_extra: &str, policies: &str) -> String {
    let server = format!(
        "server:\n  http_listen: 127.0.0.1:8080\n  https_listen: 127.0.0.1:8443\n  tls:\n    \
         - {{cert_file: a.crt, key_file: a.key}}\n{server_extra}"
    );
    with_policies(policies, ROUTE).replacen("server:\n  http_listen: 127.0.0.1:8080\n", &server, 1)
}

/// A policy testing client certificates (the first fingerprint is the test CA's own).
const CERTIFICATE_POLICY: &str = "  devices:
    allow:
      and:
        - client_certificate:
            fingerprint: [\"2E:E8:F4:6A:D2:42:1E:5F:71:68:2C:14:F9:64:E2:19:FF:06:7F:BA:6A:A9:80:BC:51:46:27:2B:09:82:30:C2\"]
            spki_hash: [0000000000000000000000000000000000000000000000000000000000000001, ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff]
";

#[test]
fn mtls_settings_and_client_certificate_criteria() {
    let source = with_mtls(
        "  client_ca_file: test-only-client-ca.pem\n  require_client_certificate: true\n",
        CERTIFICATE_POLICY,
    );
    let config = parse_ok(&source);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    assert_eq!(
        config.server.client_ca_file,
        Some(dir.join("test-only-client-ca.pem"))
    );
    assert!(config.server.require_client_certificate);
    let devices = shared(&config, "devices");
    let rule = children(devices.allow.as_ref()).first();
    assert_eq!(
        rule.map(|r| r.text.as_str()),
        Some("client_certificate fingerprint in [1 value] or spki_hash in [2 values]")
    );
    let Some(Criterion::ClientCertificate(matcher)) = criterion(rule) else {
        panic!("expected a client certificate test: {rule:?}");
    };
    assert_eq!(
        matcher.fingerprints.first().map(|f| (f[0], f[31])),
        Some((0x2e, 0xc2))
    );
    assert_eq!(
        matcher.spki_hashes.first().map(|h| (h[0], h[31])),
        Some((0, 1))
    );

    let defaults = parse_ok(&with_mtls(
        "  client_ca_file: test-only-client-ca.pem\n",
        "",
    ));
    assert!(!defaults.server.require_client_certificate);
    let none = parse_ok(&with_mtls("", ""));
    assert_eq!(none.server.client_ca_file, None);
}

#[test]
fn mtls_errors() {
    // No CA: the criterion is refused at its key, and its values are still checked.
    let source = with_mtls(
        "  require_client_certificate: true\n",
        &CERTIFICATE_POLICY.replace("0001,", "01,"),
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let (line, column) = pos_of(&source, "require_client_certificate: true");
    assert_has(
        &errors,
        (line, column + "require_client_certificate: ".len()),
        "server.require_client_certificate",
        "`require_client_certificate` needs `client_ca_file`",
    );
    assert_has(
        &errors,
        pos_of(&source, "client_certificate:\n"),
        "policies.devices.allow.and[0].client_certificate",
        "`client_certificate` needs mTLS: set `server.client_ca_file`",
    );
    assert_has(
        &errors,
        pos_of(&source, "00000000"),
        "policies.devices.allow.and[0].client_certificate.spki_hash[0]",
        "is not a SHA-256 hash",
    );

    // The CA needs the TLS listener, an existing file, and a certificate in it.
    let source = BASE.replace(
        "  http_listen: 127.0.0.1:8080\n",
        "  http_listen: 127.0.0.1:8080\n  client_ca_file: test-only-client-ca.pem\n",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "test-only-client-ca.pem"),
        "server.client_ca_file",
        "client certificates are only requested on `https_listen`",
    );
    let source = with_mtls("  client_ca_file: missing-ca.pem\n", "");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "missing-ca.pem"),
        "server.client_ca_file",
        "cannot read client CA file",
    );
    let source = with_mtls("  client_ca_file: test-only-signing-key.pem\n", "");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "test-only-signing-key.pem"),
        "server.client_ca_file",
        "test-only-signing-key.pem` does not contain a `-----BEGIN CERTIFICATE-----` PEM block",
    );
    let source = with_mtls(
        "",
        "  d:\n    allow:\n      and:\n        - client_certificate: {}\n",
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "{}"),
        "policies.d.allow.and[0].client_certificate",
        "write `fingerprint`, `spki_hash` or both",
    );
}

#[test]
fn all_policy_errors_are_reported_at_once_in_file_order() {
    let source = "\
server:
  http_listen: 127.0.0.1:8080
oidc:
  issuer: https://idp.example.com
  client_id: sekisho
  client_secret: s3cret
session:
  keys: [2FOEhCQXMabxHHEK0dJg1eNl9PPqZBYxzuksXrqGFIc=]
signing:
  key: {env: SEKISHO_SIGNING_KEY}
policies:
  admins:
    allow:
      and:
        - groups: {has: admins}
        - emial: {is: a@b.c}
    deny:
      or: []
  empty: {}
routes:
  - from: https://*.example.com
    methods: [GET, TRACE, GET]
    policy: admin
    to: http://127.0.0.1:9000
  - from: https://app.example.com
    policy:
      allow:
        and:
          - time: {days: [someday]}
    mode: enforce
    to: http://127.0.0.1:9000
";
    let errors = parse_err(source);
    let located: Vec<(usize, usize, &str)> = errors
        .iter()
        .map(|e| (e.line, e.column, e.field.as_str()))
        .collect();
    assert_eq!(
        located,
        [
            (16, 11, "policies.admins.allow.and[1].emial"),
            (18, 11, "policies.admins.deny.or"),
            (19, 10, "policies.empty"),
            (22, 27, "routes[0].methods[2]"),
            (23, 13, "routes[0].policy"),
            (29, 27, "routes[1].policy.allow.and[0].time.days[0]"),
        ]
    );
}

#[test]
fn no_policy_input_panics() {
    // The policies example cut at every line, with each line dropped, and cut at every
    // character of its Rego rule (regorus sees every truncation of the module): a config or
    // errors, never a panic.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies.yaml");
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let parse = |text: &str| {
        let _ = crate::parse(text, &path, &crate::parse::tests::env);
    };
    for (end, _) in source.match_indices('\n') {
        parse(source.get(..end).unwrap_or_default());
    }
    let lines: Vec<&str> = source.lines().collect();
    for skip in 0..lines.len() {
        let mutated: String = lines
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != skip)
            .map(|(_, line)| format!("{line}\n"))
            .collect();
        parse(&mutated);
    }
    let start = source.find("package sekisho").unwrap_or_default();
    let end = source
        .find("\n            query: data.sekisho.allow")
        .unwrap_or_default();
    assert!(start > 0 && end > start, "the example's Rego rule moved");
    for (cut, _) in source
        .char_indices()
        .filter(|(i, _)| (start..end).contains(i))
    {
        let truncated = format!(
            "{}{}",
            source.get(..cut).unwrap_or_default(),
            source.get(end..).unwrap_or_default()
        );
        parse(&truncated);
    }
}
