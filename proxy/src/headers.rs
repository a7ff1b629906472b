//! Header hygiene between the client and the upstream: hop-by-hop headers (RFC 9110 §7.6.1),
//! client-supplied identity headers in every spelling, a route's own header rules
//! (`remove_request_headers`, `set_request_headers`) and the rebuilt `X-Forwarded-*` set.
//! Header values are read as bytes and split into list elements, each judged on its own: one
//! element a client filled with a non-ASCII byte never hides the others.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use sekisho_config::{HeaderPattern, RequestHeader, STRIPPED_NAMES, STRIPPED_PREFIXES};

/// Header names that are never forwarded, whatever the `Connection` header says.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Longest excerpt of a refused `X-Forwarded-For` entry kept in the error (and the log).
const ENTRY_EXCERPT: usize = 64;

/// Why the forwarding facts of a request cannot be established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedError {
    /// The right-most `X-Forwarded-For` entry not written by a trusted proxy (the client's) is
    /// not an address, so the client cannot be known.
    #[error("X-Forwarded-For: the client entry {entry:?} is not an address")]
    ClientEntry {
        /// The entry, lossily decoded and clipped.
        entry: String,
    },
}

/// One byte lower-cased, with `_` folded to `-`: how several upstream frameworks (CGI, WSGI,
/// nginx with `underscores_in_headers`) read header names, so a client cannot slip
/// `X_Sekisho_User` past us.
fn fold(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

/// `name` folded equals `folded` (already lower-case with `-`).
fn folded_eq(name: &str, folded: &str) -> bool {
    name.len() == folded.len() && name.bytes().zip(folded.bytes()).all(|(a, b)| fold(a) == b)
}

/// `name` folded starts with `folded`.
fn folded_starts_with(name: &str, folded: &str) -> bool {
    name.len() >= folded.len() && name.bytes().zip(folded.bytes()).all(|(a, b)| fold(a) == b)
}

/// Folds a configured name once, at startup.
pub fn fold_name(name: &str) -> String {
    name.bytes().map(|b| char::from(fold(b))).collect()
}

/// True when a client-supplied header must not reach an upstream because it could impersonate
/// identity, the client's address or the original URL: the built-in list
/// ([`STRIPPED_NAMES`], [`STRIPPED_PREFIXES`]), the configured identity headers
/// (`identity_names`, folded with [`fold_name`]) and the configured `strip_request_headers`
/// (`extra`), each in every case and `_`/`-` spelling. Allocates nothing.
pub fn is_spoofable(name: &HeaderName, identity_names: &[&str], extra: &[HeaderPattern]) -> bool {
    let name = name.as_str();
    STRIPPED_NAMES.iter().any(|n| folded_eq(name, n))
        || STRIPPED_PREFIXES
            .iter()
            .any(|p| folded_starts_with(name, p))
        || identity_names.iter().any(|n| folded_eq(name, n))
        || extra.iter().any(|pattern| match pattern {
            HeaderPattern::Name(n) => folded_eq(name, n),
            HeaderPattern::Prefix(p) => folded_starts_with(name, p),
        })
}

/// What the client told us about the original request, read before stripping, and believed only
/// when the peer is a trusted proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The `X-Forwarded-For` value to send upstream: the client, the trusted proxies after it,
    /// and the peer.
    pub for_chain: String,
    /// Original scheme (`http`/`https`).
    pub proto: String,
    /// Original host.
    pub host: String,
    /// The client address we attribute the request to (v4-mapped IPv6 written as IPv4).
    pub client_ip: IpAddr,
}

