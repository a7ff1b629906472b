//! The normal form of request paths: the one place a raw path — a request target's, or a path
//! literal of the configuration — becomes the path that route matching, authorization and
//! forwarding all use; and the other readings of it an upstream could take.
//!
//! # The normal form
//!
//! - It starts with `/`; segments are separated by one `/`; there are no `.` or `..` segments
//!   (RFC 3986 §5.2.4) and no empty segments except the root `/` and a trailing `/`.
//! - Unreserved characters (RFC 3986 §2.3: `A-Z a-z 0-9 - . _ ~`) are never percent-encoded.
//! - Sub-delimiters (`! $ & ' ( ) * + , ; =`), `:` and `@` stay as written, raw or encoded
//!   (their encoded and raw forms mean different things).
//! - Every other byte is percent-encoded with upper-case hex: a raw `<`, space or non-ASCII
//!   character becomes `%3C`, `%20`, its UTF-8 bytes.
//! - The fully decoded bytes are valid UTF-8 (`%C0%AE`, an overlong `.`, is refused).
//!
//! Refused rather than guessed at, because some upstream would read them differently: `%2F`,
//! `%5C` and `%00` (encoded separators, NUL), a raw backslash or control character, a malformed
//! `%` escape, `..` climbing above the root, and dot segments with parameters (`..;x`).
//!
//! # What an upstream may read differently
//!
//! [`upstream_views`] gives the paths an upstream could see instead of the normal form, for each
//! combination of three leniencies ([`UpstreamPaths`]): it ignores ASCII letter case (IIS, many
//! Java and .NET stacks), it strips `;` parameters from segments (Tomcat, Spring), it decodes
//! `%25XX` a second time (some frameworks).

use crate::model::UpstreamPaths;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (asterisk-form or empty).
    #[error("path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding in path")]
    MalformedEscape,
    /// `%2F`, `%5C` or `%00`: an encoded separator or NUL, ambiguous between servers.
    #[error("encoded '/', '\\' or NUL in path")]
    AmbiguousEscape,
    /// A raw backslash or control character.
    #[error("forbidden character in path")]
    ForbiddenCharacter,
    /// A dot segment with path parameters (`..;x`), which some upstreams read as `..`.
    #[error("dot segment with parameters in path")]
    DotSegmentParameter,
    /// `..` segments that climb above the root.
    #[error("path climbs above the root")]
    AboveRoot,
    /// The percent-decoded path is not UTF-8 (an overlong `%C0%AE`, a lone `%FF`).
    #[error("path is not valid UTF-8 once percent-decoded")]
    NotUtf8,
}

impl PathError {
    /// A short sentence for the client.
    pub fn public_reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "request path must start with '/'",
            PathError::MalformedEscape => "malformed percent-encoding in the request path",
            PathError::AmbiguousEscape => "encoded '/', '\\' or NUL in the request path",
            PathError::ForbiddenCharacter => "forbidden character in the request path",
            PathError::DotSegmentParameter => "dot segment with ';' parameters in the request path",
            PathError::AboveRoot => "request path climbs above the root",
            PathError::NotUtf8 => "request path is not valid UTF-8 once percent-decoded",
        }
    }
}

/// Puts a path (no query) in the normal form described in the module documentation.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let escaped = canonical_escapes(raw)?;
    let mut segments: Vec<&str> = Vec::new();
    let trailing_slash = escaped.ends_with('/') && escaped.len() > 1;
    let mut last_was_dot = false;
    for segment in escaped.split('/') {
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
    let mut out = String::with_capacity(escaped.len());
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

/// True when `path` is in the normal form. Checked independently of [`normalize_path`] (for
/// tests and fuzzing: `is_normal(&normalize_path(x)?)` must hold).
pub fn is_normal(path: &str) -> bool {
    if !path.starts_with('/') || path.contains("//") {
        return false;
    }
    let mut decoded = Vec::with_capacity(path.len());
    let bytes = path.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = |at: usize| {
                bytes
                    .get(at)
                    .filter(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(*c))
                    .and_then(|c| hex_value(*c))
            };
            let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                return false;
            };
            let value = hi * 16 + lo;
            if is_unreserved(value) || matches!(value, b'/' | b'\\' | 0) {
                return false;
            }
            decoded.push(value);
            i += 3;
            continue;
        }
        if !(b == b'/' || is_unreserved(b) || is_kept_raw(b)) {
            return false;
        }
        decoded.push(b);
        i += 1;
    }
    if std::str::from_utf8(&decoded).is_err() {
        return false;
    }
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let head = segment.split_once(';').map_or(segment, |(head, _)| head);
        if head == "." || head == ".." {
            return false;
        }
        // Only the last segment (a trailing slash, or the root) may be empty.
        if segment.is_empty() && segments.peek().is_some() {
            return false;
        }
    }
    true
}

