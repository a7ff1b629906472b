use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use regex::Regex;
use sekisho_config::policy::{PathMatch, Policy, PolicyMode};
use sekisho_config::{Route, RouteMatch, RouteTimeouts, Scheme};

use super::*;
use crate::normalize::path_has_prefix;

/// A route from `scheme://host[:port]/prefix`, id `id`, all methods, no `path:`.
fn route(id: &str, from: &str) -> Route {
    let (scheme, host, port, path) = split(from);
    Route {
        id: id.to_owned(),
        from: RouteMatch {
            scheme,
            host: host.to_owned(),
            port,
            path_prefix: path.to_owned(),
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

fn exact(mut r: Route, path: &str) -> Route {
    r.path = Some(PathMatch::Exact(path.to_owned()));
    r
}

fn prefix(mut r: Route, path: &str) -> Route {
    r.path = Some(PathMatch::Prefix(path.to_owned()));
    r
}

fn regex(mut r: Route, pattern: &str) -> Route {
    let compiled = Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
    r.path = Some(PathMatch::Regex(Arc::new(compiled)));
    r
}

fn methods(mut r: Route, list: &[&str]) -> Route {
    r.methods = list.iter().map(|m| (*m).to_owned()).collect();
    r
}

/// `scheme://host[:port]/path` → its parts.
fn split(url: &str) -> (Scheme, &str, Option<u16>, &str) {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("{url}: no scheme"));
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => panic!("{other}: not a scheme"),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            Some(port.parse().unwrap_or_else(|e| panic!("{url}: {e}"))),
        ),
        None => (authority, None),
    };
    (scheme, host, port, path)
}

/// What the table answers for `METHOD url`: the route id, `405` or `404`.
fn hit(table: &RouteTable, method: &str, url: &str) -> String {
    let (scheme, host, port, path) = split(url);
    let method = Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    match table.lookup(scheme, host, port, &method, path) {
        Match::Found(index, route) => {
            assert_eq!(table.routes().get(index).map(|r| &r.id), Some(&route.id));
            route.id.clone()
        }
        Match::MethodNotAllowed => "405".to_owned(),
        Match::NoRoute => "404".to_owned(),
    }
}

fn get(table: &RouteTable, url: &str) -> String {
    hit(table, "GET", url)
}

#[test]
fn exact_host_before_wildcard() {
    // The wildcard comes first in the configuration and has the longer prefix: neither matters.
    let t = RouteTable::new(vec![
        route("wild", "https://*.example.com/app"),
        route("exact", "https://app.example.com/"),
    ]);
    assert_eq!(get(&t, "https://app.example.com/app/x"), "exact");
    assert_eq!(get(&t, "https://other.example.com/app/x"), "wild");
}

#[test]
fn longer_wildcard_suffix_before_shorter() {
    let t = RouteTable::new(vec![
        route("short", "https://*.example.com/"),
        route("long", "https://*.b.example.com/"),
    ]);
    assert_eq!(get(&t, "https://a.b.example.com/"), "long");
    assert_eq!(get(&t, "https://x.a.b.example.com/"), "long");
    assert_eq!(get(&t, "https://b.example.com/"), "short");
    assert_eq!(get(&t, "https://a.c.example.com/"), "short");
}

#[test]
fn wildcards_need_one_more_label() {
    let t = RouteTable::new(vec![route("wild", "https://*.example.com/")]);
    assert_eq!(get(&t, "https://a.example.com/"), "wild");
    assert_eq!(get(&t, "https://a.b.example.com/x"), "wild");
    assert_eq!(get(&t, "https://example.com/"), "404");
    assert_eq!(get(&t, "https://evilexample.com/"), "404");
    assert_eq!(get(&t, "https://a.evilexample.com/"), "404");
    assert_eq!(get(&t, "https://example.com.evil.net/"), "404");
    assert_eq!(get(&t, "https://.example.com/"), "404");
    assert_eq!(get(&t, "https://a..example.com/"), "404");
    assert_eq!(get(&t, "https://com/"), "404");
}

