//! The provider's signing keys: ECDSA P-256 (ES256) PKCS#8 files in `{state_dir}/idp/keys`,
//! named by creation time, so they survive restarts. The newest signs; every kept key is
//! published in the JWKS. A new key is made when the newest is older than the rotation period
//! (or by `sekisho idp rotate-key`), and a replaced key is deleted once its successor has
//! signed for longer than any token lives.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, TokenData, Validation};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What went wrong with the key files or a signature.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key directory or a key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A key file does not hold a PKCS#8 ECDSA P-256 key.
    #[error("{path}: not a PKCS#8 ECDSA P-256 private key")]
    BadKey {
        /// The file.
        path: String,
    },
    /// A key could not be generated.
    #[error("key generation failed")]
    Generate,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// A token did not verify (no key with its `kid`, bad signature, bad claims).
    #[error("token rejected: {0}")]
    Rejected(String),
}

/// The keys, reloadable.
pub struct KeyStore {
    dir: PathBuf,
    rotation: Duration,
    retain: Duration,
    current: RwLock<Arc<KeySet>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The keys of one load, oldest first, and their JWKS.
struct KeySet {
    keys: Vec<Key>,
    jwks: String,
}

/// One key.
struct Key {
    kid: String,
    created: u64,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: serde_json::Value,
    path: PathBuf,
}

impl KeyStore {
    /// Loads the keys in `dir` (creating it), making a first key, rotating when the newest is
    /// older than `rotation` and deleting keys replaced more than `retain` ago.
    pub fn open(
        dir: &Path,
        rotation: Duration,
        retain: Duration,
        now: u64,
    ) -> Result<Self, KeyError> {
        let set = load(dir, rotation, retain, now)?;
        Ok(Self {
            dir: dir.to_owned(),
            rotation,
            retain,
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// Loads the directory again (keys added by `sekisho idp rotate-key`, rotation due).
    pub fn refresh(&self, now: u64) -> Result<(), KeyError> {
        let set = load(&self.dir, self.rotation, self.retain, now)?;
        let fresh = Arc::new(set);
        match self.current.write() {
            Ok(mut slot) => *slot = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    fn set(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(set) => set.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The JWKS document.
    pub fn jwks(&self) -> String {
        self.set().jwks.clone()
    }

    /// The key id that signs now.
    pub fn signing_kid(&self) -> String {
        self.set()
            .keys
            .last()
            .map(|k| k.kid.clone())
            .unwrap_or_default()
    }

    /// Signs `claims` with the newest key, with header `typ`.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        let set = self.set();
        let key = set.keys.last().ok_or(KeyError::Generate)?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(KeyError::Sign)
    }

    /// Verifies a token signed by one of the published keys under `validation` (ES256 only).
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<TokenData<T>, KeyError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| KeyError::Rejected(e.to_string()))?;
        if header.alg != Algorithm::ES256 {
            return Err(KeyError::Rejected("algorithm is not ES256".into()));
        }
        let kid = header
            .kid
            .ok_or_else(|| KeyError::Rejected("no kid".into()))?;
        let set = self.set();
        let key = set
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| KeyError::Rejected("unknown kid".into()))?;
        let mut validation = validation.clone();
        validation.algorithms = vec![Algorithm::ES256];
        jsonwebtoken::decode::<T>(token, &key.decoding, &validation)
            .map_err(|e| KeyError::Rejected(e.to_string()))
    }
}

/// Adds a new key to `dir` (it signs from the next load on) and returns its key id. Its
/// creation time is after every existing key's, even within the same second, so it is the
/// newest.
pub fn add_key(dir: &Path, now: u64) -> Result<String, KeyError> {
    create_dir(dir)?;
    let newest = read_keys(dir)?.iter().map(|k| k.created).max();
    let now = newest.map_or(now, |newest| now.max(newest.saturating_add(1)));
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|_| KeyError::Generate)?;
    let key = key_from_der(doc.as_ref(), now, PathBuf::new()).ok_or(KeyError::Generate)?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).map_err(|_| KeyError::Generate)?);
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let path = dir.join(format!("{now:012}-{}.pem", key.kid));
    write_private(&path, pem.as_bytes())?;
    Ok(key.kid)
}

/// Writes a file only the owner can read, atomically (temporary file, then rename).
pub fn write_private(path: &Path, content: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(content).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Creates a directory only the owner can enter, with its parents.
pub fn create_dir(dir: &Path) -> Result<(), KeyError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| KeyError::Io {
            path: dir.display().to_string(),
            source,
        })
}

