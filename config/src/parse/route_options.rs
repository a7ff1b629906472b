//! A route's options beyond what it matches and where it forwards: `public`,
//! `cors_allow_preflight`, `set_request_headers`, `remove_request_headers` and `prefix_rewrite`,
//! each checked against the rest of its route and against `identity_headers` at load.

use http::{HeaderName, HeaderValue};
use marked_yaml::Node;

use super::Parser;
use crate::error::{Problem, RouteProblem};
use crate::model::{IdentityHeaders, RequestHeader, STRIPPED_NAMES, STRIPPED_PREFIXES};
use crate::policy::PathMatch;
use crate::value;
use crate::walk::{Field, Map};

/// Headers that describe one connection (RFC 9110 §7.6.1), folded; every `proxy-*` besides.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
/// Folded prefix of the hop-by-hop `Proxy-*` headers (`Proxy-Connection`, `Proxy-Authorization`).
const HOP_BY_HOP_PREFIX: &str = "proxy-";
/// Headers that tell an upstream who the client is, folded; every `x-forwarded-*` besides.
const FORWARDING: [&str; 5] = [
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
];
/// Folded prefix of the `X-Forwarded-*` headers sekisho rebuilds.
const FORWARDING_PREFIX: &str = "x-forwarded-";

/// A route's options, parsed.
#[derive(Debug)]
pub(super) struct RouteOptions {
    /// `public`.
    pub(super) public: bool,
    /// `cors_allow_preflight`.
    pub(super) cors_allow_preflight: bool,
    /// `remove_request_headers`.
    pub(super) remove_request_headers: Vec<HeaderName>,
    /// `set_request_headers`.
    pub(super) set_request_headers: Vec<RequestHeader>,
    /// `prefix_rewrite`.
    pub(super) prefix_rewrite: Option<String>,
}

