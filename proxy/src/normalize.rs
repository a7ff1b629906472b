//! Request-path normalisation: the one place a raw request target becomes the path that route
//! matching, authorization and forwarding all use.
//!
//! Rules: percent-encoded unreserved characters (RFC 3986 §2.3) are decoded; every other
//! percent-encoding is kept, with upper-case hex; dot segments are removed (RFC 3986 §5.2.4);
//! runs of `/` collapse to one. Encodings that would change the meaning of the path for some
//! upstream and not for us — `%2F` and `%5C` (encoded separators), `%00`, a raw backslash,
//! control characters, malformed `%` escapes, and `..` that would climb above the root — are
//! rejected rather than guessed at.

use std::fmt::Write as _;

/// Why a request path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (asterisk-form or empty).
    #[error("request path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding in request path")]
    MalformedEscape,
    /// `%2F`, `%5C` or `%00`: an encoded separator or NUL, ambiguous between servers.
    #[error("encoded '/', '\\' or NUL in request path")]
    AmbiguousEscape,
    /// A raw backslash or control character.
    #[error("forbidden character in request path")]
    ForbiddenCharacter,
    /// A dot segment with path parameters (`..;x`), which some upstreams read as `..`.
    #[error("dot segment with parameters in request path")]
    DotSegmentParameter,
    /// `..` segments that climb above the root.
    #[error("request path climbs above the root")]
    AboveRoot,
}

/// Normalises the path part of a request target (no query). The result starts with `/`, has no
/// dot segments, no empty segments, and only upper-case, non-unreserved escapes.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(raw)?;
    let mut segments: Vec<&str> = Vec::new();
    let trailing_slash = decoded.ends_with('/') && decoded.len() > 1;
    let mut last_was_dot = false;
    for segment in decoded.split('/') {
        last_was_dot = false;
        // "..;x" and ".;x" are dot segments to Tomcat/Spring (path parameters) but not to us:
        // refuse them rather than route "/public/..;/admin" by "/public".
        if let Some((head, _)) = segment.split_once(';')
            && (head == "." || head == "..")
        {
            return Err(PathError::DotSegmentParameter);
        }
        match segment {
            "" => {}
            "." => last_was_dot = true,
            ".." => {
                last_was_dot = true;
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    // "/a/." and "/a/.." denote directories: keep the trailing slash they imply.
    if out.is_empty() || trailing_slash || (last_was_dot && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

/// Decodes `%XX` escapes of unreserved characters, upper-cases the others, and rejects the
/// ambiguous ones.
fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| hex_value(*c));
            let lo = bytes.get(i + 2).and_then(|c| hex_value(*c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::MalformedEscape);
            };
            let value = hi * 16 + lo;
            match value {
                b'/' | b'\\' | 0 => return Err(PathError::AmbiguousEscape),
                v if is_unreserved(v) => out.push(char::from(v)),
                v => {
                    let _ = write!(out, "%{v:02X}");
                }
            }
            i += 3;
            continue;
        }
        if b == b'\\' || b.is_ascii_control() {
            return Err(PathError::ForbiddenCharacter);
        }
        // Non-ASCII bytes cannot appear in a hyper `Uri`; copy the char whole to stay on UTF-8
        // boundaries anyway.
        let ch_len = utf8_len(b);
        let Some(chunk) = raw.get(i..i + ch_len) else {
            return Err(PathError::ForbiddenCharacter);
        };
        out.push_str(chunk);
        i += ch_len;
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// True when `path` is `prefix` or lies under it on a segment boundary (`/api` covers `/api`
/// and `/api/x`, not `/apix`).
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        match normalize_path(raw) {
            Ok(p) => p,
            Err(e) => panic!("{raw:?} rejected: {e}"),
        }
    }

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/a/b"), "/a/b");
        assert_eq!(ok("/a/b/"), "/a/b/");
    }

    #[test]
    fn dot_segments_and_duplicate_slashes_are_removed() {
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/../b"), "/b");
        assert_eq!(ok("//admin"), "/admin");
        assert_eq!(ok("/public/..//admin"), "/admin");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/."), "/a/");
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        assert_eq!(ok("/public/%2e%2e/admin"), "/admin");
        assert_eq!(ok("/public/%2E%2E/admin"), "/admin");
        assert_eq!(ok("/public/.%2e/admin"), "/admin");
        assert_eq!(ok("/%61dmin"), "/admin");
    }

    #[test]
    fn reserved_escapes_stay_encoded_in_upper_case() {
        assert_eq!(ok("/a%3fb"), "/a%3Fb");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/a%20b"), "/a%20b");
    }

    #[test]
    fn ambiguous_input_is_rejected() {
        assert_eq!(normalize_path("/a%2fb"), Err(PathError::AmbiguousEscape));
        assert_eq!(normalize_path("/a%2Fb"), Err(PathError::AmbiguousEscape));
        assert_eq!(normalize_path("/a%5cb"), Err(PathError::AmbiguousEscape));
        assert_eq!(normalize_path("/a%00"), Err(PathError::AmbiguousEscape));
        assert_eq!(
            normalize_path("/a\\..\\admin"),
            Err(PathError::ForbiddenCharacter)
        );
        assert_eq!(normalize_path("/a%2"), Err(PathError::MalformedEscape));
        assert_eq!(normalize_path("/a%zz"), Err(PathError::MalformedEscape));
        assert_eq!(normalize_path("/../etc"), Err(PathError::AboveRoot));
        assert_eq!(normalize_path("/a/../../etc"), Err(PathError::AboveRoot));
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(
            normalize_path("/public/..;/admin"),
            Err(PathError::DotSegmentParameter)
        );
        assert_eq!(
            normalize_path("/public/.;x/admin"),
            Err(PathError::DotSegmentParameter)
        );
        assert_eq!(
            normalize_path("/public/%2e%2e;/admin"),
            Err(PathError::DotSegmentParameter)
        );
        assert_eq!(normalize_path("/a;b/c"), Ok("/a;b/c".into()));
        assert_eq!(normalize_path("/a\tb"), Err(PathError::ForbiddenCharacter));
    }

    #[test]
    fn normalisation_is_idempotent() {
        for raw in ["/a/./b/../c//d/", "/%7Euser/%41", "/x%3F/.", "/"] {
            let once = ok(raw);
            assert_eq!(ok(&once), once, "{raw}");
        }
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        assert!(path_has_prefix("/api", "/api"));
        assert!(path_has_prefix("/api/x", "/api"));
        assert!(!path_has_prefix("/apix", "/api"));
        assert!(path_has_prefix("/anything", "/"));
    }
}
