//! Back-channel logout tokens (OpenID Connect Back-Channel Logout 1.0, §2.4 and §2.6): the
//! provider's compact JWS read once into a [`LogoutToken`], or refused with the one check that
//! failed ([`LogoutTokenError`]); and the replay guard ([`SeenTokens`]) that remembers each
//! accepted token's (`iss`, `jti`) until it expires.
//!
//! The checks, in order: three base64url parts (a JWE is refused), an allowed asymmetric
//! algorithm (never `none`, never HMAC: the allowed list has none), no `crit` header, a key of
//! the provider's JWKS matching `kid` and the algorithm, the signature, `typ` (when present)
//! `logout+jwt`; then the claims: `iss`, `aud`, no `nonce` (an ID token is not a logout
//! token), `iat` (not in the future beyond the clock skew), `exp` (required, not passed), `nbf`
//! (when present), `jti`, the back-channel logout event, and `sid` and/or `sub`.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey as _, SignatureVerificationError};
use serde_json::{Map, Value};

/// The member of `events` that makes a JWT a logout token.
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Longest logout token read (a token is well under 2 KiB).
const MAX_TOKEN: usize = 16 * 1024;
/// Longest `jti`, `sid` or `sub` accepted.
const MAX_ID: usize = 256;
/// Logout tokens remembered at once for the replay check.
const MAX_SEEN: usize = 100_000;

/// Why a logout token was refused: the check that failed, worded for the provider (the
/// `error_description` of the 400 answer) and for the audit record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    /// Not a compact JWS of three base64url parts with a JSON header and JSON claims.
    #[error("the logout token is malformed: {0}")]
    Malformed(&'static str),
    /// A JWE (five parts): encrypted logout tokens are not supported.
    #[error("the logout token is encrypted (JWE); sekisho accepts signed logout tokens only")]
    Encrypted,
    /// `alg: none`.
    #[error("the logout token is unsigned (alg none)")]
    Unsigned,
    /// An algorithm outside `oidc.allowed_algorithms` (HMAC algorithms are never among them).
    #[error("the logout token's algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    /// A `crit` header: sekisho understands no JWS extension.
    #[error(
        "the logout token's header names critical extensions (crit), which sekisho does not understand"
    )]
    CriticalHeader,
    /// No key of the provider's JWKS matches the token's `kid` and algorithm (after a refresh).
    #[error("no key of the provider matches the logout token's key id and algorithm")]
    NoMatchingKey,
    /// The signature does not verify with the provider's key.
    #[error("the logout token's signature does not verify")]
    BadSignature,
    /// `typ` present and not `logout+jwt`.
    #[error("the logout token's typ {0:?} is not logout+jwt")]
    WrongType(String),
    /// `iss` missing or not the provider's issuer.
    #[error("the logout token's iss {0:?} is not the provider's issuer")]
    WrongIssuer(String),
    /// `aud` missing or without sekisho's client id.
    #[error("the logout token's aud does not contain sekisho's client id")]
    WrongAudience,
    /// `iat` missing or not a whole number.
    #[error("the logout token has no iat (issue time)")]
    MissingIssuedAt,
    /// `iat` later than now plus the clock skew.
    #[error("the logout token's iat is in the future")]
    IssuedInFuture,
    /// `exp` missing or not a whole number.
    #[error("the logout token has no exp (expiry)")]
    MissingExpiry,
    /// `exp` passed (beyond the clock skew).
    #[error("the logout token expired")]
    Expired,
    /// `nbf` later than now plus the clock skew.
    #[error("the logout token is not valid yet (nbf)")]
    NotYetValid,
    /// `jti` missing, not a string, or empty.
    #[error("the logout token has no jti")]
    MissingJti,
    /// A claim is present with an unusable value.
    #[error("the logout token's {0}")]
    InvalidClaim(&'static str),
    /// A `nonce`: an ID token posted as a logout token (token confusion).
    #[error("the logout token carries a nonce; an ID token is not a logout token")]
    Nonce,
    /// `events` missing, or without the back-channel logout event.
    #[error("the logout token's events claim has no {BACKCHANNEL_EVENT} member")]
    MissingEvent,
    /// The back-channel logout event's value is not a JSON object.
    #[error("the logout token's back-channel logout event is not a JSON object")]
    EventNotObject,
    /// Neither `sid` nor `sub`.
    #[error("the logout token names neither a session (sid) nor a user (sub)")]
    NoSubject,
    /// This (`iss`, `jti`) was accepted before.
    #[error("the logout token was already used (jti replayed)")]
    Replayed,
    /// Too many unexpired tokens are remembered to tell a replay; try again later.
    #[error("too many logout tokens are remembered to detect a replay")]
    ReplayCacheFull,
    /// The provider's metadata or keys could not be fetched, so nothing could be checked.
    #[error("the provider is unavailable: {0}")]
    ProviderUnavailable(String),
}