#[test]
fn exact_path_then_regex_then_longest_prefix() {
    let t = RouteTable::new(vec![
        prefix(route("prefix", "https://app.example.com/"), "/api/v1/users"),
        regex(route("regex", "https://app.example.com/"), "^/api/v[0-9]+/"),
        exact(
            route("exact", "https://app.example.com/"),
            "/api/v1/users/me",
        ),
    ]);
    assert_eq!(get(&t, "https://app.example.com/api/v1/users/me"), "exact");
    assert_eq!(get(&t, "https://app.example.com/api/v1/users/you"), "regex");
    assert_eq!(get(&t, "https://app.example.com/api/v1/users"), "regex");
    assert_eq!(get(&t, "https://app.example.com/api/vx/users"), "404");
}

#[test]
fn regexes_in_configuration_order() {
    let t = RouteTable::new(vec![
        regex(route("first", "https://app.example.com/"), r"\.json$"),
        regex(route("second", "https://app.example.com/"), "^/data/"),
    ]);
    assert_eq!(get(&t, "https://app.example.com/data/a.json"), "first");
    assert_eq!(get(&t, "https://app.example.com/data/a.csv"), "second");
    assert_eq!(get(&t, "https://app.example.com/b.json"), "first");
    // Unanchored: a regex finds its match anywhere in the normalised path.
    assert_eq!(get(&t, "https://app.example.com/x/data/y"), "404");
    assert_eq!(get(&t, "https://app.example.com/x.json/y"), "404");
}

#[test]
fn longest_prefix_wins_whatever_the_order() {
    let t = RouteTable::new(vec![
        route("root", "https://app.example.com/"),
        route("a", "https://app.example.com/a"),
        route("abc", "https://app.example.com/a/b/c"),
        route("ab", "https://app.example.com/a/b"),
    ]);
    assert_eq!(get(&t, "https://app.example.com/a/b/c/d"), "abc");
    assert_eq!(get(&t, "https://app.example.com/a/b/cd"), "ab");
    assert_eq!(get(&t, "https://app.example.com/a/b/"), "ab");
    assert_eq!(get(&t, "https://app.example.com/a"), "a");
    assert_eq!(get(&t, "https://app.example.com/ab"), "root");
    assert_eq!(get(&t, "https://app.example.com/"), "root");
}

#[test]
fn prefixes_match_on_segment_boundaries() {
    let t = RouteTable::new(vec![
        route("api", "https://app.example.com/api"),
        prefix(route("slash", "https://app.example.com/"), "/docs/"),
    ]);
    assert_eq!(get(&t, "https://app.example.com/api"), "api");
    assert_eq!(get(&t, "https://app.example.com/api/"), "api");
    assert_eq!(get(&t, "https://app.example.com/api/x"), "api");
    assert_eq!(get(&t, "https://app.example.com/apix"), "404");
    assert_eq!(get(&t, "https://app.example.com/ap"), "404");
    // The config drops a prefix's trailing slash; one kept anyway means what `path_has_prefix`
    // says: itself, or more after one more `/` (which a normalised path never has).
    assert_eq!(get(&t, "https://app.example.com/docs/"), "slash");
    assert_eq!(get(&t, "https://app.example.com/docs"), "404");
    assert_eq!(get(&t, "https://app.example.com/docs/x"), "404");
}

#[test]
fn exact_path_is_exact() {
    let t = RouteTable::new(vec![exact(
        route("e", "https://app.example.com/"),
        "/health",
    )]);
    assert_eq!(get(&t, "https://app.example.com/health"), "e");
    assert_eq!(get(&t, "https://app.example.com/health/"), "404");
    assert_eq!(get(&t, "https://app.example.com/health/x"), "404");
    assert_eq!(get(&t, "https://app.example.com/"), "404");
}

#[test]
fn a_host_without_a_matching_path_falls_through_to_wildcards() {
    let t = RouteTable::new(vec![
        route("api", "https://app.example.com/api"),
        route("inner", "https://*.b.example.com/internal"),
        route("wild", "https://*.example.com/"),
    ]);
    assert_eq!(get(&t, "https://app.example.com/api/x"), "api");
    assert_eq!(get(&t, "https://app.example.com/docs"), "wild");
    assert_eq!(get(&t, "https://a.b.example.com/internal/x"), "inner");
    assert_eq!(get(&t, "https://a.b.example.com/public"), "wild");
}

