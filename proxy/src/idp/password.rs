//! Password checks: Argon2id verification off the async threads, a bound on how many run at
//! once (each takes tens of MiB) in two separate pools — sign-in forms and client secrets at the
//! token endpoint — so that a flood of one cannot starve the other, and a dummy hash verified
//! for unknown accounts so the time taken does not tell whether an account exists.

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

/// Which verifications a check competes with for permits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Passwords typed into the sign-in form.
    SignIn,
    /// Client secrets stored as hashes, at the token endpoint.
    Client,
}

/// Verifies passwords against Argon2id PHC strings.
#[derive(Debug)]
pub struct Passwords {
    /// A hash of a random password with the default parameters, verified for unknown accounts.
    dummy: Arc<str>,
    /// Sign-in verifications allowed at once.
    sign_in: Semaphore,
    /// Client-secret verifications allowed at once.
    client: Semaphore,
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
            sign_in: Semaphore::new(parallel.saturating_mul(2)),
            client: Semaphore::new(parallel.max(1)),
        })
    }

    /// Whether `password` matches `phc`, checked with a permit of `pool`. With `phc` absent (no
    /// such account) the dummy hash is verified anyway and the answer is false.
    pub async fn verify(&self, pool: Pool, phc: Option<&str>, password: &str) -> bool {
        if password.len() > MAX_PASSWORD {
            return false;
        }
        let permits = match pool {
            Pool::SignIn => &self.sign_in,
            Pool::Client => &self.client,
        };
        let Ok(_permit) = permits.acquire().await else {
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
        let verify = |phc, password| passwords.verify(Pool::SignIn, phc, password);
        assert!(verify(Some(&phc), "correct horse").await);
        assert!(!verify(Some(&phc), "wrong horse").await);
        assert!(!verify(None, "correct horse").await);
        assert!(!verify(Some("not a hash"), "x").await);
        assert!(!verify(Some(&phc), &"x".repeat(MAX_PASSWORD + 1)).await);
    }

    #[tokio::test]
    async fn client_secret_checks_cannot_take_the_sign_in_permits() {
        let passwords = Passwords::new().unwrap_or_else(|e| panic!("{e}"));
        let phc = hash("correct horse").unwrap_or_else(|e| panic!("{e}"));
        // Every client permit is taken (a flood of token requests) ...
        let all = u32::try_from(passwords.client.available_permits()).unwrap_or(u32::MAX);
        let held = passwords.client.acquire_many(all).await;
        assert!(held.is_ok());
        assert_eq!(passwords.client.available_permits(), 0);
        // ... and a sign-in is still checked (it would wait forever on a shared pool).
        let checked = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            passwords.verify(Pool::SignIn, Some(&phc), "correct horse"),
        )
        .await;
        assert_eq!(checked.ok(), Some(true));
    }
}
