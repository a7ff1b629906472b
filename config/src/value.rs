//! Pure parsers for the scalar values of the config file: durations, addresses, URLs, names and
//! key material. Each turns one string into one typed value, or says what is wrong with it
//! (never echoing secret material).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ipnet::IpNet;
use url::{Host, Url};

use crate::model::{Origin, RouteMatch, Scheme, SigningAlgorithm};

/// What is wrong with one scalar value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ValueError {
    /// A duration written as a bare number.
    #[error(
        "`{0}` has no unit; write a duration as numbers with units (ms, s, m, h), like `500ms`, `30s`, `5m`, `12h` or `1h30m`"
    )]
    DurationNoUnit(String),
    /// A duration that is not a sequence of `<integer><unit>` parts.
    #[error(
        "`{0}` is not a duration; write numbers with units (ms, s, m, h), largest unit first, like `500ms`, `30s`, `5m`, `12h` or `1h30m`"
    )]
    DurationSyntax(String),
    /// A zero duration.
    #[error("`{0}` is zero; durations must be greater than zero")]
    DurationZero(String),
    /// A duration too large to represent.
    #[error("`{0}` is too large")]
    DurationOverflow(String),
    /// A listen address that is not `IP:port`.
    #[error("`{0}` is not an IP address and port, like `127.0.0.1:8080` or `[::1]:8443`")]
    SocketAddr(String),
    /// A network that is neither CIDR nor a bare IP address.
    #[error("`{0}` is not an IP network, like `10.0.0.0/8`, `::1/128` or a bare IP address")]
    IpNet(String),
    /// A CIDR whose address has bits set beyond the prefix length.
    #[error("`{given}` has host bits set; write the network address `{network}`")]
    IpNetHostBits {
        /// As written.
        given: String,
        /// The network the user probably meant.
        network: IpNet,
    },
    /// A string the `url` crate rejects.
    #[error("`{input}` is not a valid URL: {source}")]
    Url {
        /// As written.
        input: String,
        /// Why `url` rejected it.
        #[source]
        source: url::ParseError,
    },
    /// A URL that is not written as `scheme://host...`.
    #[error("`{0}` is not an absolute URL; write it like `https://host.example.com/path`")]
    UrlNotAbsolute(String),
    /// A scheme other than http or https.
    #[error("scheme `{0}` is not allowed; use `http` or `https`")]
    UrlScheme(String),
    /// A URL with a user name or password.
    #[error("`{0}` must not contain a user name or password")]
    UrlUserinfo(String),
    /// A URL with a query.
    #[error("`{0}` must not contain a query (`?...`)")]
    UrlQuery(String),
    /// A URL with a fragment.
    #[error("`{0}` must not contain a fragment (`#...`)")]
    UrlFragment(String),
    /// An origin with a path.
    #[error("`{0}` is an origin and must not have a path (other than `/`)")]
    OriginPath(String),
    /// A route path prefix with `.` or `..` segments.
    #[error("path `{0}` contains a `.` or `..` segment; write the prefix without them")]
    PathDotSegment(String),
    /// A route path prefix with an empty segment.
    #[error("path `{0}` contains an empty segment (`//`); write the prefix without it")]
    PathEmptySegment(String),
    /// A route path prefix with a backslash.
    #[error("path `{0}` contains a backslash; use `/` to separate segments")]
    PathBackslash(String),
    /// An `http` issuer on a host that is not loopback.
    #[error(
        "issuer `{0}` uses http on a non-loopback host; use https (http is allowed only for 127.0.0.0/8, ::1 and localhost)"
    )]
    IssuerInsecure(String),
    /// An HMAC algorithm.
    #[error(
        "`{0}` is a symmetric (shared-secret) algorithm and is never accepted: anyone who can verify such a token can forge one"
    )]
    AlgorithmSymmetric(String),
    /// The `none` algorithm.
    #[error("`{0}` means unsigned tokens, which are never accepted")]
    AlgorithmNone(String),
    /// A name that is no supported algorithm.
    #[error("unknown algorithm `{0}`; accepted: RS256, RS384, RS512, PS256, ES256, ES384, EdDSA")]
    AlgorithmUnknown(String),
    /// A session key that is not base64.
    #[error("is not valid base64 (standard or URL-safe alphabet, padded or not)")]
    KeyBase64,
    /// A session key of the wrong length.
    #[error(
        "decodes to {0} bytes; session keys must be exactly 32 bytes (generate one with `openssl rand -base64 32`)"
    )]
    KeyLength(usize),
    /// No PEM block at all.
    #[error("does not contain a `-----BEGIN PRIVATE KEY-----` PEM block")]
    PemMissing,
    /// A PEM block of another kind.
    #[error(
        "contains a `-----BEGIN {0}-----` block; sekisho needs an unencrypted PKCS#8 `-----BEGIN PRIVATE KEY-----` block (convert with `openssl pkcs8 -topk8 -nocrypt`)"
    )]
    PemNotPkcs8(String),
    /// A PEM block without its end line.
    #[error("the `-----BEGIN PRIVATE KEY-----` block has no `-----END PRIVATE KEY-----` line")]
    PemUnterminated,
    /// A PEM block whose body is empty or not base64.
    #[error("the `-----BEGIN PRIVATE KEY-----` block's body is empty or not base64")]
    PemBody,
    /// A cookie name with characters outside `[A-Za-z0-9_-]`.
    #[error("`{0}` is not a valid cookie name; use only A-Z, a-z, 0-9, `_` and `-`")]
    CookieNameChars(String),
    /// A cookie name with a `__` prefix.
    #[error(
        "`{0}` must not start with `__`; sekisho adds the `__Host-` prefix itself when serving over TLS"
    )]
    CookieNamePrefix(String),
    /// A header name with characters that are not HTTP token characters.
    #[error("`{0}` is not a valid HTTP header name")]
    HeaderName(String),
    /// A header name sekisho or HTTP itself gives a meaning to.
    #[error("`{0}` is a header HTTP or sekisho already gives a meaning to; choose another name")]
    HeaderReserved(String),
    /// A route id outside `[a-z0-9][a-z0-9_-]*`.
    #[error(
        "`{0}` is not a valid route id; start with a-z or 0-9 and continue with a-z, 0-9, `_` or `-`"
    )]
    RouteId(String),
    /// An OAuth scope with whitespace, quotes or backslashes.
    #[error("`{0}` is not a valid OAuth scope (no spaces, quotes or backslashes)")]
    Scope(String),
    /// An empty string where text is required.
    #[error("must not be empty")]
    Empty,
}

