//! RFC 4648 base32 (the `A-Z2-7` alphabet), the one copy: the config decodes TOTP secrets with
//! it and `sekisho gen-totp-secret` encodes new ones.

/// The RFC 4648 §6 alphabet.
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// `bytes` in base32 without `=` padding, as authenticator apps expect secrets.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(symbol(buffer >> bits));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(symbol(buffer << (5 - bits)));
    }
    out
}

/// Decodes base32, case-insensitively, ignoring spaces, dashes and trailing `=`. `None` on any
/// other character, on a length no encoding produces (1, 3 or 6 symbols past a multiple of 8),
/// or on leftover bits that are not zero.
pub fn decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    let text = input.trim().trim_end_matches('=');
    for c in text.chars() {
        let value = match c.to_ascii_uppercase() {
            ' ' | '-' => continue,
            c @ 'A'..='Z' => u32::from(c) - u32::from('A'),
            c @ '2'..='7' => u32::from(c) - u32::from('2') + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
        buffer &= (1 << bits) - 1;
    }
    // Five or more leftover bits are a whole symbol that carries no byte.
    if bits >= 5 || buffer != 0 {
        return None;
    }
    Some(out)
}

/// The alphabet symbol for the low five bits of `value`.
fn symbol(value: u32) -> char {
    // `value & 31` is below 32, the alphabet's length.
    let index = usize::try_from(value & 31).unwrap_or(0);
    char::from(ALPHABET.get(index).copied().unwrap_or(b'A'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 §10, without the padding `encode` leaves out.
    const VECTORS: [(&[u8], &str); 7] = [
        (b"", ""),
        (b"f", "MY"),
        (b"fo", "MZXQ"),
        (b"foo", "MZXW6"),
        (b"foob", "MZXW6YQ"),
        (b"fooba", "MZXW6YTB"),
        (b"foobar", "MZXW6YTBOI"),
    ];

    #[test]
    fn encodes_the_rfc_4648_vectors() {
        for (bytes, text) in VECTORS {
            assert_eq!(encode(bytes), text, "{bytes:?}");
        }
        assert_eq!(
            encode(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn decodes_the_rfc_4648_vectors_padded_or_not() {
        for (bytes, text) in VECTORS {
            assert_eq!(decode(text).as_deref(), Some(bytes), "{text}");
            let padded = format!("{text}{}", "=".repeat((8 - text.len() % 8) % 8));
            assert_eq!(decode(&padded).as_deref(), Some(bytes), "{padded}");
        }
    }

    #[test]
    fn decoding_is_lenient_about_case_spaces_and_dashes() {
        assert_eq!(decode("mzxw 6ytb-oi"), Some(b"foobar".to_vec()));
        assert_eq!(
            decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            Some(b"12345678901234567890".to_vec())
        );
    }

    #[test]
    fn decoding_refuses_what_no_encoding_produces() {
        // `1` and `8` are not in the alphabet.
        assert_eq!(decode("MZXW6YTBO1"), None);
        assert_eq!(decode("MZXW6YTBO8"), None);
        // Non-zero leftover bits: `MZ` is `f` and the bits `01`.
        assert_eq!(decode("MZ"), None);
        // 1, 3 and 6 symbols past a block: a symbol that carries no byte.
        assert_eq!(decode("A"), None);
        assert_eq!(decode("MYA"), None);
        assert_eq!(decode("MZXW6A"), None);
    }

    #[test]
    fn round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        for len in 0..bytes.len() {
            let slice = bytes.get(..len).unwrap_or_default();
            assert_eq!(decode(&encode(slice)).as_deref(), Some(slice), "{len}");
        }
    }
}
