//! Cost of one policy decision: a realistic 10-rule policy (a 2-rule deny block, an 8-rule
//! allow block: identity, groups, email, domain, claim, method, path and a time window),
//! decided for a request it allows (every rule evaluated) and one its deny block stops.
//!
//! `cargo bench -p sekisho --bench policy -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use sekisho::policy::{Effect, Input, RegoEngines, decide};
use sekisho::session::Identity;

const CONFIG: &str = r#"
server: {http_listen: 127.0.0.1:0}
oidc: {issuer: https://idp.example.com, client_id: sekisho, client_secret: s}
session: {keys: [MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=]}
signing: {key: {env: KEY}}
policies:
  ten-rules:
    deny:
      or:
        - source_ip: [203.0.113.0/24, "2001:db8::/32"]
        - header/x-debug: {present: true}
    allow:
      and:
        - authenticated_user: true
        - groups: {any_of: [sre, eng]}
        - email: {ends_with: "@example.com"}
        - domain: {in: [example.com, example.org]}
        - claim/department: {in: [engineering, platform]}
        - http_method: {in: [GET, HEAD, POST]}
        - http_path: {prefix: /api}
        - time: {days: [mon, tue, wed, thu, fri, sat, sun], hours: {from: "00:00", to: "24:00"}, time_zone: Europe/Berlin}
routes:
  - {id: api, from: https://app.example.com, to: http://127.0.0.1:9, policy: ten-rules}
"#;

const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----";

fn bench(c: &mut Criterion) {
    let config = sekisho_config::parse(CONFIG, Path::new("bench.yaml"), &|name| {
        (name == "KEY").then(|| KEY.to_owned())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let policy = config
        .routes
        .first()
        .map(|r| r.policy.clone())
        .unwrap_or_else(|| panic!("no route"));
    let rego = RegoEngines::default();
    let identity = Identity {
        sub: "alice".into(),
        email: Some("alice@example.com".into()),
        name: Some("Alice".into()),
        groups: vec!["admins".into(), "eng".into()],
        issuer: "https://idp.example.com".into(),
        email_verified: Some(true),
        claims: serde_json::json!({"department": "platform"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        provider_sid: None,
    };
    let mut headers = HeaderMap::new();
    headers.insert("accept", HeaderValue::from_static("application/json"));
    let method = Method::GET;
    let now = jiff::Timestamp::now();
    let allowed = Input {
        identity: Some(&identity),
        method: &method,
        host: "app.example.com",
        path: "/api/v1/items/42",
        source_ip: "10.1.2.3".parse().unwrap_or_else(|e| panic!("{e}")),
        headers: &headers,
        client_certificate: None,
        now,
    };
    assert_eq!(decide(&policy, &allowed, &rego).effect, Effect::Allow);
    let denied = Input {
        source_ip: "203.0.113.9".parse().unwrap_or_else(|e| panic!("{e}")),
        ..allowed
    };
    assert_eq!(decide(&policy, &denied, &rego).effect, Effect::Deny);

    let mut group = c.benchmark_group("policy_10_rules");
    group.bench_function("allow_all_rules_evaluated", |b| {
        b.iter(|| decide(black_box(&policy), black_box(&allowed), &rego).effect)
    });
    group.bench_function("deny_by_source_ip", |b| {
        b.iter(|| decide(black_box(&policy), black_box(&denied), &rego).effect)
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
