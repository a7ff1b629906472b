//! `upstream_tls` and the routes' `tls_*` keys: the merge with the defaults, and one test per
//! kind of error with its position and field. Paths are relative to `config/testdata/`.

use std::path::Path;

use rustls::pki_types::ServerName;

use super::super::tests::{
    BASE, assert_has, assert_only, base_with, config_path, env, parse_err, parse_ok, pos_of,
};
use super::super::{Secrets, document};
use crate::model::{Route, UpstreamTls, UpstreamVerify};

/// The test CA bundle (one certificate).
const CA: &str = "test-only-client-ca.pem";
/// A client certificate and its key.
const CERT: &str = "test-only-upstream-client.crt";
const KEY: &str = "test-only-upstream-client.key";

/// `BASE` whose route goes to an https upstream and carries `keys` (each line indented by four
/// spaces).
fn https_route(keys: &str) -> String {
    base_with(
        "    to: http://127.0.0.1:9000\n",
        &format!("    to: https://127.0.0.1:9000\n{keys}"),
    )
}

/// `config/testdata/{name}`.
fn testdata(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The only route's TLS settings.
fn only_tls(source: &str) -> UpstreamTls {
    let config = parse_ok(source);
    let [route] = config.routes.as_slice() else {
        panic!("one route expected: {:?}", config.routes);
    };
    route.tls.clone()
}

/// The CA file of a `CustomCa`, or a panic naming what it is instead.
#[track_caller]
fn custom_ca_file(tls: &UpstreamTls) -> std::path::PathBuf {
    match &tls.verify {
        UpstreamVerify::CustomCa(ca) => {
            assert_eq!(ca.certificates.len(), 1, "{ca:?}");
            ca.file.clone()
        }
        other => panic!("expected a custom CA, got {other:?}"),
    }
}

#[test]
fn routes_verify_against_the_public_roots_and_present_nothing_by_default() {
    let tls = only_tls(&https_route(""));
    assert!(matches!(tls.verify, UpstreamVerify::PublicRoots), "{tls:?}");
    assert!(tls.server_name.is_none() && tls.client_auth.is_none());
}

#[test]
fn a_route_reads_its_ca_client_certificate_and_server_name() {
    let tls = only_tls(&https_route(&format!(
        "    tls_custom_ca: {CA}\n    tls_server_name: upstream.internal\n    \
         tls_client_certificate: {CERT}\n    tls_client_key: {KEY}\n"
    )));
    assert_eq!(custom_ca_file(&tls), testdata(CA));
    assert_eq!(
        tls.server_name,
        Some(ServerName::try_from("upstream.internal").unwrap())
    );
    let client = tls.client_auth.expect("client certificate");
    assert_eq!(client.cert_file, testdata(CERT));
    assert_eq!(client.key_file, testdata(KEY));
    assert_eq!(client.chain.len(), 1);
    assert!(
        !format!("{:?}", client.key).contains("Pkcs8"),
        "the key's Debug is redacted"
    );
}

#[test]
fn an_ip_address_is_a_server_name() {
    let tls = only_tls(&https_route("    tls_server_name: 10.0.0.5\n"));
    assert_eq!(
        tls.server_name,
        Some(ServerName::try_from("10.0.0.5").unwrap())
    );
}

#[test]
fn defaults_apply_to_every_https_route_and_route_keys_override_them_per_key() {
    let source = format!(
        "upstream_tls:\n  custom_ca: {CA}\n  client_certificate: {CERT}\n  client_key: {KEY}\n{BASE}\
         \x20 - from: http://a.localhost\n    to: https://10.0.0.1\n\
         \x20 - from: http://b.localhost\n    to: https://10.0.0.2\n    tls_skip_verify: true\n\
         \x20 - from: http://c.localhost\n    to: [http://10.0.0.3, https://10.0.0.4]\n    \
         tls_client_certificate: {CERT}\n    tls_client_key: {KEY}\n"
    );
    let config = parse_ok(&source);
    let [plain, inherits, skips, mixed] = config.routes.as_slice() else {
        panic!("four routes expected: {:?}", config.routes);
    };
    // Nothing applies to a route without an https target.
    assert!(matches!(plain.tls.verify, UpstreamVerify::PublicRoots));
    assert!(plain.tls.client_auth.is_none());
    assert_eq!(custom_ca_file(&inherits.tls), testdata(CA));
    assert!(inherits.tls.client_auth.is_some());
    // `tls_skip_verify` replaces the default CA; the client certificate is still inherited.
    assert!(matches!(skips.tls.verify, UpstreamVerify::Off));
    assert!(skips.tls.client_auth.is_some());
    assert_eq!(custom_ca_file(&mixed.tls), testdata(CA));
    assert!(mixed.tls.client_auth.is_some());
}

#[test]
fn a_route_that_names_a_ca_or_says_verify_overrides_a_default_skip_verify() {
    let source = format!(
        "upstream_tls:\n  skip_verify: true\n{}\
         \x20 - from: http://a.localhost\n    to: https://10.0.0.1\n    tls_custom_ca: {CA}\n\
         \x20 - from: http://b.localhost\n    to: https://10.0.0.2\n    tls_skip_verify: false\n",
        https_route("")
    );
    let routes: Vec<Route> = parse_ok(&source).routes;
    let [inherits, own_ca, verifies] = routes.as_slice() else {
        panic!("three routes expected: {routes:?}");
    };
    assert!(matches!(inherits.tls.verify, UpstreamVerify::Off));
    assert_eq!(custom_ca_file(&own_ca.tls), testdata(CA));
    assert!(matches!(verifies.tls.verify, UpstreamVerify::PublicRoots));
}

#[test]
fn an_unreadable_ca_file_is_reported_at_the_key() {
    let source = https_route("    tls_custom_ca: missing-ca.pem\n");
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, "missing-ca.pem"),
        "routes[0].tls_custom_ca",
        "cannot read CA file",
    );
    assert!(
        errors[0].message.contains("testdata/missing-ca.pem"),
        "{errors:?}"
    );
}

