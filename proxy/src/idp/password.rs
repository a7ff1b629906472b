//! Password checks: Argon2id verification off the async threads, a bound on how many run at
//! once (each takes tens of MiB), and a dummy hash verified for unknown accounts so the time
//! taken does not tell whether an account exists.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Argon2, PasswordHash};
use tokio::sync::Semaphore;

/// Longest password accepted, bytes.
pub const MAX_PASSWORD: usize = 1024;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// argon2 refused (the random source failed, or parameters are invalid).
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// Verifies passwords against Argon2id PHC strings.
#[derive(Debug)]
pub struct Passwords {
    /// A hash of a random password with the default parameters, verified for unknown accounts.
    dummy: Arc<str>,
    /// Verifications allowed at once.
    permits: Semaphore,
}

impl Passwords {
    /// A verifier with a fresh dummy hash.
    pub fn new() -> Result<Self, PasswordError> {
        let mut random = [0u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| PasswordError::Hash("random source failed".into()))?;
        let dummy = hash(&base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            random,
        ))?;
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            dummy: dummy.into(),
            permits: Semaphore::new(parallel.saturating_mul(2)),
        })
    }

    /// Whether `password` matches `phc`. With `phc` absent (no such account) the dummy hash is
    /// verified anyway and the answer is false.
    pub async fn verify(&self, phc: Option<&str>, password: &str) -> bool {
        if password.len() > MAX_PASSWORD {
            return false;
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let known = phc.is_some();
        let phc: Arc<str> = phc.map_or_else(|| self.dummy.clone(), Arc::from);
        let password = password.to_owned();
        let matched = tokio::task::spawn_blocking(move || verify_blocking(&phc, &password))
            .await
            .unwrap_or(false);
        known && matched
    }
}

/// Verifies in the calling thread.
pub fn verify_blocking(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// An Argon2id PHC string of `password` with a fresh salt and the default parameters
/// (m=19456 KiB, t=2, p=1: OWASP's recommendation).
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_never_match() {
        let passwords = Passwords::new().unwrap_or_else(|e| panic!("{e}"));
        let phc = hash("correct horse").unwrap_or_else(|e| panic!("{e}"));
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(passwords.verify(Some(&phc), "correct horse").await);
        assert!(!passwords.verify(Some(&phc), "wrong horse").await);
        assert!(!passwords.verify(None, "correct horse").await);
        assert!(!passwords.verify(Some("not a hash"), "x").await);
        assert!(
            !passwords
                .verify(Some(&phc), &"x".repeat(MAX_PASSWORD + 1))
                .await
        );
    }
}
