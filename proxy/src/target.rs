//! The normalise phase: a request's addressing read once — one host (Host and :authority
//! agree), the port, the scheme, the path in sekisho's normal form, and the client address
//! (the peer, or behind a trusted proxy the X-Forwarded-For client) — and used by every later
//! phase and door.

use http::header::{self, HeaderMap};
use http::{Method, Request};
use ipnet::IpNet;
use sekisho_config::{Origin, Scheme};

use crate::connection::Connection;
use crate::error::ProxyError;
use crate::headers::Forwarded;
use crate::normalize::normalize_path;

/// A request's addressing facts, computed once.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http` or `https` as the client used it (behind a trusted proxy: its X-Forwarded-Proto).
    pub scheme: Scheme,
    /// The host, lower case, without a trailing dot.
    pub host: String,
    /// The port the client named, if any.
    pub port: Option<u16>,
    /// The path in sekisho's normal form: the one used for routing, policy and forwarding.
    pub path: String,
    /// Forwarding facts: the client address, the X-Forwarded-* to send on.
    pub forwarded: Forwarded,
}

impl Target {
    /// The origin the client addressed.
    pub fn origin(&self) -> Origin {
        let default = match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        Origin {
            scheme: self.scheme,
            host: self.host.clone(),
            port: self.port.unwrap_or(default),
        }
    }
}

impl Target {
    /// Normalises the addressing of a request: host (one, consistent), port, scheme, path.
    pub fn read<B>(
        request: &Request<B>,
        conn: &Connection,
        trusted_proxies: &[IpNet],
    ) -> Result<Target, ProxyError> {
        let bad = |reason| ProxyError::BadRequest { reason };
        let mut hosts = request.headers().get_all(header::HOST).iter();
        let host_header = hosts.next();
        if hosts.next().is_some() {
            return Err(bad("more than one Host header"));
        }
        let host_header = host_header
            .map(|h| h.to_str().map_err(|_| bad("Host header is not text")))
            .transpose()?;
        let authority_text = match (request.uri().authority(), host_header) {
            (Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(h) => {
                return Err(bad("Host header disagrees with the request target"));
            }
            (Some(a), _) => a.as_str().to_owned(),
            (None, Some(h)) => h.to_owned(),
            (None, None) => return Err(bad("missing Host")),
        };
        let (host, port) = host_and_port(&authority_text)?;
        let path = normalize_path(request.uri().path()).map_err(|e| {
            tracing::debug!(error = %e, path = request.uri().path(), "path refused");
            bad(e.public_reason())
        })?;
        let listener_scheme = if conn.tls { "https" } else { "http" };
        let forwarded = Forwarded::from_request(
            request.headers(),
            conn.peer.ip(),
            listener_scheme,
            &authority_text,
            trusted_proxies,
        )
        .map_err(|e| {
            tracing::debug!(error = %e, "X-Forwarded-For refused");
            bad("X-Forwarded-For: the client entry is not an address")
        })?;
        let scheme = if forwarded.proto == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        Ok(Target {
            scheme,
            host,
            port,
            path,
            forwarded,
        })
    }

    /// The request a front proxy asks about at `/.sekisho/auth` (nginx `auth_request`, Caddy
    /// `forward_auth`, Traefik `forwardAuth`): its method from `X-Forwarded-Method`, its host
    /// from `X-Forwarded-Host` (else the Host the front proxy sent), its scheme from
    /// `X-Forwarded-Proto`, its path and query from `X-Original-URI` (nginx) or
    /// `X-Forwarded-Uri`, its client from `X-Forwarded-For`. The caller has checked that the
    /// peer is a trusted proxy: from anyone else none of this is believed.
    pub fn original<B>(request: &Request<B>, own: &Target) -> Result<Original, ProxyError> {
        let bad = |reason| ProxyError::BadRequest { reason };
        let headers = request.headers();
        let method = single(headers, "x-forwarded-method")?
            .ok_or(bad("forward-auth: X-Forwarded-Method is missing"))?;
        let method = Method::from_bytes(method.trim_ascii())
            .map_err(|_| bad("forward-auth: X-Forwarded-Method is not a method"))?;
        let original_uri = single(headers, "x-original-uri")?;
        let forwarded_uri = single(headers, "x-forwarded-uri")?;
        let uri = match (original_uri, forwarded_uri) {
            (Some(a), Some(b)) if a != b => {
                return Err(bad(
                    "forward-auth: X-Original-URI and X-Forwarded-Uri disagree",
                ));
            }
            (Some(uri), _) | (None, Some(uri)) => uri,
            (None, None) => {
                return Err(bad(
                    "forward-auth: X-Original-URI or X-Forwarded-Uri is missing",
                ));
            }
        };
        let uri = std::str::from_utf8(uri)
            .ok()
            .filter(|u| u.starts_with('/'))
            .and_then(|u| u.parse::<http::uri::PathAndQuery>().ok())
            .ok_or(bad(
                "forward-auth: the original URI is not a path (origin form)",
            ))?;
        let path = normalize_path(uri.path()).map_err(|e| {
            tracing::debug!(error = %e, path = uri.path(), "forward-auth path refused");
            bad(e.public_reason())
        })?;
        let (host, port) = host_and_port(&own.forwarded.host)?;
        Ok(Original {
            method,
            query: uri.query().map(str::to_owned),
            nginx: original_uri.is_some(),
            target: Target {
                scheme: own.scheme,
                host,
                port,
                path,
                forwarded: own.forwarded.clone(),
            },
        })
    }
}

/// The request a front proxy asks about (forward-auth).
#[derive(Debug)]
pub struct Original {
    /// Its method.
    pub method: Method,
    /// Its addressing; the client and X-Forwarded-* are those of the auth request.
    pub target: Target,
    /// Its query string.
    pub query: Option<String>,
    /// Asked by nginx `auth_request` (`X-Original-URI`), which understands only 2xx, 401 and
    /// 403: browsers get 401 and nginx's `error_page 401` sends them to sign in.
    pub nginx: bool,
}

/// The one value of `name`, if present; two lines are refused (which one would the front
/// proxy have meant?).
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h [u8]>, ProxyError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => Ok(Some(value.as_bytes())),
        (Some(_), Some(_)) => Err(ProxyError::BadRequest {
            reason: "forward-auth: a forwarded header is repeated",
        }),
    }
}

/// Host (lower case, no trailing dot) and port of an authority; userinfo is refused.
fn host_and_port(text: &str) -> Result<(String, Option<u16>), ProxyError> {
    let bad = || ProxyError::BadRequest {
        reason: "malformed Host",
    };
    let authority: http::uri::Authority = text.parse().map_err(|_| bad())?;
    if authority.as_str().contains('@') {
        return Err(bad());
    }
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, authority.port_u16()))
}