#[test]
fn methods_skip_to_the_next_candidate() {
    let t = RouteTable::new(vec![
        methods(
            exact(route("read", "https://app.example.com/"), "/items"),
            &["GET", "HEAD"],
        ),
        methods(
            regex(route("write", "https://app.example.com/"), "^/items"),
            &["POST"],
        ),
        route("rest", "https://app.example.com/items"),
    ]);
    assert_eq!(hit(&t, "GET", "https://app.example.com/items"), "read");
    assert_eq!(hit(&t, "HEAD", "https://app.example.com/items"), "read");
    assert_eq!(hit(&t, "POST", "https://app.example.com/items"), "write");
    assert_eq!(hit(&t, "DELETE", "https://app.example.com/items"), "rest");
    assert_eq!(hit(&t, "GET", "https://app.example.com/items/1"), "rest");
}

#[test]
fn routes_sharing_a_path_split_by_method() {
    let t = RouteTable::new(vec![
        methods(route("get", "https://app.example.com/x"), &["GET"]),
        methods(route("post", "https://app.example.com/x"), &["POST"]),
    ]);
    assert_eq!(hit(&t, "GET", "https://app.example.com/x/1"), "get");
    assert_eq!(hit(&t, "POST", "https://app.example.com/x/1"), "post");
    assert_eq!(hit(&t, "PUT", "https://app.example.com/x/1"), "405");
    assert_eq!(hit(&t, "PUT", "https://app.example.com/y"), "404");
}

#[test]
fn method_not_allowed_only_when_nothing_else_matches() {
    let t = RouteTable::new(vec![
        methods(route("exact-get", "https://app.example.com/"), &["GET"]),
        methods(
            route("wild-post", "https://*.example.com/upload"),
            &["POST"],
        ),
        route("other", "https://other.example.com/"),
    ]);
    assert_eq!(hit(&t, "GET", "https://app.example.com/x"), "exact-get");
    assert_eq!(hit(&t, "PUT", "https://app.example.com/x"), "405");
    // The exact host refuses POST; the wildcard level behind it serves it.
    assert_eq!(
        hit(&t, "POST", "https://app.example.com/upload"),
        "wild-post"
    );
    assert_eq!(hit(&t, "PUT", "https://app.example.com/upload"), "405");
    assert_eq!(hit(&t, "PUT", "https://nothing.example.com/upload"), "405");
    assert_eq!(hit(&t, "PUT", "https://nothing.example.com/"), "404");
    // Another scheme or port is not "the same resource with another method".
    assert_eq!(hit(&t, "PUT", "http://app.example.com/x"), "404");
}

#[test]
fn extension_methods_compare_exactly() {
    let t = RouteTable::new(vec![methods(
        route("dav", "https://dav.example.com/"),
        &["PROPFIND"],
    )]);
    assert_eq!(hit(&t, "PROPFIND", "https://dav.example.com/a"), "dav");
    assert_eq!(hit(&t, "propfind", "https://dav.example.com/a"), "405");
}

#[test]
fn ports() {
    let t = RouteTable::new(vec![
        route("any", "https://app.example.com/"),
        route("admin", "https://app.example.com:8443/"),
        route("any-deep", "https://app.example.com/deep"),
        route("only-9000", "https://svc.example.com:9000/"),
    ]);
    // At the same step, the route naming the port comes first.
    assert_eq!(get(&t, "https://app.example.com:8443/x"), "admin");
    assert_eq!(get(&t, "https://app.example.com/x"), "any");
    assert_eq!(get(&t, "https://app.example.com:9443/x"), "any");
    // A longer prefix outranks the port.
    assert_eq!(get(&t, "https://app.example.com:8443/deep/x"), "any-deep");
    assert_eq!(get(&t, "https://svc.example.com:9000/"), "only-9000");
    assert_eq!(get(&t, "https://svc.example.com:9001/"), "404");
    assert_eq!(get(&t, "https://svc.example.com/"), "404");
}

#[test]
fn wildcard_ports_and_schemes() {
    let t = RouteTable::new(vec![
        route("wild-8443", "https://*.example.com:8443/"),
        route("plain", "http://*.example.com/"),
    ]);
    assert_eq!(get(&t, "https://a.example.com:8443/"), "wild-8443");
    assert_eq!(get(&t, "https://a.example.com/"), "404");
    assert_eq!(get(&t, "http://a.example.com:8080/"), "plain");
    assert_eq!(get(&t, "http://a.example.com/"), "plain");
}