impl Forwarded {
    /// Builds the forwarding facts for a request from `peer`, received on a listener speaking
    /// `scheme`, for `host`.
    ///
    /// From an untrusted peer nothing the request says is believed: the peer is the client.
    /// From a trusted peer, the `X-Forwarded-For` elements (every line, split on `,`) are walked
    /// from the right; the first one that is not a trusted proxy is the client whatever its
    /// form, and when it is not an address (`unknown`, garbage, a non-ASCII byte) the client
    /// cannot be known and the request is refused. When every element is a trusted proxy, the
    /// left-most is the client. Addresses are compared with v4-mapped IPv6 as IPv4.
    pub fn from_request(
        headers: &HeaderMap,
        peer: IpAddr,
        scheme: &str,
        host: &str,
        trusted: &[IpNet],
    ) -> Result<Self, ForwardedError> {
        let peer = peer.to_canonical();
        if !is_trusted(peer, trusted) {
            return Ok(Forwarded {
                for_chain: peer.to_string(),
                proto: scheme.to_owned(),
                host: host.to_owned(),
                client_ip: peer,
            });
        }
        let elements: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|line| list_elements(line.as_bytes()))
            .collect();
        // From the right: trusted proxies, then the client (or the left-most, all trusted).
        let mut walked: Vec<IpAddr> = Vec::new();
        for element in elements.iter().rev() {
            let ip = parse_hop(element).ok_or_else(|| ForwardedError::ClientEntry {
                entry: excerpt(element),
            })?;
            walked.push(ip);
            if !is_trusted(ip, trusted) {
                break;
            }
        }
        let client_ip = walked.last().copied().unwrap_or(peer);
        let chain: Vec<String> = walked
            .iter()
            .rev()
            .chain(std::iter::once(&peer))
            .map(ToString::to_string)
            .collect();
        let proto = first_element(headers, "x-forwarded-proto")
            .and_then(|p| match p {
                b"http" => Some("http"),
                b"https" => Some("https"),
                _ => None,
            })
            .unwrap_or(scheme)
            .to_owned();
        let host = first_element(headers, "x-forwarded-host")
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or(host)
            .to_owned();
        Ok(Forwarded {
            for_chain: chain.join(", "),
            proto,
            host,
            client_ip,
        })
    }
}

/// Whether `ip` (canonical) falls in a trusted network, written either as IPv4 or as v4-mapped
/// IPv6.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let mapped = match ip {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(_) => None,
    };
    trusted
        .iter()
        .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
}

/// The non-empty elements of a comma-separated header value, without surrounding whitespace
/// (RFC 9110 §5.6.1: empty elements are ignored).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(|e| e.trim_ascii())
        .filter(|e| !e.is_empty())
}

/// The first element of the first `name` line, if any.
fn first_element<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get(name)
        .and_then(|v| list_elements(v.as_bytes()).next())
}

/// One `X-Forwarded-For` element: `ip`, `ipv4:port`, `[ipv6]` or `[ipv6]:port`, with v4-mapped
/// IPv6 returned as IPv4. `None` for anything else.
fn parse_hop(element: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(element).ok()?;
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inside.parse().ok()?;
        if !after.is_empty() {
            port(after.strip_prefix(':')?)?;
        }
        return Some(IpAddr::V6(ip).to_canonical());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let (address, port_text) = text.split_once(':')?;
    let ip: Ipv4Addr = address.parse().ok()?;
    port(port_text)?;
    Some(IpAddr::V4(ip))
}

/// A port number: 1 to 5 decimal digits, at most 65535.
fn port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A refused entry as text for the error: lossy, clipped.
fn excerpt(element: &[u8]) -> String {
    String::from_utf8_lossy(element)
        .chars()
        .take(ENTRY_EXCERPT)
        .collect()
}

