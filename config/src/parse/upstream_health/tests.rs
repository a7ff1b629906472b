//! The target health settings: defaults, every key parsed, and every refusal at its line,
//! column and field.

use std::time::Duration;

use crate::model::UpstreamHealth;
use crate::parse::tests::{BASE, assert_has, assert_only, parse_err, parse_ok, pos_of};

/// `BASE` with `lines` (each indented as route keys) added to its route.
fn route_with(lines: &str) -> String {
    format!("{BASE}{lines}")
}

#[test]
fn absent_settings_keep_the_defaults() {
    let config = parse_ok(BASE);
    let route = config.routes.first().expect("one route");
    assert_eq!(route.upstream_health, UpstreamHealth::default());
    assert_eq!(route.upstream_health.eject_after, 3);
    assert_eq!(route.upstream_health.eject_for, Duration::from_secs(10));
    assert_eq!(route.upstream_health.eject_max, Duration::from_secs(300));
    assert_eq!(route.upstream_health.check, None);
}

#[test]
fn every_key_is_parsed() {
    let config = parse_ok(&route_with(
        "    upstream_health: {eject_after: 5, eject_for: 30s, eject_max: 10m}
    health_check: {path: /healthz?deep=1, interval: 10s, timeout: 3s, healthy_status: [200, 204, 301]}
",
    ));
    let health = &config.routes.first().expect("one route").upstream_health;
    assert_eq!(health.eject_after, 5);
    assert_eq!(health.eject_for, Duration::from_secs(30));
    assert_eq!(health.eject_max, Duration::from_secs(600));
    let check = health.check.as_ref().expect("a health check");
    assert_eq!(check.path, "/healthz?deep=1");
    assert_eq!(check.interval, Duration::from_secs(10));
    assert_eq!(check.timeout, Duration::from_secs(3));
    assert_eq!(check.healthy_status, [200, 204, 301]);
    assert!(check.is_healthy_status(204));
    assert!(!check.is_healthy_status(202));
}

#[test]
fn a_health_check_defaults_to_any_2xx_every_5s_within_2s() {
    let config = parse_ok(&route_with("    health_check: {path: /healthz}\n"));
    let check = config
        .routes
        .first()
        .expect("one route")
        .upstream_health
        .check
        .clone();
    let check = check.expect("a health check");
    assert_eq!(check.interval, Duration::from_secs(5));
    assert_eq!(check.timeout, Duration::from_secs(2));
    assert!(check.healthy_status.is_empty());
    assert!(check.is_healthy_status(200) && check.is_healthy_status(299));
    assert!(!check.is_healthy_status(199) && !check.is_healthy_status(300));
    // The timeout defaults to the interval when that is shorter than 2s.
    let config = parse_ok(&route_with("    health_check: {path: /, interval: 1s}\n"));
    let check = config
        .routes
        .first()
        .and_then(|r| r.upstream_health.check.clone());
    assert_eq!(check.map(|c| c.timeout), Some(Duration::from_secs(1)));
}

#[test]
fn eject_max_defaults_to_5m_or_eject_for_when_longer() {
    let config = parse_ok(&route_with("    upstream_health: {eject_for: 10m}\n"));
    let health = &config.routes.first().expect("one route").upstream_health;
    assert_eq!(health.eject_max, Duration::from_secs(600));
    let config = parse_ok(&route_with("    upstream_health: {eject_after: 0}\n"));
    let health = &config.routes.first().expect("one route").upstream_health;
    assert_eq!(health.eject_after, 0);
}

#[test]
fn bad_values_are_refused_where_written() {
    let source = route_with(
        "    upstream_health: {eject_after: 1001, eject_for: 500ms, eject_max: 1s}
    health_check: {path: healthz, interval: 900ms, timeout: 0s, healthy_status: [200, 600]}
",
    );
    let errors = parse_err(&source);
    assert_has(
        &errors,
        pos_of(&source, "1001"),
        "routes[0].upstream_health.eject_after",
        "`1001` is not a number of consecutive failures: write a whole number from 1 to 1000, or 0 to never eject",
    );
    assert_has(
        &errors,
        pos_of(&source, "500ms"),
        "routes[0].upstream_health.eject_for",
        "must be at least 1s (found 500ms)",
    );
    assert_has(
        &errors,
        pos_of(&source, "healthz"),
        "routes[0].health_check.path",
        "`healthz` must start with '/', like `/healthz`",
    );
    assert_has(
        &errors,
        pos_of(&source, "900ms"),
        "routes[0].health_check.interval",
        "must be at least 1s (found 900ms)",
    );
    assert_has(
        &errors,
        pos_of(&source, "0s"),
        "routes[0].health_check.timeout",
        "",
    );
    assert_has(
        &errors,
        pos_of(&source, "600"),
        "routes[0].health_check.healthy_status[1]",
        "`600` is not an HTTP status: write a number from 100 to 599",
    );
    assert_eq!(errors.len(), 6, "{errors:#?}");
}

#[test]
fn limits_between_keys_are_checked() {
    let source = route_with(
        "    upstream_health: {eject_for: 30s, eject_max: 20s}
    health_check: {path: /h, interval: 2s, timeout: 3s}
",
    );
    let errors = parse_err(&source);
    assert_has(
        &errors,
        pos_of(&source, "20s"),
        "routes[0].upstream_health.eject_max",
        "must be at least `eject_for` (30s) (found 20s)",
    );
    assert_has(
        &errors,
        pos_of(&source, "3s}"),
        "routes[0].health_check.timeout",
        "must be at most `interval` (2s) (found 3s)",
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn a_path_must_be_sendable_and_present() {
    let source = route_with("    health_check: {path: \"/a b\"}\n");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "\"/a b\""),
        "routes[0].health_check.path",
        "`/a b` is not a path sekisho can send",
    );
    let source = route_with("    health_check: {interval: 5s}\n");
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors
            .iter()
            .any(|e| e.field.starts_with("routes[0].health_check") && e.message.contains("path")),
        "{errors:#?}"
    );
}

#[test]
fn a_route_without_upstreams_has_no_health_settings() {
    let source = BASE.replace("    to: http://127.0.0.1:9000\n", "")
        + "    health_check: {path: /healthz}\n    upstream_health: {eject_after: 2}\n";
    let errors = parse_err(&source);
    assert_has(
        &errors,
        pos_of(&source, "{path"),
        "routes[0].health_check",
        "`health_check` judges a route's upstream targets, and this route has none",
    );
    assert_has(
        &errors,
        pos_of(&source, "{eject_after"),
        "routes[0].upstream_health",
        "`upstream_health` judges a route's upstream targets",
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
}
