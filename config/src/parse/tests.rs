//! Whole-document tests: valid files, the example files, and one test per kind of error with
//! its line, column and field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::{Config, Origin, RouteMatch, Scheme, SigningAlgorithm};
use crate::policy::PolicyMode;
use crate::{ConfigError, ConfigErrors};

/// base64 of 32 bytes.
pub(super) const KEY: &str = "2FOEhCQXMabxHHEK0dJg1eNl9PPqZBYxzuksXrqGFIc=";
/// A throwaway P-256 PKCS#8 key, only ever used by tests.
pub(super) const PEM: &str = include_str!("../../testdata/test-only-signing-key.pem");

/// A small valid file with literal secrets except for the signing key (PEM is awkward inline).
pub(super) const BASE: &str = "\
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
routes:
  - from: http://app.localhost:8080
    to: http://127.0.0.1:9000
";

/// The environment the tests pretend to run in.
pub(super) fn env(name: &str) -> Option<String> {
    match name {
        "SEKISHO_CLIENT_SECRET" => Some("client-secret-from-env".to_owned()),
        "SEKISHO_COOKIE_KEY" | "SEKISHO_COOKIE_KEY_PREVIOUS" => Some(KEY.to_owned()),
        "SEKISHO_SIGNING_KEY" | "SEKISHO_AUDIT_SIGNING_KEY" => Some(PEM.to_owned()),
        "OTLP_AUTHORIZATION" => Some("Bearer otlp-token".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

/// A config file path inside `testdata/`, so `{file: ...}` secrets find the fixtures.
pub(super) fn config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sekisho.yaml")
}

/// Parses `source`, which must be valid.
pub(super) fn parse_ok(source: &str) -> Config {
    crate::parse(source, &config_path(), &env).unwrap_or_else(|errors| {
        panic!("expected a valid config, got:\n{errors}\n--- source ---\n{source}")
    })
}

/// Parses `source`, which must be invalid.
pub(super) fn parse_err(source: &str) -> Vec<ConfigError> {
    match crate::parse(source, &config_path(), &env) {
        Ok(_) => panic!("expected errors, the config parsed:\n{source}"),
        Err(ConfigErrors { errors }) => errors,
    }
}

/// `BASE` with `from` replaced by `to` (`from` must occur).
pub(super) fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no {from:?}");
    BASE.replacen(from, to, 1)
}

/// 1-based line and column of the first occurrence of `needle` in `source`.
pub(super) fn pos_of(source: &str, needle: &str) -> (usize, usize) {
    let offset = source
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in source"));
    let before = source.get(..offset).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Asserts that `errors` holds exactly one error, at `pos` in `field`, whose message contains
/// `message`.
#[track_caller]
pub(super) fn assert_only(errors: &[ConfigError], pos: (usize, usize), field: &str, message: &str) {
    assert_eq!(errors.len(), 1, "expected one error, got: {errors:#?}");
    assert_has(errors, pos, field, message);
}

/// Asserts that `errors` has an error at `pos` in `field` whose message contains `message`.
#[track_caller]
pub(super) fn assert_has(errors: &[ConfigError], pos: (usize, usize), field: &str, message: &str) {
    let found = errors.iter().any(|error| {
        (error.line, error.column) == pos && error.field == field && error.message.contains(message)
    });
    assert!(
        found,
        "no error at {}:{} in `{field}` containing {message:?}; got:\n{}",
        pos.0,
        pos.1,
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn base_parses_with_defaults() {
    let config = parse_ok(BASE);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    assert_eq!(config.state_dir, dir.join(".sekisho"));
    assert_eq!(
        config.session.revocation_file,
        dir.join(".sekisho/revoked-sessions")
    );
    assert_eq!(config.server.http_listen.map(|a| a.port()), Some(8080));
    assert_eq!(config.server.https_listen, None);
    assert!(config.server.tls.is_empty());
    assert!(config.server.trusted_proxies.is_empty());
    assert_eq!(config.server.timeouts.read_header, Duration::from_secs(10));
    assert_eq!(config.server.timeouts.idle, Duration::from_secs(60));
    assert_eq!(
        config.server.timeouts.tls_handshake,
        Duration::from_secs(10)
    );
    assert_eq!(
        config.server.timeouts.tunnel_session_check,
        Duration::from_secs(2)
    );
    assert_eq!(config.oidc.issuer.as_str(), "https://idp.example.com/");
    assert_eq!(config.oidc.client_secret.expose(), "s3cret");
    assert_eq!(config.oidc.scopes, ["openid", "email", "profile"]);
    assert_eq!(config.oidc.groups_claim, "groups");
    assert_eq!(config.oidc.bearer_audiences, ["sekisho"]);
    assert_eq!(
        config.oidc.allowed_algorithms,
        [
            SigningAlgorithm::Rs256,
            SigningAlgorithm::Es256,
            SigningAlgorithm::EdDsa
        ]
    );
    assert_eq!(config.oidc.post_logout_redirect_uri, None);
    assert_eq!(config.oidc.clock_skew, Duration::from_secs(60));
    assert_eq!(config.session.cookie_name, "_sekisho");
    assert_eq!(config.session.keys.len(), 1);
    assert_eq!(
        config.session.keys.first().map(|k| k.expose().len()),
        Some(32)
    );
    assert_eq!(
        config.session.absolute_lifetime,
        Duration::from_secs(12 * 3600)
    );
    assert_eq!(config.session.idle_lifetime, Duration::from_secs(3600));
    assert_eq!(config.signing.key.expose(), PEM);
    assert_eq!(config.signing.assertion_lifetime, Duration::from_secs(300));
    assert_eq!(config.signing.issuer, "sekisho");
    assert_eq!(config.identity_headers.user, "x-sekisho-user");
    assert_eq!(
        config.identity_headers.jwt_assertion,
        "x-sekisho-jwt-assertion"
    );
    assert!(config.allowed_redirect_origins.is_empty());
    let [route] = config.routes.as_slice() else {
        panic!("expected one route: {:?}", config.routes);
    };
    assert_eq!(route.id, "route-0");
    assert_eq!(
        route.from,
        RouteMatch {
            scheme: Scheme::Http,
            host: "app.localhost".into(),
            port: Some(8080),
            path_prefix: "/".into()
        }
    );
    assert_eq!(
        route.to.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        ["http://127.0.0.1:9000/"]
    );
    assert!(!route.preserve_host);
    assert!(!route.allow_websockets);
    assert!(route.pass_identity_headers);
    assert!(!route.upstream_http2);
    assert_eq!(route.timeouts.connect, Duration::from_secs(5));
    assert_eq!(route.timeouts.response_header, Duration::from_secs(30));
    assert_eq!(route.timeouts.idle, Duration::from_secs(60));
}

#[test]
fn minimal_example_stays_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/minimal.yaml");
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let config = crate::parse(&source, &path, &env)
        .unwrap_or_else(|errors| panic!("examples/minimal.yaml:\n{errors}"));
    assert_eq!(config.oidc.client_secret.expose(), "client-secret-from-env");
    assert_eq!(config.routes.len(), 1);
}

#[test]
fn full_example_stays_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/full.yaml");
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let config = crate::parse(&source, &path, &env)
        .unwrap_or_else(|errors| panic!("examples/full.yaml:\n{errors}"));
    let examples = path.parent().unwrap_or(Path::new("."));

    assert_eq!(config.state_dir, examples.join("./.sekisho"));
    assert_eq!(config.server.https_listen.map(|a| a.is_ipv6()), Some(true));
    assert_eq!(config.server.tls.len(), 2);
    assert_eq!(
        config.server.tls.first().map(|t| t.cert_file.clone()),
        Some(examples.join("./tls/app.example.com.crt"))
    );
    assert_eq!(
        config.server.tls.get(1).map(|t| t.key_file.clone()),
        Some(PathBuf::from("/etc/sekisho/tls/portal.example.com.key"))
    );
    assert_eq!(
        config
            .server
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.0.0.0/8", "::1/128", "192.0.2.10/32"]
    );
    assert_eq!(config.oidc.scopes, ["openid", "email", "profile", "groups"]);
    assert_eq!(
        config.oidc.bearer_audiences,
        ["sekisho", "https://api.example.com"]
    );
    assert_eq!(config.oidc.allowed_algorithms.len(), 4);
    assert_eq!(
        config
            .oidc
            .post_logout_redirect_uri
            .as_ref()
            .map(|u| u.as_str()),
        Some("https://portal.example.com/")
    );
    assert_eq!(config.session.keys.len(), 2);
    assert_eq!(config.session.idle_lifetime, Duration::from_secs(5400));
    assert_eq!(config.identity_headers.groups, "x-sekisho-groups");
    assert_eq!(
        config.allowed_redirect_origins,
        [
            Origin {
                scheme: Scheme::Https,
                host: "portal.example.com".into(),
                port: 443
            },
            Origin {
                scheme: Scheme::Http,
                host: "localhost".into(),
                port: 3000
            }
        ]
    );
    assert_eq!(config.server.client_ca_file, None);
    let policies: Vec<Option<&str>> = config.policies.iter().map(|p| p.name.as_deref()).collect();
    assert_eq!(policies, [Some("staff"), Some("api-clients")]);
    let ids: Vec<&str> = config.routes.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "app",
            "api",
            "versioned-api",
            "tenants",
            "portal",
            "billing",
            "docs",
            "legacy",
            "grafana-auth",
            "orders-db"
        ]
    );
    let app = config.routes.first();
    assert_eq!(app.and_then(|r| r.policy.name.as_deref()), Some("staff"));
    let api = config.routes.get(1);
    assert_eq!(api.map(|r| r.from.path_prefix.as_str()), Some("/api"));
    assert_eq!(api.map(|r| r.to.len()), Some(2));
    assert_eq!(api.map(|r| r.timeouts.idle), Some(Duration::from_secs(300)));
    assert_eq!(
        api.map(|r| r.methods.join(",")),
        Some("GET,POST,PUT,DELETE".into())
    );
    let versioned = config.routes.get(2);
    assert_eq!(
        versioned
            .and_then(|r| r.path.as_ref())
            .map(ToString::to_string),
        Some("regex \"^/v[0-9]+/\"".into())
    );
    assert_eq!(
        versioned.map(|r| r.methods.join(",")),
        Some("GET,HEAD".into())
    );
    assert_eq!(versioned.map(|r| r.mode), Some(PolicyMode::Report));
    assert_eq!(
        versioned.map(|r| r.policy.path.as_str()),
        Some("routes[2].policy")
    );
    let tenants = config.routes.get(3);
    assert_eq!(
        tenants.map(|r| r.from.host.as_str()),
        Some("*.apps.example.com")
    );
    assert_eq!(tenants.map(|r| r.policy.is_default()), Some(true));
    let portal = config.routes.get(4);
    assert_eq!(portal.map(|r| r.from.port), Some(Some(8443)));
    assert_eq!(portal.map(|r| r.pass_identity_headers), Some(false));
    assert!(portal.is_some_and(|r| r.tls.server_name.is_none()));
    let billing = config.routes.get(5);
    assert_eq!(
        billing.and_then(|r| r.tls.server_name.as_ref()),
        Some(&rustls::pki_types::ServerName::try_from("billing.corp.internal").unwrap())
    );
}