impl Parser<'_> {
    /// The options of the route `map`. `path` is its parsed `path` (`Some(None)` when absent,
    /// `None` when invalid and reported), `identity` the identity header names when they parsed.
    pub(super) fn route_options(
        &mut self,
        map: &Map<'_>,
        path: Option<Option<&PathMatch>>,
        identity: Option<&IdentityHeaders>,
    ) -> Option<RouteOptions> {
        let public = self.flag(map, "public", false);
        if public == Some(true) {
            self.check_public(map);
        }
        let cors_allow_preflight = self.flag(map, "cors_allow_preflight", false);
        let set_request_headers = self.or_default(
            map,
            "set_request_headers",
            |p, f| p.set_request_headers(f, identity),
            Vec::new,
        );
        // The names as written, valid or not, so that a name also removed is reported together
        // with any problem of the set list itself.
        let set_names: Vec<&str> = match map.get("set_request_headers").map(|f| f.node) {
            Some(Node::Mapping(set)) => set.keys().map(|key| key.as_str().trim()).collect(),
            _ => Vec::new(),
        };
        let remove_request_headers = self.or_default(
            map,
            "remove_request_headers",
            |p, f| p.remove_request_headers(f, &set_names),
            Vec::new,
        );
        let prefix_rewrite = self.optional(map, "prefix_rewrite", |p, f| {
            let rewrite = p.walk.value(f, prefix_rewrite)?;
            match path {
                Some(Some(test @ (PathMatch::Exact(_) | PathMatch::Regex(_)))) => {
                    let test = test.to_string();
                    p.walk
                        .report_at(f, RouteProblem::PrefixRewriteWithoutPrefix { test });
                    None
                }
                _ => Some(rewrite),
            }
        });
        Some(RouteOptions {
            public: public?,
            cors_allow_preflight: cors_allow_preflight?,
            remove_request_headers: remove_request_headers?,
            set_request_headers: set_request_headers?,
            prefix_rewrite: prefix_rewrite?,
        })
    }

    /// Reports the keys a public route must not have: `policy` and `mode` (never evaluated) and
    /// `pass_identity_headers: true` (there is no identity).
    fn check_public(&mut self, map: &Map<'_>) {
        if let Some(policy) = map.get("policy") {
            self.walk.report_at(&policy, RouteProblem::PublicWithPolicy);
        }
        if let Some(mode) = map.get("mode") {
            self.walk.report_at(&mode, RouteProblem::PublicWithMode);
        }
        if let Some(pass) = map.get("pass_identity_headers")
            && matches!(pass.node, Node::Scalar(scalar) if scalar.as_bool() == Some(true))
        {
            self.walk.report_at(&pass, RouteProblem::PublicWithIdentity);
        }
    }

    /// `set_request_headers: {Name: value, ...}`: names a route may set, distinct once folded.
    fn set_request_headers(
        &mut self,
        field: &Field<'_>,
        identity: Option<&IdentityHeaders>,
    ) -> Option<Vec<RequestHeader>> {
        let entries = self.walk.entries(
            field,
            "a mapping of header names to values, like `{X-Tenant: acme}`",
        )?;
        let mut headers: Vec<RequestHeader> = Vec::with_capacity(entries.len());
        let mut written: Vec<&str> = Vec::with_capacity(entries.len());
        let mut valid = true;
        for entry in &entries {
            let name = match settable_name(entry.key, identity) {
                Ok(name) => Some(name),
                Err(problem) => {
                    self.walk.report(entry.key_pos, &entry.value.path, problem);
                    None
                }
            };
            let key = entry.key.trim();
            if let Some(first) = written.iter().find(|first| same_header(first, key)) {
                let problem = RouteProblem::RepeatedHeader {
                    name: key.to_owned(),
                    first: (*first).to_owned(),
                };
                self.walk.report(entry.key_pos, &entry.value.path, problem);
                valid = false;
            }
            written.push(key);
            let value = if entry.value.is_null() {
                self.walk
                    .report(entry.key_pos, &entry.value.path, Problem::Null);
                None
            } else {
                self.walk.value(&entry.value, header_value)
            };
            match (name, value) {
                (Some(name), Some(value)) => headers.push(RequestHeader { name, value }),
                _ => valid = false,
            }
        }
        valid.then_some(headers)
    }

    /// `remove_request_headers: [Name, ...]`: any name but `Host`, distinct once folded and not
    /// also in `set` (the names written in `set_request_headers`).
    fn remove_request_headers(
        &mut self,
        field: &Field<'_>,
        set: &[&str],
    ) -> Option<Vec<HeaderName>> {
        let items = self.walk.list(field)?;
        let mut names: Vec<HeaderName> = Vec::with_capacity(items.len());
        let mut written: Vec<String> = Vec::with_capacity(items.len());
        let mut valid = true;
        for item in &items {
            let Some(name) = self.walk.value(item, removable_name) else {
                valid = false;
                continue;
            };
            let key = match item.node {
                Node::Scalar(scalar) => scalar.as_str().trim().to_owned(),
                _ => name.as_str().to_owned(),
            };
            if let Some(first) = written.iter().find(|first| same_header(first, &key)) {
                let problem = RouteProblem::RepeatedHeader {
                    name: key,
                    first: first.clone(),
                };
                self.walk.report_at(item, problem);
                valid = false;
                continue;
            }
            if set.iter().any(|set| same_header(set, &key)) {
                self.walk
                    .report_at(item, RouteProblem::RemovedAndSet(key.clone()));
                valid = false;
            }
            names.push(name);
            written.push(key);
        }
        valid.then_some(names)
    }
}

/// A header name any route may remove: an HTTP token other than `Host`.
fn removable_name(input: &str) -> Result<HeaderName, RouteProblem> {
    let name = header_name(input)?;
    if name == http::header::HOST {
        return Err(RouteProblem::Host(input.trim().to_owned(), "removed"));
    }
    Ok(name)
}