impl LogoutTokenError {
    /// Whether the provider may send the same token again later with success (sekisho could
    /// not check it now), rather than the token being wrong.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LogoutTokenError::ProviderUnavailable(_) | LogoutTokenError::ReplayCacheFull
        )
    }
}

/// A verified logout token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    /// `iss`: the provider.
    pub issuer: String,
    /// `sid`: the provider session that ended, when named.
    pub sid: Option<String>,
    /// `sub`: the user, when named.
    pub sub: Option<String>,
    /// `jti`.
    pub jti: String,
    /// `iat`, Unix seconds.
    pub issued_at: u64,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
}

/// What a logout token must say, and the clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expected<'a> {
    /// The provider's issuer, exactly as discovered.
    pub issuer: &'a str,
    /// sekisho's client id.
    pub client_id: &'a str,
    /// `oidc.allowed_algorithms`.
    pub algorithms: &'a [CoreJwsSigningAlgorithm],
    /// Unix seconds.
    pub now: u64,
    /// `oidc.clock_skew`, seconds.
    pub skew: u64,
}

/// Verifies `raw` against the provider's `keys` and `expected`. [`LogoutTokenError::NoMatchingKey`]
/// tells the caller to refresh the keys and try once more.
pub(crate) fn verify(
    raw: &str,
    keys: &CoreJsonWebKeySet,
    expected: &Expected<'_>,
) -> Result<LogoutToken, LogoutTokenError> {
    use LogoutTokenError as E;
    if raw.len() > MAX_TOKEN {
        return Err(E::Malformed("longer than 16 KiB"));
    }
    let parts: Vec<&str> = raw.trim().split('.').collect();
    let (header_b64, claims_b64, signature_b64) = match parts.as_slice() {
        [h, c, s] => (*h, *c, *s),
        [_, _, _, _, _] => return Err(E::Encrypted),
        _ => {
            return Err(E::Malformed(
                "not three dot-separated parts (a compact JWS)",
            ));
        }
    };
    let header = json_object(header_b64).ok_or(E::Malformed("the header is not base64url JSON"))?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.as_str(),
        _ => return Err(E::Malformed("the header has no alg")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(E::Unsigned);
    }
    let algorithm = serde_json::from_value::<CoreJwsSigningAlgorithm>(Value::String(alg.into()))
        .ok()
        .filter(|a| expected.algorithms.contains(a) && !uses_shared_secret(a))
        .ok_or_else(|| E::AlgorithmNotAllowed(clip(alg)))?;
    if header.contains_key("crit") {
        return Err(E::CriticalHeader);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(E::Malformed("the header's kid is not a string")),
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| E::Malformed("the signature is not base64url"))?;
    let signed = raw
        .trim()
        .get(..header_b64.len() + 1 + claims_b64.len())
        .ok_or(E::Malformed("not a compact JWS"))?;
    verify_signature(keys, kid, &algorithm, signed.as_bytes(), &signature)?;
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) => {
            let lower = typ.to_ascii_lowercase();
            if lower.strip_prefix("application/").unwrap_or(&lower) != "logout+jwt" {
                return Err(E::WrongType(clip(typ)));
            }
        }
        Some(other) => return Err(E::WrongType(clip(&other.to_string()))),
    }
    let claims =
        json_object(claims_b64).ok_or(E::Malformed("the claims are not base64url JSON"))?;
    check_claims(&claims, expected)
}