#[test]
fn policies_example_stays_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies.yaml");
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let config = crate::parse(&source, &path, &env)
        .unwrap_or_else(|errors| panic!("examples/policies.yaml:\n{errors}"));
    let names: Vec<&str> = config
        .policies
        .iter()
        .filter_map(|p| p.name.as_deref())
        .collect();
    assert_eq!(
        names,
        [
            "admins-only",
            "engineering",
            "finance-business-hours",
            "releases"
        ]
    );
    let summary = config.summary();
    for line in [
        "policy admins-only (enforce)",
        "policy inline (enforce)",
        "policy releases (report)",
        "https://*.internal.example.com/ path exact \"/healthz\" methods GET ->",
    ] {
        assert!(summary.contains(line), "no {line:?} in:\n{summary}");
    }
}

#[test]
fn secrets_from_files_are_read_and_trimmed() {
    let source = base_with(
        "client_secret: s3cret",
        "client_secret: {file: test-only-client-secret.txt}",
    )
    .replace(
        "key: {env: SEKISHO_SIGNING_KEY}",
        "key: {file: ./test-only-signing-key.pem}",
    );
    let config = parse_ok(&source);
    assert_eq!(config.oidc.client_secret.expose(), "test-client-secret");
    assert_eq!(config.signing.key.expose(), PEM.trim_end_matches('\n'));
}

