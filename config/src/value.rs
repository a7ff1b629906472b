//! Pure parsers for the scalar values of the config file: durations, addresses, URLs, names,
//! key material and the scalars of policies (paths, methods, emails, times, hashes). Each turns
//! one string into one typed value, or says what is wrong with it (never echoing secret
//! material).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ipnet::IpNet;
use regex::Regex;
use url::{Host, Url};

use crate::model::{
    HeaderPattern, Origin, RouteMatch, STRIPPED_NAMES, STRIPPED_PREFIXES, Scheme, SigningAlgorithm,
};
use crate::policy::{EmailAddress, PolicyMode};

/// What is wrong with one scalar value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ValueError {
    /// A `shared_state.redis.url` that is not a Redis address.
    #[error(
        "`{0}` is not a Redis address: write redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS) or unix:///PATH/TO/redis.sock"
    )]
    RedisUrl(String),
    /// A Redis URL carrying credentials (not echoed: they may be the password).
    #[error(
        "the Redis URL must not carry a user name or password: write them as `username` and `password` (which can come from a file or the environment)"
    )]
    RedisUrlCredentials,
    /// A Redis user name that is empty or holds spaces.
    #[error("a Redis user name must be a non-empty word without spaces")]
    RedisUsername,
    /// A key prefix that is empty, too long or holds spaces.
    #[error("`{0}` is not a key prefix: write 1 to 64 characters without spaces, like `sekisho:`")]
    RedisKeyPrefix(String),
    /// `tls` under a `redis://` or `unix://` URL.
    #[error(
        "`tls` is set but the URL is not rediss://: write rediss://HOST:PORT to speak TLS to Redis"
    )]
    RedisTlsWithoutRediss,
    /// A tunnel route's `from` that is not `tcp+https://host:port` (or `tcp+http`).
    #[error(
        "`{0}` is not a tunnel address: write tcp+https://HOST:PORT (or tcp+http://HOST:PORT, served to loopback clients only), with the port and no path"
    )]
    TunnelFrom(String),
    /// A tunnel route's `to` that is not `tcp://host:port`.
    #[error("`{0}` is not a TCP upstream: write tcp://HOST:PORT")]
    TunnelTo(String),
    /// A duration written as a bare number.
    #[error(
        "`{0}` has no unit; write a duration as numbers with units (ms, s, m, h, d), like `500ms`, `30s`, `5m`, `12h` or `1h30m`"
    )]
    DurationNoUnit(String),
    /// A duration that is not a sequence of `<integer><unit>` parts.
    #[error(
        "`{0}` is not a duration; write numbers with units (ms, s, m, h, d), largest unit first, like `500ms`, `30s`, `5m`, `12h` or `1h30m`"
    )]
    DurationSyntax(String),
    /// A zero duration.
    #[error("`{0}` is zero; durations must be greater than zero")]
    DurationZero(String),
    /// A duration too large to represent.
    #[error("`{0}` is too large")]
    DurationOverflow(String),
    /// A byte size that is not `<integer><unit>`.
    #[error("`{0}` is not a size; write an integer with a unit (B, KiB, MiB, GiB), like `64MiB`")]
    ByteSize(String),
    /// A zero or overflowing byte size.
    #[error("`{0}` must be greater than zero and below 16 EiB")]
    ByteSizeRange(String),
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
    /// A path literal that cannot be put in the normal form request paths are compared in.
    #[error(
        "path `{path}` cannot be compared with request paths: {reason}; request paths like it are refused"
    )]
    PathForm {
        /// As written.
        path: String,
        /// Why the normaliser refuses it.
        #[source]
        reason: crate::path::PathError,
    },
    /// A word that is none of the choices of a two-way setting.
    #[error("`{given}` is not one of: {expected}")]
    Choice {
        /// As written.
        given: String,
        /// The accepted words.
        expected: &'static str,
    },
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
    /// A policy tests a header any client can forge and sekisho strips before forwarding.
    #[error(
        "`{0}` is sent by clients and can carry anything: sekisho strips it before forwarding, and a policy must not trust it (test the identity or `source_ip` instead)"
    )]
    HeaderSpoofable(String),
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
    /// A host with a `*` other than a whole leading `*.` label.
    #[error(
        "`{0}` is not a valid wildcard host; write `*.` followed by at least two labels, like `*.example.com`"
    )]
    HostWildcard(String),
    /// A wildcard host where only exact hosts are allowed.
    #[error("`{0}` has a wildcard host; wildcards are only allowed in a route's `from`")]
    HostWildcardNotAllowed(String),
    /// A policy name outside `[a-z0-9][a-z0-9_-]*`.
    #[error(
        "`{0}` is not a valid policy name; start with a-z or 0-9 and continue with a-z, 0-9, `_` or `-`"
    )]
    PolicyName(String),
    /// An HTTP method that is not an HTTP token.
    #[error("`{0}` is not an HTTP method, like `GET` or `POST`")]
    HttpMethod(String),
    /// A request path that does not start with `/`.
    #[error("path `{0}` must start with `/`")]
    PathNotAbsolute(String),
    /// A request path with a query or fragment.
    #[error("path `{0}` must not contain `?` or `#`; paths are matched without the query")]
    PathQuery(String),
    /// A regex the `regex` crate rejects.
    #[error("`{input}` is not a valid regex: {message}")]
    Regex {
        /// As written.
        input: String,
        /// The `regex` crate's error, on one line.
        message: String,
    },
    /// Text that is not one email address.
    #[error(
        "`{0}` is not an email address; write one `@` with text on both sides and no spaces, like `alice@example.com`"
    )]
    Email(String),
    /// An `ends_with` that is not `@domain` or `.domain`.
    #[error(
        "`{0}` must start with `@` (a whole domain, like `@example.com`) or `.` (any subdomain, like `.example.com`) and contain no other `@` or spaces"
    )]
    EmailSuffix(String),
    /// A domain with `@`, spaces or empty labels.
    #[error("`{0}` is not a domain name, like `example.com` (no `@`, spaces or empty labels)")]
    Domain(String),
    /// A day name other than mon..sun.
    #[error("`{0}` is not a day; write mon, tue, wed, thu, fri, sat or sun")]
    Weekday(String),
    /// A time of day that is not `HH:MM` between 00:00 and 24:00.
    #[error("`{0}` is not a time of day; write `HH:MM` between 00:00 and 24:00, like `09:00`")]
    TimeOfDay(String),
    /// A value that is not 32 bytes of hex.
    #[error(
        "`{0}` is not a SHA-256 hash; write 64 hex digits (colons between byte pairs are allowed)"
    )]
    Sha256(String),
    /// A time zone missing from the bundled database.
    #[error("`{0}` is not a known time zone; use an IANA name like `Europe/Berlin` or `UTC`")]
    TimeZone(String),
    /// An audit durability other than strict or batched.
    #[error("`{0}` is not a durability; write `strict` or `batched`")]
    Durability(String),
    /// An audit failure mode other than deny or allow.
    #[error(
        "`{0}` is not a failure mode; write `deny` (503 while records cannot be written) or `allow`"
    )]
    OnFailure(String),
    /// A heartbeat multiple out of range.
    #[error("`{0}` is not a heartbeat multiple; write a whole number from 1 to 10000")]
    HeartbeatMultiple(String),
    /// A trace sample ratio that is not a number from 0 to 1.
    #[error(
        "`{0}` is not a sample ratio; write a number from 0 to 1, like `0.1` (one request in ten)"
    )]
    SampleRatio(String),
    /// A queue length out of range.
    #[error("`{0}` is not a queue length; write a whole number from 1 to 16777216")]
    QueueSize(String),
    /// A policy mode other than enforce or report.
    #[error("`{0}` is not a policy mode; write `enforce` or `report`")]
    PolicyMode(String),
    /// A PEM file without a certificate.
    #[error("does not contain a `-----BEGIN CERTIFICATE-----` PEM block with a base64 body")]
    CertificatePem,
    /// A `strip_request_headers` entry that is neither a header name nor `prefix*`.
    #[error(
        "`{0}` is not a header name or a name prefix; write a name like `X-Legacy-User` or a prefix like `X-Corp-*` (`*` only at the end)"
    )]
    HeaderPattern(String),
    /// A `strip_request_headers` entry that would strip a header requests need.
    #[error("`{given}` would strip `{needed}`, which frames or routes the request")]
    HeaderPatternNeeded {
        /// As written.
        given: String,
        /// The header it would strip.
        needed: &'static str,
    },
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
            "d" => (0, 86_400_000),
            "h" => (1, 3_600_000),
            "m" => (2, 60_000),
            "s" => (3, 1_000),
            "ms" => (4, 1),
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
    for (unit, unit_ms) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        let count = ms / unit_ms;
        if count > 0 {
            // Writing to a String cannot fail.
            let _ = write!(out, "{count}{unit}");
            ms %= unit_ms;
        }
    }
    out
}

