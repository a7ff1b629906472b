//! Route lookup cost against the size of the route table: 10, 1,000 and 10,000 routes (exact
//! hosts, wildcard hosts, exact paths, prefixes and a few regexes), with requests that hit a
//! deep prefix, an exact path, a regex, a wildcard host, and nothing.
//!
//! `cargo bench -p sekisho --bench routes -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::Method;
use regex::Regex;
use sekisho::routes::{Match, RouteTable};
use sekisho_config::policy::{PathMatch, Policy, PolicyMode};
use sekisho_config::{Route, RouteMatch, RouteTimeouts, Scheme};

/// Table sizes.
const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// (case, host, path, id of the route that must answer, or `None` for a miss).
const CASES: [(&str, &str, &str, Option<&str>); 5] = [
    (
        "deep_prefix",
        "app.example.com",
        "/api/v1/projects/alpha/builds/1234/logs/raw",
        Some("builds"),
    ),
    ("exact_path", "app.example.com", "/healthz", Some("health")),
    (
        "regex",
        "reports.example.com",
        "/r/42/export",
        Some("export"),
    ),
    (
        "wildcard_host",
        "a.b.tenants.example.com",
        "/dashboard/x",
        Some("tenants"),
    ),
    ("miss", "app.example.com", "/nothing/here/at/all/", None),
];

fn routes(count: usize) -> Vec<Route> {
    let mut routes = vec![
        route("api", "app.example.com", PathMatch::Prefix("/api".into())),
        route(
            "api-v1",
            "app.example.com",
            PathMatch::Prefix("/api/v1".into()),
        ),
        route(
            "builds",
            "app.example.com",
            PathMatch::Prefix("/api/v1/projects/alpha/builds".into()),
        ),
        route(
            "health",
            "app.example.com",
            PathMatch::Exact("/healthz".into()),
        ),
        route("export", "reports.example.com", regex("^/r/[0-9]+/export$")),
        route(
            "tenants",
            "*.tenants.example.com",
            PathMatch::Prefix("/".into()),
        ),
    ];
    let mut i = 0;
    while routes.len() < count {
        let id = format!("filler-{i}");
        let (host, path) = match i % 10 {
            // Regexes stay on hosts the cases never ask for.
            _ if i % 500 == 499 => (
                format!("svc{i}.corp.example"),
                regex(&format!("^/job/{i}/[a-z]+$")),
            ),
            0..6 => (
                format!("svc{i}.corp.example"),
                PathMatch::Prefix(format!("/team{}/api", i % 13)),
            ),
            6..8 => (format!("*.t{i}.example.net"), PathMatch::Prefix("/".into())),
            // The host the cases ask for grows with the table too.
            8 => (
                "app.example.com".to_owned(),
                PathMatch::Exact(format!("/status/{i}")),
            ),
            _ => (
                "app.example.com".to_owned(),
                PathMatch::Prefix(format!("/svc{i}/v1")),
            ),
        };
        routes.push(route(&id, &host, path));
        i += 1;
    }
    routes
}

fn route(id: &str, host: &str, path: PathMatch) -> Route {
    Route {
        id: id.to_owned(),
        from: RouteMatch {
            scheme: Scheme::Https,
            host: host.to_owned(),
            port: None,
            path_prefix: "/".to_owned(),
        },
        to: vec![url::Url::parse("http://127.0.0.1:8080/").unwrap_or_else(|e| panic!("{e}"))],
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
        path: Some(path),
        methods: Vec::new(),
        policy: Arc::new(Policy::authenticated_users(id)),
        mode: PolicyMode::Enforce,
        show_error_details: false,
        upstream_paths: sekisho_config::UpstreamPaths::default(),
        strip_request_headers: Vec::new(),
        tls: sekisho_config::UpstreamTls::default(),
        remove_request_headers: Vec::new(),
        set_request_headers: Vec::new(),
        prefix_rewrite: None,
        tunnel: None,
    }
}

fn regex(pattern: &str) -> PathMatch {
    PathMatch::Regex(Arc::new(
        Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}")),
    ))
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    for size in SIZES {
        let table = RouteTable::new(routes(size));
        for (case, host, path, expected) in CASES {
            // A benchmark of the wrong answer measures nothing.
            let found = match table.lookup(Scheme::Https, host, None, &Method::GET, path) {
                Match::Found(_, route) => Some(route.id.as_str()),
                Match::MethodNotAllowed | Match::NoRoute => None,
            };
            assert_eq!(found, expected, "{case} with {size} routes");
            group.bench_with_input(
                BenchmarkId::new(case, size),
                &(host, path),
                |b, (host, path)| {
                    b.iter(|| {
                        table
                            .lookup(
                                Scheme::Https,
                                black_box(host),
                                None,
                                &Method::GET,
                                black_box(path),
                            )
                            .found()
                            .map(|(i, _)| i)
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