/// Parses `500ms`, `30s`, `5m`, `12h`, `1h30m`, ...: integers with units, largest unit first,
/// each unit at most once, total greater than zero.
pub(crate) fn duration(input: &str) -> Result<Duration, ValueError> {
    let text = input.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(ValueError::DurationNoUnit(text.to_owned()));
    }
    let syntax = || ValueError::DurationSyntax(text.to_owned());
    if text.is_empty() {
        return Err(syntax());
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    let mut previous_rank: Option<u8> = None;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at_checked(digits_end).ok_or_else(syntax)?;
        if number.is_empty() {
            return Err(syntax());
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at_checked(unit_end).ok_or_else(syntax)?;
        let (rank, unit_ms): (u8, u64) = match unit {
            "h" => (0, 3_600_000),
            "m" => (1, 60_000),
            "s" => (2, 1_000),
            "ms" => (3, 1),
            _ => return Err(syntax()),
        };
        if previous_rank.is_some_and(|previous| previous >= rank) {
            return Err(syntax());
        }
        previous_rank = Some(rank);
        let overflow = || ValueError::DurationOverflow(text.to_owned());
        let value: u64 = number.parse().map_err(|_| overflow())?;
        total_ms = value
            .checked_mul(unit_ms)
            .and_then(|part| total_ms.checked_add(part))
            .ok_or_else(overflow)?;
        rest = next;
    }
    if total_ms == 0 {
        return Err(ValueError::DurationZero(text.to_owned()));
    }
    Ok(Duration::from_millis(total_ms))
}