/// Parses a byte size: an integer and one of `B`, `KiB`, `MiB`, `GiB` (also `KB`, `MB`, `GB`,
/// taken as the binary units, the way operators usually mean them).
pub(crate) fn byte_size(input: &str) -> Result<u64, ValueError> {
    let text = input.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text
        .split_at_checked(digits_end)
        .ok_or_else(|| ValueError::ByteSize(text.to_owned()))?;
    let multiplier: u64 = match unit.trim() {
        "B" => 1,
        "KiB" | "KB" => 1 << 10,
        "MiB" | "MB" => 1 << 20,
        "GiB" | "GB" => 1 << 30,
        _ => return Err(ValueError::ByteSize(text.to_owned())),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| ValueError::ByteSize(text.to_owned()))?;
    match number.checked_mul(multiplier) {
        Some(0) | None => Err(ValueError::ByteSizeRange(text.to_owned())),
        Some(size) => Ok(size),
    }
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

/// Parses an absolute `http` or `https` URL without user info, query or fragment, on an exact
/// (not wildcard) host.
pub(crate) fn http_url(input: &str) -> Result<Url, ValueError> {
    let url = any_http_url(input)?;
    if url.host_str().is_some_and(|host| host.contains('*')) {
        return Err(ValueError::HostWildcardNotAllowed(input.trim().to_owned()));
    }
    Ok(url)
}

/// [`http_url`], also on a host with `*` in it (the `url` crate accepts it as a domain).
fn any_http_url(input: &str) -> Result<Url, ValueError> {
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
    if url.scheme() == "http" && !has_loopback_host(&url) {
        return Err(ValueError::IssuerInsecure(input.trim().to_owned()));
    }
    Ok(url)
}

/// Whether `url`'s host is this machine: `localhost` (any case), 127.0.0.0/8 or `::1`. Where
/// plain http is allowed (an issuer, a redirect URI), it is allowed only on such a host.
pub(crate) fn has_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(addr)) => addr.is_loopback(),
        Some(Host::Ipv6(addr)) => addr.is_loopback(),
        None => false,
    }
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