/// The claims of a token whose signature verified.
fn check_claims(
    claims: &Map<String, Value>,
    expected: &Expected<'_>,
) -> Result<LogoutToken, LogoutTokenError> {
    use LogoutTokenError as E;
    let issuer = match claims.get("iss") {
        Some(Value::String(iss)) if iss == expected.issuer => iss.clone(),
        Some(Value::String(iss)) => return Err(E::WrongIssuer(clip(iss))),
        _ => return Err(E::WrongIssuer(String::new())),
    };
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expected.client_id,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(expected.client_id)),
        _ => false,
    };
    if !audience_ok {
        return Err(E::WrongAudience);
    }
    // Before the other claims, so that an ID token posted here is named as such.
    if claims.contains_key("nonce") {
        return Err(E::Nonce);
    }
    let latest = expected.now.saturating_add(expected.skew);
    let issued_at = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(E::MissingIssuedAt)?;
    if issued_at > latest {
        return Err(E::IssuedInFuture);
    }
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(E::MissingExpiry)?;
    if expires_at.saturating_add(expected.skew) <= expected.now {
        return Err(E::Expired);
    }
    match claims.get("nbf") {
        None => {}
        Some(nbf) => match nbf.as_u64() {
            Some(nbf) if nbf > latest => return Err(E::NotYetValid),
            Some(_) => {}
            None => return Err(E::InvalidClaim("nbf is not a time")),
        },
    }
    let jti = match claims.get("jti") {
        Some(Value::String(jti)) if jti.len() > MAX_ID => {
            return Err(E::InvalidClaim("jti is longer than 256 bytes"));
        }
        Some(Value::String(jti)) if !jti.is_empty() => jti.clone(),
        _ => return Err(E::MissingJti),
    };
    match claims.get("events") {
        Some(Value::Object(events)) => match events.get(BACKCHANNEL_EVENT) {
            Some(Value::Object(_)) => {}
            Some(_) => return Err(E::EventNotObject),
            None => return Err(E::MissingEvent),
        },
        _ => return Err(E::MissingEvent),
    }
    let sid = identifier(
        claims,
        "sid",
        "sid is not a session id (1 to 256 bytes of text)",
    )?;
    let sub = identifier(
        claims,
        "sub",
        "sub is not a subject (1 to 256 bytes of text)",
    )?;
    if sid.is_none() && sub.is_none() {
        return Err(E::NoSubject);
    }
    Ok(LogoutToken {
        issuer,
        sid,
        sub,
        jti,
        issued_at,
        expires_at,
    })
}

/// `sid` or `sub`: absent, or 1 to [`MAX_ID`] bytes of text.
fn identifier(
    claims: &Map<String, Value>,
    name: &str,
    invalid: &'static str,
) -> Result<Option<String>, LogoutTokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID => Ok(Some(id.clone())),
        Some(_) => Err(LogoutTokenError::InvalidClaim(invalid)),
    }
}

/// Checks the signature with the keys that match `kid` (every key when the token names none)
/// and can be used with `algorithm`.
fn verify_signature(
    keys: &CoreJsonWebKeySet,
    kid: Option<&str>,
    algorithm: &CoreJwsSigningAlgorithm,
    signed: &[u8],
    signature: &[u8],
) -> Result<(), LogoutTokenError> {
    let mut candidates = 0usize;
    for key in keys
        .keys()
        .iter()
        .filter(|key| kid.is_none_or(|kid| key.key_id().is_some_and(|k| k.as_str() == kid)))
    {
        match key.verify_signature(algorithm, signed, signature) {
            Ok(()) => return Ok(()),
            // The key cannot be used with this algorithm (type, `use`, `alg`): not a candidate.
            Err(SignatureVerificationError::InvalidKey(_)) => {}
            Err(_) => candidates += 1,
        }
    }
    if candidates == 0 {
        Err(LogoutTokenError::NoMatchingKey)
    } else {
        Err(LogoutTokenError::BadSignature)
    }
}

fn uses_shared_secret(algorithm: &CoreJwsSigningAlgorithm) -> bool {
    matches!(
        algorithm,
        CoreJwsSigningAlgorithm::HmacSha256
            | CoreJwsSigningAlgorithm::HmacSha384
            | CoreJwsSigningAlgorithm::HmacSha512
    )
}

/// A base64url JSON object.
fn json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Text from the token for an error message, cut short.
fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The accepted logout tokens' (`iss`, `jti`), each until its `exp` (plus the clock skew): a
/// token presented again while it could still verify is a replay.
#[derive(Debug, Default)]
pub struct SeenTokens {
    seen: Mutex<HashMap<(String, String), u64>>,
}

