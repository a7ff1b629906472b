//! Authenticated encryption of everything sekisho hands to a browser (session and login-flow
//! cookies): AES-256-GCM with a random nonce, a purpose bound in as associated data (so a flow
//! cookie can never be replayed as a session cookie), and key rotation (the first key seals,
//! every key opens).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Why a sealed value could not be opened (or made).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not valid base64url, or too short to hold a nonce and a tag.
    #[error("sealed value is malformed")]
    Malformed,
    /// No key authenticates it: tampered, truncated, or sealed by somebody else.
    #[error("sealed value does not authenticate")]
    Unauthentic,
    /// A key is not 32 bytes (configuration is validated, so this is an internal error).
    #[error("sealing key must be 32 bytes")]
    BadKey,
    /// The system random source failed.
    #[error("random source failed")]
    Random,
}

/// What a sealed value is for; bound into the ciphertext as associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A session cookie.
    Session,
    /// A login-flow cookie (state, nonce, PKCE verifier).
    LoginFlow,
    /// The built-in provider's sign-in cookie.
    IdpSession,
    /// The built-in provider's pending authorization (login form, logout confirmation).
    IdpInteraction,
    /// The token of sekisho's own sign-out confirmation form.
    LogoutConfirmation,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"sekisho/session/v1",
            Purpose::LoginFlow => b"sekisho/login-flow/v1",
            Purpose::IdpSession => b"sekisho/idp-session/v1",
            Purpose::IdpInteraction => b"sekisho/idp-interaction/v1",
            Purpose::LogoutConfirmation => b"sekisho/logout-confirmation/v1",
        }
    }
}

/// Seals and opens values with a rotating key list.
pub struct Sealer {
    keys: Vec<LessSafeKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Sealer {
    /// Builds a sealer; `keys` must be non-empty 32-byte keys, the first one sealing.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, SealError> {
        let keys = keys
            .into_iter()
            .map(|k| {
                UnboundKey::new(&AES_256_GCM, k)
                    .map(LessSafeKey::new)
                    .map_err(|_| SealError::BadKey)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(SealError::BadKey);
        }
        Ok(Sealer {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// Encrypts and authenticates `plaintext` for `purpose`; the result is base64url text.
    pub fn seal(&self, purpose: Purpose, plaintext: &[u8]) -> Result<String, SealError> {
        let key = self.keys.first().ok_or(SealError::BadKey)?;
        let mut nonce_bytes = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce_bytes)
            .map_err(|_| SealError::Random)?;
        let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        buf.extend_from_slice(&nonce_bytes);
        buf.extend_from_slice(plaintext);
        let body = buf.get_mut(NONCE_LEN..).ok_or(SealError::Malformed)?;
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(purpose.aad()),
                body,
            )
            .map_err(|_| SealError::Unauthentic)?;
        buf.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(buf))
    }

    /// Decrypts a value made by [`Sealer::seal`] with any configured key.
    pub fn open(&self, purpose: Purpose, sealed: &str) -> Result<Vec<u8>, SealError> {
        let raw = URL_SAFE_NO_PAD
            .decode(sealed.as_bytes())
            .map_err(|_| SealError::Malformed)?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        for key in &self.keys {
            let mut attempt = ciphertext.to_vec();
            if let Ok(plain) = key.open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.aad()),
                &mut attempt,
            ) {
                let len = plain.len();
                attempt.truncate(len);
                return Ok(attempt);
            }
        }
        Err(SealError::Unauthentic)
    }

    /// Fills `out` with random bytes from the system source.
    pub fn random(&self, out: &mut [u8]) -> Result<(), SealError> {
        self.rng.fill(out).map_err(|_| SealError::Random)
    }
}

/// `len` random bytes from the system source, base64url: login states and nonces, codes, ids.
pub fn random_token(len: usize) -> Result<String, SealError> {
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SealError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(keys: &[[u8; 32]]) -> Sealer {
        Sealer::new(keys.iter().map(|k| k.as_slice())).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn round_trip() {
        let s = sealer(&[[1; 32]]);
        let sealed = s
            .seal(Purpose::Session, b"hello")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.open(Purpose::Session, &sealed), Ok(b"hello".to_vec()));
    }

    #[test]
    fn purpose_is_bound() {
        let s = sealer(&[[1; 32]]);
        let sealed = s
            .seal(Purpose::LoginFlow, b"x")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.open(Purpose::Session, &sealed),
            Err(SealError::Unauthentic)
        );
    }

    #[test]
    fn rotation_old_keys_open_new_key_seals() {
        let old = sealer(&[[1; 32]]);
        let rotated = sealer(&[[2; 32], [1; 32]]);
        let by_old = old
            .seal(Purpose::Session, b"v")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rotated.open(Purpose::Session, &by_old), Ok(b"v".to_vec()));
        let by_new = rotated
            .seal(Purpose::Session, b"v")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            old.open(Purpose::Session, &by_new),
            Err(SealError::Unauthentic)
        );
    }

    #[test]
    fn tampering_and_truncation_are_detected() {
        let s = sealer(&[[1; 32]]);
        let sealed = s
            .seal(Purpose::Session, b"some session")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut bytes = URL_SAFE_NO_PAD
            .decode(&sealed)
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            let tampered = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(
                s.open(Purpose::Session, &tampered),
                Err(SealError::Unauthentic),
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        assert!(
            s.open(Purpose::Session, &sealed[..sealed.len() - 4])
                .is_err()
        );
        assert_eq!(s.open(Purpose::Session, "!!!"), Err(SealError::Malformed));
        assert_eq!(s.open(Purpose::Session, ""), Err(SealError::Malformed));
    }
}