/// Removes hop-by-hop headers (including those listed in `Connection`) and every spoofable
/// identity header (see [`is_spoofable`]). When `keep_upgrade` is set the `Upgrade` header and a
/// `Connection: upgrade` survive, for a WebSocket handshake the route allows.
pub fn sanitize_request_headers(
    headers: &mut HeaderMap,
    identity_names: &[&str],
    extra: &[HeaderPattern],
    keep_upgrade: bool,
) {
    strip_hop_by_hop(headers, keep_upgrade);
    if !headers
        .keys()
        .any(|name| is_spoofable(name, identity_names, extra))
    {
        return;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_spoofable(name, identity_names, extra))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Replaces each value by a copy of its bytes, keeping its sensitivity (HPACK never indexes a
/// sensitive value).
///
/// For headers about to go out on an HTTP/2 connection. HPACK keeps the values it indexes in its
/// dynamic table for as long as the connection lives, and a value hyper parsed is a slice of the
/// read buffer it was parsed from (8 KiB and more): one indexed value would keep that whole
/// buffer, belonging to another connection, alive with this one.
pub fn copy_values(headers: &mut HeaderMap) {
    for value in headers.values_mut() {
        if let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    }
}

/// Removes hop-by-hop headers from a message (request or response), honouring `Connection`:
/// every element of every `Connection` line that is a valid header name is removed; elements
/// that are not (a non-ASCII byte, a space) are ignored without affecting the others.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if !HOP_BY_HOP.iter().any(|name| headers.contains_key(name)) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| list_elements(v.as_bytes()))
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .collect();
    let upgrade = headers.get(header::UPGRADE).cloned();
    for name in listed {
        headers.remove(&name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_upgrade && let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Applies a route's `remove_request_headers`, then its `set_request_headers`: every header
/// whose name is one of either list in any case and `_`/`-` spelling is removed, then each set
/// header is added once. Runs after the strip lists and before sekisho sets its own headers
/// (forwarding, request id, identity, assertion), which the config never lets a route name, so
/// nothing here can override them.
pub fn apply_route_headers(headers: &mut HeaderMap, remove: &[HeaderName], set: &[RequestHeader]) {
    if remove.is_empty() && set.is_empty() {
        return;
    }
    let listed = |name: &HeaderName| {
        remove
            .iter()
            .chain(set.iter().map(|header| &header.name))
            .any(|rule| same_folded(name.as_str(), rule.as_str()))
    };
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| listed(name))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
    for header in set {
        headers.append(header.name.clone(), header.value.clone());
    }
}

/// `a` and `b` are one name once both are folded (neither needs to be folded already).
fn same_folded(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// Sets the rebuilt `X-Forwarded-*` headers.
pub fn set_forwarded(headers: &mut HeaderMap, forwarded: &Forwarded) {
    let pairs = [
        ("x-forwarded-for", forwarded.for_chain.as_str()),
        ("x-forwarded-proto", forwarded.proto.as_str()),
        ("x-forwarded-host", forwarded.host.as_str()),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
}

/// True when the request asks for a WebSocket upgrade (HTTP/1.1 `Connection: upgrade` +
/// `Upgrade: websocket`).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| list_elements(v.as_bytes()))
        .any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    let websocket = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"));
    connection_upgrade && websocket
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: [&str; 4] = [
        "x-sekisho-user",
        "x-sekisho-email",
        "x-sekisho-groups",
        "x-corp-user",
    ];

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|n| n.parse().unwrap_or_else(|e| panic!("{n}: {e}")))
            .collect()
    }

    /// Headers with `X-Forwarded-For` lines given as raw bytes.
    fn xff(lines: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            let value = HeaderValue::from_bytes(line)
                .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(line)));
            headers.append("x-forwarded-for", value);
        }
        headers
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            let name = HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{k}: {e}"));
            headers.append(
                name,
                HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|e| panic!("{v}: {e}")),
            );
        }
        headers
    }

    #[test]
    fn every_spelling_of_identity_headers_is_stripped() {
        let spoofed = [
            "X-Sekisho-User",
            "x-sekisho-email",
            "X_Sekisho_Groups",
            "x-sekisho-jwt-assertion",
            "X-SEKISHO-ANYTHING",
            "X-Forwarded-User",
            "X_Forwarded_Email",
            "x-forwarded-for",
            "X-Auth-Request-User",
            "x_auth_request_email",
            "X-Remote-User",
            "Remote-User",
            "remote_user",
            "X-Corp-User",
            "x_corp_user",
            "Forwarded",
            "X-Original-URL",
            "X-Real-IP",
        ];
        let pairs: Vec<(&str, &str)> = spoofed.iter().map(|n| (*n, "mallory")).collect();
        let mut headers = map(&pairs);
        headers.insert("accept", HeaderValue::from_static("text/html"));
        sanitize_request_headers(&mut headers, &IDENTITY, &[], false);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, vec!["accept"]);
    }

    fn set(pairs: &[(&str, &str)]) -> Vec<RequestHeader> {
        pairs
            .iter()
            .map(|(name, value)| RequestHeader {
                name: HeaderName::from_bytes(name.as_bytes())
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
                value: HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{value}: {e}")),
            })
            .collect()
    }

    fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a [u8]> {
        headers
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    }

    #[test]
    fn route_header_rules_remove_then_set_every_spelling() {
        let mut headers = map(&[
            ("x-debug", "1"),
            ("x_debug", "2"),
            ("X-DEBUG-LEVEL", "kept"),
            ("x-tenant", "evil"),
            ("x-tenant", "evil-too"),
            ("x_tenant", "evil-underscore"),
            ("accept", "text/html"),
        ]);
        let remove = [HeaderName::from_static("x-debug")];
        let rules = set(&[("x-tenant", "acme"), ("authorization", "Basic YQ==")]);
        apply_route_headers(&mut headers, &remove, &rules);
        assert!(values(&headers, "x-debug").is_empty());
        assert!(values(&headers, "x_debug").is_empty());
        assert!(values(&headers, "x_tenant").is_empty());
        assert_eq!(values(&headers, "x-tenant"), [b"acme".as_slice()]);
        assert_eq!(
            values(&headers, "authorization"),
            [b"Basic YQ==".as_slice()]
        );
        assert_eq!(values(&headers, "x-debug-level"), [b"kept".as_slice()]);
        assert_eq!(values(&headers, "accept"), [b"text/html".as_slice()]);
    }

    #[test]
    fn no_route_header_rules_change_nothing() {
        let mut headers = map(&[("x-debug", "1"), ("x_tenant", "a")]);
        let before = headers.clone();
        apply_route_headers(&mut headers, &[], &[]);
        assert_eq!(headers, before);
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic Zm9v"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, vec!["x-kept"]);
    }

    #[test]
    fn websocket_upgrade_survives_only_when_allowed() {
        let base = [("connection", "Upgrade"), ("upgrade", "websocket")];
        let mut allowed = map(&base);
        assert!(is_websocket_upgrade(&allowed));
        strip_hop_by_hop(&mut allowed, true);
        assert!(is_websocket_upgrade(&allowed));
        let mut refused = map(&base);
        strip_hop_by_hop(&mut refused, false);
        assert!(!is_websocket_upgrade(&refused));
    }

    #[test]
    fn forwarded_headers_from_untrusted_peers_are_ignored() {
        let headers = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let peer: IpAddr = "203.0.113.9".parse().unwrap_or_else(|e| panic!("{e}"));
        let f = Forwarded::from_request(&headers, peer, "http", "app.example", &[])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.for_chain, "203.0.113.9");
        assert_eq!(f.proto, "http");
        assert_eq!(f.host, "app.example");
        assert_eq!(f.client_ip, peer);
    }

    #[test]
    fn forwarded_headers_from_trusted_peers_are_extended() {
        let headers = map(&[
            ("x-forwarded-for", "198.51.100.7, 10.0.0.5"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example"),
        ]);
        let peer: IpAddr = "10.0.0.9".parse().unwrap_or_else(|e| panic!("{e}"));
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))];
        let f = Forwarded::from_request(&headers, peer, "http", "internal", &trusted)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.for_chain, "198.51.100.7, 10.0.0.5, 10.0.0.9");
        assert_eq!(f.proto, "https");
        assert_eq!(f.host, "app.example");
        assert_eq!(f.client_ip.to_string(), "198.51.100.7");
    }

    #[test]
    fn other_products_identity_and_original_url_headers_are_stripped() {
        let spoofed = [
            "OIDC_CLAIM_email",
            "oidc-claim-groups",
            "OIDC_access_token",
            "X-Pomerium-Claim-Email",
            "x_pomerium_jwt_assertion",
            "X-Goog-Authenticated-User-Email",
            "X_GOOG_IAP_JWT_ASSERTION",
            "X-Vouch-User",
            "X-User",
            "x_user",
            "X-EMAIL",
            "X-Remote-Group",
            "Remote-Groups",
            "Cf-Access-Jwt-Assertion",
            "CF_ACCESS_AUTHENTICATED_USER_EMAIL",
            "X-Amzn-Oidc-Identity",
            "X-MS-CLIENT-PRINCIPAL",
            "x_ms_client_principal_name",
            "X-Ms-Token-Aad-Id-Token",
            "X-Rewrite-URL",
            "x_original_url",
            "X-Envoy-Original-Path",
            "True-Client-IP",
            "CF-Connecting-IP",
        ];
        let pairs: Vec<(&str, &str)> = spoofed.iter().map(|n| (*n, "mallory")).collect();
        let mut headers = map(&pairs);
        for kept in ["x-userland", "x-goog-api-client", "x-emails-sent", "oidcx"] {
            headers.insert(kept, HeaderValue::from_static("1"));
        }
        sanitize_request_headers(&mut headers, &IDENTITY, &[], false);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            vec!["oidcx", "x-emails-sent", "x-goog-api-client", "x-userland"]
        );
    }

    #[test]
    fn configured_names_and_prefixes_are_stripped_in_every_spelling() {
        let extra = [
            HeaderPattern::Name("x-legacy-user".into()),
            HeaderPattern::Prefix("x-corp-".into()),
        ];
        let name = |n: &str| HeaderName::from_bytes(n.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        for stripped in ["X-Legacy-User", "x_legacy_user", "X-Corp-Role", "X_CORP_"] {
            assert!(is_spoofable(&name(stripped), &[], &extra), "{stripped}");
        }
        for kept in ["X-Legacy-Users", "X-Legacy", "X-Corporate", "X-Corp"] {
            assert!(!is_spoofable(&name(kept), &[], &extra), "{kept}");
        }
    }

    #[test]
    fn connection_elements_are_judged_one_by_one() {
        let mut headers = map(&[
            ("connection", "\u{e7}, x-secret"),
            ("connection", "x-other\u{ff},X-Third , not a name,"),
            ("x-secret", "1"),
            ("x-third", "1"),
            ("x-kept", "1"),
        ]);
        // The map above holds UTF-8; a client's raw Latin-1 byte as well.
        headers.append(
            header::CONNECTION,
            HeaderValue::from_bytes(b"\xe7,x-fourth").unwrap_or_else(|e| panic!("{e}")),
        );
        headers.insert("x-fourth", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, false);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, vec!["x-kept"]);
    }

    #[test]
    fn websocket_upgrade_is_found_beside_a_non_ascii_token() {
        let mut headers = map(&[("upgrade", "websocket")]);
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"\xe7, Upgrade").unwrap_or_else(|e| panic!("{e}")),
        );
        assert!(is_websocket_upgrade(&headers));
    }

    /// `X-Forwarded-For` lines, and the client and chain expected (or the refused entry).
    struct XffCase(
        &'static [&'static [u8]],
        Result<(&'static str, &'static str), &'static str>,
    );

    /// Every `X-Forwarded-For` shape from a trusted balancer at 10.0.0.1 (trusting 10/8 and
    /// 192.0.2.1): the client chosen and the chain sent upstream, or a refusal.
    #[test]
    fn x_forwarded_for_walks_from_the_right_to_the_first_untrusted_element() {
        let trusted = nets(&["10.0.0.0/8", "192.0.2.1/32"]);
        let peer = ip("10.0.0.1");
        let cases: &[XffCase] = &[
            XffCase(&[], Ok(("10.0.0.1", "10.0.0.1"))),
            XffCase(&[b""], Ok(("10.0.0.1", "10.0.0.1"))),
            XffCase(
                &[b"198.51.100.7"],
                Ok(("198.51.100.7", "198.51.100.7, 10.0.0.1")),
            ),
            // Entries left of the client are the client's own writing: not believed, not sent.
            XffCase(
                &[b"203.0.113.66, 198.51.100.7"],
                Ok(("198.51.100.7", "198.51.100.7, 10.0.0.1")),
            ),
            XffCase(
                &[b"unknown, 198.51.100.7"],
                Ok(("198.51.100.7", "198.51.100.7, 10.0.0.1")),
            ),
            XffCase(
                &[b"\xf1, 198.51.100.7"],
                Ok(("198.51.100.7", "198.51.100.7, 10.0.0.1")),
            ),
            XffCase(
                &[b"\xf1", b"198.51.100.7"],
                Ok(("198.51.100.7", "198.51.100.7, 10.0.0.1")),
            ),
            // Several lines are one list.
            XffCase(
                &[b"198.51.100.7", b"10.0.0.5"],
                Ok(("198.51.100.7", "198.51.100.7, 10.0.0.5, 10.0.0.1")),
            ),
            // Balancers that write ports, brackets, v4-mapped addresses.
            XffCase(
                &[b"2001:db8::1, 198.51.100.7:0"],
                Ok(("198.51.100.7", "198.51.100.7, 10.0.0.1")),
            ),
            XffCase(
                &[b"198.51.100.7, [2001:db8::1]:443"],
                Ok(("2001:db8::1", "2001:db8::1, 10.0.0.1")),
            ),
            XffCase(
                &[b"198.51.100.7,[2001:db8::2]"],
                Ok(("2001:db8::2", "2001:db8::2, 10.0.0.1")),
            ),
            XffCase(
                &[b"198.51.100.7, 2001:db8::3"],
                Ok(("2001:db8::3", "2001:db8::3, 10.0.0.1")),
            ),
            XffCase(
                &[b"::ffff:198.51.100.7"],
                Ok(("198.51.100.7", "198.51.100.7, 10.0.0.1")),
            ),
            XffCase(
                &[b"[::ffff:198.51.100.7]:80"],
                Ok(("198.51.100.7", "198.51.100.7, 10.0.0.1")),
            ),
            // Trusted proxies in every form are skipped.
            XffCase(
                &[b"198.51.100.7, ::ffff:10.0.0.9"],
                Ok(("198.51.100.7", "198.51.100.7, 10.0.0.9, 10.0.0.1")),
            ),
            XffCase(
                &[b"198.51.100.7, 10.0.0.9:8080, [::ffff:192.0.2.1]:1"],
                Ok((
                    "198.51.100.7",
                    "198.51.100.7, 10.0.0.9, 192.0.2.1, 10.0.0.1",
                )),
            ),
            XffCase(
                &[b" 198.51.100.7 ,\t10.0.0.9 ,, "],
                Ok(("198.51.100.7", "198.51.100.7, 10.0.0.9, 10.0.0.1")),
            ),
            // All trusted: the left-most.
            XffCase(
                &[b"10.0.0.7, 10.0.0.9"],
                Ok(("10.0.0.7", "10.0.0.7, 10.0.0.9, 10.0.0.1")),
            ),
            // The client element is not an address: refused.
            XffCase(&[b"198.51.100.7, unknown"], Err("unknown")),
            XffCase(&[b"\xf1"], Err("\u{fffd}")),
            XffCase(&[b"198.51.100.7", b"\xf1, 10.0.0.9"], Err("\u{fffd}")),
            XffCase(&[b"198.51.100.7, 10.0.0.9:99999"], Err("10.0.0.9:99999")),
            XffCase(&[b"198.51.100.7, 10.0.0.9:"], Err("10.0.0.9:")),
            XffCase(&[b"198.51.100.7, [10.0.0.9]"], Err("[10.0.0.9]")),
            XffCase(&[b"198.51.100.7, [2001:db8::1]x"], Err("[2001:db8::1]x")),
            XffCase(
                &[b"198.51.100.7, 2001:db8::1:80:x"],
                Err("2001:db8::1:80:x"),
            ),
            XffCase(&[b"198.51.100.7, fe80::1%eth0"], Err("fe80::1%eth0")),
            XffCase(&[b"198.51.100.7, 010.0.0.9"], Err("010.0.0.9")),
            XffCase(&[b"198.51.100.7, \"10.0.0.9\""], Err("\"10.0.0.9\"")),
        ];
        for XffCase(lines, expected) in cases {
            let shown: Vec<String> = lines
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            let got = Forwarded::from_request(&xff(lines), peer, "http", "app.example", &trusted);
            match (got, expected) {
                (Ok(f), Ok((client, chain))) => {
                    assert_eq!(f.client_ip, ip(client), "{shown:?}");
                    assert_eq!(f.for_chain, *chain, "{shown:?}");
                }
                (Err(ForwardedError::ClientEntry { entry }), Err(expected)) => {
                    assert_eq!(entry, *expected, "{shown:?}");
                }
                (got, expected) => panic!("{shown:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn v4_mapped_peers_and_networks_are_the_ipv4_ones() {
        let headers = xff(&[b"198.51.100.7"]);
        // A dual-stack listener sees the balancer as ::ffff:10.0.0.1.
        let f = Forwarded::from_request(
            &headers,
            ip("::ffff:10.0.0.1"),
            "http",
            "h",
            &nets(&["10.0.0.1/32"]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.client_ip, ip("198.51.100.7"));
        assert_eq!(f.for_chain, "198.51.100.7, 10.0.0.1");
        // A trusted network written v4-mapped trusts the IPv4 peer.
        let f = Forwarded::from_request(
            &headers,
            ip("10.0.0.1"),
            "http",
            "h",
            &nets(&["::ffff:10.0.0.0/104"]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.client_ip, ip("198.51.100.7"));
        // An untrusted v4-mapped peer is the client, written as IPv4.
        let f = Forwarded::from_request(
            &headers,
            ip("::ffff:203.0.113.9"),
            "http",
            "h",
            &nets(&["10.0.0.0/8"]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.client_ip, ip("203.0.113.9"));
        assert_eq!(f.for_chain, "203.0.113.9");
    }

    #[test]
    fn forwarded_proto_and_host_take_the_first_element_or_the_listener() {
        let trusted = nets(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        let mut headers = map(&[
            ("x-forwarded-proto", "https, http"),
            ("x-forwarded-host", "app.example, x"),
        ]);
        let f = Forwarded::from_request(&headers, peer, "http", "internal", &trusted)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (f.proto.as_str(), f.host.as_str()),
            ("https", "app.example")
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_bytes(b"\xf1.example").unwrap_or_else(|e| panic!("{e}")),
        );
        let f = Forwarded::from_request(&headers, peer, "http", "internal", &trusted)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((f.proto.as_str(), f.host.as_str()), ("http", "internal"));
    }
}