/// Writes a duration the way the config file spells them (`1h30m`, `500ms`).
pub(crate) fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, unit_ms) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        let count = ms / unit_ms;
        if count > 0 {
            // Writing to a String cannot fail.
            let _ = write!(out, "{count}{unit}");
            ms %= unit_ms;
        }
    }
    out
}

/// Parses a listen address, `IP:port`.
pub(crate) fn socket_addr(input: &str) -> Result<SocketAddr, ValueError> {
    input
        .trim()
        .parse()
        .map_err(|_| ValueError::SocketAddr(input.to_owned()))
}

/// Parses a CIDR network (`10.0.0.0/8`) or a bare address (meaning `/32` or `/128`). An address
/// with host bits set is rejected rather than silently truncated.
pub(crate) fn ip_net(input: &str) -> Result<IpNet, ValueError> {
    let text = input.trim();
    if text.contains('/') {
        let net: IpNet = text
            .parse()
            .map_err(|_| ValueError::IpNet(text.to_owned()))?;
        if net.addr() != net.network() {
            return Err(ValueError::IpNetHostBits {
                given: text.to_owned(),
                network: net.trunc(),
            });
        }
        Ok(net)
    } else {
        let addr: IpAddr = text
            .parse()
            .map_err(|_| ValueError::IpNet(text.to_owned()))?;
        Ok(IpNet::from(addr))
    }
}

/// Parses an absolute `http` or `https` URL without user info, query or fragment.
pub(crate) fn http_url(input: &str) -> Result<Url, ValueError> {
    let text = input.trim();
    let url = Url::parse(text).map_err(|source| ValueError::Url {
        input: text.to_owned(),
        source,
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ValueError::UrlScheme(url.scheme().to_owned()));
    }
    // `url` accepts `https:host` and `https:/host` for special schemes; insist on `//`.
    let written_scheme = text.split_once("://").map(|(scheme, _)| scheme);
    if !written_scheme.is_some_and(|scheme| scheme.eq_ignore_ascii_case(url.scheme())) {
        return Err(ValueError::UrlNotAbsolute(text.to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ValueError::UrlUserinfo(text.to_owned()));
    }
    if url.query().is_some() {
        return Err(ValueError::UrlQuery(text.to_owned()));
    }
    if url.fragment().is_some() {
        return Err(ValueError::UrlFragment(text.to_owned()));
    }
    Ok(url)
}

/// Parses the OpenID issuer: an [`http_url`] that is `https`, or `http` on a loopback host.
pub(crate) fn issuer(input: &str) -> Result<Url, ValueError> {
    let url = http_url(input)?;
    if url.scheme() == "http" {
        let loopback = match url.host() {
            Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(addr)) => addr.is_loopback(),
            Some(Host::Ipv6(addr)) => addr.is_loopback(),
            None => false,
        };
        if !loopback {
            return Err(ValueError::IssuerInsecure(input.trim().to_owned()));
        }
    }
    Ok(url)
}

/// Parses an origin (`https://portal.example.com`, path at most `/`), filling in the default
/// port.
pub(crate) fn origin(input: &str) -> Result<Origin, ValueError> {
    let url = http_url(input)?;
    if url.path() != "/" {
        return Err(ValueError::OriginPath(input.trim().to_owned()));
    }
    let (scheme, host, port) = url_parts(&url, input)?;
    let port = port.unwrap_or_else(|| scheme.default_port());
    Ok(Origin { scheme, host, port })
}