#[test]
fn secrets_from_env() {
    let source = base_with(
        "client_secret: s3cret",
        "client_secret: {env: SEKISHO_CLIENT_SECRET}",
    )
    .replace(
        &format!("keys: [{KEY}]"),
        "keys:\n    - {env: SEKISHO_COOKIE_KEY}\n    - {env: SEKISHO_COOKIE_KEY_PREVIOUS}",
    );
    let config = parse_ok(&source);
    assert_eq!(config.oidc.client_secret.expose(), "client-secret-from-env");
    assert_eq!(config.session.keys.len(), 2);
}

#[test]
fn unknown_fields_are_reported_at_the_key() {
    let source = base_with(
        "  http_listen: 127.0.0.1:8080\n",
        "  http_listen: 127.0.0.1:8080\n  htp_listen: 1\n",
    ) + "rutes: []\n";
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "htp_listen"),
        "server.htp_listen",
        "unknown field `htp_listen`; expected one of: http_listen,",
    );
    assert_has(
        &errors,
        pos_of(&source, "rutes"),
        "rutes",
        "unknown field `rutes`",
    );

    let source = base_with(
        "    to: http",
        "    timeouts: {connect: 1s, conect: 2s}\n    to: http",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "conect"),
        "routes[0].timeouts.conect",
        "unknown field",
    );
}

#[test]
fn missing_fields_are_reported_at_the_parent_mapping() {
    let source = base_with("  issuer: https://idp.example.com\n", "");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "client_id"),
        "oidc.issuer",
        "missing required field `issuer`",
    );

    let source = base_with("  - from: http://app.localhost:8080\n    to:", "  - to:");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "to: http://127"),
        "routes[0].from",
        "missing required field `from`",
    );

    let source = BASE.replace("signing:\n  key: {env: SEKISHO_SIGNING_KEY}\n", "");
    assert_only(
        &parse_err(&source),
        (1, 1),
        "signing",
        "missing required field `signing`",
    );

    let source = base_with("  client_id: sekisho\n", "  client_id:\n");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "client_id"),
        "oidc.client_id",
        "must have a value",
    );
}