/// Parses a route's `from`: scheme, host (exact, or a wildcard `*.example.com`), optional port
/// and a path prefix that is already in normal form. `.`/`..` segments, empty segments and
/// backslashes are rejected, not fixed up; a trailing `/` is dropped except for the root.
pub(crate) fn route_match(input: &str) -> Result<RouteMatch, ValueError> {
    let url = any_http_url(input)?;
    check_segments(written_path(input.trim()))?;
    let (scheme, host, port) = url_parts(&url, input)?;
    if host.contains('*') {
        wildcard_host(&host)?;
    }
    let path = normal_path(url.path())?;
    let path_prefix = match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped.to_owned(),
        _ => path,
    };
    Ok(RouteMatch {
        scheme,
        host,
        port,
        path_prefix,
    })
}

/// A tunnel route's `from`: `tcp+https://host:port` or `tcp+http://host:port` (explicit port, no
/// path, no wildcard host), as the route match the tunnel's CONNECT is looked up by.
pub(crate) fn tunnel_from(input: &str) -> Result<RouteMatch, ValueError> {
    let text = input.trim();
    let bad = || ValueError::TunnelFrom(text.to_owned());
    let rest = text
        .get(..4)
        .filter(|prefix| prefix.eq_ignore_ascii_case("tcp+"))
        .and_then(|_| text.get(4..))
        .ok_or_else(bad)?;
    let url = any_http_url(rest).map_err(|_| bad())?;
    let (scheme, host, port) = url_parts(&url, rest).map_err(|_| bad())?;
    // `url` drops a port that is the scheme's default: read it from the text in that case.
    let port = port.or_else(|| {
        let authority = rest.split_once("://")?.1.split('/').next()?;
        authority.rsplit_once(':')?.1.parse().ok()
    });
    let written_path = rest
        .split_once("://")
        .and_then(|(_, after)| after.find('/').map(|i| &after[i..]))
        .unwrap_or("");
    if host.contains('*') || port.is_none() || !(written_path.is_empty() || written_path == "/") {
        return Err(bad());
    }
    Ok(RouteMatch {
        scheme,
        host,
        port,
        path_prefix: "/".to_owned(),
    })
}

/// A tunnel route's `to`: `tcp://host:port`, as `host:port` (the host a name or an address,
/// IPv6 in brackets).
pub(crate) fn tunnel_to(input: &str) -> Result<String, ValueError> {
    let text = input.trim();
    let bad = || ValueError::TunnelTo(text.to_owned());
    let rest = text
        .get(..6)
        .filter(|prefix| prefix.eq_ignore_ascii_case("tcp://"))
        .and_then(|_| text.get(6..))
        .ok_or_else(bad)?;
    let url = Url::parse(&format!("tcp://{rest}")).map_err(|_| bad())?;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    let port = url.port().filter(|p| *p != 0).ok_or_else(bad)?;
    if !(url.path().is_empty() || url.path() == "/")
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || host.contains('*')
    {
        return Err(bad());
    }
    Ok(format!("{host}:{port}"))
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
    if !is_base64_body(body) {
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
    if !is_identifier(id) {
        return Err(ValueError::RouteId(id.to_owned()));
    }
    Ok(id.to_owned())
}

/// Checks a policy name: `[a-z0-9][a-z0-9_-]*`.
pub(crate) fn policy_name(input: &str) -> Result<String, ValueError> {
    let name = input.trim();
    if !is_identifier(name) {
        return Err(ValueError::PolicyName(name.to_owned()));
    }
    Ok(name.to_owned())
}

/// Whether `text` is `[a-z0-9][a-z0-9_-]*`.
fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Checks an HTTP header name (token characters) and lowercases it. Unlike [`header_name`],
/// any header may be named: this is for testing request headers, not for setting them.
pub(crate) fn header_token(input: &str) -> Result<String, ValueError> {
    let name = input.trim();
    if name.is_empty() {
        return Err(ValueError::Empty);
    }
    if !name.chars().all(is_tchar) {
        return Err(ValueError::HeaderName(name.to_owned()));
    }
    let lower = name.to_ascii_lowercase();
    // The identity and forwarding headers the proxy strips from clients, in any `_`/`-`
    // spelling: a policy reading them would trust a forgery.
    let folded = lower.replace('_', "-");
    let spoofable = STRIPPED_PREFIXES.iter().any(|p| folded.starts_with(p))
        || STRIPPED_NAMES.contains(&folded.as_str());
    if spoofable {
        return Err(ValueError::HeaderSpoofable(lower));
    }
    Ok(lower)
}

/// Checks a `strip_request_headers` entry: a header name, or a prefix written `prefix*`, folded
/// (lower-case, `_` as `-`). Headers that frame or route the request cannot be stripped.
pub(crate) fn header_pattern(input: &str) -> Result<HeaderPattern, ValueError> {
    /// Headers a forwarded request cannot do without.
    const NEEDED: [&str; 3] = ["host", "content-length", "transfer-encoding"];
    let written = input.trim();
    if written.is_empty() {
        return Err(ValueError::Empty);
    }
    let (stem, prefix) = match written.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (written, false),
    };
    if stem.is_empty() || !stem.chars().all(|c| is_tchar(c) && c != '*') {
        return Err(ValueError::HeaderPattern(written.to_owned()));
    }
    let folded = stem.to_ascii_lowercase().replace('_', "-");
    let needed = NEEDED.iter().find(|n| {
        if prefix {
            n.starts_with(folded.as_str())
        } else {
            **n == folded
        }
    });
    if let Some(needed) = needed {
        return Err(ValueError::HeaderPatternNeeded {
            given: written.to_owned(),
            needed,
        });
    }
    Ok(if prefix {
        HeaderPattern::Prefix(folded)
    } else {
        HeaderPattern::Name(folded)
    })
}