#[test]
fn a_ca_file_without_a_certificate_is_refused() {
    let source = https_route("    tls_custom_ca: test-only-client-secret.txt\n");
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, "test-only-client-secret.txt"),
        "routes[0].tls_custom_ca",
        "holds no PEM certificate",
    );
}

#[test]
fn a_ca_certificate_that_does_not_parse_is_refused() {
    let source = https_route("    tls_custom_ca: test-only-not-a-certificate.pem\n");
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, "test-only-not-a-certificate.pem"),
        "routes[0].tls_custom_ca",
        "certificate 1 in",
    );
    assert!(
        errors[0].message.contains("cannot be used as a CA"),
        "{errors:?}"
    );
}

#[test]
fn a_key_file_without_a_key_is_refused() {
    let source = https_route(&format!(
        "    tls_client_certificate: {CERT}\n    tls_client_key: {CA}\n"
    ));
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, &format!("{CA}\n")),
        "routes[0].tls_client_key",
        "holds no PEM private key",
    );
}

#[test]
fn a_key_that_does_not_parse_is_refused() {
    let source = https_route(&format!(
        "    tls_client_certificate: {CERT}\n    tls_client_key: test-only-not-a-key.pem\n"
    ));
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, "test-only-not-a-key.pem"),
        "routes[0].tls_client_key",
        "is not usable",
    );
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let source = https_route(&format!(
        "    tls_client_certificate: {CERT}\n    tls_client_key: test-only-signing-key.pem\n"
    ));
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, "test-only-signing-key.pem"),
        "routes[0].tls_client_key",
        "does not belong to the certificate",
    );
}