#[test]
fn wrong_types_are_reported_at_the_value() {
    let source = base_with(
        "    to: http://127.0.0.1:9000\n",
        "    to: http://127.0.0.1:9000\n    preserve_host: \"yes\"\n",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "\"yes\""),
        "routes[0].preserve_host",
        "expected `true` or `false`, found a string",
    );

    let source = base_with(
        "server:\n  http_listen: 127.0.0.1:8080\n",
        "server: [127.0.0.1:8080]\n",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "[127"),
        "server",
        "expected a mapping, found a list",
    );

    let source = base_with(
        "  client_id: sekisho",
        "  client_id: sekisho\n  scopes: openid",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "openid"),
        "oidc.scopes",
        "expected a list, found a string",
    );

    let source = base_with("  client_id: sekisho", "  client_id: {name: sekisho}");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "{name"),
        "oidc.client_id",
        "expected a string, found a mapping",
    );

    let source = base_with(
        "    to: http://127.0.0.1:9000",
        "    to: {url: http://127.0.0.1:9000}",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "{url"),
        "routes[0].to",
        "expected a URL or a list of URLs, found a mapping",
    );
}

#[test]
fn bad_durations() {
    let source = base_with(
        "  client_id: sekisho",
        "  client_id: sekisho\n  clock_skew: 30",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "30"),
        "oidc.clock_skew",
        "`30` has no unit; write a duration as numbers with units (ms, s, m, h, d), like `500ms`, `30s`",
    );

    let source = base_with(
        "  http_listen: 127.0.0.1:8080",
        "  http_listen: 127.0.0.1:8080\n  timeouts:\n    idle: 1.5h\n    read_header: 0s",
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "1.5h"),
        "server.timeouts.idle",
        "is not a duration",
    );
    assert_has(
        &errors,
        pos_of(&source, "0s"),
        "server.timeouts.read_header",
        "greater than zero",
    );
}

#[test]
fn bad_urls() {
    let source = base_with(
        "  - from: http://app.localhost:8080",
        "  - from: https://app.example.com/a/../b",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "https://app.example.com/a"),
        "routes[0].from",
        "contains a `.` or `..` segment",
    );

    let source = base_with(
        "    to: http://127.0.0.1:9000",
        "    to:\n      - http://127.0.0.1:9000\n      - ftp://127.0.0.1:9001\n      - http://127.0.0.1:9002/?q",
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "ftp://"),
        "routes[0].to[1]",
        "scheme `ftp` is not allowed",
    );
    assert_has(
        &errors,
        pos_of(&source, "http://127.0.0.1:9002"),
        "routes[0].to[2]",
        "query",
    );

    let source = base_with("  issuer: https://idp.example.com", "  issuer: not a url");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "not a url"),
        "oidc.issuer",
        "is not a valid URL",
    );

    let source = base_with(
        "server:",
        "allowed_redirect_origins: [https://portal.example.com/login]\nserver:",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "https://portal"),
        "allowed_redirect_origins[0]",
        "must not have a path",
    );
}

#[test]
fn http_issuer_only_on_loopback() {
    let source = base_with(
        "  issuer: https://idp.example.com",
        "  issuer: http://idp.example.com",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "http://idp"),
        "oidc.issuer",
        "uses http on a non-loopback host",
    );
    parse_ok(&base_with(
        "  issuer: https://idp.example.com",
        "  issuer: http://127.0.0.1:5556/dex",
    ));
    parse_ok(&base_with(
        "  issuer: https://idp.example.com",
        "  issuer: http://localhost:5556",
    ));
}

#[test]
fn bad_cidr() {
    let source = base_with(
        "  http_listen: 127.0.0.1:8080",
        "  http_listen: 127.0.0.1:8080\n  trusted_proxies: [10.0.0.0/8, 300.0.0.0/8, 10.1.2.3/16]",
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "300."),
        "server.trusted_proxies[1]",
        "is not an IP network",
    );
    assert_has(
        &errors,
        pos_of(&source, "10.1.2.3"),
        "server.trusted_proxies[2]",
        "write the network address `10.1.0.0/16`",
    );
}

#[test]
fn bad_session_keys() {
    let source = base_with(
        &format!("  keys: [{KEY}]"),
        &format!("  keys:\n    - {KEY}\n    - \"not base64!\"\n    - AAAA\n    - {{env: EMPTY}}"),
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "\"not base64!\""),
        "session.keys[1]",
        "is not valid base64",
    );
    assert_has(
        &errors,
        pos_of(&source, "AAAA"),
        "session.keys[2]",
        "decodes to 3 bytes; session keys must be exactly 32 bytes",
    );
    assert_has(
        &errors,
        pos_of(&source, "{env: EMPTY}"),
        "session.keys[3]",
        "the secret is empty",
    );
    assert!(
        errors.iter().all(|e| !e.message.contains("not base64!")),
        "secret material must not be echoed"
    );

    let source = base_with(&format!("  keys: [{KEY}]"), "  keys: []");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "[]"),
        "session.keys",
        "at least one entry",
    );
}

#[test]
fn unset_env_var_names_the_field() {
    let source = base_with(
        "client_secret: s3cret",
        "client_secret: {env: SEKISHO_NOT_SET}",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "SEKISHO_NOT_SET"),
        "oidc.client_secret",
        "environment variable `SEKISHO_NOT_SET` is not set",
    );
}