/// Whether `c` may appear in an HTTP token (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Checks an HTTP method (an HTTP token) and uppercases it: `get` is `GET`.
pub(crate) fn http_method(input: &str) -> Result<String, ValueError> {
    let method = input.trim();
    if method.is_empty() || !method.chars().all(is_tchar) {
        return Err(ValueError::HttpMethod(method.to_owned()));
    }
    Ok(method.to_ascii_uppercase())
}

/// A request path to compare with normalised request paths: starts with `/`, no query or
/// fragment, no backslash, dot segments or empty segments (a trailing `/` is kept); put in the
/// same normal form as request paths ([`crate::path::normalize_path`]: `%61` → `a`, `%3c` →
/// `%3C`, a raw `<` → `%3C`, non-ASCII → its UTF-8 percent-encoded), or refused when it has none.
pub(crate) fn request_path(input: &str) -> Result<String, ValueError> {
    let path = input.trim();
    if !path.starts_with('/') {
        return Err(ValueError::PathNotAbsolute(path.to_owned()));
    }
    if path.contains(['?', '#']) {
        return Err(ValueError::PathQuery(path.to_owned()));
    }
    check_segments(path)?;
    normal_path(path)
}

/// `path` (already checked for dot and empty segments) in the normal form of request paths.
fn normal_path(path: &str) -> Result<String, ValueError> {
    crate::path::normalize_path(path).map_err(|reason| ValueError::PathForm {
        path: path.to_owned(),
        reason,
    })
}

/// `case: sensitive | insensitive` of `upstream_paths`: true when the upstream ignores case.
pub(crate) fn ignores_case(input: &str) -> Result<bool, ValueError> {
    choice(
        input,
        ["insensitive", "sensitive"],
        "insensitive, sensitive",
    )
}

/// `parameters: stripped | literal`: true when the upstream strips `;` parameters.
pub(crate) fn strips_parameters(input: &str) -> Result<bool, ValueError> {
    choice(input, ["stripped", "literal"], "stripped, literal")
}

/// `decoding: twice | once`: true when the upstream decodes `%25XX` again.
pub(crate) fn decodes_twice(input: &str) -> Result<bool, ValueError> {
    choice(input, ["twice", "once"], "twice, once")
}

/// True for the first word, false for the second, an error naming both otherwise.
fn choice(input: &str, [yes, no]: [&str; 2], expected: &'static str) -> Result<bool, ValueError> {
    match input.trim() {
        word if word == yes => Ok(true),
        word if word == no => Ok(false),
        other => Err(ValueError::Choice {
            given: other.to_owned(),
            expected,
        }),
    }
}

/// A [`request_path`] used as a prefix: a trailing `/` is dropped except for the root, as in a
/// route's `from`.
pub(crate) fn path_prefix(input: &str) -> Result<String, ValueError> {
    let path = request_path(input)?;
    match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => Ok(stripped.to_owned()),
        _ => Ok(path),
    }
}

/// Compiles a regex (as written: not trimmed, not anchored).
pub(crate) fn regex(input: &str) -> Result<Arc<Regex>, ValueError> {
    Regex::new(input)
        .map(Arc::new)
        .map_err(|error| ValueError::Regex {
            input: input.to_owned(),
            message: one_line(&error.to_string()),
        })
}

/// A multi-line diagnostic (regex, Rego) on one line: its `error: ...` line when it has one,
/// else its non-empty lines joined with `; `.
pub(crate) fn one_line(message: &str) -> String {
    let lines = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty());
    if let Some(error) = lines.clone().find_map(|line| line.strip_prefix("error: ")) {
        return error.to_owned();
    }
    lines.collect::<Vec<_>>().join("; ")
}