/// Reads every `NNN-kid.pem` in `dir`, adds a key when there is none or the newest is due for
/// rotation, deletes keys replaced more than `retain` ago.
fn load(dir: &Path, rotation: Duration, retain: Duration, now: u64) -> Result<KeySet, KeyError> {
    create_dir(dir)?;
    let mut keys = read_keys(dir)?;
    let due = keys
        .last()
        .is_none_or(|newest| now.saturating_sub(newest.created) >= rotation.as_secs());
    if due {
        let kid = add_key(dir, now)?;
        tracing::info!(%kid, "identity provider: new signing key");
        keys = read_keys(dir)?;
    }
    let mut kept = Vec::with_capacity(keys.len());
    let successors: Vec<u64> = keys.iter().skip(1).map(|k| k.created).collect();
    for (index, key) in keys.into_iter().enumerate() {
        let replaced_long_ago = successors
            .get(index)
            .is_some_and(|next| now.saturating_sub(*next) > retain.as_secs());
        if replaced_long_ago {
            tracing::info!(kid = %key.kid, "identity provider: retiring signing key");
            if let Err(e) = std::fs::remove_file(&key.path) {
                tracing::warn!(file = %key.path.display(), error = %e, "could not delete a retired key");
            }
        } else {
            kept.push(key);
        }
    }
    let jwks =
        serde_json::json!({ "keys": kept.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
            .to_string();
    Ok(KeySet { keys: kept, jwks })
}

/// The keys in `dir`, oldest first.
fn read_keys(dir: &Path) -> Result<Vec<Key>, KeyError> {
    let io = |source| KeyError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(created) = name
            .strip_suffix(".pem")
            .and_then(|stem| stem.split_once('-'))
            .and_then(|(created, _)| created.parse::<u64>().ok())
        else {
            continue;
        };
        let pem = std::fs::read_to_string(&path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let bad = || KeyError::BadKey {
            path: path.display().to_string(),
        };
        let der = crate::assertion::pem_body(&pem).ok_or_else(bad)?;
        keys.push(key_from_der(&der, created, path.clone()).ok_or_else(bad)?);
    }
    keys.sort_by(|a, b| (a.created, &a.kid).cmp(&(b.created, &b.kid)));
    Ok(keys)
}

/// A key from PKCS#8 DER; its id is the RFC 7638 JWK thumbprint.
fn key_from_der(der: &[u8], created: u64, path: PathBuf) -> Option<Key> {
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
            .ok()?;
    let point = pair.public_key().as_ref();
    if point.len() != 65 {
        return None;
    }
    let x = URL_SAFE_NO_PAD.encode(point.get(1..33)?);
    let y = URL_SAFE_NO_PAD.encode(point.get(33..65)?);
    let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD
        .encode(ring::digest::digest(&ring::digest::SHA256, thumbprint_input.as_bytes()).as_ref());
    let decoding = DecodingKey::from_ec_components(&x, &y).ok()?;
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid, "x": x, "y": y,
    });
    Some(Key {
        kid,
        created,
        encoding: EncodingKey::from_ec_der(der),
        decoding,
        jwk,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn validation() -> Validation {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["client"]);
        v.set_issuer(&["iss"]);
        v
    }

    fn claims(now: u64) -> serde_json::Value {
        serde_json::json!({"iss": "iss", "aud": "client", "sub": "alice", "exp": now + 600})
    }

    #[test]
    fn keys_persist_rotate_and_retire() {
        let dir = tempfile_dir();
        let now = crate::session::unix_now();
        let rotation = Duration::from_secs(30 * DAY);
        let retain = Duration::from_secs(3600);
        let store = KeyStore::open(&dir, rotation, retain, now).unwrap_or_else(|e| panic!("{e}"));
        let first = store.signing_kid();
        let token = store
            .sign("JWT", &claims(now))
            .unwrap_or_else(|e| panic!("{e}"));

        // A restart loads the same key.
        let again = KeyStore::open(&dir, rotation, retain, now).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.signing_kid(), first);
        assert!(
            again
                .verify::<serde_json::Value>(&token, &validation())
                .is_ok()
        );

        // A manual rotation (within the same second): the new key signs, the old one stays
        // published.
        let second = add_key(&dir, now).unwrap_or_else(|e| panic!("{e}"));
        again.refresh(now + 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.signing_kid(), second);
        let jwks: serde_json::Value =
            serde_json::from_str(&again.jwks()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2));
        assert!(
            again
                .verify::<serde_json::Value>(&token, &validation())
                .is_ok()
        );

        // Once the successor has signed longer than `retain`, the old key goes.
        again
            .refresh(now + 2 + 3600)
            .unwrap_or_else(|e| panic!("{e}"));
        let jwks: serde_json::Value =
            serde_json::from_str(&again.jwks()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
        assert!(
            again
                .verify::<serde_json::Value>(&token, &validation())
                .is_err()
        );

        // Automatic rotation when the newest key is older than the period.
        again
            .refresh(now + 31 * DAY)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(again.signing_kid(), second);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tokens_from_other_keys_or_algorithms_are_refused() {
        let dir = tempfile_dir();
        let now = crate::session::unix_now();
        let store = KeyStore::open(&dir, Duration::from_secs(DAY), Duration::from_secs(60), now)
            .unwrap_or_else(|e| panic!("{e}"));
        let other_dir = tempfile_dir();
        let other = KeyStore::open(
            &other_dir,
            Duration::from_secs(DAY),
            Duration::from_secs(60),
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let foreign = other
            .sign("JWT", &claims(now))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            store
                .verify::<serde_json::Value>(&foreign, &validation())
                .is_err()
        );
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(now),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            store
                .verify::<serde_json::Value>(&hmac, &validation())
                .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other_dir);
    }

    fn tempfile_dir() -> PathBuf {
        let mut bytes = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes);
        std::env::temp_dir().join(format!("sekisho-keys-{}", URL_SAFE_NO_PAD.encode(bytes)))
    }
}
