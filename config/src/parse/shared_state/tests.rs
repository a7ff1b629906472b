//! The `shared_state` section: what each key yields, and every refusal at its line, column and
//! field, without echoing a password.

use std::path::PathBuf;

use crate::model::RedisAddress;
use crate::parse::tests::{BASE, assert_only, parse_err, parse_ok};

fn with_redis(redis: &str) -> String {
    format!("{BASE}shared_state:\n  redis:\n{redis}")
}

#[test]
fn absent_means_this_instance_keeps_its_state() {
    assert!(parse_ok(BASE).shared_state.is_none());
}

#[test]
fn every_key_is_parsed() {
    let config = parse_ok(&with_redis(
        "    url: rediss://redis.internal:6380/2
    tls: {ca_file: test-only-client-ca.pem}
    username: sekisho
    password: {env: SEKISHO_CLIENT_SECRET}
    key_prefix: \"prod:sekisho:\"
",
    ));
    let redis = config.shared_state.expect("shared_state").redis;
    assert_eq!(
        redis.address,
        RedisAddress::Tcp {
            host: "redis.internal".into(),
            port: 6380
        }
    );
    assert_eq!(redis.database, 2);
    let ca = redis
        .tls
        .clone()
        .expect("rediss means TLS")
        .ca
        .expect("a CA");
    assert_eq!(ca.certificates.len(), 1);
    assert_eq!(redis.username.as_deref(), Some("sekisho"));
    assert_eq!(
        redis.password.as_ref().map(|p| p.expose().to_owned()),
        Some("client-secret-from-env".into())
    );
    assert!(
        !format!("{redis:?}").contains("client-secret-from-env"),
        "Debug hides the password"
    );
    assert_eq!(redis.key_prefix, "prod:sekisho:");
}

#[test]
fn defaults_and_the_other_address_forms() {
    let redis = parse_ok(&with_redis("    url: redis://10.0.0.5\n"))
        .shared_state
        .expect("shared_state")
        .redis;
    assert_eq!(
        (redis.address.to_string(), redis.database),
        ("10.0.0.5:6379".to_owned(), 0)
    );
    assert!(redis.tls.is_none() && redis.password.is_none() && redis.username.is_none());
    assert_eq!(redis.key_prefix, "sekisho:");
    let tls = parse_ok(&with_redis("    url: rediss://[2001:db8::7]:6390\n"))
        .shared_state
        .expect("shared_state")
        .redis;
    assert_eq!(tls.address.to_string(), "[2001:db8::7]:6390");
    assert!(tls.tls.expect("TLS").ca.is_none(), "the public roots");
    let unix = parse_ok(&with_redis("    url: unix:///run/redis/redis.sock\n"))
        .shared_state
        .expect("shared_state")
        .redis;
    assert_eq!(
        unix.address,
        RedisAddress::Unix(PathBuf::from("/run/redis/redis.sock"))
    );
}

#[test]
fn bad_values_are_refused_at_their_place() {
    let cases = [
        (
            "    url: http://redis:6379\n",
            "http://redis:6379",
            "shared_state.redis.url",
            "is not a Redis address",
        ),
        (
            "    url: redis://redis/db1\n",
            "redis://redis/db1",
            "shared_state.redis.url",
            "is not a Redis address",
        ),
        (
            "    url: redis://redis:6379?timeout=1\n",
            "redis://redis:6379?timeout=1",
            "shared_state.redis.url",
            "is not a Redis address",
        ),
        (
            "    url: unix://host/run/redis.sock\n",
            "unix://host/run/redis.sock",
            "shared_state.redis.url",
            "is not a Redis address",
        ),
        (
            "    url: redis://:hunter2@redis:6379\n",
            "redis://:hunter2@redis:6379",
            "shared_state.redis.url",
            "must not carry a user name or password",
        ),
        (
            "    url: redis://redis\n    tls: {}\n",
            "redis://redis",
            "shared_state.redis.url",
            "not rediss://",
        ),
        (
            "    url: redis://redis\n    key_prefix: \"a b\"\n",
            "\"a b\"",
            "shared_state.redis.key_prefix",
            "is not a key prefix",
        ),
        (
            "    url: redis://redis\n    username: \"\"\n",
            "\"\"",
            "shared_state.redis.username",
            "non-empty word",
        ),
        (
            "    url: redis://redis\n    port: 6379\n",
            "port",
            "shared_state.redis.port",
            "",
        ),
    ];
    for (yaml, at, field, message) in cases {
        let source = with_redis(yaml);
        let errors = parse_err(&source);
        // The value's place, searched after the section starts (BASE has URLs too).
        let section = source.find("shared_state").unwrap();
        let offset = section + source[section..].find(at).unwrap();
        let line = source[..offset].matches('\n').count() + 1;
        let column = offset - source[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
        assert_only(&errors, (line, column), field, message);
        assert!(
            !errors.iter().any(|e| e.to_string().contains("hunter2")),
            "a password in the URL is never echoed: {errors:?}"
        );
    }
    let missing = parse_err(&format!("{BASE}shared_state:\n  redis: {{}}\n"));
    assert!(
        missing.iter().any(|e| e.message.contains("url")),
        "{missing:?}"
    );
}