/// Parses an email address with [`EmailAddress::parse`].
pub(crate) fn email_address(input: &str) -> Result<EmailAddress, ValueError> {
    let text = input.trim();
    EmailAddress::parse(text).ok_or_else(|| ValueError::Email(text.to_owned()))
}

/// Checks an email `ends_with`: `@domain` or `.domain`, no other `@`, no spaces; lowercased.
pub(crate) fn email_suffix(input: &str) -> Result<String, ValueError> {
    let text = input.trim();
    let invalid = || ValueError::EmailSuffix(text.to_owned());
    let rest = text
        .strip_prefix('@')
        .or_else(|| text.strip_prefix('.'))
        .ok_or_else(invalid)?;
    if rest.is_empty() || rest.contains('@') || !domain_chars_ok(rest) {
        return Err(invalid());
    }
    Ok(text.to_ascii_lowercase())
}

/// Checks a domain name (`example.com`): no `@`, no spaces, no empty label; lowercased.
pub(crate) fn domain(input: &str) -> Result<String, ValueError> {
    let text = input.trim();
    if text.is_empty() || text.contains('@') || !domain_chars_ok(text) {
        return Err(ValueError::Domain(text.to_owned()));
    }
    Ok(text.to_ascii_lowercase())
}

/// Whether `domain` has no whitespace, control characters or empty labels.
fn domain_chars_ok(domain: &str) -> bool {
    !domain.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain.split('.').all(|label| !label.is_empty())
}

/// Parses a day name (`mon` … `sun`, any case) into its bit in [`TimeWindow::days`] (bit 0 is
/// Monday).
///
/// [`TimeWindow::days`]: crate::policy::TimeWindow::days
pub(crate) fn weekday(input: &str) -> Result<u8, ValueError> {
    let name = input.trim();
    let index = WEEKDAYS
        .iter()
        .position(|day| day.eq_ignore_ascii_case(name))
        .ok_or_else(|| ValueError::Weekday(name.to_owned()))?;
    // `WEEKDAYS` has seven entries, so the shift stays below 8.
    Ok(1 << index)
}

/// Day names, Monday first, as [`weekday`] reads them.
pub(crate) const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Parses `HH:MM` (or `H:MM`) between `00:00` and `24:00` into minutes since midnight.
pub(crate) fn time_of_day(input: &str) -> Result<u16, ValueError> {
    let text = input.trim();
    let invalid = || ValueError::TimeOfDay(text.to_owned());
    let (hours, minutes) = text.split_once(':').ok_or_else(invalid)?;
    let digits = |part: &str, max_len: usize| {
        !part.is_empty() && part.len() <= max_len && part.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(hours, 2) || minutes.len() != 2 || !digits(minutes, 2) {
        return Err(invalid());
    }
    let hours: u16 = hours.parse().map_err(|_| invalid())?;
    let minutes: u16 = minutes.parse().map_err(|_| invalid())?;
    if minutes > 59 || hours > 24 || (hours == 24 && minutes != 0) {
        return Err(invalid());
    }
    Ok(hours * 60 + minutes)
}

/// Decodes a SHA-256 hash written as 64 hex digits, optionally with `:` between byte pairs.
pub(crate) fn sha256_hex(input: &str) -> Result<[u8; 32], ValueError> {
    let text = input.trim();
    let invalid = || ValueError::Sha256(text.to_owned());
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
    if digits.len() != 64 {
        return Err(invalid());
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
    }
    Ok(hash)
}

/// Looks up an IANA time zone name (any case) in the bundled database.
pub(crate) fn time_zone(input: &str) -> Result<(String, jiff::tz::TimeZone), ValueError> {
    let name = input.trim();
    let zone = jiff::tz::TimeZone::get(name).map_err(|_| ValueError::TimeZone(name.to_owned()))?;
    Ok((name.to_owned(), zone))
}

/// Parses `enforce` or `report`.
pub(crate) fn policy_mode(input: &str) -> Result<PolicyMode, ValueError> {
    match input.trim() {
        "enforce" => Ok(PolicyMode::Enforce),
        "report" => Ok(PolicyMode::Report),
        other => Err(ValueError::PolicyMode(other.to_owned())),
    }
}

/// Checks that a PEM file holds at least one `CERTIFICATE` block with a base64 body (armor
/// only; the proxy parses the certificates).
pub(crate) fn certificate_pem(pem: &str) -> Result<(), ValueError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";

    let body = pem
        .split_once(BEGIN)
        .and_then(|(_, after)| after.split_once(END))
        .map(|(body, _)| body)
        .ok_or(ValueError::CertificatePem)?;
    if !is_base64_body(body) {
        return Err(ValueError::CertificatePem);
    }
    Ok(())
}