/// A header name a route may set: an HTTP token that is none of the headers sekisho or HTTP
/// itself decides (hop-by-hop, `Host`, `Content-Length`, forwarding headers, `X-Request-Id`,
/// the identity headers named in `identity`, the built-in strip list), compared folded (lower
/// case, `_` as `-`), the way many upstreams read names.
fn settable_name(
    input: &str,
    identity: Option<&IdentityHeaders>,
) -> Result<HeaderName, RouteProblem> {
    let name = header_name(input)?;
    let written = input.trim().to_owned();
    let folded = fold(name.as_str());
    let folded = folded.as_str();
    if folded == "host" {
        return Err(RouteProblem::Host(written, "set"));
    }
    if folded == "content-length" {
        return Err(RouteProblem::ContentLength(written));
    }
    if HOP_BY_HOP.contains(&folded) || folded.starts_with(HOP_BY_HOP_PREFIX) {
        return Err(RouteProblem::HopByHop(written));
    }
    if FORWARDING.contains(&folded) || folded.starts_with(FORWARDING_PREFIX) {
        return Err(RouteProblem::Forwarding(written));
    }
    if folded == "x-request-id" {
        return Err(RouteProblem::RequestId(written));
    }
    if let Some(identity) = identity {
        let configured = [
            ("user", &identity.user),
            ("email", &identity.email),
            ("groups", &identity.groups),
            ("jwt_assertion", &identity.jwt_assertion),
        ];
        if let Some((field, _)) = configured
            .into_iter()
            .find(|(_, configured)| fold(configured) == folded)
        {
            return Err(RouteProblem::Identity {
                name: written,
                field,
            });
        }
    }
    let stripped = if STRIPPED_NAMES.contains(&folded) {
        Some(folded.to_owned())
    } else {
        STRIPPED_PREFIXES
            .iter()
            .find(|prefix| folded.starts_with(*prefix))
            .map(|prefix| format!("{prefix}*"))
    };
    if let Some(pattern) = stripped {
        return Err(RouteProblem::Stripped {
            name: written,
            pattern,
        });
    }
    Ok(name)
}

/// An HTTP field name (RFC 9110 §5.1: a token), lowercased.
fn header_name(input: &str) -> Result<HeaderName, RouteProblem> {
    let name = input.trim();
    if name.is_empty() {
        return Err(RouteProblem::HeaderNameEmpty);
    }
    if !name.chars().all(value::is_tchar) {
        return Err(RouteProblem::HeaderName(name.to_owned()));
    }
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| RouteProblem::HeaderName(name.to_owned()))
}

/// A header value: visible ASCII, spaces and tabs (surrounding spaces and tabs dropped), marked
/// sensitive. The error names the offending character, never the value (it may be a
/// credential).
fn header_value(input: &str) -> Result<HeaderValue, RouteProblem> {
    let refused = input
        .chars()
        .enumerate()
        .find(|(_, c)| !(*c == '\t' || (' '..='~').contains(c)));
    if let Some((index, c)) = refused {
        let what = match c {
            '\r' => "a carriage return (CR)".to_owned(),
            '\n' => "a line feed (LF)".to_owned(),
            '\0' => "NUL".to_owned(),
            c if c.is_ascii_control() => format!("the control character U+{:04X}", u32::from(c)),
            c => format!("the non-ASCII character U+{:04X}", u32::from(c)),
        };
        return Err(RouteProblem::HeaderValue {
            position: index + 1,
            what,
        });
    }
    let text = input.trim_matches([' ', '\t']);
    let mut value = HeaderValue::from_str(text).map_err(|_| RouteProblem::HeaderValue {
        position: 1,
        what: "not allowed by HTTP".to_owned(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// `prefix_rewrite`: a path already in the normal form of request paths.
fn prefix_rewrite(input: &str) -> Result<String, RouteProblem> {
    let given = input.trim();
    match crate::path::normalize_path(given) {
        Err(reason) => Err(RouteProblem::PrefixRewritePath {
            given: given.to_owned(),
            reason,
        }),
        Ok(normal) if normal == given => Ok(normal),
        Ok(normal) => Err(RouteProblem::PrefixRewriteNotNormal {
            given: given.to_owned(),
            normal,
        }),
    }
}

/// Whether two header names are one header to an upstream: equal once folded.
fn same_header(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| fold_byte(x) == fold_byte(y))
}

/// A header name folded: lower case, `_` as `-` (how CGI, nginx and many frameworks read it).
fn fold(name: &str) -> String {
    name.bytes().map(|b| char::from(fold_byte(b))).collect()
}

/// One byte of a header name, folded.
fn fold_byte(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests;