/// Parses a route's `from`: scheme, host, optional port and a path prefix that is already in
/// normal form. `.`/`..` segments, empty segments and backslashes are rejected, not fixed up;
/// a trailing `/` is dropped except for the root.
pub(crate) fn route_match(input: &str) -> Result<RouteMatch, ValueError> {
    let url = http_url(input)?;
    let raw_path = written_path(input.trim());
    if raw_path.contains('\\') {
        return Err(ValueError::PathBackslash(raw_path.to_owned()));
    }
    let segments: Vec<&str> = raw_path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (index, segment) in segments.iter().enumerate() {
        if is_dot_segment(segment) {
            return Err(ValueError::PathDotSegment(raw_path.to_owned()));
        }
        if segment.is_empty() && index != last {
            return Err(ValueError::PathEmptySegment(raw_path.to_owned()));
        }
    }
    let (scheme, host, port) = url_parts(&url, input)?;
    let path = url.path();
    let path_prefix = match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped.to_owned(),
        _ => path.to_owned(),
    };
    Ok(RouteMatch {
        scheme,
        host,
        port,
        path_prefix,
    })
}

/// Parses a JWS algorithm name, rejecting HMAC and `none` with the reason.
pub(crate) fn signing_algorithm(input: &str) -> Result<SigningAlgorithm, ValueError> {
    let name = input.trim();
    match name {
        "RS256" => Ok(SigningAlgorithm::Rs256),
        "RS384" => Ok(SigningAlgorithm::Rs384),
        "RS512" => Ok(SigningAlgorithm::Rs512),
        "PS256" => Ok(SigningAlgorithm::Ps256),
        "ES256" => Ok(SigningAlgorithm::Es256),
        "ES384" => Ok(SigningAlgorithm::Es384),
        "EdDSA" => Ok(SigningAlgorithm::EdDsa),
        _ if name.eq_ignore_ascii_case("none") => Err(ValueError::AlgorithmNone(name.to_owned())),
        _ if name
            .get(..2)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("HS")) =>
        {
            Err(ValueError::AlgorithmSymmetric(name.to_owned()))
        }
        _ => Err(ValueError::AlgorithmUnknown(name.to_owned())),
    }
}

/// Decodes a session key: base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
pub(crate) fn session_key(input: &str) -> Result<Vec<u8>, ValueError> {
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

    let text = input.trim();
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .map_err(|_| ValueError::KeyBase64)?;
    if bytes.len() != 32 {
        return Err(ValueError::KeyLength(bytes.len()));
    }
    Ok(bytes)
}

/// Checks that a secret holds a PKCS#8 `PRIVATE KEY` PEM block (armor and base64 body only; the
/// proxy parses the key itself).
pub(crate) fn private_key_pem(pem: &str) -> Result<(), ValueError> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";

    let Some((_, after_begin)) = pem.split_once(BEGIN) else {
        let other_label = pem
            .split_once("-----BEGIN ")
            .and_then(|(_, rest)| rest.split_once("-----"))
            .map(|(label, _)| label.to_owned());
        return Err(match other_label {
            Some(label) => ValueError::PemNotPkcs8(label),
            None => ValueError::PemMissing,
        });
    };
    let Some((body, _)) = after_begin.split_once(END) else {
        return Err(ValueError::PemUnterminated);
    };
    let mut body_chars = body.chars().filter(|c| !c.is_ascii_whitespace()).peekable();
    if body_chars.peek().is_none()
        || !body_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
    {
        return Err(ValueError::PemBody);
    }
    Ok(())
}

/// Checks a cookie base name: `[A-Za-z0-9_-]+`, not starting with `__`.
pub(crate) fn cookie_name(input: &str) -> Result<String, ValueError> {
    let name = input.trim();
    if name.is_empty() {
        return Err(ValueError::Empty);
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ValueError::CookieNameChars(name.to_owned()));
    }
    if name.starts_with("__") {
        return Err(ValueError::CookieNamePrefix(name.to_owned()));
    }
    Ok(name.to_owned())
}