#[test]
fn missing_secret_file_names_the_field() {
    let source = base_with(
        "key: {env: SEKISHO_SIGNING_KEY}",
        "key: {file: missing-key.pem}",
    );
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, "missing-key.pem"),
        "signing.key",
        "cannot read secret file",
    );
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("testdata/missing-key.pem")),
        "the resolved path is shown: {errors:#?}"
    );
}

#[test]
fn malformed_secret_mappings() {
    let source = base_with("client_secret: s3cret", "client_secret: {file: a, env: B}");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "{file: a"),
        "oidc.client_secret",
        "write a secret as a string",
    );
    let source = base_with("client_secret: s3cret", "client_secret: {file: ~}");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "{file: ~}"),
        "oidc.client_secret",
        "write a secret as a string",
    );
    let source = base_with("client_secret: s3cret", "client_secret: {vault: a}");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "vault"),
        "oidc.client_secret.vault",
        "unknown field `vault`; expected one of: file, env",
    );
}

#[test]
fn signing_key_must_be_pkcs8_pem() {
    let source = base_with(
        "key: {env: SEKISHO_SIGNING_KEY}",
        "key: \"-----BEGIN EC PRIVATE KEY-----\\nAAAA\\n-----END EC PRIVATE KEY-----\"",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "\"-----BEGIN"),
        "signing.key",
        "sekisho needs an unencrypted PKCS#8",
    );
}

#[test]
fn symmetric_and_unsigned_algorithms_are_refused() {
    let source = base_with(
        "  client_id: sekisho",
        "  client_id: sekisho\n  allowed_algorithms: [RS256, HS256, none, XS1]",
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "HS256"),
        "oidc.allowed_algorithms[1]",
        "symmetric (shared-secret) algorithm and is never accepted",
    );
    assert_has(
        &errors,
        pos_of(&source, "none"),
        "oidc.allowed_algorithms[2]",
        "unsigned tokens, which are never accepted",
    );
    assert_has(
        &errors,
        pos_of(&source, "XS1"),
        "oidc.allowed_algorithms[3]",
        "unknown algorithm",
    );
}

#[test]
fn duplicate_routes() {
    let source = base_with(
        "  - from: http://app.localhost:8080\n    to: http://127.0.0.1:9000\n",
        "  - id: app\n    from: http://app.localhost:8080\n    to: http://127.0.0.1:9000\n  \
         - id: other\n    from: http://app.localhost:8080/\n    to: http://127.0.0.1:9001\n  \
         - id: app\n    from: http://app.localhost:8080/x\n    to: http://127.0.0.1:9002\n",
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let (line, column) = pos_of(&source, "id: app\n    from: http://app.localhost:8080/x");
    assert_has(
        &errors,
        (line, column + "id: ".len()),
        "routes[2].id",
        "route id `app` is already used by routes[0]",
    );
    assert_has(
        &errors,
        pos_of(&source, "http://app.localhost:8080/\n"),
        "routes[1].from",
        "`http://app.localhost:8080/` is already the `from` of routes[0]",
    );
}

#[test]
fn routes_must_not_be_empty() {
    let source = base_with(
        "routes:\n  - from: http://app.localhost:8080\n    to: http://127.0.0.1:9000\n",
        "routes: []\n",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "[]"),
        "routes",
        "at least one entry",
    );
}

#[test]
fn idle_lifetime_above_absolute() {
    let source = base_with(
        &format!("  keys: [{KEY}]"),
        &format!("  keys: [{KEY}]\n  absolute_lifetime: 1h\n  idle_lifetime: 90m"),
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "90m"),
        "session.idle_lifetime",
        "1h30m is longer than session.absolute_lifetime (1h)",
    );

    let source = base_with(
        &format!("  keys: [{KEY}]"),
        &format!("  keys: [{KEY}]\n  absolute_lifetime: 30m"),
    );
    assert_eq!(
        parse_ok(&source).session.idle_lifetime,
        Duration::from_secs(1800),
        "the default idle lifetime never exceeds the absolute one"
    );
}

#[test]
fn assertion_lifetime_at_most_an_hour() {
    let source = base_with(
        "key: {env: SEKISHO_SIGNING_KEY}",
        "key: {env: SEKISHO_SIGNING_KEY}\n  assertion_lifetime: 61m",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "61m"),
        "signing.assertion_lifetime",
        "1h1m is longer than the maximum of 1h",
    );
}