#[test]
fn a_certificate_file_without_a_certificate_is_refused() {
    let source = https_route(&format!(
        "    tls_client_certificate: {KEY}\n    tls_client_key: {KEY}\n"
    ));
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, &format!("{KEY}\n")),
        "routes[0].tls_client_certificate",
        "holds no PEM certificate",
    );
}

#[test]
fn a_certificate_without_its_key_and_a_key_without_its_certificate_are_refused() {
    let source = https_route(&format!("    tls_client_certificate: {CERT}\n"));
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, CERT),
        "routes[0].tls_client_certificate",
        "`tls_client_certificate` needs `tls_client_key` too",
    );

    let source = format!("upstream_tls:\n  client_key: {KEY}\n{BASE}");
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, KEY),
        "upstream_tls.client_key",
        "`client_key` needs `client_certificate` too",
    );
}

#[test]
fn skip_verify_with_a_custom_ca_is_a_contradiction() {
    let source = https_route(&format!(
        "    tls_custom_ca: {CA}\n    tls_skip_verify: true\n"
    ));
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, "true\n"),
        "routes[0].tls_skip_verify",
        "`tls_skip_verify: true` turns certificate verification off, and `tls_custom_ca`",
    );

    let source = format!("upstream_tls:\n  custom_ca: missing.pem\n  skip_verify: true\n{BASE}");
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, "true\n"),
        "upstream_tls.skip_verify",
        "`skip_verify: true` turns certificate verification off",
    );
    assert_has(
        &errors,
        pos_of(&source, "missing.pem"),
        "upstream_tls.custom_ca",
        "cannot read CA file",
    );
}

#[test]
fn tls_keys_on_a_route_without_an_https_target_are_refused() {
    let source = base_with(
        "    to: http://127.0.0.1:9000\n",
        &format!(
            "    to: [http://127.0.0.1:9000, http://127.0.0.1:9001]\n    tls_custom_ca: {CA}\n    \
             tls_server_name: upstream.internal\n"
        ),
    );
    let errors = parse_err(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_has(
        &errors,
        pos_of(&source, CA),
        "routes[0].tls_custom_ca",
        "`tls_custom_ca` only applies to https upstreams, and none of this route's `to` URLs is https",
    );
    assert_has(
        &errors,
        pos_of(&source, "upstream.internal"),
        "routes[0].tls_server_name",
        "`tls_server_name` only applies to https upstreams",
    );
}

#[test]
fn a_server_name_must_be_a_dns_name_or_an_ip_address() {
    let source = https_route("    tls_server_name: \"not a name!\"\n");
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, "\"not a name!\""),
        "routes[0].tls_server_name",
        "`not a name!` is not a DNS name or an IP address",
    );
}

#[test]
fn unknown_default_keys_are_reported() {
    let source = format!("upstream_tls:\n  server_name: upstream.internal\n{BASE}");
    let errors = parse_err(&source);
    assert_only(
        &errors,
        pos_of(&source, "server_name"),
        "upstream_tls.server_name",
        "expected one of: custom_ca, client_certificate, client_key, skip_verify",
    );
}

#[test]
fn tools_without_secrets_read_no_tls_file_but_check_the_form() {
    let without = |source: &str| document(source, &config_path(), &env, Secrets::Placeholders);
    let source = https_route(
        "    tls_custom_ca: missing-ca.pem\n    tls_client_certificate: missing.crt\n    \
         tls_client_key: missing.key\n",
    );
    let config = without(&source).expect("no file is read");
    let [route] = config.routes.as_slice() else {
        panic!("one route expected");
    };
    assert!(matches!(route.tls.verify, UpstreamVerify::CustomCa(_)));

    let source = https_route("    tls_client_key: missing.key\n");
    let errors = without(&source).expect_err("the pair is still checked");
    assert_only(
        &errors,
        pos_of(&source, "missing.key"),
        "routes[0].tls_client_key",
        "needs `tls_client_certificate`",
    );
}