/// Checks an identity header name (HTTP token characters, not a header with its own meaning)
/// and lowercases it.
pub(crate) fn header_name(input: &str) -> Result<String, ValueError> {
    /// Headers that carry protocol, routing or credential meaning: an identity header must not
    /// overwrite any of them.
    const RESERVED: &[&str] = &[
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "forwarded",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    ];

    let name = input.trim();
    if name.is_empty() {
        return Err(ValueError::Empty);
    }
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !name.chars().all(is_tchar) {
        return Err(ValueError::HeaderName(name.to_owned()));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED.contains(&lower.as_str()) {
        return Err(ValueError::HeaderReserved(name.to_owned()));
    }
    Ok(lower)
}

/// Checks a route id: `[a-z0-9][a-z0-9_-]*`.
pub(crate) fn route_id(input: &str) -> Result<String, ValueError> {
    let id = input.trim();
    let mut chars = id.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !first_ok || !rest_ok {
        return Err(ValueError::RouteId(id.to_owned()));
    }
    Ok(id.to_owned())
}

/// Checks an OAuth scope token.
pub(crate) fn scope(input: &str) -> Result<String, ValueError> {
    let scope = input.trim();
    if scope.is_empty() {
        return Err(ValueError::Empty);
    }
    if scope
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
    {
        return Err(ValueError::Scope(scope.to_owned()));
    }
    Ok(scope.to_owned())
}

/// A non-empty, trimmed string.
pub(crate) fn non_empty(input: &str) -> Result<String, ValueError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(ValueError::Empty);
    }
    Ok(text.to_owned())
}

/// Scheme, host and explicit non-default port of an [`http_url`].
fn url_parts(url: &Url, input: &str) -> Result<(Scheme, String, Option<u16>), ValueError> {
    let scheme = match url.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(ValueError::UrlScheme(other.to_owned())),
    };
    let host = url
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| ValueError::UrlNotAbsolute(input.trim().to_owned()))?;
    Ok((scheme, host.to_ascii_lowercase(), url.port()))
}

/// The path exactly as written in `scheme://authority/path?query#fragment` (before `url`
/// normalises it), so that dot segments can be rejected rather than silently resolved.
fn written_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority_end = after_scheme
        .find(['/', '\\', '?', '#'])
        .unwrap_or(after_scheme.len());
    let path_and_rest = after_scheme.get(authority_end..).unwrap_or("");
    let path_end = path_and_rest
        .find(['?', '#'])
        .unwrap_or(path_and_rest.len());
    path_and_rest.get(..path_end).unwrap_or("")
}