#[test]
fn listener_and_tls_rules() {
    let source = base_with("  http_listen: 127.0.0.1:8080", "  trusted_proxies: []");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "trusted_proxies"),
        "server",
        "at least one of `http_listen` or `https_listen` is required",
    );

    let source = base_with(
        "  http_listen: 127.0.0.1:8080",
        "  https_listen: 127.0.0.1:8443",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "127.0.0.1:8443"),
        "server.https_listen",
        "needs at least one certificate",
    );

    let source = base_with(
        "  http_listen: 127.0.0.1:8080",
        "  http_listen: 127.0.0.1:8080\n  tls:\n    - {cert_file: a.pem, key_file: a.key}",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "- {cert"),
        "server.tls",
        "only served on `https_listen`",
    );

    let source = base_with(
        "  http_listen: 127.0.0.1:8080",
        "  https_listen: 127.0.0.1:8443\n  tls:\n    - {cert_file: a.pem}\n    - {cert_file: /b.pem, key_file: ../b.key}",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "{cert_file: a.pem}"),
        "server.tls[0].key_file",
        "missing required field `key_file`",
    );

    let source = base_with(
        "  http_listen: 127.0.0.1:8080",
        "  https_listen: 127.0.0.1:8443\n  tls:\n    - {cert_file: a.pem, key_file: /keys/a.key}",
    );
    let tls = parse_ok(&source).server.tls;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    assert_eq!(
        tls.first().map(|t| t.cert_file.clone()),
        Some(dir.join("a.pem"))
    );
    assert_eq!(
        tls.first().map(|t| t.key_file.clone()),
        Some(PathBuf::from("/keys/a.key"))
    );

    let source = base_with(
        "  http_listen: 127.0.0.1:8080",
        "  http_listen: localhost:8080",
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "localhost:8080"),
        "server.http_listen",
        "is not an IP address and port",
    );
}

#[test]
fn identity_headers_are_validated_lowercased_and_distinct() {
    let source = base_with(
        "routes:",
        "identity_headers:\n  user: X-Remote-User\n  email: x-remote-user\n  groups: Host\nroutes:",
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "x-remote-user"),
        "identity_headers.email",
        "header `x-remote-user` is already used by identity_headers.user",
    );
    assert_has(
        &errors,
        pos_of(&source, "Host"),
        "identity_headers.groups",
        "already gives a meaning",
    );

    let source = base_with(
        "routes:",
        "identity_headers: {user: X-Remote-User}\nroutes:",
    );
    let headers = parse_ok(&source).identity_headers;
    assert_eq!(headers.user, "x-remote-user");
    assert_eq!(headers.email, "x-sekisho-email");
}

#[test]
fn cookie_names_and_route_ids() {
    let source = base_with(
        &format!("  keys: [{KEY}]"),
        &format!("  keys: [{KEY}]\n  cookie_name: __Host-sekisho"),
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "__Host"),
        "session.cookie_name",
        "must not start with `__`",
    );
    let source = base_with("  - from:", "  - id: App\n    from:");
    assert_only(
        &parse_err(&source),
        pos_of(&source, "App"),
        "routes[0].id",
        "not a valid route id",
    );
}

#[test]
fn scopes_always_include_openid() {
    let source = base_with(
        "  client_id: sekisho",
        "  client_id: sekisho\n  scopes: [email, email]",
    );
    assert_eq!(parse_ok(&source).oidc.scopes, ["openid", "email"]);
}

#[test]
fn many_errors_are_all_reported_in_file_order() {
    let source = "\
server:
  http_listen: nowhere
oidc:
  issuer: http://idp.example.com
  client_id: sekisho
  client_secret: {env: UNSET_VAR}
  allowed_algorithms: [HS256]
session:
  keys: [short]
  idle_lifetime: 10
signing:
  key: not a pem
  colour: blue
routes:
  - from: https://app.example.com/a//b
    to: mailto:someone@example.com
";
    let errors = parse_err(source);
    let located: Vec<(usize, usize, &str)> = errors
        .iter()
        .map(|e| (e.line, e.column, e.field.as_str()))
        .collect();
    assert_eq!(
        located,
        [
            (2, 16, "server.http_listen"),
            (4, 11, "oidc.issuer"),
            (6, 24, "oidc.client_secret"),
            (7, 24, "oidc.allowed_algorithms[0]"),
            (9, 10, "session.keys[0]"),
            (10, 18, "session.idle_lifetime"),
            (12, 8, "signing.key"),
            (13, 3, "signing.colour"),
            (15, 11, "routes[0].from"),
            (16, 9, "routes[0].to"),
        ]
    );
    let text = ConfigErrors { errors }.to_string();
    assert_eq!(text.lines().count(), 10);
    assert!(
        text.contains(
            "/testdata/sekisho.yaml:2:16: server.http_listen: `nowhere` is not an IP address"
        ),
        "{text}"
    );
}

#[test]
fn yaml_syntax_error_is_one_located_error() {
    let source = "server:\n  http_listen: [127.0.0.1:8080\noidc: {}\n";
    let errors = parse_err(source);
    let [error] = errors.as_slice() else {
        panic!("expected one error: {errors:#?}");
    };
    assert_eq!(error.line, 3);
    assert!(error.message.starts_with("YAML: "), "{error}");

    let source = "server: {}\nserver: {}\n";
    assert_only(
        &parse_err(source),
        (2, 1),
        "server",
        "duplicate key `server` (first written on line 1)",
    );

    let source = "server: &s {}\n";
    // Reported at the node the anchor is attached to.
    assert_only(&parse_err(source), (1, 12), "", "anchors and aliases");

    let source = "- server\n";
    assert_only(
        &parse_err(source),
        (1, 1),
        "",
        "the top level must be a mapping",
    );
}