#[test]
fn schemes_are_separate() {
    let t = RouteTable::new(vec![
        route("tls", "https://app.example.com/"),
        route("plain", "http://app.example.com/public"),
    ]);
    assert_eq!(get(&t, "https://app.example.com/public"), "tls");
    assert_eq!(get(&t, "http://app.example.com/public/x"), "plain");
    assert_eq!(get(&t, "http://app.example.com/"), "404");
}

#[test]
fn find_without_a_method_fails_closed() {
    let t = RouteTable::new(vec![
        methods(route("get", "https://app.example.com/x"), &["GET"]),
        route("all", "https://app.example.com/"),
    ]);
    let found = t
        .find(Scheme::Https, "app.example.com", None, "/x/1")
        .map(|(_, r)| r.id.as_str());
    assert_eq!(found, Some("all"));
    let only = RouteTable::new(vec![methods(
        route("get", "https://app.example.com/"),
        &["GET"],
    )]);
    assert!(
        only.find(Scheme::Https, "app.example.com", None, "/")
            .is_none()
    );
}

#[test]
fn serves_host_honours_wildcards_ports_and_schemes() {
    let t = RouteTable::new(vec![
        route("exact", "https://app.example.com/only/here"),
        route("wild", "https://*.corp.example.com/"),
        route("port", "https://admin.example.com:8443/"),
    ]);
    assert!(t.serves_host(Scheme::Https, "app.example.com", None));
    assert!(t.serves_host(Scheme::Https, "app.example.com", Some(444)));
    assert!(t.serves_host(Scheme::Https, "a.corp.example.com", None));
    assert!(t.serves_host(Scheme::Https, "a.b.corp.example.com", None));
    assert!(!t.serves_host(Scheme::Https, "corp.example.com", None));
    assert!(!t.serves_host(Scheme::Https, "evilcorp.example.com", None));
    assert!(!t.serves_host(Scheme::Http, "app.example.com", None));
    assert!(t.serves_host(Scheme::Https, "admin.example.com", Some(8443)));
    assert!(!t.serves_host(Scheme::Https, "admin.example.com", None));
    assert!(!t.serves_host(Scheme::Https, "admin.example.com", Some(443)));
}

#[test]
fn configured_hosts_compare_lowercase() {
    let t = RouteTable::new(vec![route("wild", "https://*.Example.COM/")]);
    assert_eq!(get(&t, "https://a.example.com/"), "wild");
}

#[test]
fn empty_table() {
    let t = RouteTable::new(Vec::new());
    assert_eq!(get(&t, "https://app.example.com/"), "404");
    assert!(!t.serves_host(Scheme::Https, "app.example.com", None));
}

#[test]
fn regexes_answer_the_same_one_by_one_as_in_a_set() {
    let routes = [
        regex(route("json", "https://a/"), r"\.json$"),
        regex(route("data", "https://a/"), "^/data/"),
        regex(route("any", "https://a/"), "."),
    ];
    let mut set = table::PathTable::default();
    let mut one_by_one = table::PathTable::default();
    for (index, r) in routes.iter().enumerate() {
        set.insert(index, r);
        one_by_one.insert(index, r);
    }
    set.seal();
    let visits = |t: &table::PathTable, path: &str, stop_at: Option<usize>| {
        let mut seen = Vec::new();
        t.regex_matches(path, |index| {
            seen.push(index);
            Some(index) == stop_at
        });
        seen
    };
    for path in ["/data/x.json", "/data/x", "/x.json", "/", ""] {
        for stop_at in [None, Some(0), Some(1)] {
            assert_eq!(
                visits(&set, path, stop_at),
                visits(&one_by_one, path, stop_at),
                "{path}"
            );
        }
    }
    assert_eq!(visits(&set, "/data/x.json", None), [0, 1, 2]);
    assert_eq!(visits(&set, "/data/x.json", Some(1)), [0, 1]);
    assert_eq!(visits(&set, "", None), Vec::<usize>::new());
}