/// Whether a raw path segment is `.` or `..`, also percent-encoded (as `url` would treat it).
fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("1h2m3s4ms"), Ok(Duration::from_millis(3_723_004)));
    }

    #[test]
    fn durations_reject() {
        assert!(matches!(duration("30"), Err(ValueError::DurationNoUnit(_))));
        assert!(matches!(
            duration("1.5"),
            Err(ValueError::DurationNoUnit(_))
        ));
        for bad in ["", "s", "1.5h", "-5s", "5 s", "30m1h", "1m1m", "5d", "h5"] {
            assert!(
                matches!(duration(bad), Err(ValueError::DurationSyntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(duration("0s"), Err(ValueError::DurationZero(_))));
        assert!(matches!(
            duration("99999999999999999999h"),
            Err(ValueError::DurationOverflow(_))
        ));
        assert!(matches!(
            duration("9999999999999999h"),
            Err(ValueError::DurationOverflow(_))
        ));
    }

    #[test]
    fn durations_format() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn networks() {
        assert_eq!(
            ip_net("10.0.0.0/8").map(|n| n.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(ip_net("::1").map(|n| n.to_string()), Ok("::1/128".into()));
        assert_eq!(ip_net("192.0.2.1").map(|n| n.prefix_len()), Ok(32));
        assert!(matches!(
            ip_net("10.0.0.1/8"),
            Err(ValueError::IpNetHostBits { .. })
        ));
        assert!(matches!(ip_net("10.0.0.0/33"), Err(ValueError::IpNet(_))));
        assert!(matches!(ip_net("example.com"), Err(ValueError::IpNet(_))));
    }

    #[test]
    fn issuers() {
        assert!(issuer("https://idp.example.com").is_ok());
        assert!(issuer("http://127.0.0.1:5556/dex").is_ok());
        assert!(issuer("http://127.9.9.9").is_ok());
        assert!(issuer("http://[::1]:8080").is_ok());
        assert!(issuer("http://LOCALHOST:8080").is_ok());
        assert!(matches!(
            issuer("http://idp.example.com"),
            Err(ValueError::IssuerInsecure(_))
        ));
        assert!(matches!(
            issuer("http://10.0.0.1"),
            Err(ValueError::IssuerInsecure(_))
        ));
        assert!(matches!(
            issuer("https://idp.example.com/?a=b"),
            Err(ValueError::UrlQuery(_))
        ));
        assert!(matches!(
            issuer("https://idp.example.com/#x"),
            Err(ValueError::UrlFragment(_))
        ));
        assert!(matches!(
            issuer("ftp://idp.example.com"),
            Err(ValueError::UrlScheme(_))
        ));
        assert!(matches!(
            issuer("https:idp.example.com"),
            Err(ValueError::UrlNotAbsolute(_))
        ));
        assert!(matches!(
            issuer("idp.example.com"),
            Err(ValueError::Url { .. })
        ));
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin("https://Portal.Example.com"),
            Ok(Origin {
                scheme: Scheme::Https,
                host: "portal.example.com".into(),
                port: 443
            })
        );
        assert_eq!(origin("http://localhost:3000/").map(|o| o.port), Ok(3000));
        assert_eq!(origin("http://localhost").map(|o| o.port), Ok(80));
        assert!(matches!(
            origin("https://a.example.com/x"),
            Err(ValueError::OriginPath(_))
        ));
        assert!(matches!(
            origin("https://user:pw@a.example.com"),
            Err(ValueError::UrlUserinfo(_))
        ));
    }

    #[test]
    fn route_matches() {
        let m = route_match("https://App.example.com/prefix/").ok();
        assert_eq!(
            m,
            Some(RouteMatch {
                scheme: Scheme::Https,
                host: "app.example.com".into(),
                port: None,
                path_prefix: "/prefix".into()
            })
        );
        let m = route_match("http://app.example.com:8080").ok();
        assert_eq!(m.as_ref().map(|m| m.port), Some(Some(8080)));
        assert_eq!(m.map(|m| m.path_prefix), Some("/".into()));
        assert_eq!(
            route_match("https://app.example.com:443/").map(|m| m.port),
            Ok(None)
        );
        assert_eq!(
            route_match("https://app.example.com/a/b").map(|m| m.path_prefix),
            Ok("/a/b".into())
        );
        for bad in [
            "https://a.example.com/a/../b",
            "https://a.example.com/./b",
            "https://a.example.com/a/%2e%2E",
            "https://a.example.com/a/..",
        ] {
            assert!(
                matches!(route_match(bad), Err(ValueError::PathDotSegment(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            route_match("https://a.example.com/a//b"),
            Err(ValueError::PathEmptySegment(_))
        ));
        assert!(matches!(
            route_match("https://a.example.com//"),
            Err(ValueError::PathEmptySegment(_))
        ));
        assert!(matches!(
            route_match("https://a.example.com/a\\b"),
            Err(ValueError::PathBackslash(_))
        ));
        assert!(matches!(
            route_match("https://a.example.com/a?x"),
            Err(ValueError::UrlQuery(_))
        ));
    }

    #[test]
    fn algorithms() {
        assert_eq!(signing_algorithm("EdDSA"), Ok(SigningAlgorithm::EdDsa));
        assert_eq!(signing_algorithm("PS256"), Ok(SigningAlgorithm::Ps256));
        assert!(matches!(
            signing_algorithm("HS256"),
            Err(ValueError::AlgorithmSymmetric(_))
        ));
        assert!(matches!(
            signing_algorithm("hs512"),
            Err(ValueError::AlgorithmSymmetric(_))
        ));
        assert!(matches!(
            signing_algorithm("none"),
            Err(ValueError::AlgorithmNone(_))
        ));
        assert!(matches!(
            signing_algorithm("rs256"),
            Err(ValueError::AlgorithmUnknown(_))
        ));
    }

    #[test]
    fn session_keys() {
        // 32 bytes of 0xfb encode with both `+`/`/` and `-`/`_` alphabets.
        let standard = "+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/s=";
        assert_eq!(session_key(standard).map(|k| k.len()), Ok(32));
        assert_eq!(
            session_key(standard.trim_end_matches('=')).map(|k| k.len()),
            Ok(32)
        );
        let url_safe = standard.replace('+', "-").replace('/', "_");
        assert_eq!(session_key(&url_safe).map(|k| k.len()), Ok(32));
        assert_eq!(session_key("AAAA"), Err(ValueError::KeyLength(3)));
        assert_eq!(session_key("not base64!"), Err(ValueError::KeyBase64));
    }

    #[test]
    fn pem_armor() {
        let good = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n";
        assert_eq!(private_key_pem(good), Ok(()));
        assert_eq!(private_key_pem("hello"), Err(ValueError::PemMissing));
        assert_eq!(
            private_key_pem("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----"),
            Err(ValueError::PemNotPkcs8("EC PRIVATE KEY".into()))
        );
        assert_eq!(
            private_key_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n"),
            Err(ValueError::PemUnterminated)
        );
        assert_eq!(
            private_key_pem("-----BEGIN PRIVATE KEY-----\n\n-----END PRIVATE KEY-----"),
            Err(ValueError::PemBody)
        );
        assert_eq!(
            private_key_pem("-----BEGIN PRIVATE KEY-----\nnot*base64\n-----END PRIVATE KEY-----"),
            Err(ValueError::PemBody)
        );
    }

    #[test]
    fn names() {
        assert_eq!(cookie_name("_sekisho"), Ok("_sekisho".into()));
        assert!(matches!(
            cookie_name("__Host-x"),
            Err(ValueError::CookieNamePrefix(_))
        ));
        assert!(matches!(
            cookie_name("a;b"),
            Err(ValueError::CookieNameChars(_))
        ));
        assert_eq!(header_name("X-Sekisho-User"), Ok("x-sekisho-user".into()));
        assert!(matches!(
            header_name("X Sekisho"),
            Err(ValueError::HeaderName(_))
        ));
        assert!(matches!(
            header_name("Host"),
            Err(ValueError::HeaderReserved(_))
        ));
        assert_eq!(route_id("app-1_x"), Ok("app-1_x".into()));
        assert!(matches!(route_id("-app"), Err(ValueError::RouteId(_))));
        assert!(matches!(route_id("App"), Err(ValueError::RouteId(_))));
        assert!(matches!(route_id(""), Err(ValueError::RouteId(_))));
        assert!(matches!(scope("a b"), Err(ValueError::Scope(_))));
    }

    #[test]
    fn listen_addresses() {
        assert!(socket_addr("127.0.0.1:8080").is_ok());
        assert!(socket_addr("[::1]:8443").is_ok());
        assert!(matches!(
            socket_addr("localhost:80"),
            Err(ValueError::SocketAddr(_))
        ));
        assert!(matches!(
            socket_addr("127.0.0.1"),
            Err(ValueError::SocketAddr(_))
        ));
    }
}
