//! The route table's prefix matching against a segment-by-segment reference: the route found for
//! a path is the first-configured route with the longest prefix whose segments begin the path's
//! segments (`/admin` covers `/admin` and `/admin/x`, never `/administrator`), or none. The same
//! holds for the case-folded twin used for upstreams that ignore case.
//!
//! Input: UTF-8 lines; the first is the request path, the others route prefixes.
#![no_main]

use std::sync::Arc;

use http::Method;
use libfuzzer_sys::fuzz_target;
use sekisho::routes::RouteTable;
use sekisho_config::path::{fold_case, normalize_path};
use sekisho_config::policy::{Policy, PolicyMode};
use sekisho_config::{Route, RouteMatch, RouteTimeouts, Scheme, UpstreamPaths};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let Some(Ok(path)) = lines.next().map(normalize_path) else {
        return;
    };
    // Prefixes as the configuration keeps them: normalised, no trailing slash but the root's.
    let prefixes: Vec<String> = lines
        .take(16)
        .filter_map(|line| normalize_path(line).ok())
        .map(|p| match p.strip_suffix('/') {
            Some(stripped) if !stripped.is_empty() => stripped.to_owned(),
            _ => p,
        })
        .collect();
    let routes: Vec<Route> = prefixes
        .iter()
        .enumerate()
        .map(|(i, prefix)| route(i, prefix))
        .collect();
    let table = RouteTable::new(routes);
    let method = Method::GET;

    let found = table
        .lookup(Scheme::Http, "app.test", None, &method, &path)
        .found()
        .map(|(index, _)| index);
    assert_eq!(
        found,
        reference(&path, &prefixes),
        "path {path:?} under prefixes {prefixes:?}"
    );

    let folded_path = fold_case(&path);
    let folded_prefixes: Vec<String> = prefixes.iter().map(|p| fold_case(p)).collect();
    let found = table
        .lookup_folded(Scheme::Http, "app.test", None, &method, &folded_path)
        .found()
        .map(|(index, _)| index);
    assert_eq!(
        found,
        reference(&folded_path, &folded_prefixes),
        "folded path {folded_path:?} under prefixes {folded_prefixes:?}"
    );
});

/// The first of the longest (in segments) prefixes covering `path`, by segments.
fn reference(path: &str, prefixes: &[String]) -> Option<usize> {
    let path_segments = segments(path);
    let mut best: Option<(usize, usize)> = None;
    for (index, prefix) in prefixes.iter().enumerate() {
        let prefix_segments = segments(prefix);
        let covers = prefix_segments.len() <= path_segments.len()
            && prefix_segments
                .iter()
                .zip(&path_segments)
                .all(|(a, b)| a == b);
        if covers && best.is_none_or(|(_, length)| prefix_segments.len() > length) {
            best = Some((index, prefix_segments.len()));
        }
    }
    best.map(|(index, _)| index)
}

/// `/a/b/` → `["a", "b", ""]`; `/` → `[]`.
fn segments(path: &str) -> Vec<&str> {
    match path.strip_prefix('/') {
        Some("") | None => Vec::new(),
        Some(rest) => rest.split('/').collect(),
    }
}

fn route(index: usize, prefix: &str) -> Route {
    Route {
        id: format!("route-{index}"),
        from: RouteMatch {
            scheme: Scheme::Http,
            host: "app.test".into(),
            port: None,
            path_prefix: prefix.to_owned(),
        },
        to: vec![url::Url::parse("http://127.0.0.1:1/").expect("static URL")],
        public: false,
        cors_allow_preflight: false,
        preserve_host: false,
        allow_websockets: false,
        pass_identity_headers: true,
        upstream_http2: false,
        timeouts: RouteTimeouts::default(),
        upstream_health: sekisho_config::UpstreamHealth::default(),
        path: None,
        methods: Vec::new(),
        policy: Arc::new(Policy::authenticated_users(&format!("routes[{index}]"))),
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