#[test]
fn full_example_routes_as_documented() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/full.yaml");
    let config = sekisho_config::load_without_secrets(&path)
        .unwrap_or_else(|errors| panic!("examples/full.yaml:\n{errors}"));
    let t = RouteTable::new(config.routes);
    assert_eq!(hit(&t, "GET", "https://app.example.com/api/items"), "api");
    // `api` serves four methods; PATCH goes on to the next candidate, `app` on `/`.
    assert_eq!(hit(&t, "PATCH", "https://app.example.com/api/items"), "app");
    // The regex outranks the `/` prefix, for the methods it lists.
    assert_eq!(
        hit(&t, "GET", "https://app.example.com/v2/items"),
        "versioned-api"
    );
    assert_eq!(hit(&t, "POST", "https://app.example.com/v2/items"), "app");
    assert_eq!(hit(&t, "GET", "https://app.example.com/docs"), "app");
    assert_eq!(hit(&t, "GET", "https://a.b.apps.example.com/x"), "tenants");
    assert_eq!(hit(&t, "GET", "https://apps.example.com/x"), "404");
    assert_eq!(hit(&t, "GET", "https://portal.example.com:8443/"), "portal");
    assert_eq!(hit(&t, "GET", "https://portal.example.com/"), "404");
}

// ---- Property: the indexed table agrees with a linear scan of the same order rules. ----

/// What a naive scan says: the winning index, or 405/404.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Found(usize),
    MethodNotAllowed,
    NoRoute,
}

/// The order rules of the module documentation as one sort key over all routes.
fn naive(
    routes: &[Route],
    scheme: Scheme,
    host: &str,
    port: Option<u16>,
    method: &str,
    path: &str,
) -> Expected {
    type Key = (u8, Reverse<usize>, u8, Reverse<usize>, u8, usize);
    let mut best: Option<Key> = None;
    let mut method_mismatch = false;
    for (index, r) in routes.iter().enumerate() {
        let Some((host_rank, suffix_len, port_rank)) = naive_host(r, scheme, host, port) else {
            continue;
        };
        let (step, prefix_len) = match &r.path {
            Some(PathMatch::Exact(p)) if p == path => (0, 0),
            Some(PathMatch::Exact(_)) => continue,
            Some(PathMatch::Regex(re)) if re.is_match(path) => (1, 0),
            Some(PathMatch::Regex(_)) => continue,
            Some(PathMatch::Prefix(p)) if path_has_prefix(path, p) => (2, p.len()),
            Some(PathMatch::Prefix(_)) => continue,
            None if path_has_prefix(path, &r.from.path_prefix) => (2, r.from.path_prefix.len()),
            None => continue,
        };
        if !r.methods.is_empty() && !r.methods.iter().any(|m| m == method) {
            method_mismatch = true;
            continue;
        }
        // Regexes rank among themselves by port, then configuration order: no length.
        let key = (
            host_rank,
            Reverse(suffix_len),
            step,
            Reverse(prefix_len),
            port_rank,
            index,
        );
        if best.is_none_or(|b| key < b) {
            best = Some(key);
        }
    }
    match best {
        Some(key) => Expected::Found(key.5),
        None if method_mismatch => Expected::MethodNotAllowed,
        None => Expected::NoRoute,
    }
}

/// Whether `r` serves this scheme, host and port, and how specifically: (0 exact host or 1
/// wildcard, wildcard suffix length, 0 same port or 1 any port).
fn naive_host(r: &Route, scheme: Scheme, host: &str, port: Option<u16>) -> Option<(u8, usize, u8)> {
    if r.from.scheme != scheme {
        return None;
    }
    let port_rank = match r.from.port {
        None => 1,
        Some(p) if Some(p) == port => 0,
        Some(_) => return None,
    };
    if r.from.host == host {
        return Some((0, 0, port_rank));
    }
    let suffix = r.from.host.strip_prefix("*.").filter(|s| !s.is_empty())?;
    let front = host.strip_suffix(suffix)?.strip_suffix('.')?;
    (!front.is_empty() && !front.ends_with('.')).then_some((1, suffix.len(), port_rank))
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap_or(1)).unwrap_or(0)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items
            .get(self.below(items.len()))
            .copied()
            .unwrap_or_default()
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const LABELS: &[&str] = &[
    "a",
    "b",
    "c",
    "app",
    "api",
    "corp",
    "dev",
    "example",
    "evilexample",
];
const SEGMENTS: &[&str] = &["a", "b", "api", "v1", "v2", "x.json"];
const PORTS: &[Option<u16>] = &[None, Some(8443), Some(9000)];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE"];
const REGEXES: &[&str] = &["^/api/v[0-9]/", r"\.json$", "^/a$", "b/", "^/(a|b)/api"];