impl SeenTokens {
    /// Claims `token` (already verified): [`LogoutTokenError::Replayed`] when it was claimed
    /// before, [`LogoutTokenError::ReplayCacheFull`] when too many live tokens are remembered.
    pub fn claim(&self, token: &LogoutToken, skew: u64, now: u64) -> Result<(), LogoutTokenError> {
        let Ok(mut seen) = self.seen.lock() else {
            return Err(LogoutTokenError::ReplayCacheFull);
        };
        let key = (token.issuer.clone(), token.jti.clone());
        if seen.get(&key).is_some_and(|until| *until > now) {
            return Err(LogoutTokenError::Replayed);
        }
        if seen.len() >= MAX_SEEN {
            seen.retain(|_, until| *until > now);
            if seen.len() >= MAX_SEEN {
                return Err(LogoutTokenError::ReplayCacheFull);
            }
        }
        seen.insert(key, token.expires_at.saturating_add(skew).saturating_add(1));
        Ok(())
    }

    /// Forgets `token` again: the logout it asked for could not be carried out, and the
    /// provider's retry of the same token must not count as a replay.
    pub fn release(&self, token: &LogoutToken) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(&(token.issuer.clone(), token.jti.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://idp.example.com";
    const NOW: u64 = 1_800_000_000;

    /// A P-256 key pair and its public JWK (kid `k1`).
    struct Signer {
        pair: EcdsaKeyPair,
        jwks: CoreJsonWebKeySet,
    }

    impl Signer {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .unwrap_or_else(|e| panic!("{e}"));
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap_or_else(|e| panic!("{e}"));
            let point = pair.public_key().as_ref();
            let jwk = json!({
                "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(point.get(1..33).unwrap_or_default()),
                "y": URL_SAFE_NO_PAD.encode(point.get(33..65).unwrap_or_default()),
            });
            let jwks =
                serde_json::from_value(json!({ "keys": [jwk] })).unwrap_or_else(|e| panic!("{e}"));
            Signer { pair, jwks }
        }

        /// A compact JWS of `header` and `claims`, signed with ES256 whatever `alg` says.
        fn sign(&self, header: &Value, claims: &Value) -> String {
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let signature = self
                .pair
                .sign(&SystemRandom::new(), signed.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
        }
    }

    fn header() -> Value {
        json!({"alg": "ES256", "kid": "k1", "typ": "logout+jwt"})
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": "sekisho",
            "iat": NOW - 5,
            "exp": NOW + 115,
            "jti": "jti-1",
            "events": { BACKCHANNEL_EVENT: {} },
            "sid": "provider-session",
            "sub": "alice",
        })
    }

    fn check(signer: &Signer, token: &str) -> Result<LogoutToken, LogoutTokenError> {
        let algorithms = [
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        ];
        verify(
            token,
            &signer.jwks,
            &Expected {
                issuer: ISSUER,
                client_id: "sekisho",
                algorithms: &algorithms,
                now: NOW,
                skew: 60,
            },
        )
    }

    /// `claims()` with `name` replaced (or removed when `value` is null).
    fn with(name: &str, value: Value) -> Value {
        let mut claims = claims();
        if let Some(map) = claims.as_object_mut() {
            if value.is_null() {
                map.remove(name);
            } else {
                map.insert(name.to_owned(), value);
            }
        }
        claims
    }

    #[test]
    fn a_valid_token_is_read_once() {
        let signer = Signer::new();
        let token = check(&signer, &signer.sign(&header(), &claims()));
        assert_eq!(
            token,
            Ok(LogoutToken {
                issuer: ISSUER.into(),
                sid: Some("provider-session".into()),
                sub: Some("alice".into()),
                jti: "jti-1".into(),
                issued_at: NOW - 5,
                expires_at: NOW + 115,
            })
        );
        // typ may be absent or spelled with the media-type prefix, in any case; aud may be a list.
        for typ in [None, Some("application/LOGOUT+JWT"), Some("Logout+JWT")] {
            let mut h = header();
            match typ {
                Some(typ) => h["typ"] = json!(typ),
                None => {
                    h.as_object_mut().map(|m| m.remove("typ"));
                }
            }
            assert!(
                check(&signer, &signer.sign(&h, &claims())).is_ok(),
                "{typ:?}"
            );
        }
        let listed = with("aud", json!(["other", "sekisho"]));
        assert!(check(&signer, &signer.sign(&header(), &listed)).is_ok());
        // Only one of sid and sub is needed; a token without kid finds the one key.
        let sub_only = with("sid", Value::Null);
        assert_eq!(
            check(&signer, &signer.sign(&header(), &sub_only)).map(|t| (t.sid, t.sub)),
            Ok((None, Some("alice".into())))
        );
        let sid_only = with("sub", Value::Null);
        let mut no_kid = header();
        no_kid.as_object_mut().map(|m| m.remove("kid"));
        assert!(check(&signer, &signer.sign(&no_kid, &sid_only)).is_ok());
        // Within the clock skew: issued a little in the future, expired a little ago.
        assert!(
            check(
                &signer,
                &signer.sign(&header(), &with("iat", json!(NOW + 59)))
            )
            .is_ok()
        );
        assert!(
            check(
                &signer,
                &signer.sign(&header(), &with("exp", json!(NOW - 59)))
            )
            .is_ok()
        );
    }

