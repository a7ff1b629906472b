//! RFC 6238 time-based one-time passwords: HMAC-SHA-1, 6 digits, 30-second steps, accepted one
//! step either side of now.

use ring::hmac;

/// Length of a time step, seconds.
pub const STEP: u64 = 30;
/// Digits in a code.
const DIGITS: u32 = 6;

/// The code for time step `step` (RFC 4226 dynamic truncation).
pub fn code_at(secret: &[u8], step: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let digest = tag.as_ref();
    let offset = usize::from(digest.last().copied().unwrap_or(0) & 0x0f);
    let word = digest
        .get(offset..offset + 4)
        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
        .map_or(0, u32::from_be_bytes);
    (word & 0x7fff_ffff) % 10u32.pow(DIGITS)
}

/// The time step `code` is valid for at `now` (unix seconds), checking the current step and one
/// either side; `None` when it is none of them or is not six digits. Every candidate is compared,
/// so the time taken does not say which one matched.
pub fn verify(secret: &[u8], code: &str, now: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let given: u32 = code.parse().ok()?;
    let current = now / STEP;
    let mut matched = None;
    for step in [
        current.saturating_sub(1),
        current,
        current.saturating_add(1),
    ] {
        let expected = code_at(secret, step);
        // Compare without a data-dependent branch on the digits.
        if super::constant_time_eq(&expected.to_be_bytes(), &given.to_be_bytes()) {
            matched = matched.or(Some(step));
        }
    }
    matched
}

/// A fresh 160-bit secret, base32 (no padding), for `sekisho gen-totp-secret`.
pub fn generate_secret() -> Option<String> {
    let mut bytes = [0u8; 20];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).ok()?;
    Some(sekisho_config::base32::encode(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (8-digit values, of which a 6-digit code is the tail).
    #[test]
    fn rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, eight_digits) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(
                code_at(secret, time / STEP),
                eight_digits % 1_000_000,
                "{time}"
            );
        }
    }

    #[test]
    fn one_step_either_side_is_accepted() {
        let secret = b"12345678901234567890";
        let now = 1_111_111_111;
        let code = |step: u64| format!("{:06}", code_at(secret, step));
        let current = now / STEP;
        assert_eq!(verify(secret, &code(current), now), Some(current));
        assert_eq!(verify(secret, &code(current - 1), now), Some(current - 1));
        assert_eq!(verify(secret, &code(current + 1), now), Some(current + 1));
        assert_eq!(verify(secret, &code(current - 2), now), None);
        assert_eq!(verify(secret, &code(current + 2), now), None);
        assert_eq!(verify(secret, "12345", now), None);
        assert_eq!(verify(secret, "abcdef", now), None);
    }

    #[test]
    fn generated_secrets_are_160_bits_of_base32() {
        let secret = generate_secret().unwrap_or_default();
        assert_eq!(secret.len(), 32);
        assert_eq!(
            sekisho_config::base32::decode(&secret).map(|b| b.len()),
            Some(20)
        );
    }
}