/// Whether a PEM body is non-empty base64 (whitespace ignored).
fn is_base64_body(body: &str) -> bool {
    let mut chars = body.chars().filter(|c| !c.is_ascii_whitespace()).peekable();
    chars.peek().is_some()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
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

/// Checks a wildcard host: `*.` and then at least two non-empty labels without `*`.
fn wildcard_host(host: &str) -> Result<(), ValueError> {
    let invalid = || ValueError::HostWildcard(host.to_owned());
    let rest = host.strip_prefix("*.").ok_or_else(invalid)?;
    let labels: Vec<&str> = rest.split('.').collect();
    if rest.contains('*') || labels.len() < 2 || labels.iter().any(|label| label.is_empty()) {
        return Err(invalid());
    }
    Ok(())
}

/// Checks a path as written: no backslash, no `.`/`..` segment, no empty segment except a
/// trailing `/`. Such paths never equal a normalised request path, so they are refused rather
/// than fixed up.
fn check_segments(raw_path: &str) -> Result<(), ValueError> {
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
    Ok(())
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

/// A Redis server address, its database number and whether TLS is asked for (`rediss://`):
/// `redis://HOST[:PORT][/DB]`, `rediss://HOST[:PORT][/DB]` or `unix:///PATH`. Credentials in
/// the URL, a query or a fragment are refused.
pub(crate) fn redis_url(
    input: &str,
) -> Result<(crate::model::RedisAddress, u32, bool), ValueError> {
    use crate::model::RedisAddress;
    let text = input.trim();
    let bad = || ValueError::RedisUrl(text.to_owned());
    let url = Url::parse(text).map_err(|_| bad())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ValueError::RedisUrlCredentials);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad());
    }
    match url.scheme() {
        "unix" => {
            if url.host_str().is_some_and(|h| !h.is_empty()) || url.port().is_some() {
                return Err(bad());
            }
            let path = url.to_file_path().map_err(|()| bad())?;
            if !path.is_absolute() || url.path().ends_with('/') {
                return Err(bad());
            }
            Ok((RedisAddress::Unix(path), 0, false))
        }
        scheme @ ("redis" | "rediss") => {
            let host = match url.host() {
                Some(Host::Domain(name)) if !name.is_empty() => name.to_owned(),
                Some(Host::Ipv4(ip)) => ip.to_string(),
                Some(Host::Ipv6(ip)) => ip.to_string(),
                _ => return Err(bad()),
            };
            let database = match url.path() {
                "" | "/" => 0,
                path => path
                    .strip_prefix('/')
                    .filter(|n| {
                        !n.is_empty() && n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad)?,
            };
            let port = url.port().unwrap_or(6379);
            Ok((
                RedisAddress::Tcp { host, port },
                database,
                scheme == "rediss",
            ))
        }
        _ => Err(bad()),
    }
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
        assert_eq!(duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(format_duration(Duration::from_secs(86_400 + 60)), "1d1m");
        assert!(duration("1h1d").is_err());
    }

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(byte_size("64MiB"), Ok(64 << 20));
        assert_eq!(byte_size("1GB"), Ok(1 << 30));
        assert_eq!(byte_size("512B"), Ok(512));
        assert!(matches!(byte_size("64"), Err(ValueError::ByteSize(_))));
        assert!(matches!(byte_size("-1MiB"), Err(ValueError::ByteSize(_))));
        assert!(matches!(
            byte_size("0MiB"),
            Err(ValueError::ByteSizeRange(_))
        ));
        assert!(matches!(
            byte_size("99999999999999GiB"),
            Err(ValueError::ByteSizeRange(_))
        ));
    }

    #[test]
    fn durations_reject() {
        assert!(matches!(duration("30"), Err(ValueError::DurationNoUnit(_))));
        assert!(matches!(
            duration("1.5"),
            Err(ValueError::DurationNoUnit(_))
        ));
        for bad in ["", "s", "1.5h", "-5s", "5 s", "30m1h", "1m1m", "5w", "h5"] {
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
    fn loopback_hosts() {
        let loopback = |text: &str| Url::parse(text).map(|url| has_loopback_host(&url));
        assert_eq!(loopback("http://localhost:8080/"), Ok(true));
        assert_eq!(loopback("http://LocalHost/"), Ok(true));
        assert_eq!(loopback("http://127.0.0.1/"), Ok(true));
        assert_eq!(loopback("http://127.255.0.9/"), Ok(true));
        assert_eq!(loopback("http://[::1]/"), Ok(true));
        assert_eq!(loopback("http://localhost.example.com/"), Ok(false));
        assert_eq!(loopback("http://10.0.0.1/"), Ok(false));
        assert_eq!(loopback("http://[::2]/"), Ok(false));
        assert_eq!(loopback("http://0.0.0.0/"), Ok(false));
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
    fn wildcard_route_hosts() {
        assert_eq!(
            route_match("https://*.Example.com:8443/x").map(|m| (m.host, m.port)),
            Ok(("*.example.com".into(), Some(8443)))
        );
        for bad in [
            "https://*.com",
            "https://a*.b.com",
            "https://*.b.*.com",
            "https://*",
        ] {
            assert!(
                matches!(route_match(bad), Err(ValueError::HostWildcard(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            origin("https://*.example.com"),
            Err(ValueError::HostWildcardNotAllowed(_))
        ));
        assert!(matches!(
            http_url("http://*.example.com/"),
            Err(ValueError::HostWildcardNotAllowed(_))
        ));
    }

    #[test]
    fn policy_scalars() {
        assert_eq!(policy_name("eng-1_x"), Ok("eng-1_x".into()));
        assert!(matches!(policy_name("Eng"), Err(ValueError::PolicyName(_))));
        assert_eq!(http_method("get"), Ok("GET".into()));
        assert_eq!(http_method("M-SEARCH"), Ok("M-SEARCH".into()));
        assert!(matches!(
            http_method("GE T"),
            Err(ValueError::HttpMethod(_))
        ));
        assert!(matches!(http_method(""), Err(ValueError::HttpMethod(_))));
        assert_eq!(header_token("X-Env"), Ok("x-env".into()));
        assert_eq!(header_token("Authorization"), Ok("authorization".into()));
        for forged in [
            "X-Sekisho-User",
            "x_forwarded_for",
            "X-Auth-Request-Email",
            "Remote-User",
            "Forwarded",
        ] {
            assert!(
                matches!(header_token(forged), Err(ValueError::HeaderSpoofable(_))),
                "{forged}"
            );
        }
        assert!(matches!(
            header_token("x env"),
            Err(ValueError::HeaderName(_))
        ));
    }

    #[test]
    fn request_paths() {
        assert_eq!(request_path("/a/b/"), Ok("/a/b/".into()));
        assert_eq!(path_prefix("/a/b/"), Ok("/a/b".into()));
        assert_eq!(path_prefix("/"), Ok("/".into()));
        assert!(matches!(
            request_path("a"),
            Err(ValueError::PathNotAbsolute(_))
        ));
        assert!(matches!(
            request_path("/a?b"),
            Err(ValueError::PathQuery(_))
        ));
        assert!(matches!(
            request_path("/a#b"),
            Err(ValueError::PathQuery(_))
        ));
        assert!(matches!(
            request_path("/a/%2E%2e/b"),
            Err(ValueError::PathDotSegment(_))
        ));
        assert!(matches!(
            request_path("/a//b"),
            Err(ValueError::PathEmptySegment(_))
        ));
        assert!(matches!(
            request_path("/a\\b"),
            Err(ValueError::PathBackslash(_))
        ));
    }

    #[test]
    fn regexes_compile_and_errors_fit_one_line() {
        assert_eq!(regex("^/v[0-9]+/").map(|r| r.is_match("/v12/x")), Ok(true));
        let Err(ValueError::Regex { input, message }) = regex("^/v[") else {
            panic!("expected a regex error");
        };
        assert_eq!(input, "^/v[");
        assert_eq!(message, "unclosed character class");
        assert_eq!(one_line("a\n\n  b  \n"), "a; b");
    }

    #[test]
    fn emails_and_domains() {
        assert_eq!(
            email_address(" Bob@Example.COM ").map(|a| a.to_string()),
            Ok("Bob@example.com".into())
        );
        for bad in ["bob", "@example.com", "bob@", "a@b@c", "a b@c.d"] {
            assert!(
                matches!(email_address(bad), Err(ValueError::Email(_))),
                "{bad}"
            );
        }
        assert_eq!(email_suffix("@Example.com"), Ok("@example.com".into()));
        assert_eq!(email_suffix(".example.com"), Ok(".example.com".into()));
        for bad in ["example.com", "@", ".", "@a@b.c", "@a..b", "@a b"] {
            assert!(
                matches!(email_suffix(bad), Err(ValueError::EmailSuffix(_))),
                "{bad}"
            );
        }
        assert_eq!(domain("Example.COM"), Ok("example.com".into()));
        for bad in ["", "a@b.c", "a..b", "a b"] {
            assert!(matches!(domain(bad), Err(ValueError::Domain(_))), "{bad}");
        }
    }

    #[test]
    fn days_times_and_zones() {
        assert_eq!(weekday("mon"), Ok(1));
        assert_eq!(weekday("SUN"), Ok(64));
        assert!(matches!(weekday("monday"), Err(ValueError::Weekday(_))));
        assert_eq!(time_of_day("00:00"), Ok(0));
        assert_eq!(time_of_day("9:05"), Ok(545));
        assert_eq!(time_of_day("17:30"), Ok(1050));
        assert_eq!(time_of_day("24:00"), Ok(1440));
        for bad in [
            "24:01", "12:60", "123:00", "12:0", "12", "ab:cd", "-1:00", "+1:00",
        ] {
            assert!(
                matches!(time_of_day(bad), Err(ValueError::TimeOfDay(_))),
                "{bad}"
            );
        }
        assert_eq!(
            time_zone("europe/berlin")
                .map(|(name, zone)| (name, zone.iana_name().map(str::to_owned))),
            Ok(("europe/berlin".into(), Some("Europe/Berlin".into())))
        );
        assert!(matches!(
            time_zone("Mars/Olympus"),
            Err(ValueError::TimeZone(_))
        ));
        assert_eq!(policy_mode("report"), Ok(PolicyMode::Report));
        assert!(matches!(
            policy_mode("Report"),
            Err(ValueError::PolicyMode(_))
        ));
    }

    #[test]
    fn sha256_hashes() {
        let hex = "2ee8f46ad2421e5f71682c14f964e219ff067fba6aa980bc5146272b098230c2";
        let colons = "2E:E8:F4:6A:D2:42:1E:5F:71:68:2C:14:F9:64:E2:19:FF:06:7F:BA:6A:A9:80:BC:51:46:27:2B:09:82:30:C2";
        assert_eq!(sha256_hex(hex), sha256_hex(colons));
        assert_eq!(sha256_hex(hex).map(|h| (h[0], h[31])), Ok((0x2e, 0xc2)));
        for bad in [
            &hex[..62],
            "zz",
            &format!("{hex}00"),
            &hex.replace('2', "g"),
        ] {
            assert!(
                matches!(sha256_hex(bad), Err(ValueError::Sha256(_))),
                "{bad}"
            );
        }
        // 64 bytes, but not 32 hex pairs: a multi-byte character is refused, not split.
        assert!(matches!(
            sha256_hex(&format!("é{}", &hex[..62])),
            Err(ValueError::Sha256(_))
        ));
    }

    #[test]
    fn certificate_armor() {
        let ca = include_str!("../testdata/test-only-client-ca.pem");
        assert_eq!(certificate_pem(ca), Ok(()));
        assert_eq!(
            certificate_pem("-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----"),
            Err(ValueError::CertificatePem)
        );
        assert_eq!(
            certificate_pem(include_str!("../testdata/test-only-signing-key.pem")),
            Err(ValueError::CertificatePem)
        );
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

    #[test]
    fn path_literals_take_the_normal_form_of_request_paths() {
        assert_eq!(request_path("/%61dmin"), Ok("/admin".into()));
        assert_eq!(path_prefix("/%61dmin/"), Ok("/admin".into()));
        assert_eq!(request_path("/%7Euser"), Ok("/~user".into()));
        assert_eq!(request_path("/a%3cb"), Ok("/a%3Cb".into()));
        assert_eq!(request_path("/a<b"), Ok("/a%3Cb".into()));
        assert_eq!(request_path("/café"), Ok("/caf%C3%A9".into()));
        assert_eq!(request_path("/a;b"), Ok("/a;b".into()));
        for (input, reason) in [
            ("/a%2Fb", crate::path::PathError::AmbiguousEscape),
            ("/a%zz", crate::path::PathError::MalformedEscape),
            ("/%c0%ae", crate::path::PathError::NotUtf8),
        ] {
            assert_eq!(
                request_path(input),
                Err(ValueError::PathForm {
                    path: input.into(),
                    reason
                }),
                "{input}"
            );
        }
        assert!(matches!(
            request_path("/a/%2e%2e/b"),
            Err(ValueError::PathDotSegment(_))
        ));
        let from = route_match("https://app.example.com/%61dmin/caf%c3%a9");
        assert_eq!(from.map(|m| m.path_prefix), Ok("/admin/caf%C3%A9".into()));
        assert!(matches!(
            route_match("https://app.example.com/a%2Fb"),
            Err(ValueError::PathForm { .. })
        ));
    }

    #[test]
    fn upstream_path_choices() {
        assert_eq!(ignores_case("sensitive"), Ok(false));
        assert_eq!(ignores_case("insensitive"), Ok(true));
        assert_eq!(strips_parameters("literal"), Ok(false));
        assert_eq!(decodes_twice("once"), Ok(false));
        assert!(matches!(
            decodes_twice("never"),
            Err(ValueError::Choice {
                expected: "twice, once",
                ..
            })
        ));
    }

    #[test]
    fn tunnel_addresses() {
        let from = tunnel_from("tcp+https://DB.internal.example.com:5432")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                from.scheme,
                from.host.as_str(),
                from.port,
                from.path_prefix.as_str()
            ),
            (Scheme::Https, "db.internal.example.com", Some(5432), "/")
        );
        let default_port =
            tunnel_from("tcp+https://db.example.com:443/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            default_port.port,
            Some(443),
            "the written default port is kept"
        );
        let plain = tunnel_from("tcp+http://localhost:6379").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plain.scheme, Scheme::Http);
        for bad in [
            "tcp+https://db.example.com",
            "tcp+https://db.example.com:5432/path",
            "tcp+https://*.example.com:5432",
            "tcp+ftp://db.example.com:21",
            "https://db.example.com:5432",
            "tcp+",
        ] {
            assert!(
                matches!(tunnel_from(bad), Err(ValueError::TunnelFrom(_))),
                "{bad}"
            );
        }
        assert_eq!(
            tunnel_to("tcp://10.0.0.5:5432").ok().as_deref(),
            Some("10.0.0.5:5432")
        );
        assert_eq!(
            tunnel_to("tcp://[::1]:22").ok().as_deref(),
            Some("[::1]:22")
        );
        assert_eq!(tunnel_to("TCP://db:5432").ok().as_deref(), Some("db:5432"));
        for bad in [
            "tcp://db",
            "tcp://db:0",
            "tcp://db:22/x",
            "http://db:22",
            "tcp://u@db:22",
            "tcp://db:22?x",
        ] {
            assert!(
                matches!(tunnel_to(bad), Err(ValueError::TunnelTo(_))),
                "{bad}"
            );
        }
    }
}