fn random_host(rng: &mut Rng) -> String {
    let labels = 1 + rng.below(4);
    let mut host: Vec<&str> = (0..labels).map(|_| rng.pick(LABELS)).collect();
    host.push("com");
    host.join(".")
}

fn random_path(rng: &mut Rng) -> String {
    let depth = rng.below(5);
    let mut path: String = (0..depth)
        .map(|_| format!("/{}", rng.pick(SEGMENTS)))
        .collect();
    if path.is_empty() || rng.chance(15) {
        path.push('/');
    }
    path
}

fn random_route(rng: &mut Rng, index: usize) -> Route {
    let mut host = random_host(rng);
    // Wildcards over at least two labels (`*.example.com`), as configurations have them.
    if rng.chance(35)
        && let Some((_, rest)) = host.split_once('.')
        && rest.contains('.')
    {
        host = format!("*.{rest}");
    }
    let scheme = if rng.chance(85) { "https" } else { "http" };
    let port = match PORTS.get(rng.below(PORTS.len())).copied().flatten() {
        Some(p) => format!(":{p}"),
        None => String::new(),
    };
    let mut from_path = random_path(rng);
    if from_path == "/" && rng.chance(80) {
        from_path = format!("/{}", rng.pick(SEGMENTS));
    }
    if from_path.len() > 1 {
        from_path = from_path.trim_end_matches('/').to_owned();
    }
    let mut r = route(
        &format!("r{index}"),
        &format!("{scheme}://{host}{port}{from_path}"),
    );
    match rng.below(100) {
        0..10 => r = exact(r, &random_path(rng)),
        10..13 => r = regex(r, rng.pick(REGEXES)),
        13..25 => r = prefix(r, &random_path(rng)),
        _ => {}
    }
    if rng.chance(30) {
        let count = 1 + rng.below(2);
        let list: Vec<&str> = (0..count).map(|_| rng.pick(METHODS)).collect();
        r = methods(r, &list);
    }
    r
}

#[test]
fn agrees_with_a_linear_scan_of_the_same_rules() {
    let mut rng = Rng(0x5e41_5e41_dead_beef);
    let routes: Vec<Route> = (0..3000).map(|i| random_route(&mut rng, i)).collect();
    let table = RouteTable::new(routes.clone());
    let (mut found, mut not_allowed, mut none, mut wild, mut by_regex) = (0, 0, 0, 0, 0);
    for _ in 0..10_000 {
        let scheme = if rng.chance(85) {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let host = random_host(&mut rng);
        let port = [None, Some(8443), Some(9000), Some(443)]
            .get(rng.below(4))
            .copied()
            .flatten();
        let method = rng.pick(METHODS);
        let path = random_path(&mut rng);
        let expected = naive(&routes, scheme, &host, port, method, &path);
        let m = Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let got = match table.lookup(scheme, &host, port, &m, &path) {
            Match::Found(index, _) => Expected::Found(index),
            Match::MethodNotAllowed => Expected::MethodNotAllowed,
            Match::NoRoute => Expected::NoRoute,
        };
        assert_eq!(got, expected, "{method} {scheme}://{host}:{port:?}{path}");
        assert_eq!(
            table.serves_host(scheme, &host, port),
            routes
                .iter()
                .any(|r| naive_host(r, scheme, &host, port).is_some()),
            "{scheme}://{host}:{port:?}"
        );
        match expected {
            Expected::Found(index) => {
                found += 1;
                let r = routes.get(index).unwrap_or_else(|| panic!("{index}"));
                wild += usize::from(r.from.host.starts_with('*'));
                by_regex += usize::from(matches!(r.path, Some(PathMatch::Regex(_))));
            }
            Expected::MethodNotAllowed => not_allowed += 1,
            Expected::NoRoute => none += 1,
        }
    }
    // The generator must exercise every outcome, not just agree on misses.
    eprintln!("found {found}, 405 {not_allowed}, 404 {none}; wildcard {wild}, regex {by_regex}");
    assert!(
        found > 2000 && not_allowed > 200 && none > 1000,
        "{found} {not_allowed} {none}"
    );
    assert!(wild > 500 && by_regex > 50, "{wild} {by_regex}");
}