#[test]
fn empty_file_reports_every_missing_section() {
    let errors = parse_err("# nothing yet\n");
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["server", "oidc", "session", "signing", "routes"]);
}

#[test]
fn error_display() {
    let error = ConfigError {
        file: PathBuf::from("/etc/sekisho.yaml"),
        line: 3,
        column: 5,
        field: "routes[2].to[0]".into(),
        message: "bad".into(),
    };
    assert_eq!(
        error.to_string(),
        "/etc/sekisho.yaml:3:5: routes[2].to[0]: bad"
    );
    let unlocated = ConfigError {
        line: 0,
        column: 0,
        field: String::new(),
        ..error.clone()
    };
    assert_eq!(unlocated.to_string(), "/etc/sekisho.yaml: bad");
    let both = ConfigErrors {
        errors: vec![error, unlocated],
    };
    assert_eq!(
        both.to_string(),
        "/etc/sekisho.yaml:3:5: routes[2].to[0]: bad\n/etc/sekisho.yaml: bad"
    );
}

#[test]
fn load_reports_an_unreadable_file() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/does-not-exist.yaml");
    let Err(ConfigErrors { errors }) = crate::load(&path) else {
        panic!("loading a missing file succeeded");
    };
    assert_only(&errors, (0, 0), "", "cannot read the configuration file");
}

#[test]
fn summary_lists_listeners_issuer_routes_and_policies() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/full.yaml");
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let config = crate::parse(&source, &path, &env)
        .unwrap_or_else(|errors| panic!("examples/full.yaml:\n{errors}"));
    let audit_dir = config.audit.dir.display().to_string();
    assert!(audit_dir.ends_with("examples/audit"), "{audit_dir}");
    assert_eq!(
        config.summary().replace(&audit_dir, "AUDIT_DIR"),
        "\
listeners: http 127.0.0.1:8080, https [::1]:8443 (2 certificates)
issuer:    https://idp.example.com/realms/main
audit:     AUDIT_DIR (strict, on failure deny, OTLP to http://otel-collector.internal:4318/v1/logs)
admin:     http 127.0.0.1:9901 (metrics, audit review)
routes:
  app            https://app.example.com/ -> http://127.0.0.1:9000/  (websockets)
                 policy staff (enforce)
  api            https://app.example.com/api methods GET, POST, PUT, DELETE -> http://10.0.1.10:8080/v1, http://10.0.1.11:8080/v1  (h2, preserve_host, health_check)
                 policy api-clients (enforce)
  versioned-api  https://app.example.com/ path regex \"^/v[0-9]+/\" methods GET, HEAD -> http://10.0.1.20:8080/  (error_details)
                 policy inline (report)
  tenants        https://*.apps.example.com/ -> http://10.0.3.10:8080/  (preserve_host)
                 policy default: authenticated users (enforce)
  portal         https://portal.example.com:8443/ -> https://portal.internal.example.com/  (no_identity_headers)
                 policy default: authenticated users (enforce)
  billing        https://billing.example.com/ -> https://10.0.2.10:8443/  (tls_server_name)
                 policy default: authenticated users (enforce)
  docs           https://docs.example.com/ -> http://10.0.4.10:8080/  (cors_preflight)
                 public: no sign-in, no policy
  legacy         https://app.example.com/ path prefix \"/legacy\" prefix_rewrite / -> http://10.0.5.10:8080/base  (headers_removed, headers_set)
                 policy staff (enforce)
  grafana-auth   https://grafana.example.com/ -> (forward-auth only)
                 policy staff (enforce)
  orders-db      tcp+https://db.internal.example.com:5432 -> tcp://10.0.0.5:5432  (tunnel, idle 1h, max 12h)
                 policy inline (enforce)
"
    );
}

#[test]
fn no_input_panics() {
    // Every prefix of the full example, and the example with each line dropped, must give a
    // config or errors: never a panic.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/full.yaml");
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    for (end, _) in source.char_indices() {
        let _ = crate::parse(source.get(..end).unwrap_or_default(), &path, &env);
    }
    let lines: Vec<&str> = source.lines().collect();
    for skip in 0..lines.len() {
        let mutated: String = lines
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != skip)
            .map(|(_, line)| format!("{line}\n"))
            .collect();
        let _ = crate::parse(&mutated, &path, &env);
    }
    for odd in [
        "",
        "~",
        "[",
        "{",
        "a: [",
        "? [a]\n: b\n",
        "*x",
        "&x a",
        "a: !t b",
        "\u{feff}a: b",
    ] {
        let _ = crate::parse(odd, &path, &env);
    }
}