/// True when `path` is `prefix` or lies under it on a segment boundary (`/api` covers `/api`
/// and `/api/x`, not `/apix`; `/` covers everything).
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The path with ASCII letters in lower case, except the hex digits of `%XX` escapes (which stay
/// upper case): what an upstream that ignores case sees, still in normal form when `path` is.
pub fn fold_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut escape_digits = 0u8;
    for c in path.chars() {
        if escape_digits > 0 {
            escape_digits -= 1;
            out.push(c);
        } else if c == '%' {
            escape_digits = 2;
            out.push(c);
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// True when [`fold_case`] would change `path`.
pub fn has_upper_case(path: &str) -> bool {
    let mut escape_digits = 0u8;
    for b in path.bytes() {
        if escape_digits > 0 {
            escape_digits -= 1;
        } else if b == b'%' {
            escape_digits = 2;
        } else if b.is_ascii_uppercase() {
            return true;
        }
    }
    false
}

/// A normal path with every segment's `;` parameters removed (`/admin;x=1/` → `/admin/`,
/// `/;/admin/` → `/admin/`), normalised again: what Tomcat or Spring route by.
pub fn strip_parameters(path: &str) -> Result<String, PathError> {
    let stripped: Vec<&str> = path
        .split('/')
        .map(|segment| segment.split_once(';').map_or(segment, |(head, _)| head))
        .collect();
    normalize_path(&stripped.join("/"))
}

/// A normal path with each `%25XX` (an encoded `%` before two hex digits) decoded once more to
/// `%XX`, normalised again: what an upstream that decodes twice routes by. Refused when the
/// second decoding yields something the normal form refuses (`%252F` → `%2F`).
pub fn decode_again(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let is_encoded_escape = b == b'%'
            && bytes.get(i + 1) == Some(&b'2')
            && bytes.get(i + 2) == Some(&b'5')
            && bytes.get(i + 3).and_then(|c| hex_value(*c)).is_some()
            && bytes.get(i + 4).and_then(|c| hex_value(*c)).is_some();
        if is_encoded_escape {
            out.push('%');
            i += 3;
            continue;
        }
        match path.get(i..).and_then(|rest| rest.chars().next()) {
            Some(c) => {
                out.push(c);
                i += c.len_utf8();
            }
            None => break,
        }
    }
    normalize_path(&out)
}

/// One way an upstream may read a path differently from sekisho.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leniency {
    /// It ignores ASCII letter case.
    Case,
    /// It strips `;` parameters from segments.
    Parameters,
    /// It decodes `%25XX` a second time.
    Decoding,
}

/// A reading of a path an upstream could take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The path the upstream would see, in normal form (case-folded when `Case` is among the
    /// leniencies), or why it cannot be put in normal form.
    pub path: Result<String, PathError>,
    /// The leniencies applied to get it.
    pub leniencies: Vec<Leniency>,
}

impl View {
    /// True when this reading ignores case (compare it with case-folded literals).
    pub fn folded(&self) -> bool {
        self.leniencies.contains(&Leniency::Case)
    }
}

/// The readings of the normal path `path` that differ from it, for every non-empty combination
/// of the leniencies `upstream` has that would change `path`. Parameters are stripped first,
/// then `%25XX` decoded again, then case folded. With `fold_always`, a case-folded reading is
/// given even when folding leaves the path as it is (it is then compared with folded literals:
/// `/admin` is covered by a route written `/Admin`). Empty for the common path (lower case, no
/// `;`, no `%25`) unless `fold_always`, with nothing allocated.
pub fn upstream_views(path: &str, upstream: UpstreamPaths, fold_always: bool) -> Vec<View> {
    let mut applicable: Vec<Leniency> = Vec::new();
    if upstream.strips_parameters && path.contains(';') {
        applicable.push(Leniency::Parameters);
    }
    if upstream.decodes_twice && path.contains("%25") {
        applicable.push(Leniency::Decoding);
    }
    if upstream.ignores_case && (fold_always || has_upper_case(path)) {
        applicable.push(Leniency::Case);
    }
    let mut views: Vec<View> = Vec::new();
    let combinations = 1u32 << applicable.len();
    for mask in 1..combinations {
        let leniencies: Vec<Leniency> = applicable
            .iter()
            .enumerate()
            .filter(|(bit, _)| mask & (1 << bit) != 0)
            .map(|(_, leniency)| *leniency)
            .collect();
        let view = View {
            path: apply(path, &leniencies),
            leniencies,
        };
        let unchanged = view.path.as_deref() == Ok(path) && !view.folded();
        if !unchanged
            && !views
                .iter()
                .any(|v| v.path == view.path && v.folded() == view.folded())
        {
            views.push(view);
        }
    }
    views
}

/// `path` as read with `leniencies` (parameters, then decoding, then case).
fn apply(path: &str, leniencies: &[Leniency]) -> Result<String, PathError> {
    let mut view = path.to_owned();
    if leniencies.contains(&Leniency::Parameters) {
        view = strip_parameters(&view)?;
    }
    if leniencies.contains(&Leniency::Decoding) {
        view = decode_again(&view)?;
    }
    if leniencies.contains(&Leniency::Case) {
        view = fold_case(&view);
    }
    Ok(view)
}

/// Decodes unreserved `%XX` escapes, upper-cases the others, percent-encodes raw bytes that are
/// neither unreserved nor kept raw, refuses the ambiguous ones, and checks that the decoded
/// bytes are UTF-8.
fn canonical_escapes(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
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
                v => push_escape(&mut out, v),
            }
            decoded.push(value);
            i += 3;
            continue;
        }
        if b == b'\\' || b.is_ascii_control() {
            return Err(PathError::ForbiddenCharacter);
        }
        if b == b'/' || is_unreserved(b) || is_kept_raw(b) {
            out.push(char::from(b));
        } else {
            // `raw` is a `str`: a non-ASCII byte is part of a UTF-8 character, encoded byte by
            // byte like any other byte that may not appear raw.
            push_escape(&mut out, b);
        }
        decoded.push(b);
        i += 1;
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::NotUtf8);
    }
    Ok(out)
}

fn push_escape(out: &mut String, byte: u8) {
    out.push('%');
    for nibble in [byte >> 4, byte & 0x0F] {
        if let Some(digit) = char::from_digit(u32::from(nibble), 16) {
            out.push(digit.to_ascii_uppercase());
        }
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

/// Sub-delimiters, `:` and `@`: reserved characters allowed raw in a segment (RFC 3986
/// `pchar`), kept as written because their raw and encoded forms differ in meaning.
fn is_kept_raw(c: u8) -> bool {
    matches!(
        c,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@'
    )
}

#[cfg(test)]
mod tests;
