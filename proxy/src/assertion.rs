//! The identity assertion sent to upstreams: an ES256 JWT (`iss`, `aud` = route id, `sub`,
//! `email`, `groups`, `iat`, `exp`) in `X-Sekisho-Jwt-Assertion`, and the JWKS that lets an
//! upstream verify it. Signatures are cached per (session, audience) until near expiry, so an
//! authenticated request does not cost a signature.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde::Serialize;

use crate::session::Identity;

/// Why the signing key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    /// The configured key is not a PKCS#8 PEM ECDSA P-256 private key.
    #[error("signing key is not a PKCS#8 PEM ECDSA P-256 private key: {0}")]
    BadKey(String),
    /// Signing failed.
    #[error("signing the assertion failed: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// Entries kept before the cache is swept of expired ones.
const CACHE_SWEEP_AT: usize = 50_000;

/// Signs assertions and publishes the public key.
pub struct AssertionSigner {
    key: EncodingKey,
    kid: String,
    jwks: String,
    issuer: String,
    lifetime: Duration,
    /// Credential key → (audience, cached token) pairs; looked up without allocating.
    cache: RwLock<HashMap<String, Vec<(String, Cached)>>>,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Cached {
    token: HeaderValue,
    refresh_after: u64,
    /// What the token asserts; a refreshed session with other groups (or a newly verified
    /// address) must not be served the token of its former identity.
    asserted: Asserted,
}

/// The identity claims a cached token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Asserted {
    sub: String,
    email: Option<String>,
    groups: Vec<String>,
}

impl Asserted {
    fn matches(&self, identity: &Identity) -> bool {
        self.sub == identity.sub
            && self.email.as_deref() == identity.verified_email()
            && self.groups == identity.groups
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    groups: &'a [String],
    iat: u64,
    exp: u64,
}

impl AssertionSigner {
    /// Loads the PEM key and prepares the JWKS document.
    pub fn new(pem: &str, issuer: &str, lifetime: Duration) -> Result<Self, AssertionError> {
        let der = pem_body(pem).ok_or_else(|| AssertionError::BadKey("no PEM block".into()))?;
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
                .map_err(|e| AssertionError::BadKey(e.to_string()))?;
        let point = pair.public_key().as_ref();
        let (x, y) = match (point.get(1..33), point.get(33..65)) {
            (Some(x), Some(y)) if point.len() == 65 => (x, y),
            _ => {
                return Err(AssertionError::BadKey(
                    "unexpected public key encoding".into(),
                ));
            }
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, point);
        let kid = URL_SAFE_NO_PAD.encode(digest.as_ref().get(..12).unwrap_or_default());
        let jwks = serde_json::json!({
            "keys": [{
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            }]
        })
        .to_string();
        let key = EncodingKey::from_ec_der(&der);
        Ok(AssertionSigner {
            key,
            kid,
            jwks,
            issuer: issuer.to_owned(),
            lifetime,
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// The JWKS document (JSON) with the public key.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// An assertion for `identity` towards `audience`, as a header value. `cache_key`
    /// identifies the credential (session id hash, or a bearer token hash); a cached token is
    /// reused until three quarters of its lifetime have passed, and only while it asserts the
    /// identity given (a refresh that changes groups gets a new token). Only a verified email
    /// is asserted.
    pub fn assertion(
        &self,
        cache_key: &str,
        audience: &str,
        identity: &Identity,
        now: u64,
    ) -> Result<HeaderValue, AssertionError> {
        if let Ok(cache) = self.cache.read() {
            let hit = cache
                .get(cache_key)
                .and_then(|per_audience| per_audience.iter().find(|(a, _)| a == audience))
                .filter(|(_, c)| now < c.refresh_after && c.asserted.matches(identity));
            if let Some((_, cached)) = hit {
                return Ok(cached.token.clone());
            }
        }
        let lifetime = self.lifetime.as_secs();
        let claims = Claims {
            iss: &self.issuer,
            aud: audience,
            sub: &identity.sub,
            email: identity.verified_email(),
            groups: &identity.groups,
            iat: now,
            exp: now.saturating_add(lifetime),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(AssertionError::Sign)?;
        let token = HeaderValue::from_str(&token)
            .map_err(|_| AssertionError::BadKey("token is not a header value".into()))?;
        let cached = Cached {
            token: token.clone(),
            refresh_after: now.saturating_add(lifetime * 3 / 4),
            asserted: Asserted {
                sub: identity.sub.clone(),
                email: identity.verified_email().map(str::to_owned),
                groups: identity.groups.clone(),
            },
        };
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= CACHE_SWEEP_AT {
                cache.retain(|_, per_audience| {
                    per_audience.retain(|(_, c)| now < c.refresh_after);
                    !per_audience.is_empty()
                });
            }
            let per_audience = cache.entry(cache_key.to_owned()).or_default();
            match per_audience.iter_mut().find(|(a, _)| a == audience) {
                Some((_, slot)) => *slot = cached,
                None => per_audience.push((audience.to_owned(), cached)),
            }
        }
        Ok(token)
    }

    /// Drops every cached assertion of a credential (at logout).
    pub fn forget(&self, cache_key: &str) {
        if let Ok(mut cache) = self.cache.write() {
            cache.remove(cache_key);
        }
    }
}

/// The DER bytes inside a `-----BEGIN PRIVATE KEY-----` block.
pub(crate) fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN PRIVATE KEY-----")? + "-----BEGIN PRIVATE KEY-----".len();
    let end = pem.get(start..)?.find("-----END PRIVATE KEY-----")? + start;
    let body: String = pem
        .get(start..end)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// A fresh PKCS#8 PEM ECDSA P-256 key (for quickstart and tests).
pub fn generate_pem() -> Option<String> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .ok()?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).ok()?);
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Some(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};