    #[test]
    fn each_check_fails_alone() {
        use LogoutTokenError as E;
        let signer = Signer::new();
        let good = claims();
        let cases: Vec<(&str, Value, Value, LogoutTokenError)> = vec![
            (
                "wrong issuer",
                header(),
                with("iss", json!("https://evil.example.com")),
                E::WrongIssuer("https://evil.example.com".into()),
            ),
            (
                "no issuer",
                header(),
                with("iss", Value::Null),
                E::WrongIssuer(String::new()),
            ),
            (
                "wrong audience",
                header(),
                with("aud", json!("other")),
                E::WrongAudience,
            ),
            (
                "no audience",
                header(),
                with("aud", Value::Null),
                E::WrongAudience,
            ),
            (
                "no iat",
                header(),
                with("iat", Value::Null),
                E::MissingIssuedAt,
            ),
            (
                "iat not a number",
                header(),
                with("iat", json!("now")),
                E::MissingIssuedAt,
            ),
            (
                "iat in the future",
                header(),
                with("iat", json!(NOW + 61)),
                E::IssuedInFuture,
            ),
            (
                "no exp",
                header(),
                with("exp", Value::Null),
                E::MissingExpiry,
            ),
            (
                "expired",
                header(),
                with("exp", json!(NOW - 60)),
                E::Expired,
            ),
            (
                "nbf in the future",
                header(),
                with("nbf", json!(NOW + 61)),
                E::NotYetValid,
            ),
            ("no jti", header(), with("jti", Value::Null), E::MissingJti),
            ("empty jti", header(), with("jti", json!("")), E::MissingJti),
            (
                "long jti",
                header(),
                with("jti", json!("j".repeat(257))),
                E::InvalidClaim("jti is longer than 256 bytes"),
            ),
            ("a nonce", header(), with("nonce", json!("n-1")), E::Nonce),
            (
                "no events",
                header(),
                with("events", Value::Null),
                E::MissingEvent,
            ),
            (
                "events without the logout event",
                header(),
                with(
                    "events",
                    json!({"http://schemas.openid.net/event/other": {}}),
                ),
                E::MissingEvent,
            ),
            (
                "the event not an object",
                header(),
                with("events", json!({ BACKCHANNEL_EVENT: true })),
                E::EventNotObject,
            ),
            (
                "events not an object",
                header(),
                with("events", json!([])),
                E::MissingEvent,
            ),
            (
                "neither sid nor sub",
                header(),
                {
                    let mut c = with("sid", Value::Null);
                    c.as_object_mut().map(|m| m.remove("sub"));
                    c
                },
                E::NoSubject,
            ),
            (
                "sid not text",
                header(),
                with("sid", json!(7)),
                E::InvalidClaim("sid is not a session id (1 to 256 bytes of text)"),
            ),
            (
                "empty sub",
                header(),
                with("sub", json!("")),
                E::InvalidClaim("sub is not a subject (1 to 256 bytes of text)"),
            ),
            (
                "typ of an ID token",
                json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}),
                good.clone(),
                E::WrongType("JWT".into()),
            ),
            (
                "typ of an access token",
                json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}),
                good.clone(),
                E::WrongType("at+jwt".into()),
            ),
            (
                "an algorithm not allowed",
                json!({"alg": "ES384", "kid": "k1", "typ": "logout+jwt"}),
                good.clone(),
                E::AlgorithmNotAllowed("ES384".into()),
            ),
            (
                "an unknown algorithm",
                json!({"alg": "XY999", "kid": "k1", "typ": "logout+jwt"}),
                good.clone(),
                E::AlgorithmNotAllowed("XY999".into()),
            ),
            (
                "a critical extension",
                json!({"alg": "ES256", "kid": "k1", "typ": "logout+jwt", "crit": ["exp"]}),
                good.clone(),
                E::CriticalHeader,
            ),
            (
                "an unknown key id",
                json!({"alg": "ES256", "kid": "k2", "typ": "logout+jwt"}),
                good.clone(),
                E::NoMatchingKey,
            ),
            (
                "a key of another type",
                json!({"alg": "RS256", "kid": "k1", "typ": "logout+jwt"}),
                good.clone(),
                E::NoMatchingKey,
            ),
            (
                "no alg",
                json!({"kid": "k1", "typ": "logout+jwt"}),
                good.clone(),
                E::Malformed("the header has no alg"),
            ),
        ];
        for (what, h, c, expected) in cases {
            assert_eq!(
                check(&signer, &signer.sign(&h, &c)),
                Err(expected),
                "{what}"
            );
        }
        // The control: the same token untouched verifies.
        assert!(check(&signer, &signer.sign(&header(), &good)).is_ok());
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        use LogoutTokenError as E;
        let signer = Signer::new();
        let token = signer.sign(&header(), &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let (h, c, s) = (parts[0], parts[1], parts[2]);
        // alg none, with or without a signature.
        let none = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "logout+jwt"}).to_string());
        assert_eq!(check(&signer, &format!("{none}.{c}.")), Err(E::Unsigned));
        assert_eq!(check(&signer, &format!("{none}.{c}.{s}")), Err(E::Unsigned));
        let none_upper =
            URL_SAFE_NO_PAD.encode(json!({"alg": "NONE", "typ": "logout+jwt"}).to_string());
        assert_eq!(
            check(&signer, &format!("{none_upper}.{c}.")),
            Err(E::Unsigned)
        );
        // HMAC keyed with the provider's public key: never accepted.
        let hs = URL_SAFE_NO_PAD
            .encode(json!({"alg": "HS256", "kid": "k1", "typ": "logout+jwt"}).to_string());
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, signer.pair.public_key().as_ref());
        let mac = ring::hmac::sign(&key, format!("{hs}.{c}").as_bytes());
        let forged = format!("{hs}.{c}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
        assert_eq!(
            check(&signer, &forged),
            Err(E::AlgorithmNotAllowed("HS256".into()))
        );
        // Claims changed after signing, a signature of another key.
        let other = URL_SAFE_NO_PAD.encode(with("sub", json!("mallory")).to_string());
        assert_eq!(
            check(&signer, &format!("{h}.{other}.{s}")),
            Err(E::BadSignature)
        );
        let stranger = Signer::new().sign(&header(), &claims());
        assert_eq!(check(&signer, &stranger), Err(E::BadSignature));
        // Structure.
        assert_eq!(check(&signer, "a.b.c.d.e"), Err(E::Encrypted));
        assert!(matches!(check(&signer, "a.b"), Err(E::Malformed(_))));
        assert!(matches!(check(&signer, ""), Err(E::Malformed(_))));
        assert!(matches!(
            check(&signer, &format!("!!.{c}.{s}")),
            Err(E::Malformed(_))
        ));
        assert!(matches!(
            check(&signer, &format!("{h}.{c}.***")),
            Err(E::Malformed(_))
        ));
        let not_json = signer.sign(&header(), &json!("a string"));
        assert!(matches!(check(&signer, &not_json), Err(E::Malformed(_))));
        assert!(matches!(
            check(&signer, &"a".repeat(MAX_TOKEN + 1)),
            Err(E::Malformed(_))
        ));
    }

    #[test]
    fn a_token_is_accepted_once_until_it_expires_and_can_be_released() {
        let seen = SeenTokens::default();
        let token = LogoutToken {
            issuer: ISSUER.into(),
            sid: Some("s".into()),
            sub: None,
            jti: "j".into(),
            issued_at: NOW,
            expires_at: NOW + 120,
        };
        assert_eq!(seen.claim(&token, 60, NOW), Ok(()));
        assert_eq!(seen.claim(&token, 60, NOW), Err(LogoutTokenError::Replayed));
        // Another provider may use the same jti.
        let other = LogoutToken {
            issuer: "https://other.example.com".into(),
            ..token.clone()
        };
        assert_eq!(seen.claim(&other, 60, NOW), Ok(()));
        // Remembered while the token could still verify (exp plus skew), then forgotten.
        assert_eq!(
            seen.claim(&token, 60, NOW + 180),
            Err(LogoutTokenError::Replayed)
        );
        assert_eq!(seen.claim(&token, 60, NOW + 181), Ok(()));
        seen.release(&token);
        assert_eq!(seen.claim(&token, 60, NOW + 181), Ok(()));
    }
}