#[test]
fn upstream_paths_default_lenient_and_declared_strict() {
    let config = parse_ok(BASE);
    assert_eq!(
        config.routes.first().map(|r| r.upstream_paths),
        Some(crate::UpstreamPaths::default())
    );
    let source = base_with(
        "    to: http://127.0.0.1:9000\n",
        "    to: http://127.0.0.1:9000\n    upstream_paths: {case: sensitive, parameters: literal, decoding: once}\n",
    );
    let config = parse_ok(&source);
    assert_eq!(
        config.routes.first().map(|r| r.upstream_paths),
        Some(crate::UpstreamPaths::strict())
    );
    let source = base_with(
        "    to: http://127.0.0.1:9000\n",
        "    to: http://127.0.0.1:9000\n    upstream_paths: {case: ignore, encoding: once}\n",
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "ignore"),
        "routes[0].upstream_paths.case",
        "`ignore` is not one of: insensitive, sensitive",
    );
    assert_has(
        &errors,
        pos_of(&source, "encoding"),
        "routes[0].upstream_paths.encoding",
        "unknown field `encoding`",
    );
}

#[test]
fn path_literals_are_normalised_or_refused() {
    // `/%61dmin` is `/admin`: the two routes match the same requests.
    let source = base_with(
        "  - from: http://app.localhost:8080\n    to: http://127.0.0.1:9000\n",
        "  - from: http://app.localhost:8080/admin\n    to: http://127.0.0.1:9000\n  \
         - from: http://app.localhost:8080/%61dmin\n    to: http://127.0.0.1:9001\n  \
         - from: http://app.localhost:8080\n    path: {prefix: \"/a%2fb\"}\n    to: http://127.0.0.1:9002\n",
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "http://app.localhost:8080/%61dmin"),
        "routes[1].from",
        "already the `from` of routes[0]",
    );
    assert_has(
        &errors,
        pos_of(&source, "\"/a%2fb\""),
        "routes[2].path.prefix",
        "path `/a%2fb` cannot be compared with request paths: encoded '/', '\\' or NUL in path",
    );
}

#[test]
fn audit_heartbeat_multiple_defaults_to_12_and_must_be_a_small_whole_number() {
    assert_eq!(parse_ok(BASE).audit.heartbeat_multiple, 12);
    let source = format!("{BASE}audit:\n  heartbeat_multiple: 3\n");
    assert_eq!(parse_ok(&source).audit.heartbeat_multiple, 3);
    let source = format!("{BASE}audit:\n  heartbeat_multiple: 0\n");
    assert_only(
        &parse_err(&source),
        {
            let (line, column) = pos_of(&source, "heartbeat_multiple: 0");
            (line, column + "heartbeat_multiple: ".len())
        },
        "audit.heartbeat_multiple",
        "not a heartbeat multiple",
    );
}

#[test]
fn tunnel_session_checks_are_at_most_ten_seconds_apart() {
    let with = |every: &str| {
        BASE.replace(
            "  http_listen: 127.0.0.1:8080\n",
            &format!(
                "  http_listen: 127.0.0.1:8080\n  timeouts: {{tunnel_session_check: {every}}}\n"
            ),
        )
    };
    let config = parse_ok(&with("500ms"));
    assert_eq!(
        config.server.timeouts.tunnel_session_check,
        Duration::from_millis(500)
    );
    let source = with("11s");
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, "11s"),
        "server.timeouts.tunnel_session_check",
        "at most 10s",
    );
}

#[test]
fn tracing_takes_an_otlp_exporter_and_a_sample_ratio_from_zero_to_one() {
    assert!(parse_ok(BASE).tracing.is_none());
    let source = format!(
        "{BASE}tracing:\n  otlp:\n    endpoint: http://collector:4318/v1/traces\n    headers: {{authorization: {{env: OTLP_AUTHORIZATION}}}}\n"
    );
    let tracing = parse_ok(&source).tracing.expect("tracing");
    assert_eq!(tracing.sample_ratio, 1.0, "every new trace by default");
    assert_eq!(
        tracing.otlp.endpoint.as_str(),
        "http://collector:4318/v1/traces"
    );
    assert_eq!(tracing.otlp.headers.len(), 1);
    let source = format!(
        "{BASE}tracing:\n  otlp: {{endpoint: http://collector:4318/v1/traces}}\n  sample_ratio: 0.1\n"
    );
    assert_eq!(parse_ok(&source).tracing.map(|t| t.sample_ratio), Some(0.1));

    let source = format!(
        "{BASE}tracing:\n  otlp: {{endpoint: http://collector:4318/v1/traces}}\n  sample_ratio: 1.5\n"
    );
    assert_only(
        &parse_err(&source),
        pos_of(&source, "1.5"),
        "tracing.sample_ratio",
        "`1.5` is not a sample ratio; write a number from 0 to 1",
    );
    let source = format!("{BASE}tracing:\n  sample_ratio: 0.5\n");
    let errors = parse_err(&source);
    assert!(
        errors.iter().any(|e| e.to_string().contains("otlp")),
        "the exporter is required: {errors:?}"
    );
    let source = format!("{BASE}tracing:\n  otlp: {{endpoint: ftp://collector/v1/traces}}\n");
    assert!(!parse_err(&source).is_empty());
}
