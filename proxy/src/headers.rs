//! Header hygiene between the client and the upstream: hop-by-hop headers (RFC 9110 §7.6.1),
//! client-supplied identity headers in every spelling, and the rebuilt `X-Forwarded-*` set.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

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

/// Exact (normalised) names that could carry identity or override routing at some upstream.
const SPOOFABLE_EXACT: [&str; 9] = [
    "forwarded",
    "x-remote-user",
    "remote-user",
    "x-real-ip",
    "x-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-request-id",
];

/// Normalised name prefixes that could carry identity.
const SPOOFABLE_PREFIXES: [&str; 3] = ["x-forwarded-", "x-sekisho-", "x-auth-request-"];

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
/// identity or forwarding information. `identity_names` are the configured identity headers,
/// folded with [`fold_name`]. Allocates nothing.
pub fn is_spoofable(name: &HeaderName, identity_names: &[&str]) -> bool {
    let name = name.as_str();
    SPOOFABLE_EXACT.iter().any(|n| folded_eq(name, n))
        || SPOOFABLE_PREFIXES
            .iter()
            .any(|p| folded_starts_with(name, p))
        || identity_names.iter().any(|n| folded_eq(name, n))
}

/// What the client told us about the original request, read before stripping, and believed only
/// when the peer is a trusted proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The `X-Forwarded-For` value to send upstream.
    pub for_chain: String,
    /// Original scheme (`http`/`https`).
    pub proto: String,
    /// Original host.
    pub host: String,
    /// The client address we attribute the request to (left-most untrusted hop).
    pub client_ip: IpAddr,
}

impl Forwarded {
    /// Builds the forwarding facts for a request from `peer`, received on a listener speaking
    /// `scheme`, for `host`.
    pub fn from_request(
        headers: &HeaderMap,
        peer: IpAddr,
        scheme: &str,
        host: &str,
        trusted: &[IpNet],
    ) -> Self {
        let peer_trusted = trusted.iter().any(|net| net.contains(&peer));
        if !peer_trusted {
            return Forwarded {
                for_chain: peer.to_string(),
                proto: scheme.to_owned(),
                host: host.to_owned(),
                client_ip: peer,
            };
        }
        let incoming: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        // Walk from the right: the first hop that is not a trusted proxy is the client.
        let client_ip = incoming
            .iter()
            .rev()
            .find(|ip| !trusted.iter().any(|net| net.contains(*ip)))
            .copied()
            .unwrap_or(peer);
        let mut chain: Vec<String> = incoming.iter().map(ToString::to_string).collect();
        chain.push(peer.to_string());
        let first = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let proto = first("x-forwarded-proto")
            .filter(|p| p == "http" || p == "https")
            .unwrap_or_else(|| scheme.to_owned());
        let host = first("x-forwarded-host").unwrap_or_else(|| host.to_owned());
        Forwarded {
            for_chain: chain.join(", "),
            proto,
            host,
            client_ip,
        }
    }
}

/// Removes hop-by-hop headers (including those listed in `Connection`) and every spoofable
/// identity header. When `keep_upgrade` is set the `Upgrade` header and a `Connection: upgrade`
/// survive, for a WebSocket handshake the route allows.
pub fn sanitize_request_headers(
    headers: &mut HeaderMap,
    identity_names: &[&str],
    keep_upgrade: bool,
) {
    strip_hop_by_hop(headers, keep_upgrade);
    if !headers
        .keys()
        .any(|name| is_spoofable(name, identity_names))
    {
        return;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_spoofable(name, identity_names))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Removes hop-by-hop headers from a message (request or response), honouring `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if !HOP_BY_HOP.iter().any(|name| headers.contains_key(name)) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
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
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
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

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            let name = HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{k}: {e}"));
            headers.append(
                name,
                HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{v}: {e}")),
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
        sanitize_request_headers(&mut headers, &IDENTITY, false);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, vec!["accept"]);
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
        let f = Forwarded::from_request(&headers, peer, "http", "app.example", &[]);
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
        let f = Forwarded::from_request(&headers, peer, "http", "internal", &trusted);
        assert_eq!(f.for_chain, "198.51.100.7, 10.0.0.5, 10.0.0.9");
        assert_eq!(f.proto, "https");
        assert_eq!(f.host, "app.example");
        assert_eq!(f.client_ip.to_string(), "198.51.100.7");
    }
}
