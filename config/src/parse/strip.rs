//! `strip_request_headers`, at the top level (every route) and on a route (that route).

use super::Parser;
use crate::model::{HeaderPattern, Route};
use crate::value;
use crate::walk::Field;

impl Parser<'_> {
    /// A `strip_request_headers` list: header names and `prefix*` entries.
    pub(super) fn header_patterns(&mut self, field: &Field<'_>) -> Option<Vec<HeaderPattern>> {
        self.list_of(field, |p, item| p.walk.value(item, value::header_pattern))
    }
}

/// Puts the global `strip_request_headers` in front of each route's own.
pub(super) fn with_global(mut routes: Vec<Route>, global: &[HeaderPattern]) -> Vec<Route> {
    if global.is_empty() {
        return routes;
    }
    for route in &mut routes {
        let own = std::mem::take(&mut route.strip_request_headers);
        route.strip_request_headers = global.iter().cloned().chain(own).collect();
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::super::tests::{BASE, assert_has, assert_only, parse_err, parse_ok, pos_of};
    use crate::model::HeaderPattern;

    fn name(n: &str) -> HeaderPattern {
        HeaderPattern::Name(n.to_owned())
    }

    fn prefix(p: &str) -> HeaderPattern {
        HeaderPattern::Prefix(p.to_owned())
    }

    #[test]
    fn global_and_route_names_are_folded_and_merged() {
        let source = format!(
            "strip_request_headers: [X-Legacy-User, X_Corp_*]\n{BASE}    strip_request_headers: [x-route-only]\n  \
             - from: http://other.localhost:8080\n    to: http://127.0.0.1:9001\n"
        );
        let config = parse_ok(&source);
        assert_eq!(
            config.strip_request_headers,
            vec![name("x-legacy-user"), prefix("x-corp-")]
        );
        let [first, second] = config.routes.as_slice() else {
            panic!("two routes expected: {:?}", config.routes);
        };
        assert_eq!(
            first.strip_request_headers,
            vec![
                name("x-legacy-user"),
                prefix("x-corp-"),
                name("x-route-only")
            ]
        );
        assert_eq!(
            second.strip_request_headers,
            vec![name("x-legacy-user"), prefix("x-corp-")]
        );
    }

    #[test]
    fn absent_lists_strip_nothing_more() {
        let config = parse_ok(BASE);
        assert!(config.strip_request_headers.is_empty());
        assert!(
            config
                .routes
                .iter()
                .all(|r| r.strip_request_headers.is_empty())
        );
    }

    #[test]
    fn bad_entries_are_reported_with_their_position() {
        let source = format!(
            "strip_request_headers: [\"X Bad\", X-*-Mid, \"*\", Content-*]\n{BASE}    strip_request_headers: [Host, \"\"]\n"
        );
        let errors = parse_err(&source);
        assert_eq!(errors.len(), 6, "{errors:#?}");
        let at = |needle| pos_of(&source, needle);
        assert_has(
            &errors,
            at("\"X Bad\""),
            "strip_request_headers[0]",
            "is not a header name or a name prefix",
        );
        assert_has(
            &errors,
            at("X-*-Mid"),
            "strip_request_headers[1]",
            "`*` only at the end",
        );
        assert_has(
            &errors,
            at("\"*\""),
            "strip_request_headers[2]",
            "is not a header name or a name prefix",
        );
        assert_has(
            &errors,
            at("Content-*"),
            "strip_request_headers[3]",
            "would strip `content-length`",
        );
        assert_has(
            &errors,
            at("Host,"),
            "routes[0].strip_request_headers[0]",
            "would strip `host`",
        );
    }

    #[test]
    fn a_scalar_is_not_a_list() {
        let source = format!("strip_request_headers: X-Legacy-User\n{BASE}");
        let errors = parse_err(&source);
        assert_only(
            &errors,
            pos_of(&source, "X-Legacy-User"),
            "strip_request_headers",
            "list",
        );
    }
}