    fn identity() -> Identity {
        Identity {
            sub: "alice".into(),
            email: Some("alice@example.com".into()),
            name: None,
            groups: vec!["eng".into(), "admins".into()],
            issuer: "http://idp".into(),
            email_verified: Some(true),
            claims: serde_json::Map::new(),
            provider_sid: None,
        }
    }

    #[test]
    fn assertions_verify_against_the_published_jwks_and_are_cached() {
        let pem = generate_pem().unwrap_or_else(|| panic!("keygen"));
        let signer = AssertionSigner::new(&pem, "sekisho", Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("{e}"));
        let now = crate::session::unix_now();
        let value = signer
            .assertion("sid", "app", &identity(), now)
            .unwrap_or_else(|e| panic!("{e}"));
        let token = value.to_str().unwrap_or_else(|e| panic!("{e}")).to_owned();
        let jwks: JwkSet = serde_json::from_str(signer.jwks()).unwrap_or_else(|e| panic!("{e}"));
        let jwk = jwks.keys.first().unwrap_or_else(|| panic!("no key"));
        let key = DecodingKey::from_jwk(jwk).unwrap_or_else(|e| panic!("{e}"));
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&["app"]);
        validation.set_issuer(&["sekisho"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.claims["groups"], serde_json::json!(["eng", "admins"]));
        assert_eq!(data.claims["exp"].as_u64(), Some(now + 300));

        assert_eq!(
            signer.assertion("sid", "app", &identity(), now + 10).ok(),
            Some(value.clone())
        );
        assert_ne!(
            signer.assertion("sid", "other", &identity(), now + 10).ok(),
            Some(value.clone())
        );
        assert_ne!(
            signer.assertion("sid", "app", &identity(), now + 226).ok(),
            Some(value)
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(AssertionSigner::new("not a key", "s", Duration::from_secs(60)).is_err());
        let bogus = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(AssertionSigner::new(bogus, "s", Duration::from_secs(60)).is_err());
    }

    #[test]
    fn a_changed_identity_is_signed_again_not_served_from_the_cache() {
        let pem = generate_pem().unwrap_or_else(|| panic!("keygen"));
        let signer = AssertionSigner::new(&pem, "sekisho", Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("{e}"));
        let now = crate::session::unix_now();
        let claims = |value: &HeaderValue| {
            let token = value.to_str().unwrap_or_default();
            let body = token.split('.').nth(1).unwrap_or_default();
            let bytes =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, body)
                    .unwrap_or_else(|e| panic!("{e}"));
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_else(|e| panic!("{e}"))
        };
        let before = signer
            .assertion("sid", "app", &identity(), now)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut demoted = identity();
        demoted.groups = vec!["eng".into()];
        let after = signer
            .assertion("sid", "app", &demoted, now + 1)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(before, after, "same session, new groups: a new token");
        assert_eq!(claims(&after)["groups"], serde_json::json!(["eng"]));
        let mut unverified = identity();
        unverified.email_verified = Some(false);
        let token = signer
            .assertion("sid", "app", &unverified, now + 2)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            claims(&token).get("email").is_none(),
            "an unverified address is not asserted: {}",
            claims(&token)
        );
    }
}
